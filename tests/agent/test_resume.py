"""The live class survives the agent: state file, resume, bad files, and kill -9 of the real
process with a real Chromium pupil that must find its class again on its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.link.client import session_info
from agent.problems import Problems
from agent.resume import STATE_FILE, SavedSession, SessionPersistence, read_state
from agent.session import SessionState, _digest
from kitlink import SessionInfo, token_digest
from tests.agentproc import AgentProcess
from tests.chromium import BROWSER_MARKS, open_pupil_page, until_playing
from tests.conftest import LiveAgent, agent_config, run_agent, until


def persisted(live: LiveAgent, state_dir: Path, **kwargs: Any) -> SessionPersistence:
    return SessionPersistence.attach(live.session, str(state_dir), **kwargs)


async def test_start_and_stop_are_saved_atomically(agent: LiveAgent, tmp_path: Path) -> None:
    persisted(agent, tmp_path)
    await agent.start()
    saved = read_state(tmp_path / STATE_FILE)
    assert saved is not None and saved.state == "live"
    assert saved.token == agent.session.token and saved.started_at == agent.session.started_at
    assert abs(saved.alive_at - time.time()) < 5
    assert os.stat(tmp_path / STATE_FILE).st_mode & 0o777 == 0o600  # mkstemp: owner only
    token = agent.session.token
    assert token is not None

    async with agent.http.post(
        agent.base_url + "/api/session/mute", json={"muted": True}
    ) as response:
        assert response.status == 200
    saved = read_state(tmp_path / STATE_FILE)
    assert saved is not None and saved.muted

    await agent.stop()
    saved = read_state(tmp_path / STATE_FILE)
    assert saved is not None and saved.state == "idle" and saved.token is None
    assert saved.expired == [_digest(token).hex()]
    assert os.listdir(tmp_path) == [STATE_FILE]  # no temporary file left


async def test_a_restarted_agent_resumes_with_the_same_link(tmp_path: Path) -> None:
    async for first in run_agent(agent_config()):
        persisted(first, tmp_path)
        await first.start()
        async with first.http.post(first.base_url + "/api/session/mute", json={"muted": True}):
            pass
        token, started_at = first.session.token, first.session.started_at
        first.session.persist = None  # the "crash": the end of this agent is not saved

    async for second in run_agent(agent_config()):
        resumer = persisted(second, tmp_path)
        assert await resumer.resume(resumer.load())
        assert second.session.state == SessionState.LIVE
        assert second.session.token == token and second.session.started_at == started_at
        assert second.session.muted
        pupil = second.receiver(second.base_url + f"/whep/{token}")
        await pupil.connect()
        await pupil.wait_frames("camera", 10)


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b'{"version": 1, "state": "live"',  # cut short
        b"[]",
        b'{"version": 7, "state": "idle", "alive_at": 1, "muted": false, "expired": []}',
        b'{"version": 1, "state": "live", "token": "a b", "started_at": 1, "alive_at": 1,'
        b' "muted": false, "expired": []}',
        b'{"version": 1, "state": "idle", "alive_at": 1, "muted": false, "expired": ["zz"]}',
    ],
)
async def test_a_corrupt_state_file_is_logged_and_ignored(
    agent: LiveAgent, tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    persistence = persisted(agent, tmp_path)
    with caplog.at_level(logging.ERROR, "agent.resume"):
        assert not await persistence.resume(persistence.load())
    assert "ignoring" in caplog.text and agent.session.state == SessionState.IDLE
    await agent.start()  # the kit works, and the next write replaces the bad file
    saved = read_state(tmp_path / STATE_FILE)
    assert saved is not None and saved.token == agent.session.token


async def test_a_state_file_that_cannot_be_read_is_ignored(
    agent: LiveAgent, tmp_path: Path
) -> None:
    (tmp_path / STATE_FILE).mkdir()  # reading it fails with an OSError
    persistence = persisted(agent, tmp_path)
    assert persistence.load() is None


async def test_an_old_or_stopped_class_is_not_resumed(agent: LiveAgent, tmp_path: Path) -> None:
    now = [1_000_000.0]
    persistence = persisted(agent, tmp_path, clock=lambda: now[0], resume_window_s=300)
    old = SavedSession("live", "T" * 32, 999_000.0, False, 999_600.0, [_digest("E" * 32).hex()])
    now[0] = 999_600.0 + 301  # the kit was off for more than the window
    assert not await persistence.resume(old)
    assert agent.session.state == SessionState.IDLE
    saved = read_state(tmp_path / STATE_FILE)
    assert saved is not None and saved.state == "idle"  # not tried again at the next start
    # the links of ended classes still say "ended", not "not live"
    async with agent.http.post(
        agent.base_url + "/whep/" + "E" * 32,
        data=b"v=0",
        headers={"Content-Type": "application/sdp"},
    ) as response:
        assert response.status == 404 and response.headers["X-Class-State"] == "ended"
    stopped = SavedSession("idle", None, None, False, now[0], [])
    assert not await persistence.resume(stopped)
    assert agent.session.state == SessionState.IDLE


async def test_a_resuming_class_is_live_for_the_server_link_at_once(
    agent: LiveAgent, tmp_path: Path
) -> None:
    """The link's hello may leave while the devices open: it must carry the resumed token, or
    the server would call the pupils' links expired."""
    session = agent.session
    seen: list[tuple[SessionState, SessionInfo]] = []
    make_pipeline = session._pipeline_factory

    def opening_devices(*args: Any) -> Any:  # what the link would say at that moment
        seen.append((session.state, session_info(session)))
        return make_pipeline(*args)

    session._pipeline_factory = opening_devices
    persistence = persisted(agent, tmp_path)
    now = time.time()
    assert await persistence.resume(SavedSession("live", "R" * 32, now - 60, False, now - 2, []))
    digest = token_digest("R" * 32)
    assert seen == [(SessionState.STARTING, SessionInfo(state="live", token_sha256=digest))]
    assert session.started_at == now - 60


async def test_a_failed_write_is_logged_and_the_class_goes_on(
    agent: LiveAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    persisted(agent, blocked)  # mkdir/mkstemp inside a file fail
    with caplog.at_level(logging.ERROR, "agent.resume"):
        await agent.start()
    assert agent.session.state == SessionState.LIVE
    assert "cannot save the session state" in caplog.text


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A real 64 KiB file system (tmpfs) for the state directory: filling it gives ENOSPC."""
    mountpoint = tmp_path / "state"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_a_full_disk_is_shown_and_the_class_goes_on(
    agent: LiveAgent, tiny_disk: Path
) -> None:
    problems = Problems()
    persistence = persisted(agent, tiny_disk, problems=problems)
    filler = tiny_disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        out.write(b"\0" * 128 * 1024)  # more than the file system holds
    await agent.start()
    assert agent.session.state == SessionState.LIVE
    assert "disk_full" in problems
    assert not [n for n in os.listdir(tiny_disk) if n.startswith(".session")]  # no debris
    filler.unlink()  # the admin frees space: the next save works and the warning goes
    await persistence.save()
    assert "disk_full" not in problems
    assert read_state(tiny_disk / STATE_FILE).state == "live"  # type: ignore[union-attr]


async def test_the_heartbeat_keeps_alive_at_fresh_while_live(
    agent: LiveAgent, tmp_path: Path
) -> None:
    now = [1_000.0]
    persistence = persisted(agent, tmp_path, clock=lambda: now[0], heartbeat_s=0.05)
    persistence.start_heartbeat()
    try:
        await agent.start()
        now[0] = 2_000.0
        await until(lambda: _alive_at(tmp_path) == 2_000.0, 2, "a heartbeat write")
        await agent.stop()
        now[0] = 3_000.0
        await asyncio.sleep(0.2)
        assert _alive_at(tmp_path) == 2_000.0  # idle: no more writes
    finally:
        await persistence.close()


def _alive_at(state_dir: Path) -> float | None:
    saved = read_state(state_dir / STATE_FILE)
    return saved.alive_at if saved else None


async def test_without_state_dir_nothing_is_written(agent: LiveAgent, tmp_path: Path) -> None:
    persistence = SessionPersistence.attach(agent.session, "")
    assert not persistence.enabled and agent.session.persist is None
    await agent.start()
    assert persistence.load() is None and not os.listdir(tmp_path)


@pytest.mark.slow
@BROWSER_MARKS[0]
@BROWSER_MARKS[1]
async def test_kill_9_mid_class_pupils_are_back_within_5_s(browser: Any, tmp_path: Path) -> None:
    kit = AgentProcess.on_loopback(tmp_path)
    await kit.start()
    try:
        status = await kit.api("POST", "/api/session/start")
        join_url = status["session"]["join_url"]
        assert join_url.startswith(kit.base_url + "/join/")
        page = await open_pupil_page(browser, join_url)
        before = await until_playing(page, None, 10, 20.0)

        await kit.kill(signal.SIGKILL)
        killed = time.monotonic()
        launched = await kit.start()  # what systemd's Restart= does
        ready = time.monotonic()
        status = await kit.api("GET", "/api/status")
        assert status["session"]["state"] == "live" and status["session"]["join_url"] == join_url
        await until_playing(page, before, 5, 15.0)
        back = time.monotonic()
    finally:
        await kit.close()
    assert "resuming the class" in kit.log()
    print(
        f"\nkill -9 → pupil frames again: {back - killed:.2f} s after the kill, "
        f"{back - launched:.2f} s after the restart (agent up in {ready - launched:.2f} s)"
    )
    assert back - launched <= 5.0
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert saved["state"] == "idle"  # SIGTERM at the end: a clean stop is saved as such
