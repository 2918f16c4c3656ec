"""REMB lists as browsers send them (agent/webrtc/feedback.py): message in, figures out.

Firefox (measured with tests/agent/webrtc/test_firefox.py) sends one REMB for all the pupil's
streams, compound with its receiver reports, every ~0.2 s while its estimate moves, and names in
it every stream it received lately: the camera's RTX stream comes and goes with the kit's probe
padding. aiortc sends one REMB per video stream.
"""

from __future__ import annotations

from aiortc import rtp

from agent.webrtc.feedback import PupilFeedback

CAMERA, DOCUMENT, CAMERA_RTX, SOUND = 130782875, 2813177292, 2143184971, 2492991603


def remb(bitrate: int, ssrcs: list[int]) -> rtp.RtcpPsfbPacket:
    return rtp.RtcpPsfbPacket(
        fmt=rtp.RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=rtp.pack_remb_fci(bitrate, ssrcs)
    )


def deliver(feedback: PupilFeedback, packet: rtp.RtcpPsfbPacket, senders: list[int]) -> None:
    """As aiortc does: the REMB reaches each of our senders it names."""
    _, named = rtp.unpack_remb_fci(packet.fci)
    for ssrc in senders:
        if ssrc in named:
            feedback.on_rtcp(ssrc, packet, None)


def test_a_firefox_remb_whose_list_changes_is_one_remb_not_two() -> None:
    now = [100.0]
    feedback = PupilFeedback(lambda: 0, clock=lambda: now[0])
    senders = [CAMERA, DOCUMENT, SOUND]
    deliver(feedback, remb(600_000, [CAMERA, DOCUMENT]), senders)
    assert feedback.stats()["remb_kbps"] == 600
    now[0] += 0.2  # probing: the RTX padding stream joins the list
    deliver(feedback, remb(400_000, [CAMERA, CAMERA_RTX, DOCUMENT]), senders)
    assert feedback.stats()["remb_kbps"] == 400  # was 1000: both lists summed
    now[0] += 0.2
    deliver(feedback, remb(380_000, [CAMERA, DOCUMENT]), senders)
    assert feedback.stats()["remb_kbps"] == 380
    now[0] += 0.2  # the document paused: only the camera named
    deliver(feedback, remb(350_000, [CAMERA]), senders)
    assert feedback.stats()["remb_kbps"] == 350


def test_aiortc_rembs_one_per_stream_still_add_up() -> None:
    now = [100.0]
    feedback = PupilFeedback(lambda: 0, clock=lambda: now[0])
    senders = [CAMERA, DOCUMENT]
    deliver(feedback, remb(300_000, [CAMERA]), senders)
    deliver(feedback, remb(200_000, [DOCUMENT]), senders)
    assert feedback.stats()["remb_kbps"] == 500
    now[0] += 0.5
    deliver(feedback, remb(250_000, [CAMERA]), senders)
    assert feedback.stats()["remb_kbps"] == 450


def test_rembs_naming_ever_new_streams_keep_one_key_per_stream() -> None:
    """A pupil that names other streams at random in each REMB neither inflates the ceiling
    nor grows the kit's memory."""
    now = [100.0]
    feedback = PupilFeedback(lambda: 0, clock=lambda: now[0])
    for i in range(200):
        now[0] += 0.1
        deliver(feedback, remb(500_000, [CAMERA, 10_000 + i, 20_000 + i]), [CAMERA, DOCUMENT])
    assert feedback.stats()["remb_kbps"] == 500
    assert len(feedback.estimator._rembs) == 1
