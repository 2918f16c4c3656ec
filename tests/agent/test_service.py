"""``kit-agent`` as systemd runs it: a real process, a notify socket bound by the test.

READY=1 comes once the HTTP server answers; WATCHDOG=1 comes every third of WATCHDOG_USEC
while the process is healthy and stops while it is frozen; STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kitsys.listener import first, messages, wait_for

REPO = Path(__file__).resolve().parents[2]
WATCHDOG_USEC = 600_000  # pings every 0.2 s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield sock, path


@pytest.mark.slow
def test_ready_watchdog_and_stopping(
    notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, path = notify_socket
    env = {
        **os.environ,
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("JOURNAL_STREAM", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "demo", "--http", "127.0.0.1:0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = first(sock, 60)
        assert ready.split(b"\n")[0] == b"READY=1", ready
        assert process.stdout is not None
        kiosk = next(line for line in process.stdout if line.startswith("kiosk: "))
        base = kiosk.split()[1].rstrip("/")
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            assert response.status == 200  # READY=1 meant it: the server answers

        pings = messages(sock, 1.5)
        assert set(pings) == {b"WATCHDOG=1"}
        assert 4 <= len(pings) <= 9, pings

        process.send_signal(signal.SIGSTOP)  # a frozen process sends nothing
        messages(sock, 0.1)  # one may have been in flight
        assert messages(sock, 1.0) == []
        process.send_signal(signal.SIGCONT)
        wait_for(sock, b"WATCHDOG=1", 1.0)

        process.send_signal(signal.SIGTERM)
        wait_for(sock, b"STOPPING=1", 5)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
