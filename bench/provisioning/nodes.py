"""The server side of the benchmark: N ``kit-provisioning serve`` processes on SQLite or on a
real PostgreSQL, behind a real HAProxy configured from the shipped template
(systemd/haproxy-kit.cfg.in), the database seeded with the simulated kits and an admin.
"""

from __future__ import annotations

import hashlib
import resource
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.postgres import free_port
from provisioning.db import open_database
from provisioning.tables import kits, schools
from tests.haproxy import HAPROXY_TEMPLATE, for_a_test, render_haproxy_config

from .sim import kit_credential

HOST = "127.0.0.1"
ADMIN_EMAIL = "bench@admin.example"
ADMIN_PASSWORD = "bench admin password"
OPEN_FILES = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
"""The hard limit of open files every process here inherits (without CAP_SYS_RESOURCE, as in
this machine's container, nobody may raise it: 20,000 here). One link is one descriptor in a
node and two in HAProxy (client and node side): it bounds the kits a node or an HAProxy process
can hold (:data:`LB_CONNECTIONS`)."""
LB_CONNECTIONS = (OPEN_FILES - 1000) // 2
"""HAProxy's ``maxconn`` here (as tests/haproxy.py sets it)."""
SCHOOLS_PER_DEPARTEMENT = 120
"""Kits are spread over schools of 10 classrooms, 120 schools per département: 1,200
classrooms, a département of the programme (docs/sizing.md)."""


def school_of(index: int) -> tuple[str, str]:
    """(school id, département) of simulated kit ``index``: 10 classrooms per school."""
    school = index // 10
    departement = f"{1 + school // SCHOOLS_PER_DEPARTEMENT:02d}"
    return f"B{school:06d}", departement


async def seed(url: str, count: int) -> None:
    """The kits, their schools (10 kits each) and the benchmark's admin, in one transaction."""
    engine = await open_database(url)
    now = time.time()
    rows, school_rows = [], {}
    for index in range(count):
        kit_id, secret = kit_credential(index)
        school, departement = school_of(index)
        school_rows[school] = {"id": school, "name": f"École {school}",
                               "departement": departement, "created_at": now}  # fmt: skip
        rows.append({"id": kit_id, "name": f"Salle {index % 10 + 1}", "school_id": school,
                     "secret_hash": hashlib.sha256(secret.encode()).hexdigest(),
                     "created_at": now})  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(schools.insert(), list(school_rows.values()))
        for start in range(0, len(rows), 5000):
            await conn.execute(kits.insert(), rows[start : start + 5000])
    await engine.dispose()


def cli(db: str, data_dir: Path, *args: str, stdin: str = "") -> str:
    command = [sys.executable, "-m", "provisioning.cli", *args, "--data-dir", str(data_dir)]
    if db:
        command += ["--db", db]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kit-provisioning {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def add_admin(db: str, data_dir: Path) -> None:
    cli(db, data_dir, "user", "add", ADMIN_EMAIL, "--role", "national", stdin=ADMIN_PASSWORD)


@dataclass
class Node:
    index: int
    data_dir: Path
    db: str
    cluster_secret: Path | None
    extra: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None

    @property
    def name(self) -> str:
        return f"bench-n{self.index}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "provisioning.cli", "serve", "--http",
                   f"{HOST}:{self.port}", "--data-dir", str(self.data_dir),
                   "--max-connections", "200000", "--trusted-proxy", "127.0.0.0/8",
                   *self.extra]  # fmt: skip
        if self.db:
            command += ["--db", self.db]
        if self.cluster_secret is not None:
            command += ["--node-id", self.name, "--node-url", self.url,
                        "--cluster-secret-file", str(self.cluster_secret)]  # fmt: skip
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        self.ps = psutil.Process(self.process.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """``kill -9``: no goodbye to the kits, nothing of the write queue flushed."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log_lines(self) -> list[str]:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []


def render_haproxy(port: int, nodes: list[Node], index: int, socket: Path) -> str:
    """The shipped template as install-server.sh fills it without a certificate, made runnable
    here as the tests run it (tests/haproxy.py: logs to stderr, ``maxconn`` within the
    open-files limit), plus one change: HAProxy process ``index`` connects to each node from a
    loopback address of their own (``source 127.0.P.N``), so the kernel's ephemeral ports
    (28,232 here) count per process and node. The template relies on the sysctl it ships
    (ports 10000-65535), which this shared machine does not have."""
    config = for_a_test(
        render_haproxy_config(
            [f"{HOST}:{n.port}" for n in nodes],
            http_bind=f"{HOST}:{port}",
            stats_socket=str(socket),
        )
    )
    for n, node in enumerate(nodes, 1):
        line = f"    server node{n} {HOST}:{node.port}"
        if line + "\n" not in config:
            raise RuntimeError(f"{HAPROXY_TEMPLATE}: no server line for {node.name}")
        config = config.replace(line + "\n", f"{line} source 127.0.{index + 1}.{n}\n")
    return config


@dataclass
class HAProxy:
    """``count`` HAProxy processes on one address (SO_REUSEPORT, HAProxy's default: the kernel
    spreads the connections): one process of the shipped configuration cannot hold more than
    :data:`LB_CONNECTIONS` links under this machine's open-files limit."""

    work: Path
    count: int = 1
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ps(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.processes if p.poll() is None]

    def start(self, nodes: list[Node]) -> None:
        for index in range(self.count):
            config = self.work / f"haproxy{index}.cfg"
            socket = self.work / f"haproxy{index}.sock"
            config.write_text(render_haproxy(self.port, nodes, index, socket))
            subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
            with open(self.work / f"haproxy{index}.log", "ab") as log:
                self.processes.append(
                    subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log)
                )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def new_cluster_secret(work: Path) -> Path:
    path = work / "cluster-secret"
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path
