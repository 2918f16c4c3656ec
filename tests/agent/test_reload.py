"""``systemctl reload kit-agent`` (SIGHUP), sent by install-kit.sh after an upgrade: the agent
restarts on the new version at once when idle, and only once the class has ended when live."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from agent.cli import RestartWhenIdle
from bench.whep_receiver import WhepReceiver
from tests.agentproc import AgentProcess
from tests.conftest import LiveAgent


async def test_asked_during_a_class_waits_for_its_end(agent: LiveAgent) -> None:
    stop = asyncio.Event()
    restart = RestartWhenIdle(agent.session, stop)
    await agent.start()
    restart.ask()
    restart.ask()  # asked twice: still once, still after the class
    await asyncio.sleep(0.1)
    assert not stop.is_set()
    await agent.stop()
    assert stop.is_set()


async def test_asked_while_idle_restarts_at_once(agent: LiveAgent) -> None:
    stop = asyncio.Event()
    RestartWhenIdle(agent.session, stop).ask()
    assert stop.is_set()


async def test_a_class_that_starts_after_is_not_affected(agent: LiveAgent) -> None:
    stop = asyncio.Event()
    RestartWhenIdle(agent.session, stop)  # never asked
    await agent.start()
    await agent.stop()
    assert not stop.is_set()


@pytest.mark.slow
async def test_sighup_to_the_real_process_mid_class(tmp_path: Path) -> None:
    kit = AgentProcess.on_loopback(tmp_path)
    await kit.start()
    pupil: WhepReceiver | None = None
    try:
        status = await kit.api("POST", "/api/session/start")
        pupil = WhepReceiver(status["session"]["whep_url"])
        await pupil.connect()
        await pupil.wait_frames("camera", 10)
        assert kit.proc is not None
        kit.proc.send_signal(signal.SIGHUP)
        frames = pupil.tracks["camera"].frames
        await pupil.wait_frames("camera", frames + 30)  # a second later, the class goes on
        assert kit.proc.returncode is None
        assert (await kit.api("GET", "/api/status"))["session"]["state"] == "live"

        await kit.api("POST", "/api/session/stop")
        assert await asyncio.wait_for(kit.proc.wait(), 20) == 0  # systemd starts the new one
        assert "restarting when it ends" in kit.log() and "restarting as asked" in kit.log()

        await kit.start()  # idle: a reload restarts at once
        assert await kit.kill(signal.SIGHUP) == 0
    finally:
        if pupil is not None:
            await pupil.close(delete=False)
        await kit.close()
