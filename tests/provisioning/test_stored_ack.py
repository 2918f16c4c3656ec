"""Reports acknowledged once stored (docs/protocol.md, "Reports stored"): a server that loses its
write queue (a node killed) loses no report, and a report sent twice is stored once. A real
agent linked to a real server; the server's loss is made exactly where it hurts: reports taken
from the link, not yet committed."""

from __future__ import annotations

import asyncio
import collections

import pytest

from provisioning import store
from provisioning.writer import Writer
from tests.conftest import until

from .conftest import AgentMaker, LiveServer, start_server, stop_server

pytestmark = [pytest.mark.slow]


def drop_queue(writer: Writer) -> None:
    """What a node killed with ``kill -9`` loses: everything taken but not committed."""
    writer.latest.clear()
    writer.history.clear()
    writer.acks.clear()
    writer.sent_at.clear()
    writer.received_at.clear()


async def restart(live_server: LiveServer) -> None:
    port = int(live_server.url.rsplit(":", 1)[1])
    await stop_server(live_server.server, live_server.runner)
    server, runner, _ = await start_server(live_server.options, port)
    live_server.server, live_server.runner = server, runner


async def sent_ats(live_server: LiveServer, kit_id: str) -> list[float]:
    history = await store.health_history_of(live_server.server.engine, kit_id, 500)
    return [h["sent_at"] for h in history]


async def test_reports_a_dying_server_never_committed_arrive_through_the_next(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    reports = agent.link.reports
    await until(lambda: reports.server_acknowledges, 5, "a first acknowledgement")
    writer = live_server.server.writer

    async def never_commit() -> None:
        await asyncio.sleep(0)

    writer.flush = never_commit  # type: ignore[method-assign]
    await until(lambda: len(reports.unacknowledged) >= 4, 5, "reports waiting")
    lost = [h.sent_at for h in reports.unacknowledged]
    drop_queue(writer)
    await restart(live_server)

    await until(lambda: not reports.backlog and reports.sent_again >= len(lost), 10, "resent")
    server = live_server.server
    await until(lambda: server.writer.queued == 0 and not server.writer.acks, 5, "written")
    stored = await sent_ats(live_server, agent.kit_id)
    missing = [at for at in lost if at not in stored]
    print(f"\n{len(lost)} reports lost with the server's queue, sent again: {missing=}")
    assert not missing
    assert len(stored) == len(set(stored))
    await until(lambda: len(reports.unacknowledged) <= 2, 5, "acknowledged again")


async def test_a_report_stored_but_never_acknowledged_is_stored_once(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    reports = agent.link.reports
    await until(lambda: reports.server_acknowledges, 5, "a first acknowledgement")
    writer = live_server.server.writer
    writer.on_stored = None  # committed, but the acknowledgements are lost with the node
    await until(lambda: len(reports.unacknowledged) >= 4, 5, "reports waiting")
    unacknowledged = [h.sent_at for h in reports.unacknowledged]
    await until(lambda: writer.queued == 0, 5, "written")
    before = await sent_ats(live_server, agent.kit_id)
    assert set(unacknowledged) - {max(unacknowledged)} <= set(before)  # all in (bar a last one)
    await restart(live_server)

    await until(lambda: reports.sent_again >= len(unacknowledged), 10, "sent again")
    server = live_server.server
    await until(lambda: server.fleet.backlog_received >= len(unacknowledged), 10, "received")
    await until(lambda: server.writer.queued == 0, 5, "written")
    stored = await sent_ats(live_server, agent.kit_id)
    twice = [at for at, n in collections.Counter(stored).items() if n > 1]
    print(f"\n{len(unacknowledged)} stored reports sent again: stored twice {twice}")
    assert not twice
    assert set(unacknowledged) <= set(stored)
