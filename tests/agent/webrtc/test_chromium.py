"""The pupil page (GET /join/{token}) in real headless Chromium through WHEP: tracks and codecs.

See tests/chromium.py for how Chromium is kept on loopback.
"""

from __future__ import annotations

from typing import Any

from tests.chromium import BROWSER_MARKS, open_pupil_page, stats_until
from tests.conftest import LiveAgent, until

pytestmark = BROWSER_MARKS

MIDS = {"0": "camera", "1": "document", "2": "microphone"}
"""The page's offer has three m-lines; the answer maps them in order (docs/whep.md). Browsers
give receiver tracks ids of their own, so the mid is how a page tells them apart."""


def videos(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {MIDS[mid]: t for mid, t in stats["tracks"].items() if t["kind"] == "video"}


async def test_pupil_page_plays_three_tracks(agent: LiveAgent, browser: Any) -> None:
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    deleted: list[str] = []
    remove_viewer = agent.session.remove_viewer

    async def record_delete(viewer_id: str) -> None:
        deleted.append(viewer_id)
        await remove_viewer(viewer_id)

    agent.session.remove_viewer = record_delete  # type: ignore[method-assign]
    page = await open_pupil_page(browser, join_url)

    first = await stats_until(
        page,
        lambda s: (
            s["state"] == "connected"
            and len(s["tracks"]) == 3
            and all(t["frames"] > 30 for t in videos(s).values())
        ),
    )
    assert first["status"] == "En direct"
    assert first["pair"] == {"local": "127.0.0.1", "remote": "127.0.0.1", "protocol": "udp"}
    assert {mid: t["kind"] for mid, t in first["tracks"].items()} == {
        "0": "video",
        "1": "video",
        "2": "audio",
    }
    for track in videos(first).values():
        assert track["codec"] == "video/H264"
    # Each <video> shows its own source at its own size, and plays.
    assert first["videos"]["camera"] == {"width": 800, "height": 450, "paused": False, "mid": "0"}
    assert first["videos"]["document"] == {
        "width": 800,
        "height": 600,
        "paused": False,
        "mid": "1",
    }
    assert first["audioPaused"] is False

    # Frames keep being decoded on both videos, and the audio carries sound.
    second = await stats_until(
        page,
        lambda s: (
            all(
                s_track["frames"] >= videos(first)[name]["frames"] + 15
                for name, s_track in videos(s).items()
            )
            and any(t["kind"] == "audio" and t["energy"] > 0 for t in s["tracks"].values())
        ),
        timeout=10,
    )
    (audio,) = [t for t in second["tracks"].values() if t["kind"] == "audio"]
    assert audio["codec"] == "audio/opus" and audio["packets"] > 50 and audio["energy"] > 0
    status = await agent.status()
    assert status["session"]["viewers"] == 1
    (viewer,) = status["viewers"]
    assert viewer["state"] == "connected"
    assert {name: t["codec"] for name, t in viewer["tracks"].items()} == {
        "camera": "h264",
        "document": "h264",
        "microphone": "opus",
    }

    # Leaving the page ends the WHEP session (DELETE on pagehide).
    await page.goto("about:blank")
    await until(lambda: not agent.session.viewers, 10, "the viewer left")
    await until(lambda: deleted == [viewer["id"]], 5, "the page sent DELETE")
    await page.context.close()
