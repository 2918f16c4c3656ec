"""The kiosk's control API: mute, hands, previews, QR code, and its refusals."""

from __future__ import annotations

import cv2
import numpy as np

from tests.conftest import LiveAgent


async def post(agent: LiveAgent, path: str, body: bytes = b"{}") -> tuple[int, dict[str, object]]:
    async with agent.http.post(
        agent.base_url + path, data=body, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, await response.json()


async def get(agent: LiveAgent, path: str) -> tuple[int, bytes, str]:
    async with agent.http.get(agent.base_url + path) as response:
        return response.status, await response.read(), response.content_type


async def test_controls_need_a_live_class(agent: LiveAgent) -> None:
    assert (await post(agent, "/api/session/mute", b'{"muted": true}'))[0] == 409
    assert (await get(agent, "/api/preview/camera"))[0] == 409
    assert (await get(agent, "/api/qr.svg"))[0] == 404
    assert (await post(agent, "/api/pupils/nobody/lower-hand"))[0] == 404
    assert (await post(agent, "/api/hands/lower-all"))[0] == 200


async def test_bad_bodies_are_refused(agent: LiveAgent) -> None:
    await agent.start()
    for body in (b"not json", b"[]", b'{"muted": "yes"}', b"{}", b'{"muted": 1}', b"\xff"):
        status, answer = await post(agent, "/api/session/mute", body)
        assert status == 400 and "error" in answer, body
    status, answer = await post(agent, "/api/session/mute", b"{" + b" " * 5000 + b"}")
    assert status == 413
    assert agent.session.muted is False


async def test_mute_gives_pupils_silence(agent: LiveAgent) -> None:
    await agent.start()
    status, answer = await post(agent, "/api/session/mute", b'{"muted": true}')
    assert status == 200 and answer["session"]["muted"] is True  # type: ignore[index]
    pipeline = agent.session.pipeline
    assert pipeline is not None and pipeline.muted
    sent = []
    pipeline._audio_offer = sent.append
    from agent.sources.base import RawAudioBlock

    loud = RawAudioBlock(np.full(960, 8000, np.int16), 0.0)
    pipeline._audio_in(loud)
    assert not sent[-1].samples.any()  # (the live microphone may add blocks of its own)
    await post(agent, "/api/session/mute", b'{"muted": false}')
    pipeline._audio_in(loud)
    assert sent[-1] is loud


async def test_previews_and_qr_code(agent: LiveAgent) -> None:
    await agent.start()
    for source, size in (("camera", (224, 400)), ("document", (300, 400))):
        status, body, content_type = await get(agent, f"/api/preview/{source}")
        assert status == 200 and content_type == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[:2] == size
    assert (await get(agent, "/api/preview/microphone"))[0] == 404
    status, body, content_type = await get(agent, "/api/qr.svg")
    assert status == 200 and content_type == "image/svg+xml"
    assert body.startswith(b"<svg") and b"<path" in body  # decoded in the browser test


async def test_kiosk_assets_are_served_and_guarded(agent: LiveAgent) -> None:
    for path, kind in (("/", "text/html"), ("/kiosk/kiosk.js", "text/javascript")):
        status, _, content_type = await get(agent, path)
        assert (status, content_type) == (200, kind)
    for path in ("/kiosk/..%2Fkiosk.html", "/kiosk/nothing.js", "/kiosk/__init__.py"):
        assert (await get(agent, path))[0] == 404, path
