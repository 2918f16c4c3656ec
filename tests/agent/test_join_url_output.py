"""The join link is a secret (whoever has it joins the class): ``kit-agent run`` writes to the
journal, so it prints only the class's digest; ``demo`` (and ``run --print-join-url``, which
``make demo`` uses) print the link."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.cli import live_line, token_digest
from agent.session import ClassSession
from tests.agentproc import AgentProcess
from tests.conftest import agent_config


async def test_run_prints_the_digest_not_the_join_link(tmp_path: Path) -> None:
    agent = AgentProcess.on_loopback(tmp_path)
    await agent.start()
    try:
        status = await agent.api("POST", "/api/session/start")
        join_url = status["session"]["join_url"]
        token = join_url.rsplit("/", 1)[1]
        assert len(token) >= 16
        deadline = time.monotonic() + 10
        while not any(line.startswith("live:") for line in agent.lines):
            assert time.monotonic() < deadline, agent.lines
            await asyncio.sleep(0.05)
        await agent.api("POST", "/api/session/stop")
    finally:
        await agent.close()
    printed = "\n".join(agent.lines)
    assert f"live: class {token_digest(token)}" in printed
    assert token not in printed and "join:" not in printed
    assert token not in agent.log()  # nor in what goes to the journal through stderr


def test_demo_prints_the_join_link() -> None:
    session = ClassSession(agent_config(), "http://192.0.2.7:8080")
    session.token = "t0k3n-for-the-demo"
    assert live_line(session, True) == "join: http://192.0.2.7:8080/join/t0k3n-for-the-demo"
    assert "t0k3n" not in live_line(session, False)
