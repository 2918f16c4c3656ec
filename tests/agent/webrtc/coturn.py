"""A real coturn on loopback for the kit's reachability probes (agent/webrtc/reach.py).

Configured from the template the install script uses (systemd/turnserver.conf.in, through
tests/nat.py's renderer) with its REST secret, on free ports of 127.0.0.1: UDP and TCP on one
port, TLS on another, with a self-signed certificate for 127.0.0.1. Allocations work; relaying
to loopback peers does not (``denied-peer-ip``), which the probes do not need. Skips where
coturn is not installed. For the school's filters (UDP blocked, only TCP 443), see tests/nat.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.nat import render_turn_config

SECRET = b"probe-test-secret-0123456789abcdef"


@dataclass
class LoopbackTurn:
    port: int
    tls_port: int
    certificate: Path
    log: Path

    def credentials(self, subject: str = "kit-1", valid_for_s: int = 3600) -> tuple[str, str]:
        """coturn's REST credentials (``use-auth-secret``), as the server mints them."""
        username = f"{int(time.time()) + valid_for_s}:{subject}"
        digest = hmac.new(SECRET, username.encode(), hashlib.sha1).digest()
        return username, base64.b64encode(digest).decode()

    def urls(self) -> dict[str, str]:
        return {
            "udp": f"turn:127.0.0.1:{self.port}?transport=udp",
            "tcp": f"turn:127.0.0.1:{self.port}?transport=tcp",
            "tls": f"turns:127.0.0.1:{self.tls_port}?transport=tcp",
        }


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (as far as one can tell)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[LoopbackTurn]:
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("coturn is not installed (apt-get install coturn; make setup does)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=turn.test", "-addext",
         "subjectAltName=DNS:turn.test,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    port, tls_port = free_port(), free_port()
    config = tmp_path / "turnserver.conf"
    config.write_text(render_turn_config(SECRET, "turn.test", cert, key, port, tls_port))
    config.chmod(0o600)
    log = tmp_path / "turnserver.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [binary, "-c", str(config), "--pidfile=", "--db", str(tmp_path / "turn.db"),
             "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        wanted = {f"127.0.0.1:{port}", f"127.0.0.1:{tls_port}"}
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"turnserver exited: {log.read_text(errors='replace')}")
            listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
            if all(f" {endpoint} " in listening for endpoint in wanted):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("turnserver not listening within 10 s")
            time.sleep(0.05)
        yield LoopbackTurn(port, tls_port, cert, log)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
