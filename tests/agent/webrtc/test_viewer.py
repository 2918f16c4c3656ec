"""How a viewer maps an offer's m-lines to the classroom tracks (through the real server).

Chrome orders m-lines by creation: a page that opens its data channel (hand raising) before
adding its transceivers offers ``application, video, video, audio``. Each track must still get
the codec of its own m-line.
"""

from __future__ import annotations

import pytest

from tests.conftest import LiveAgent, chrome_offer_on_loopback, stored_sdp

FINGERPRINT = ":".join(["AB"] * 32)


def chrome_sections() -> tuple[str, list[str]]:
    """The stored Chrome offer (candidate on loopback) as (session part, [m-sections]), LF."""
    text = chrome_offer_on_loopback().decode().replace("\r\n", "\n")
    head, *sections = text.split("m=")
    return head, ["m=" + s for s in sections]


def data_channel_section(mid: str) -> str:
    return (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n"
        "c=IN IP4 0.0.0.0\n"
        "a=ice-ufrag:P0cF\n"
        "a=ice-pwd:FWBln+NLf8+2a3fgkryn5CX/\n"
        "a=ice-options:trickle\n"
        f"a=fingerprint:sha-256 {FINGERPRINT}\n"
        "a=setup:actpass\n"
        f"a=mid:{mid}\n"
        "a=sctp-port:5000\n"
        "a=max-message-size:262144\n"
    )


def offer(head: str, sections: list[str], mids: list[str]) -> bytes:
    head = head.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE " + " ".join(mids))
    return (head + "".join(sections)).replace("\n", "\r\n").encode()


async def negotiate(agent: LiveAgent, body: bytes) -> tuple[str, dict[str, str]]:
    """POST the offer; returns the answer and the viewer's codec per track (from /api/status)."""
    whep = agent.session.whep_url or await agent.start()
    async with agent.http.post(
        whep, data=body, headers={"Content-Type": "application/sdp"}
    ) as response:
        answer = await response.text()
        assert response.status == 201, answer
        viewer_id = response.headers["Location"].rsplit("/", 1)[1]
    viewers = {v["id"]: v for v in (await agent.status())["viewers"]}
    return answer, {name: t["codec"] for name, t in viewers[viewer_id]["tracks"].items()}


def answer_lines(answer: str, prefix: str) -> list[str]:
    return [line for line in answer.splitlines() if line.startswith(prefix)]


async def test_data_channel_first(agent: LiveAgent) -> None:
    head, (camera, document, audio) = chrome_sections()
    body = offer(head, [data_channel_section("3"), camera, document, audio], ["3", "0", "1", "2"])
    answer, codecs = await negotiate(agent, body)
    assert [line.split()[0] for line in answer_lines(answer, "m=")] == [
        "m=application",
        "m=video",
        "m=video",
        "m=audio",
    ]
    assert answer_lines(answer, "a=msid:") == [
        "a=msid:classroom camera",
        "a=msid:classroom document",
        "a=msid:classroom-sound microphone",
    ]
    assert codecs == {"camera": "h264", "document": "h264", "microphone": "opus"}


async def test_data_channel_between_the_videos(agent: LiveAgent) -> None:
    head, (camera, document, audio) = chrome_sections()
    body = offer(head, [camera, data_channel_section("3"), document, audio], ["0", "3", "1", "2"])
    _, codecs = await negotiate(agent, body)
    assert codecs == {"camera": "h264", "document": "h264", "microphone": "opus"}


async def test_audio_first(agent: LiveAgent) -> None:
    head, (camera, document, audio) = chrome_sections()
    answer, codecs = await negotiate(agent, offer(head, [audio, camera, document], ["2", "0", "1"]))
    assert answer_lines(answer, "a=msid:") == [
        "a=msid:classroom-sound microphone",
        "a=msid:classroom camera",
        "a=msid:classroom document",
    ]
    assert codecs == {"camera": "h264", "document": "h264", "microphone": "opus"}


async def test_one_video_gets_the_room_camera_alone(agent: LiveAgent) -> None:
    head, (camera, _, audio) = chrome_sections()
    answer, codecs = await negotiate(agent, offer(head, [camera, audio], ["0", "2"]))
    assert answer_lines(answer, "a=msid:") == [
        "a=msid:classroom camera",
        "a=msid:classroom-sound microphone",
    ]
    assert codecs == {"camera": "h264", "microphone": "opus"}


async def test_extra_video_is_answered_inactive(agent: LiveAgent) -> None:
    head, (camera, document, audio) = chrome_sections()
    extra = document.replace("a=mid:1\n", "a=mid:3\n")
    answer, codecs = await negotiate(
        agent, offer(head, [camera, document, extra, audio], ["0", "1", "3", "2"])
    )
    directions = [line for line in answer.splitlines() if line in ("a=sendonly", "a=inactive")]
    assert directions == ["a=sendonly", "a=sendonly", "a=inactive", "a=sendonly"]
    assert codecs == {"camera": "h264", "document": "h264", "microphone": "opus"}


async def test_vp8_only_offer(agent: LiveAgent) -> None:
    head, sections = chrome_sections()
    vp8_only = [
        "".join(
            line
            for line in section.splitlines(keepends=True)
            if "H264" not in line and "packetization-mode" not in line
        )
        for section in sections
    ]
    _, codecs = await negotiate(agent, offer(head, vp8_only, ["0", "1", "2"]))
    assert codecs == {"camera": "vp8", "document": "vp8", "microphone": "opus"}


ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


@pytest.mark.parametrize("name", ["chrome-offer.sdp", "firefox-ip-offer.sdp"])
async def test_the_answer_asks_for_remb_with_abs_send_time(agent: LiveAgent, name: str) -> None:
    """The pupil's estimate needs what browsers send: ``goog-remb`` on every video codec of the
    answer, and the ``abs-send-time`` header extension (stamped by rtpsend) it is computed from
    (docs/adaptation.md). Both Chromium and Firefox offer them."""
    lines = stored_sdp(name).splitlines(keepends=True)
    body = "".join(line for line in lines if not line.startswith("a=candidate")).encode()
    answer, codecs = await negotiate(agent, body)
    assert {codecs["camera"], codecs["document"]} <= {"h264", "vp8"}
    videos = [s for s in answer.split("m=")[1:] if s.startswith("video") and "a=rtpmap" in s]
    assert len(videos) == 2
    for section in videos:
        assert any(line.endswith(ABS_SEND_TIME) for line in section.splitlines())
        media = [
            line.split()[0].split(":")[1]
            for line in section.splitlines()
            if line.startswith("a=rtpmap:") and "rtx/" not in line
        ]
        remb = {
            line.split()[0].split(":")[1]
            for line in answer_lines(section, "a=rtcp-fb:")
            if line.endswith("goog-remb")
        }
        assert media and set(media) <= remb
