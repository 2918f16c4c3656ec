"""Faults during a class, with a real linked kit and a real server (docs/recovery.md): a camera
unplugged and plugged back, the server down and back. Pupils are real aiortc peers that never
reconnect; the figures are measured and printed."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from websockets.asyncio.client import connect

from agent.link.credential import enroll, save_credential
from bench.whep_receiver import luma_plane
from kitlink import LINK_PATH, Health, encode
from provisioning import store
from tests.agent.sources.test_camera import write_clip
from tests.agentproc import AgentProcess
from tests.chromium import BROWSER_MARKS, open_pupil_page, until_playing
from tests.conftest import until

from .conftest import AgentMaker, LiveServer, start_server, stop_server
from .test_protocol import REPORT
from .wire import hello_for

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


@dataclass
class Pictures:
    """What the pupil's camera shows, frame by frame: the clip or the placeholder card."""

    kinds: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, track: str, frame: av.VideoFrame, arrived: float) -> None:
        if track != "camera":
            return
        luma = luma_plane(frame)
        half = luma.shape[1] // 2
        left, right = float(luma[:, : half - 8].mean()), float(luma[:, half + 8 :].mean())
        if left > 150 and right < 90:
            kind = "clip"  # white left half, dark right half (write_clip)
        elif 30 < left < 90 and 30 < right < 90:
            kind = "card"  # the grey "camera unavailable" card
        else:
            kind = "other"
        with self.lock:
            self.kinds.append((arrived, kind))

    def first(self, kind: str, after: float) -> float | None:
        with self.lock:
            return next((t for t, k in self.kinds if k == kind and t >= after), None)

    def longest_gap(self, since: float) -> float:
        with self.lock:
            times = [t for t, _ in self.kinds if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def camera_status(status: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in status["sources"] if s["id"] == "camera")


async def test_camera_unplugged_and_plugged_back_while_live(
    live_server: LiveServer, linked_agent: AgentMaker, tmp_path: Path
) -> None:
    clip = tmp_path / "camera.mp4"
    write_clip(clip, 320, 240, frames=8)  # loops every 0.5 s: its absence is noticed then
    agent = await linked_agent(camera={"device": str(clip), "width": 320, "height": 240, "fps": 15})
    kit = live_server.server.fleet.kits[agent.kit_id]
    await agent.start()
    pictures = Pictures()
    token = agent.session.token
    pupil = agent.receiver(f"{agent.base_url}/whep/{token}", on_video=pictures)
    await pupil.connect()
    began = time.monotonic()
    await until(lambda: pictures.first("clip", began) is not None, 10, "the clip")

    clip.rename(tmp_path / "away.mp4")  # unplugged
    unplugged = time.monotonic()
    await until(lambda: pictures.first("card", unplugged) is not None, 5, "the card")
    card_at = pictures.first("card", unplugged)
    assert card_at is not None
    camera = camera_status(await agent.status())
    assert (camera["state"], camera["detail"]) == ("missing", "device not found")
    await until(lambda: kit.problems == ("camera",), 5, "the server told")
    told = time.monotonic()

    (tmp_path / "away.mp4").rename(clip)  # plugged back
    replugged = time.monotonic()
    await until(lambda: pictures.first("clip", replugged) is not None, 5, "the clip again")
    back = pictures.first("clip", replugged)
    assert back is not None
    await until(lambda: kit.problems == (), 5, "the server told it is back")
    cleared = time.monotonic()
    camera = camera_status(await agent.status())
    assert camera["state"] == "ok" and not camera["placeholder"]
    gap = pictures.longest_gap(began)
    print(
        f"\ncamera unplugged: card at the pupil after {card_at - unplugged:.2f} s, server told "
        f"after {told - unplugged:.2f} s; plugged back: pictures after {back - replugged:.2f} s, "
        f"server told after {cleared - replugged:.2f} s; longest gap between frames {gap:.2f} s"
    )
    assert back - replugged <= 3.0
    assert told - unplugged <= 3.0
    assert gap < 1.0  # the card kept the pupil's picture going: nothing froze
    assert pupil.pc.connectionState == "connected" and len(agent.session.viewers) == 1


async def test_server_down_class_goes_on_and_reports_arrive_later(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    kit_id = agent.kit_id
    whep = await agent.start()  # through the server's relay, as pupils from home join
    pupil = agent.receiver(whep)
    await pupil.connect()
    await pupil.wait_frames("camera", 10)
    port = int(live_server.url.rsplit(":", 1)[1])

    await stop_server(live_server.server, live_server.runner)
    down_wall, down = time.time(), time.monotonic()
    await until(lambda: agent.link.state != "connected", 5, "the kit sees the link down")
    frames_before = pupil.tracks["camera"].frames
    await asyncio.sleep(3.0)
    during = pupil.tracks["camera"].frames - frames_before
    queued = len(agent.link.reports.backlog)
    assert queued >= 5, queued  # one report every 0.3 s (FAST settings)

    server, runner, _ = await start_server(live_server.options, port)
    live_server.server, live_server.runner = server, runner
    up_wall, up = time.time(), time.monotonic()
    await until(lambda: server.fleet.backlog_received >= queued, 10, "the queued reports")
    arrived = time.monotonic()
    assert not agent.link.reports.backlog
    await until(lambda: server.writer.queued == 0, 5, "written")
    history = await store.health_history_of(server.engine, kit_id, 200)
    during_outage = [h for h in history if down_wall <= h["received_at"] <= up_wall]
    print(
        f"\nserver down {up - down:.1f} s: pupil got {during / (up - down):.1f} fps meanwhile; "
        f"{queued} reports queued, stored {arrived - up:.2f} s after the server came back, "
        f"{len(during_outage)} in the history at their original times"
    )
    assert during >= 20 * 3.0  # ≥ 20 fps of a 30 fps camera while the server was away
    assert len(during_outage) >= queued - 1
    assert all(h["report"]["session"]["state"] == "live" for h in during_outage)
    kit = server.fleet.kits[kit_id]
    assert kit.online and kit.session == "live"
    assert pupil.pc.connectionState == "connected"


async def test_a_long_outage_keeps_the_newest_reports_and_counts_the_rest(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    agent.link.reports.limit = 3  # an hour's worth, in miniature
    port = int(live_server.url.rsplit(":", 1)[1])
    await stop_server(live_server.server, live_server.runner)
    down_wall = time.time()
    await until(lambda: agent.link.reports.dropped >= 4, 5, "reports dropped")

    server, runner, _ = await start_server(live_server.options, port)
    live_server.server, live_server.runner = server, runner
    await until(lambda: server.fleet.backlog_received >= 3, 10, "the queued reports")
    linked_wall = time.time()
    await asyncio.sleep(0.5)
    fleet = server.fleet
    assert fleet.backlog_received == 3  # the bound
    assert fleet.backlog_dropped >= 4 and agent.link.reports.dropped == 0
    await until(lambda: server.writer.queued == 0, 5, "written")
    history = await store.health_history_of(server.engine, agent.kit_id, 200)
    outage = sorted(h["received_at"] for h in history if down_wall < h["received_at"] < linked_wall)
    assert len(outage) in (3, 4), outage  # the 3 queued (and maybe the first live one)
    # the newest were kept: the first kept one was made after the dropped ones (0.3 s apart)
    assert outage[0] > down_wall + 0.3 * (fleet.backlog_dropped - 1), (outage, down_wall)


@BROWSER_MARKS[0]
@BROWSER_MARKS[1]
async def test_kill_9_with_pupils_joined_through_the_server(
    live_server: LiveServer, browser: Any, tmp_path: Path
) -> None:
    """The relayed case of tests/agent/test_resume.py: the pupil's page comes from the server,
    which must keep routing the same link to the kit once it is back and linked again."""
    await live_server.school("0751234A")
    credential = await enroll(live_server.url, await live_server.code("0751234A"), "Salle 4")
    save_credential(tmp_path / "state", credential)
    kit = AgentProcess.on_loopback(tmp_path)
    fleet = live_server.server.fleet
    await kit.start()
    try:
        await until(lambda: fleet.kits[credential.kit_id].online, 10, "linked")
        status = await kit.api("POST", "/api/session/start")
        join_url = status["session"]["join_url"]
        assert join_url.startswith(live_server.url + "/join/")
        await until(lambda: fleet.kits[credential.kit_id].token is not None, 5, "routed")
        page = await open_pupil_page(browser, join_url)
        before = await until_playing(page, None, 10, 20.0)

        await kit.kill(signal.SIGKILL)
        killed = time.monotonic()
        launched = await kit.start()
        await until_playing(page, before, 5, 15.0)
        back = time.monotonic()
        assert (await kit.api("GET", "/api/status"))["session"]["join_url"] == join_url
    finally:
        await kit.close()
    print(
        f"\nkill -9, pupil through the server: frames again {back - killed:.2f} s after the "
        f"kill, {back - launched:.2f} s after the restart"
    )
    assert back - launched <= 5.0


async def test_queued_reports_are_history_at_their_time_never_the_latest(
    live_server: LiveServer,
) -> None:
    """What the server does with a kit's backlog, frame by frame: each queued report goes into
    the history at its ``sent_at`` (clamped to [now − retention, now]); the latest report and
    the kit's problems stay those of the live reports."""
    await live_server.school("0751234A")
    credential = await enroll(live_server.url, await live_server.code("0751234A"))
    fleet = live_server.server.fleet
    now = time.time()
    live = json.loads(json.dumps(REPORT))
    live["devices"]["document"] = {"state": "ok", "detail": ""}
    frames = [
        Health(seq=0, sent_at=now - 50, report=REPORT, queued=True, dropped=4),
        Health(seq=1, sent_at=now + 3600, report=REPORT, queued=True),  # a clock ahead
        Health(seq=2, sent_at=1.0, report=REPORT, queued=True),  # a clock far behind
        Health(seq=3, sent_at=now, report=live),
    ]
    url = live_server.url.replace("http://", "ws://") + LINK_PATH
    async with connect(url, open_timeout=5, ping_interval=None) as ws:
        await ws.send(hello_for(credential.kit_id, credential.secret))
        assert json.loads(await ws.recv())["type"] == "welcome"
        for frame in frames:
            await ws.send(encode(frame))
        await until(lambda: fleet.reports_received >= 4, 5, "received")
    kit = fleet.kits[credential.kit_id]
    assert kit.problems == () and json.loads(kit.health or "{}")["devices"] == live["devices"]
    assert (fleet.backlog_received, fleet.backlog_dropped) == (3, 4)
    await until(lambda: live_server.server.writer.queued == 0, 5, "written")
    history = await store.health_history_of(live_server.server.engine, credential.kit_id, 10)
    times = sorted(h["received_at"] for h in history)
    keep = live_server.options.fleet.history_keep_s
    assert len(times) == 4
    assert abs(times[0] - (now - keep)) < 5  # clamped to the retention window
    assert abs(times[1] - (now - 50)) < 1e-3  # as the kit made it
    assert all(now - 1 <= t <= time.time() for t in times[2:])  # clamped to now, and the live one
