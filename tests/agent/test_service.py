"""``kit-agent`` as systemd runs it: a real process, a notify socket bound by the test.

READY=1 comes once the HTTP server answers; WATCHDOG=1 comes every third of WATCHDOG_USEC
while the process is healthy and stops while it is frozen; STOPPING=1 on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import _journal_session
from agent.session import ClassSession
from kitsys.journal import JournalHandler
from tests.conftest import agent_config
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


@pytest.mark.slow
def test_run_with_a_broken_config_serves_on_the_last_good_one_and_says_so(
    tmp_path: Path,
) -> None:
    """``kit-agent run`` as the unit starts it (``$STATE_DIRECTORY``, no ``--state-dir``)."""
    state = tmp_path / "state"
    good = tmp_path / "agent.toml"
    good.write_text(
        f'state_dir = "{state}"\n[http]\nlisten = "127.0.0.1:0"\n'
        '[webrtc]\nhost_addresses = ["127.0.0.1"]\n[kiosk]\nlanguage = "en"\n',
        encoding="utf-8",
    )
    for config, expected_problems in (
        (good, []),
        (tmp_path / "broken.toml", ["config_unreadable"]),
    ):
        if config.name == "broken.toml":
            config.write_text("[http\nlisten = ", encoding="utf-8")
        env = {**os.environ, "STATE_DIRECTORY": str(state), "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            kiosk = next(line for line in process.stdout if line.startswith("kiosk: "))
            with urllib.request.urlopen(kiosk.split()[1] + "api/status", timeout=5) as response:
                status = json.load(response)
            assert [p["code"] for p in status["problems"]] == expected_problems
            assert status["language"] == "en"  # the last good configuration's
            assert (state / "last-good-config.toml").read_text(encoding="utf-8") == good.read_text(
                encoding="utf-8"
            )
        finally:
            process.terminate()
            assert process.wait(20) == 0


def test_journal_entries_of_a_class_carry_a_session_digest(tmp_path: Path) -> None:
    session = ClassSession(agent_config(), "")
    handler = JournalHandler("kit-agent", str(tmp_path / "unused"))
    record = logging.LogRecord("agent", logging.INFO, __file__, 1, "hello", None, None)
    try:
        session.token = "secret-join-token"
        _journal_session(session)
        entry = handler.entry(record)
        assert b"SESSION=" + hashlib.sha256(b"secret-join-token").hexdigest()[:12].encode() in entry
        assert b"secret-join-token" not in entry
        session.token = None
        _journal_session(session)
        assert b"SESSION=" not in handler.entry(record)
    finally:
        handler.close()


def test_address_in_use_is_a_clear_error_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "agent.cli", "demo", "--http", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
