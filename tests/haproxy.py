"""Debian's HAProxy for the tests: the configuration ``install-server.sh --lb-node`` writes
(systemd/haproxy-kit.cfg.in, filled in the same way as the script's sed does), and a real
``haproxy`` process run from it on loopback, with its runtime API (``show stat``) read over the
stats socket."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HAPROXY_TEMPLATE = REPO / "systemd/haproxy-kit.cfg.in"
TLS_MARK = re.compile(r" *# tls$")


def render_haproxy_config(
    nodes: Sequence[str],
    cert: str | None = None,
    http_bind: str = ":80",
    https_bind: str = ":443",
    stats_socket: str = "/run/haproxy/admin.sock",
) -> str:
    """systemd/haproxy-kit.cfg.in for ``nodes`` (HOST:PORT): lines marked ``# tls`` kept (the
    mark removed) with a certificate, dropped without; ``@SERVERS@`` becomes one ``server``
    line per node, ``node1``, ``node2``… in order."""
    values = {
        "@HTTP_BIND@": http_bind,
        "@HTTPS_BIND@": https_bind,
        "@CERT@": cert or "",
        "@STATS_SOCKET@": stats_socket,
    }
    out = []
    for line in HAPROXY_TEMPLATE.read_text(encoding="utf-8").splitlines():
        if TLS_MARK.search(line):
            if cert is None:
                continue
            line = TLS_MARK.sub("", line)
        if line == "@SERVERS@":
            out += [f"    server node{n} {node}" for n, node in enumerate(nodes, 1)]
            continue
        out.append(re.sub("|".join(values), lambda match: values[match.group(0)], line))
    return "\n".join(out) + "\n"


def for_a_test(config: str) -> str:
    """The production configuration, run by a test: logs to stderr instead of syslog; without
    root, no chroot and no change of user; ``maxconn`` within this machine's open-files limit
    (HAProxy refuses to start otherwise: two sockets per connection)."""
    fits = (resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 1000) // 2
    lines = []
    for line in config.splitlines():
        words = line.split()
        if words[:2] == ["log", "/dev/log"]:
            line = "    log stderr format raw local0 notice"
        elif os.geteuid() != 0 and words[:1] in (["chroot"], ["user"], ["group"]):
            continue
        elif words[:1] == ["maxconn"] and int(words[1]) > fits:
            line = f"    maxconn {fits}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError("haproxy is not installed (make setup installs it)")
    return found


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """``haproxy -c``: the configuration as HAProxy parses it (certificates are loaded)."""
    return subprocess.run(
        [haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )


def make_haproxy_cert(directory: Path, name: str = "fleet.example.fr") -> Path:
    """A self-signed certificate for ``name`` (and 127.0.0.1) and its key in one PEM file, as
    HAProxy's ``crt`` takes them."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", f"/CN={name}", "-addext",
         f"subjectAltName=DNS:{name},IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    combined = directory / "fleet.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    return combined


@dataclass
class RunningHAProxy:
    process: subprocess.Popen[bytes]
    stats_socket: Path
    log: Path

    def command(self, line: str) -> str:
        """One command of HAProxy's runtime API over the stats socket."""
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(self.stats_socket))
            client.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := client.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the ``nodes`` backend: per server, its status (UP, DOWN…) and
        ``scur``, its open connections (a kit's link is one for as long as it lasts)."""
        text = self.command("show stat").lstrip("# ")
        rows = csv.DictReader(text.splitlines())
        return {
            row["svname"]: row
            for row in rows
            if row["pxname"] == "nodes" and row["svname"] not in ("FRONTEND", "BACKEND")
        }


@contextlib.contextmanager
def running_haproxy(config: str, workdir: Path, timeout: float = 10.0) -> Iterator[RunningHAProxy]:
    """HAProxy in the foreground (``-db``, master-worker like Debian's unit), from ``config``
    with its stats socket in ``workdir``; stopped (SIGTERM, then SIGKILL) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    stats = workdir / "admin.sock"
    path = workdir / "haproxy.cfg"
    path.write_text(config.replace("/run/haproxy/admin.sock", str(stats)), encoding="utf-8")
    log = workdir / "haproxy.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [haproxy_binary(), "-W", "-db", "-f", str(path)], stdout=output, stderr=output
        )
    running = RunningHAProxy(process, stats, log)
    try:
        deadline = time.monotonic() + timeout
        while not stats.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("haproxy did not start: " + log.read_text(errors="replace"))
            time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
