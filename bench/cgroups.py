"""CPU groups for the benchmark's processes: the kit in one, its pupils in another.

In a class the pupils are on devices of their own; on this machine their processes share the
agent's cores. Control groups give each side a sure share of the machine whenever both want
more than it has, and let either use what the other leaves; their weights say how it is split
(``bench/mixed_class.py`` gives the kit twice the pupils' weight: two thirds of two cores
under contention, the pupils one third).

Linux cgroups, either hierarchy: v1's ``cpu`` controller (``cpu.shares``) or v2's (``cpu.weight``,
enabled in the root's ``cgroup.subtree_control``; see :func:`find_hierarchy`). Where neither can
be written (not root; a container whose root group holds processes), :func:`cpu_groups` yields
None and logs why: the caller falls back to ``nice``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc/self")


@dataclass(frozen=True)
class Hierarchy:
    """Where the benchmark's groups go in the ``cpu`` controller's hierarchy (``parent``), and
    how weights are written there."""

    parent: Path
    version: int

    @property
    def weight_file(self) -> str:
        return "cpu.shares" if self.version == 1 else "cpu.weight"

    def weight(self, times: int) -> str:
        """``times`` the default weight of a group (1,024 shares in v1, a weight of 100 in v2)."""
        return str(times * (1024 if self.version == 1 else 100))


@dataclass(frozen=True)
class CpuGroups:
    """Named control groups of given CPU weights, under ``root`` (one per benchmark run)."""

    root: Path
    hierarchy: Hierarchy
    weights: dict[str, int]

    def path(self, name: str) -> Path:
        if name not in self.weights:
            raise KeyError(name)
        return self.root / name

    def join(self, pid: int, name: str) -> None:
        """Move process ``pid`` (all its threads) into group ``name``; its children to come
        are born there."""
        (self.path(name) / "cgroup.procs").write_text(f"{pid}\n")

    def prefix(self, name: str) -> tuple[str, ...]:
        """A command prefix that starts a program in group ``name`` (for a program that
        spawns others at once, such as a browser's driver)."""
        procs = str(self.path(name) / "cgroup.procs")
        return ("sh", "-c", 'echo $$ > "$0" && exec "$@"', procs)

    def describe(self) -> str:
        weight = self.hierarchy.weight
        weights = ", ".join(f"{name} {weight(times)}" for name, times in self.weights.items())
        return f"cgroup v{self.hierarchy.version} groups, {self.hierarchy.weight_file} {weights}"


def find_hierarchy(proc: Path = PROC, mounts: Path = Path("/proc/self/mounts")) -> Hierarchy:
    """Where to make the groups, in the ``cpu`` controller's hierarchy; OSError if there is none.

    v1: under this process's own group. v2: under the hierarchy's root (that of this cgroup
    namespace), the one group that may hold processes and still hand the ``cpu`` controller to
    groups below it — this process's own group usually holds processes (a login session's
    scope, a service), and v2 refuses to enable a controller below those."""
    groups = {}
    for line in (proc / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    for line in mounts.read_text().splitlines():
        _, mount_point, kind, options = line.split(" ")[:4]
        if kind == "cgroup" and "cpu" in options.split(",") and "cpu" in groups:
            return Hierarchy(Path(mount_point) / groups["cpu"].lstrip("/"), 1)
        if kind == "cgroup2" and "" in groups:
            root = Path(mount_point)
            if "cpu" in (root / "cgroup.controllers").read_text().split():
                return Hierarchy(root, 2)
    raise OSError("no cgroup hierarchy with the cpu controller")


@contextlib.contextmanager
def cpu_groups(weights: Mapping[str, int], tag: str = "bench") -> Iterator[CpuGroups | None]:
    """A group per name, of that many times the default CPU weight, until the block ends (then
    any process left in them goes to the groups' parent and they are removed); None if they
    cannot be made here."""
    try:
        groups = _make(weights, tag)
    except (OSError, ValueError) as error:
        log.warning("no CPU groups for the benchmark (%s): falling back to nice", error)
        groups = None
    try:
        yield groups
    finally:
        if groups is not None:
            _remove(groups.root, groups.hierarchy.parent)


def _make(weights: Mapping[str, int], tag: str) -> CpuGroups:
    """The groups, made; if one step fails, what was made is removed before the error goes on."""
    hierarchy = find_hierarchy()
    if hierarchy.version == 2:
        (hierarchy.parent / "cgroup.subtree_control").write_text("+cpu\n")
    _remove_stale(hierarchy.parent, tag)
    root = hierarchy.parent / f"{tag}-{os.getpid()}"
    root.mkdir()
    try:
        if hierarchy.version == 2:
            (root / "cgroup.subtree_control").write_text("+cpu\n")
        for name, times in weights.items():
            root.joinpath(name).mkdir()
            root.joinpath(name, hierarchy.weight_file).write_text(hierarchy.weight(times))
    except OSError:
        _remove(root, hierarchy.parent)
        raise
    return CpuGroups(root, hierarchy, dict(weights))


def _remove_stale(parent: Path, tag: str) -> None:
    """Remove the groups of an earlier run that was killed before it could (its process gone)."""
    for root in parent.glob(f"{tag}-*"):
        pid = root.name.removeprefix(f"{tag}-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _remove(root, parent)


def _remove(root: Path, parent: Path) -> None:
    """Move what is left in ``root``'s groups to ``parent``, then remove them, deepest first."""
    for group in sorted(root.glob("**/"), key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (parent / "cgroup.procs").write_text(f"{pid}\n")
        try:
            group.rmdir()
        except OSError as error:
            log.warning("could not remove %s: %s", group, error)
