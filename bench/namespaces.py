"""Network namespaces for tests and benches: what every topology is built from.

A topology (tests/nat.py: school and home NATs with coturn; bench/netns.py: ``make
bench-network``'s thin links; tests/netns.py: one lossy path; tests/agent/webrtc/natpath.py: a
kit behind a school NAT) is a :class:`Namespaces`: namespaces named
``<prefix><pid>-<random>-<role>``, the processes started in them, the veth links between them,
``tc tbf`` shaping. :meth:`Namespaces.tear_down` ends those processes and deletes the
namespaces (their veth ends go with them), failure or not; :func:`remove_stale` deletes the
namespaces of a run that was killed before it could (its pid gone). Nothing is joined to the
caller's own namespace unless a link names it (``None``). Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT = 20.0


class NamespaceError(RuntimeError):
    """The namespaces cannot be made here (not root, a tool missing, or the kernel refuses)."""


@dataclass(frozen=True)
class Node:
    """One namespace; ``address`` is its address on its own network, ``device`` its link."""

    namespace: str
    address: str
    device: str = "eth0"

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


def run(
    *argv: str, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)


def must(*argv: str, stdin: str | None = None) -> None:
    """``argv`` run to its end; raises with its error output when it fails."""
    done = run(*argv, stdin=stdin)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def check_usable(*tools: str) -> None:
    """Raise :class:`NamespaceError` unless we are root and ``ip`` and ``tools`` are here."""
    missing = [tool for tool in ("ip", *tools) if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        needs = ", ".join(["root", "iproute2", *tools])
        raise NamespaceError(f"network namespaces need {needs}")


def shape(node: Node | None, device: str, rate: str | None, burst: str, latency: str) -> None:
    """``tc tbf`` on ``device`` of ``node`` (None: this process's namespace; egress) at ``rate``
    like ``"2mbit"``; None: none, at any time. (No netem on these kernels: loss is made with
    nftables, tests/netns.py.)"""

    def command(*argv: str) -> list[str]:
        return node.command(*argv) if node is not None else list(argv)

    if rate is None:
        run(*command("tc", "qdisc", "del", "dev", device, "root"))
        return
    must(
        *command("tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", rate),
        "burst", burst, "latency", latency,
    )  # fmt: skip


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


def remove_stale(prefix: str) -> None:
    """Namespaces named ``prefix…`` of runs killed before they could clean up."""
    for line in run("ip", "netns", "list").stdout.splitlines():
        match = re.match(rf"({re.escape(prefix)}(\d+)-[0-9a-f]+-\w+)", line)
        if match and not alive(int(match.group(2))):
            run("ip", "netns", "del", match.group(1))


class Namespaces:
    """This run's namespaces and the processes started in them (see the module's docstring)."""

    def __init__(self, prefix: str, workdir: Path) -> None:
        self.prefix = prefix
        self.tag = f"{os.getpid()}-{secrets.token_hex(2)}"
        self.workdir = workdir
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen[Any]] = []
        self._links = 0

    def local_name(self, stem: str) -> str:
        """An interface name for the caller's own namespace, unique to this run (≤ 15 chars)."""
        return f"{stem}{self.tag.replace('-', '')}"[-15:]

    def add(self, role: str, address: str = "", device: str = "eth0") -> Node:
        """A new namespace (loopback up); the first one made tells whether we can at all."""
        name = f"{self.prefix}{self.tag}-{role}"
        made = run("ip", "netns", "add", name)
        if made.returncode != 0:
            if not self._namespaces:
                raise NamespaceError(f"cannot create a network namespace: {made.stderr.strip()}")
            raise RuntimeError(f"ip netns add {name}: {made.stderr.strip()}")
        self._namespaces.append(name)
        must("ip", "-n", name, "link", "set", "lo", "up")
        return Node(name, address, device)

    def link(
        self, upper: Node | None, upper_device: str, lower: Node, lower_device: str = "eth0"
    ) -> None:
        """A veth pair, both ends up: ``upper_device`` in ``upper`` (None: the caller's own
        namespace, where the name must be unique) ↔ ``lower_device`` in ``lower``."""
        self._links += 1
        temporary = f"tv{self._links}-{self.tag.split('-')[1]}"
        where = ["-n", upper.namespace] if upper is not None else []
        must(
            "ip", *where, "link", "add", temporary, "type", "veth",
            "peer", "name", lower_device, "netns", lower.namespace,
        )  # fmt: skip
        must("ip", *where, "link", "set", temporary, "name", upper_device)
        must("ip", *where, "link", "set", upper_device, "up")
        must("ip", "-n", lower.namespace, "link", "set", lower_device, "up")

    def run(
        self,
        node: Node,
        *argv: str,
        check: bool = True,
        stdin: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` run to its end inside ``node`` (bounded by ``timeout``)."""
        done = run(*node.command(*argv), stdin=stdin, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{node.namespace}: {' '.join(argv)}: {done.stderr.strip()}")
        return done

    def spawn(self, node: Node, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """A process (in its own process group) started inside ``node``; it and its children
        are ended at :meth:`tear_down` if they have not ended before."""
        process = subprocess.Popen(node.command(*argv), start_new_session=True, **popen)
        self._processes.append(process)
        return process

    def wrapper(self, node: Node, program: str) -> Path:
        """An executable that runs ``program`` inside ``node`` with its arguments, for tools
        that take a program path (Playwright's ``executable_path="…"`` for Chromium: it talks
        to the browser over pipes, which ``ip netns exec`` keeps)."""
        path = self.workdir / f"in-{node.namespace}-{Path(program).name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {node.namespace} {program} "$@"\n')
        path.chmod(0o755)
        return path

    def leftover(self) -> list[str]:
        """This run's namespaces still present (empty after :meth:`tear_down`)."""
        lines = run("ip", "netns", "list").stdout.splitlines()
        mine = f"{self.prefix}{self.tag}-"
        return [line.split()[0] for line in lines if line.startswith(mine)]

    def tear_down(self) -> None:
        for process in self._processes:
            end_process(process)
        for name in reversed(self._namespaces):
            run("ip", "netns", "del", name)
        self._namespaces.clear()
