"""A throw-away PostgreSQL server in a temporary directory, for the tests and the benchmarks.

PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` user (Debian's
``postgresql`` package creates it; ``make setup`` installs the package).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
TEST_SETTINGS: Mapping[str, str] = {"fsync": "off"}
"""The tests' server: nothing of it must survive a crash, so nothing is flushed to disk."""


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make setup installs it)")
    return found[-1]


def as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Postgres:
    base: Path
    port: int
    host: str = LOOPBACK

    @property
    def url(self) -> str:
        """``postgresql://postgres@HOST:PORT`` (no database: append ``/NAME``)."""
        return f"postgresql://postgres@{self.host}:{self.port}"

    @property
    def data(self) -> Path:
        return self.base / "data"

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer…), for CPU and RSS."""
        try:
            first = self.data.joinpath("postmaster.pid").read_text().split()[0]
        except (OSError, IndexError):
            return []
        children = Path(f"/proc/{first}/task/{first}/children")
        try:
            return [int(first), *(int(p) for p in children.read_text().split())]
        except OSError:
            return [int(first)]


@contextmanager
def postgres(settings: Mapping[str, str] = TEST_SETTINGS) -> Iterator[Postgres]:
    """Start a server on loopback (``-c NAME=VALUE`` for each of ``settings``), stop it and
    delete its files on exit."""
    base = Path(tempfile.mkdtemp(prefix="kit-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = Postgres(base, free_port())
    try:
        subprocess.run(
            as_postgres(pg_bin("initdb"), "-D", str(server.data), "-A", "trust", "-U",
                        "postgres", "--no-sync", "-E", "UTF8"),
            check=True, capture_output=True,
        )  # fmt: skip
        options = f"-c listen_addresses={server.host} -p {server.port} -k {base}"
        options += "".join(f" -c {name}={value}" for name, value in settings.items())
        subprocess.run(
            as_postgres(pg_bin("pg_ctl"), "-D", str(server.data), "-o", options, "-l",
                        str(base / "log"), "-w", "start"),
            check=True, capture_output=True,
        )  # fmt: skip
        yield server
    finally:
        subprocess.run(
            as_postgres(pg_bin("pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)
