"""``kit-provisioning serve`` as systemd runs it: READY=1 once /healthz answers, WATCHDOG=1
while it does, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.kitsys.listener import first, messages, wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / "notify"),
            "WATCHDOG_USEC": "600000",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("JOURNAL_STREAM", None)
        command = [sys.executable, "-m", "provisioning.cli", "serve", "--http", "127.0.0.1:0"]
        process = subprocess.Popen(
            [*command, "--data-dir", str(tmp_path / "data")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert first(sock, 60).split(b"\n")[0] == b"READY=1"
            assert process.stdout is not None
            line = process.stdout.readline()
            base = line.split()[1].removesuffix("/admin/")
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                assert response.status == 200
            pings = messages(sock, 1.5)
            assert set(pings) == {b"WATCHDOG=1"} and len(pings) >= 4, pings
            process.send_signal(signal.SIGTERM)
            wait_for(sock, b"STOPPING=1", 5)
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
