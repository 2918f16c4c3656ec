"""The health report's class distribution (``pupils``) and streams with several encoders per
source (issue 14, item 5; docs/protocol.md, "Pupils"), built from fake ``/api/status`` dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.link.health import HealthCollector, pupils_health
from kitlink import PupilsHealth


def viewer(link: Any) -> dict[str, Any]:
    return {"id": "v", "tracks": {}, "link": link}


def test_the_distribution_counts_layers_quality_and_worst_loss() -> None:
    viewers = [
        viewer(
            {
                "layers": {"camera": "high", "document": "high"},
                "quality": "full",
                "loss_percent": 0.5,
            }
        ),
        viewer(
            {
                "layers": {"camera": "mid", "document": "low"},
                "quality": "reduced",
                "loss_percent": 4,
            }
        ),
        viewer(
            {
                "layers": {"camera": "low", "document": "paused"},
                "quality": "reduced",
                "loss_percent": 12.25,
            }
        ),
        viewer(
            {
                "layers": {"camera": "paused", "document": "paused"},
                "quality": "audio-only",
                "loss_percent": None,
            }
        ),
        # No document camera configured: its layer is null, not counted.
        viewer({"layers": {"camera": "high", "document": None}, "quality": "full"}),
    ]
    pupils = pupils_health(viewers)
    assert pupils == {
        "layers": {
            "camera": {"high": 2, "mid": 1, "low": 1, "paused": 1},
            "document": {"high": 1, "low": 1, "paused": 2},
        },
        "quality": {"full": 2, "reduced": 2, "audio-only": 1},
        "worst_loss_percent": 12.25,
    }
    # What the server will accept, field by field.
    assert PupilsHealth.model_validate(pupils).model_dump() == pupils


def test_older_or_unknown_figures_are_left_out() -> None:
    """A kit before layers (no ``layers``/``quality``), a pupil not judged yet, and values
    the kit does not know: nothing is made up, nothing invalid is sent."""
    assert pupils_health([]) is None
    assert pupils_health([{"id": "v", "tracks": {}}]) is None  # no link at all
    assert pupils_health([viewer({"layers": None, "quality": None, "loss_percent": None})]) is None
    odd = [
        viewer({"layers": {"document": "mid", "screen": "high"}, "quality": "great"}),
        viewer({"loss_percent": float("nan")}),
        viewer({"loss_percent": "12"}),
        viewer("not a dict"),
    ]
    assert pupils_health(odd) is None
    # An estimate-only kit (today's link: loss but no layers yet) still gives the worst loss.
    older = [viewer({"estimate_kbps": 800, "loss_percent": 3.5}), viewer({"loss_percent": 250})]
    pupils = pupils_health(older)
    assert pupils == {
        "layers": {"camera": {}, "document": {}},
        "quality": {},
        "worst_loss_percent": 100.0,
    }
    PupilsHealth.model_validate(pupils)


def encoder(name: str, source: str, codec: str, frames: int, sent: int) -> dict[str, Any]:
    return {"name": name, "source": source, "codec": codec, "frames": frames, "bytes": sent}


def test_streams_group_the_layers_of_a_source(tmp_path: Path) -> None:
    """Several encoders per source (one per layer in use, per codec): one entry per source and
    codec, its bitrate summed over the layers and its fps the fastest layer's."""
    collector = HealthCollector(object(), tmp_path)  # type: ignore[arg-type]

    def status(t: int) -> dict[str, Any]:
        return {
            "viewers": [],
            "encoders": [
                encoder("encode-camera-h264-high", "camera", "h264", 30 * t, 250_000 * t),
                encoder("encode-camera-h264-mid", "camera", "h264", 30 * t, 56_250 * t),
                encoder("encode-camera-h264-low", "camera", "h264", 20 * t, 18_750 * t),
                encoder("encode-camera-vp8-mid", "camera", "vp8", 30 * t, 50_000 * t),
                encoder("encode-document-h264-high", "document", "h264", 15 * t, 200_000 * t),
                encoder("encode-document-h264-low", "document", "h264", 6 * t, 37_500 * t),
                {"source": "microphone", "codec": "opus", "frames": 50 * t, "bytes": 4000 * t},
            ],
        }

    collector._streams(status(1), 1.0)
    streams = collector._streams(status(3), 2.0)
    assert streams == [
        {"source": "camera", "codec": "h264", "fps": 30.0, "bitrate_kbps": 2600.0,
         "loss_percent": 0.0},
        {"source": "camera", "codec": "vp8", "fps": 30.0, "bitrate_kbps": 400.0,
         "loss_percent": 0.0},
        {"source": "document", "codec": "h264", "fps": 15.0, "bitrate_kbps": 1900.0,
         "loss_percent": 0.0},
        {"source": "microphone", "codec": "opus", "fps": 50.0, "bitrate_kbps": 32.0,
         "loss_percent": 0.0},
    ]  # fmt: skip


def test_a_layer_that_appears_counts_from_its_first_report(tmp_path: Path) -> None:
    """A layer encoded only from now on (a pupil needed it) adds nothing until its next
    report: its counters so far are not a rate over the interval."""
    collector = HealthCollector(object(), tmp_path)  # type: ignore[arg-type]
    high = encoder("encode-camera-h264-high", "camera", "h264", 300, 2_500_000)
    collector._streams({"viewers": [], "encoders": [high]}, 1.0)
    later_high = encoder("encode-camera-h264-high", "camera", "h264", 330, 2_750_000)
    low = encoder("encode-camera-h264-low", "camera", "h264", 900, 9_000_000)
    [camera] = collector._streams({"viewers": [], "encoders": [later_high, low]}, 1.0)
    assert camera["fps"] == 30.0 and camera["bitrate_kbps"] == 2000.0


def test_the_document_keyframes_only_state_is_counted() -> None:
    viewers = [{"link": {"layers": {"camera": "low", "document": "keyframes"}}}]
    health = pupils_health(viewers)
    assert health is not None and health["layers"]["document"] == {"keyframes": 1}
