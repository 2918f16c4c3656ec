"""bench/cgroups.py: finding the cpu controller, and real groups where this machine has them."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import cgroups
from bench.cgroups import Hierarchy, cpu_groups, find_hierarchy

V1_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
"""
V2_MOUNTS = "cgroup2 {root} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"


def proc_with(tmp_path: Path, cgroup: str, mounts: str) -> tuple[Path, Path]:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    (tmp_path / "mounts").write_text(mounts)
    return proc, tmp_path / "mounts"


def test_v1_cpu_controller_found_where_this_process_is(tmp_path: Path) -> None:
    cgroup = "4:memory:/job\n2:cpu,cpuacct:/job/bench\n0::/\n"
    proc, mounts = proc_with(tmp_path, cgroup, V1_MOUNTS)
    expected = Hierarchy(Path("/sys/fs/cgroup/cpu,cpuacct/job/bench"), 1)
    assert find_hierarchy(proc, mounts) == expected


def test_v2_groups_go_under_the_root_which_needs_the_cpu_controller(tmp_path: Path) -> None:
    """A login session's scope holds processes, so v2 would refuse to enable the controller
    below it: the groups go under the root."""
    root = tmp_path / "unified"
    (root / "user.slice" / "session-1.scope").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("memory pids\n")
    cgroup = "0::/user.slice/session-1.scope\n"
    proc, mounts = proc_with(tmp_path, cgroup, V2_MOUNTS.format(root=root))
    with pytest.raises(OSError, match="cpu controller"):
        find_hierarchy(proc, mounts)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert find_hierarchy(proc, mounts) == Hierarchy(root, 2)


def test_weights_of_each_version() -> None:
    assert Hierarchy(Path("/x"), 1).weight(2) == "2048"
    assert Hierarchy(Path("/x"), 2).weight(2) == "200"
    assert Hierarchy(Path("/x"), 1).weight_file == "cpu.shares"
    assert Hierarchy(Path("/x"), 2).weight_file == "cpu.weight"


def test_no_groups_where_there_is_no_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> Hierarchy:
        raise OSError("no cgroup hierarchy with the cpu controller")

    monkeypatch.setattr(cgroups, "find_hierarchy", missing)
    with cpu_groups({"kit": 2, "pupils": 1}) as groups:
        assert groups is None


def cpu_group_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(",") or (number == "0" and not controllers):
            return path
    return ""


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts, killed at its end."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def test_real_groups_hold_processes_and_go_away(sleepers: list[subprocess.Popen[bytes]]) -> None:
    """On this machine's own cgroups (skipped where they cannot be written): a process moved
    in, one started in through the prefix, weights written; at the end both processes are
    back in this process's group and the groups are gone, though the processes still run."""
    with cpu_groups({"kit": 2, "pupils": 1}, tag="bench-test") as groups:
        if groups is None:
            pytest.skip("no writable cgroup with the cpu controller here")
        root = groups.root
        moved = subprocess.Popen(["sleep", "30"])
        born = subprocess.Popen([*groups.prefix("pupils"), "sleep", "30"])
        sleepers += [moved, born]
        groups.join(moved.pid, "kit")
        for _ in range(200):  # the prefix's shell moves itself, then execs sleep
            if cpu_group_of(born.pid).endswith("/pupils"):
                break
            time.sleep(0.01)
        assert cpu_group_of(moved.pid).endswith(f"{root.name}/kit")
        assert cpu_group_of(born.pid).endswith(f"{root.name}/pupils")
        weight = groups.path("kit") / groups.hierarchy.weight_file
        assert weight.read_text().strip() == groups.hierarchy.weight(2)
        with pytest.raises(KeyError):
            groups.path("teachers")
    assert not root.exists()
    assert moved.poll() is None and born.poll() is None
    assert cpu_group_of(moved.pid) == cpu_group_of(born.pid)
    assert not cpu_group_of(moved.pid).endswith(("/kit", "/pupils"))


def test_groups_of_a_killed_run_are_removed_by_the_next(tmp_path: Path) -> None:
    """A run killed outright leaves its groups; the next removes them, never a live run's."""
    gone, alive = tmp_path / "bench-999999999", tmp_path / f"bench-{os.getpid()}"
    for root in (gone, alive):
        (root / "kit").mkdir(parents=True)
    (tmp_path / "bench-test-1").mkdir()
    cgroups._remove_stale(tmp_path, "bench")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([alive.name, "bench-test-1"])


def test_groups_half_made_are_removed_and_the_bench_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hierarchy whose weight files cannot be written (here: plain directories, no weight
    file to open in a missing group): nothing is left behind, and the caller gets None."""
    parent = tmp_path / "cpu"
    parent.mkdir()
    monkeypatch.setattr(cgroups, "find_hierarchy", lambda: Hierarchy(parent, 1))
    monkeypatch.setattr(Hierarchy, "weight_file", property(lambda self: "missing/cpu.shares"))
    with cpu_groups({"kit": 2, "pupils": 1}) as groups:
        assert groups is None
    assert list(parent.iterdir()) == []
