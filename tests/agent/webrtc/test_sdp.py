"""agent/webrtc/sdp.py, bytes in, verdict out: what a WHEP POST body becomes before aiortc.

The fixtures in ``data/`` are real: ``chrome-offer.sdp`` is what headless Chromium 156 offers
for the pupil page's transceivers (video, video, audio, recvonly; host candidate hidden behind
mDNS as Chrome does by default), ``agent-answer-*.sdp`` are the agent's answers to it and to a
VP8-only aiortc offer.
"""

from __future__ import annotations

import pytest

from agent.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from agent.webrtc.sdp import MAX_OFFER_BYTES, Offer, negotiated_codecs, parse_offer
from tests.conftest import stored_sdp as sdp_file


@pytest.fixture(scope="module")
def chrome_offer() -> str:
    return sdp_file("chrome-offer.sdp")


def without(sdp: str, prefix: str, *, section: int | None = None) -> str:
    """``sdp`` minus its lines starting with ``prefix`` (in one m-section, or everywhere)."""
    out, index = [], -1
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            index += 1
        if line.startswith(prefix) and (section is None or section == index):
            continue
        out.append(line)
    return "\r\n".join(out)


def refusal(body: bytes) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_offer(body)
    assert caught.value.status == 400
    return caught.value.public_message


def unsupported(body: bytes) -> str:
    """The 415 of an offer without a codec the kit sends (the page's "navigateur non
    compatible"; it was a 400, which the page retried forever)."""
    with pytest.raises(UnsupportedMediaType) as caught:
        parse_offer(body)
    assert caught.value.status == 415
    return caught.value.public_message


# -- accepted ---------------------------------------------------------------------------------


MDNS_NAME = "4f2a9c1e-7b3d-4e8a-9c61-2d5f0b8e3a17.local"


def test_chrome_offer_two_videos_one_audio(chrome_offer: str) -> None:
    offer = parse_offer(chrome_offer.encode())
    assert isinstance(offer, Offer)
    assert offer.kinds == ("video", "video", "audio")
    assert (offer.video_count, offer.audio_count, offer.has_data_channel) == (2, 1, False)
    # Already CRLF; only the mDNS candidates are taken out, to be added after the answer.
    assert offer.sdp == without(chrome_offer, "a=candidate:")
    assert offer.mdns_candidates == tuple(
        (mid, f"candidate:2804175426 1 udp 2113937151 {MDNS_NAME} {port} typ host generation 0 "
              "network-cost 999")
        for mid, port in (("0", 59303), ("1", 44188), ("2", 34950))
    )  # fmt: skip


def test_every_candidate_is_taken_out_to_be_added_after_the_answer(chrome_offer: str) -> None:
    """All candidates and end-of-candidates leave the offer (aiortc would keep only the last
    m-line's per transport, issue 12; the kit keeps waiting for the pupil's own checks); the
    ``….local`` ones are those resolved in the background."""
    on_loopback = chrome_offer.replace(MDNS_NAME, "127.0.0.1")
    ended = on_loopback.replace("a=mid:0\r\n", "a=mid:0\r\na=end-of-candidates\r\n")
    offer = parse_offer(ended.encode())
    assert offer.sdp == without(chrome_offer, "a=candidate:")
    assert [mid for mid, _ in offer.candidates] == ["0", "1", "2"]
    assert offer.mdns_candidates == () and offer.dropped_candidates == 0
    mixed = ended.replace("127.0.0.1 44188", f"{MDNS_NAME.upper()} 44188")
    offer = parse_offer(mixed.encode())
    assert "end-of-candidates" not in offer.sdp and "a=candidate:" not in offer.sdp
    assert [mid for mid, _ in offer.mdns_candidates] == ["1"]


def test_line_ends_are_normalized(chrome_offer: str) -> None:
    expected = parse_offer(chrome_offer.encode()).sdp
    lf_only = chrome_offer.replace("\r\n", "\n").encode()
    assert parse_offer(lf_only).sdp == expected
    blank_lines = chrome_offer.replace("s=-\r\n", "s=-\r\n\r\n").encode()
    assert parse_offer(blank_lines).sdp == expected
    no_final_newline = chrome_offer.rstrip("\r\n").encode()
    assert parse_offer(no_final_newline).sdp == expected


def test_data_channel_and_unwanted_sections_are_allowed(chrome_offer: str) -> None:
    application = (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:P0cF\r\n"
        "a=ice-pwd:FWBln+NLf8+2a3fgkryn5CX/\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
        "a=setup:actpass\r\n"
        "a=mid:3\r\n"
        "a=sctp-port:5000\r\n"
    )
    offer = parse_offer((chrome_offer + application).encode())
    assert offer.kinds == ("video", "video", "audio", "application")
    assert offer.has_data_channel
    # One section rejected (port 0) or inactive: the others still want media.
    assert parse_offer(chrome_offer.replace("m=video 59303", "m=video 0", 1).encode())
    first_inactive = chrome_offer.replace("a=recvonly", "a=inactive", 1)
    assert parse_offer(first_inactive.encode()).kinds == ("video", "video", "audio")


def test_vp8_only_and_h264_only_offers(chrome_offer: str) -> None:
    vp8_only = "\r\n".join(
        line
        for line in chrome_offer.split("\r\n")
        if not any(codec in line for codec in ("H264", "packetization-mode"))
    )
    assert parse_offer(vp8_only.encode()).video_count == 2
    h264_only = without(chrome_offer, "a=rtpmap:96 VP8")
    assert parse_offer(h264_only.encode()).video_count == 2


def test_the_size_limit_is_exact(chrome_offer: str) -> None:
    filler = b"a=x-filler\r\n"
    at_limit = chrome_offer.encode()
    at_limit += filler * ((MAX_OFFER_BYTES - len(at_limit)) // len(filler))
    at_limit += b"a=" + b"y" * (MAX_OFFER_BYTES - len(at_limit) - 4) + b"\r\n"
    assert len(at_limit) == MAX_OFFER_BYTES
    assert parse_offer(at_limit).kinds == ("video", "video", "audio")
    with pytest.raises(PayloadTooLarge) as caught:
        parse_offer(at_limit + b"\n")
    assert caught.value.status == 413 and "65536" in caught.value.public_message


# -- refused, with a reason a player's developer can act on -----------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "must start with v=0"),
        (b"\r\n\r\n", "must start with v=0"),
        (bytes(range(256)), "not UTF-8"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
        ("v=0\r\ns=Cours de français\r\n".encode("latin-1"), "not UTF-8"),
        (b"\xef\xbb\xbfv=0\r\n", "must start with v=0"),  # a BOM is not SDP
        (b'{"type": "offer", "sdp": "v=0"}', "must start with v=0"),
        (b"<html><body>Bad gateway</body></html>", "must start with v=0"),
        (b"v=0\r\nthis is not sdp\r\n", "line 2 is not of the form x=value"),
        (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nA=upper\r\n", "line 3"),
        (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no media section (m=)"),
    ],
)
def test_not_an_offer(body: bytes, reason: str) -> None:
    assert reason in refusal(body)


def test_garbage_bytes_never_crash_the_parser() -> None:
    for seed in range(200):
        body = bytes((seed * 7919 + i * 104729) % 256 for i in range(seed * 3))
        with pytest.raises(BadRequest):
            parse_offer(body)


def test_unparseable_media_line(chrome_offer: str) -> None:
    broken = chrome_offer.replace("m=audio 34950 UDP/TLS/RTP/SAVPF", "m=audio port UDP/TLS/RTP")
    assert refusal(broken.encode()) == "SDP offer could not be parsed"


@pytest.mark.parametrize("section", [0, 1, 2])
def test_missing_ice_credentials(chrome_offer: str, section: int) -> None:
    kind = ("video", "video", "audio")[section]
    for attribute in ("a=ice-ufrag", "a=ice-pwd"):
        reason = refusal(without(chrome_offer, attribute, section=section).encode())
        assert reason == f"m-line {section} ({kind}): missing a=ice-ufrag or a=ice-pwd"


def test_missing_fingerprint(chrome_offer: str) -> None:
    reason = refusal(without(chrome_offer, "a=fingerprint").encode())
    assert reason == "m-line 0 (video): missing a=fingerprint (DTLS is required)"
    reason = refusal(without(chrome_offer, "a=fingerprint", section=2).encode())
    assert reason == "m-line 2 (audio): missing a=fingerprint (DTLS is required)"


def test_an_answer_is_not_an_offer() -> None:
    """A player that posts an answer (here: the agent's own) gets told nothing is asked for."""
    for name in ("agent-answer-h264.sdp", "agent-answer-vp8.sdp"):
        answer = sdp_file(name)
        assert "a=setup:active" in answer and "a=sendonly" in answer
        assert refusal(answer.encode()) == (
            "SDP offer asks for no audio or video (recvonly/sendrecv m-line)"
        )


def test_nothing_wanted(chrome_offer: str) -> None:
    for direction in ("a=inactive", "a=sendonly"):
        reason = refusal(chrome_offer.replace("a=recvonly", direction).encode())
        assert "asks for no audio or video" in reason
    all_rejected = chrome_offer.replace("m=video 59303", "m=video 0").replace(
        "m=video 44188", "m=video 0"
    )
    assert "asks for no audio or video" in refusal(
        all_rejected.replace("m=audio 34950", "m=audio 0").encode()
    )


def test_unsupported_codecs_and_kinds(chrome_offer: str) -> None:
    no_video_codec = "\r\n".join(
        line
        for line in chrome_offer.split("\r\n")
        if not line.startswith(("a=rtpmap:96 ", "a=rtpmap:102 ", "a=rtpmap:104 "))
        and not ("H264" in line or "packetization-mode" in line)
    )
    assert unsupported(no_video_codec.encode()) == (
        "unsupported codec: m-line 0 (video) (this server sends h264, vp8)"
    )
    no_opus = chrome_offer.replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 ISAC/16000")
    assert unsupported(no_opus.encode()) == (
        "unsupported codec: m-line 2 (audio) (this server sends opus)"
    )
    text = chrome_offer.replace("m=audio 34950", "m=text 34950")
    assert refusal(text.encode()) == "m-line 2 (text): unsupported media kind"


def test_h264_needs_packetization_mode_1(chrome_offer: str) -> None:
    mode0_only = without(chrome_offer, "a=rtpmap:96 VP8").replace(
        "packetization-mode=1", "packetization-mode=0"
    )
    assert unsupported(mode0_only.encode()) == (
        "unsupported codec: m-line 0 (video): H264 needs packetization-mode=1"
    )
    # With VP8 beside it, mode 0 is no reason to refuse: VP8 is used.
    with_vp8 = chrome_offer.replace("packetization-mode=1", "packetization-mode=0")
    assert parse_offer(with_vp8.encode()).video_count == 2


def test_reasons_leak_nothing(chrome_offer: str) -> None:
    bodies = [
        b"\xff" * 10,
        b"v=0\r\nm=video 9 RTP/AVP 0\r\n",
        chrome_offer.replace("m=audio 34950 UDP", "m=audio x UDP").encode(),
        without(chrome_offer, "a=fingerprint").encode(),
    ]
    for body in bodies:
        reason = refusal(body)
        assert reason.isprintable() and len(reason) < 120
        for leak in ("Traceback", "Error", "aiortc", "/", "\\", "line 1 column"):
            if leak == "/" and "recvonly/sendrecv" in reason:
                continue
            assert leak not in reason, reason


# -- negotiated_codecs ------------------------------------------------------------------------


def test_negotiated_codecs_of_real_answers() -> None:
    assert negotiated_codecs(sdp_file("agent-answer-h264.sdp")) == ["h264", "h264", "opus"]
    assert negotiated_codecs(sdp_file("agent-answer-vp8.sdp")) == ["vp8", "vp8", "opus"]


def test_negotiated_codecs_skips_rtx_and_rejected_sections() -> None:
    answer = sdp_file("agent-answer-vp8.sdp")
    # RTX listed first is never "the" codec; the next one is.
    rtx_first = answer.replace(
        "UDP/TLS/RTP/SAVPF 97 98\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\n",
        "UDP/TLS/RTP/SAVPF 98 97\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\n",
        1,
    )
    assert rtx_first != answer
    assert negotiated_codecs(rtx_first) == ["vp8", "vp8", "opus"]
    # A rejected m-line (port 0) negotiated nothing.
    port = answer.split("m=video ", 1)[1].split(" ", 1)[0]
    rejected = answer.replace(f"m=audio {port} ", "m=audio 0 ", 1)
    assert negotiated_codecs(rejected) == ["vp8", "vp8", ""]


def test_negotiated_codecs_of_a_data_channel_section() -> None:
    answer = sdp_file("agent-answer-h264.sdp") + (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "a=mid:3\r\n"
        "a=sctp-port:5000\r\n"
    )
    assert negotiated_codecs(answer) == ["h264", "h264", "opus", ""]
