"""The health report's ``loss_percent`` counts what pupils lost: frames the fan-out dropped
before sending, and the packets their receiver reports say were lost on the way (issue 14: a
pupil on an 800 kbit/s link lost 78 % while the report said 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.link.health import HealthCollector


def status(lost: int, dropped: int = 0) -> dict[str, Any]:
    track = {"delivered": 300, "dropped": dropped, "rtp_packets": 1000, "lost": lost}
    return {
        "viewers": [{"tracks": {"camera": track}}, {"tracks": {"camera": track}}],
        "encoders": [{"source": "camera", "name": "camera", "frames": 300, "bytes": 10}],
    }


def test_loss_percent_counts_what_receiver_reports_say_was_lost(tmp_path: Path) -> None:
    collector = HealthCollector(object(), tmp_path)  # type: ignore[arg-type]
    collector._streams(status(lost=0), 1.0)  # the counters so far
    [camera] = collector._streams(status(lost=0), 1.0)
    assert camera["loss_percent"] == 0.0
    later = status(lost=250)
    for viewer in later["viewers"]:
        viewer["tracks"]["camera"].update(rtp_packets=2000, delivered=600)
    [camera] = collector._streams(later, 1.0)
    assert camera["loss_percent"] == 25.0  # 500 of the 2000 packets sent since


def test_queue_drops_and_wire_losses_compound(tmp_path: Path) -> None:
    collector = HealthCollector(object(), tmp_path)  # type: ignore[arg-type]
    collector._streams(status(lost=0), 1.0)
    later = status(lost=100, dropped=100)  # 200 frames dropped, 600 sent, then 10 % lost
    for viewer in later["viewers"]:
        viewer["tracks"]["camera"].update(rtp_packets=2000, delivered=600)
    [camera] = collector._streams(later, 1.0)
    assert camera["loss_percent"] == 32.5  # 1 − (1 − 0.25)(1 − 0.1)


def test_the_bitrate_is_the_encoders_not_the_pupils_packet_count(tmp_path: Path) -> None:
    """The encoder's bytes give the bitrate; the pupils' packet counters only the loss (one
    name for both once made every report say 0 kbit/s)."""
    collector = HealthCollector(object(), tmp_path)  # type: ignore[arg-type]
    collector._streams(status(lost=0), 1.0)
    later = status(lost=0)
    later["encoders"][0].update(frames=330, bytes=250_010)
    for viewer in later["viewers"]:
        viewer["tracks"]["camera"].update(rtp_packets=5000, delivered=330)
    [camera] = collector._streams(later, 1.0)
    assert camera["bitrate_kbps"] == 2000.0 and camera["fps"] == 30.0
