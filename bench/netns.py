"""Thin links for ``make bench-network``: the kit and five pupils in network namespaces.

::

    kit 10.77.0.1 (eth0) ── switch (a bridge, br0) ── pupil i 10.77.0.(10+i) (eth0), i = 0…4
                       port "kit"                  port "p<i>"

Every link is a veth pair; shaping is ``tc tbf`` (no netem on these kernels) on both ends of a
link, so both directions are limited: a pupil's link (:meth:`ThinNet.shape_pupil`) or the kit's
uplink, which the five pupils then share (:meth:`ThinNet.shape_kit`). Nothing is joined to the
machine's own namespace: the bench reaches the kit and the pupils only through processes it
starts in them (:meth:`ThinNet.spawn`, :meth:`ThinNet.wrapper`). Every namespace is named
``bnet-<pid>-<random>-…`` and deleted on exit, failure included, after the processes started in
it are ended; namespaces left by a killed run (its pid gone) are deleted by the next one.
Needs root, iproute2 and tc.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "bnet-"
SUBNET = "10.77.0"
KIT_ADDRESS = f"{SUBNET}.1"
PUPILS = 5
COMMAND_TIMEOUT = 20.0
TBF_BURST = "16kb"
"""Bytes the bucket holds (≈ 11 full packets): a home router's line, not a lab's cable."""
TBF_LATENCY = "50ms"
"""Longest a packet may wait in the queue before tbf drops it, as a modem's buffer would."""


class NamespaceError(RuntimeError):
    """The namespaces cannot be made here (not root, no iproute2, or the kernel refuses)."""


@dataclass(frozen=True)
class Node:
    namespace: str
    address: str
    device: str = "eth0"

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class ThinNet:
    tag: str
    workdir: Path
    switch: Node
    kit: Node
    pupils: list[Node] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def spawn(self, node: Node, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """A process (own process group) inside ``node``, ended at teardown if still running."""
        process = subprocess.Popen(node.command(*argv), start_new_session=True, **popen)
        self._processes.append(process)
        return process

    def run(self, node: Node, *argv: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """``argv`` run to its end inside ``node``; its stdout (raises on failure)."""
        done = subprocess.run(node.command(*argv), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{node.namespace}: {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def wrapper(self, node: Node, program: str) -> Path:
        """An executable running ``program`` inside ``node`` (Playwright's executable_path)."""
        path = self.workdir / f"in-{node.namespace}-{Path(program).name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {node.namespace} {program} "$@"\n')
        path.chmod(0o755)
        return path

    def shape_pupil(self, index: int, kbps: int | None) -> None:
        """Pupil ``index``'s own link at ``kbps`` both ways (None: unshaped)."""
        pupil = self.pupils[index]
        _shape(self.switch.namespace, f"p{index}", kbps)
        _shape(pupil.namespace, pupil.device, kbps)

    def shape_kit(self, kbps: int | None) -> None:
        """The kit's uplink (shared by every pupil) at ``kbps`` both ways (None: unshaped)."""
        _shape(self.switch.namespace, "kit", kbps)
        _shape(self.kit.namespace, self.kit.device, kbps)

    def unshape(self) -> None:
        self.shape_kit(None)
        for index in range(len(self.pupils)):
            self.shape_pupil(index, None)

    def _namespace(self, role: str, address: str) -> Node:
        name = f"{PREFIX}{self.tag}-{role}"
        _must("ip", "netns", "add", name)
        self._namespaces.append(name)
        _must("ip", "-n", name, "link", "set", "lo", "up")
        return Node(name, address)

    def _attach(self, node: Node, port: str) -> None:
        """``node``'s eth0 on the switch's bridge, as ``port``."""
        switch = self.switch.namespace
        _must(
            "ip", "-n", switch, "link", "add", port, "type", "veth",
            "peer", "name", node.device, "netns", node.namespace,
        )  # fmt: skip
        _must("ip", "-n", switch, "link", "set", port, "master", "br0")
        _must("ip", "-n", switch, "link", "set", port, "up")
        _must("ip", "-n", node.namespace, "addr", "add", f"{node.address}/24", "dev", node.device)
        _must("ip", "-n", node.namespace, "link", "set", node.device, "up")

    def _tear_down(self) -> None:
        for process in self._processes:
            end_process(process)
        for name in reversed(self._namespaces):
            _run("ip", "netns", "del", name)


def _shape(namespace: str, device: str, kbps: int | None) -> None:
    if kbps is None:
        _run("ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", device, "root")
        return
    _must(
        "ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", device, "root",
        "tbf", "rate", f"{kbps}kbit", "burst", TBF_BURST, "latency", TBF_LATENCY,
    )  # fmt: skip


@contextlib.contextmanager
def thin_net(workdir: Path, pupils: int = PUPILS) -> Iterator[ThinNet]:
    """The topology above, torn down on exit whatever happens (raises :class:`NamespaceError`
    where namespaces cannot be made)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("tc") is None:
        raise NamespaceError("network namespaces need root, iproute2 and tc")
    remove_stale()
    tag = f"{os.getpid()}-{secrets.token_hex(2)}"
    switch_name = f"{PREFIX}{tag}-sw"
    probe = _run("ip", "netns", "add", switch_name)
    if probe.returncode != 0:
        raise NamespaceError(f"cannot create a network namespace: {probe.stderr.strip()}")
    switch = Node(switch_name, "", "br0")
    net = ThinNet(tag, workdir, switch, switch, _namespaces=[switch_name])
    try:
        _must("ip", "-n", switch_name, "link", "set", "lo", "up")
        _must("ip", "-n", switch_name, "link", "add", "br0", "type", "bridge")
        _must("ip", "-n", switch_name, "link", "set", "br0", "up")
        net.kit = net._namespace("kit", KIT_ADDRESS)
        net._attach(net.kit, "kit")
        for index in range(pupils):
            pupil = net._namespace(f"p{index}", f"{SUBNET}.{10 + index}")
            net._attach(pupil, f"p{index}")
            net.pupils.append(pupil)
        yield net
    finally:
        net._tear_down()


def remove_stale() -> None:
    """Namespaces of runs killed before they could clean up (their pid is gone)."""
    for line in _run("ip", "netns", "list").stdout.splitlines():
        match = re.match(rf"({re.escape(PREFIX)}(\d+)-[0-9a-f]+-\w+)", line)
        if match and not alive(int(match.group(2))):
            _run("ip", "netns", "del", match.group(1))


def leftover_namespaces(tag: str) -> list[str]:
    """This run's namespaces still present (empty after teardown)."""
    lines = _run("ip", "netns", "list").stdout.splitlines()
    return [line.split()[0] for line in lines if line.startswith(f"{PREFIX}{tag}-")]


def alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a namespace's owner, for stale clean-up)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM to the process group, SIGKILL after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5.0)
    with contextlib.suppress(ProcessLookupError):  # children left by a leader that exited
        os.killpg(process.pid, signal.SIGKILL)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def _must(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
