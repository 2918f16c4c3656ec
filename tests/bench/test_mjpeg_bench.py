"""bench/mjpeg.py: its MJPEG files look like a UVC camera's, its check row judges the figures,
and ``make bench`` keeps the hand-written "Where a real kit's CPU goes" section of
docs/PERFORMANCE.md when it rewrites the rest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import bench.__main__ as bench_main
from bench import mjpeg
from bench.network_report import HEADING as NETWORK_HEADING
from bench.processes import CpuSample

HAND = (
    f"{mjpeg.HEADING}\n\nWritten by hand.\n\n### Capture and decode\n\nrow by row\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n"
)
NETWORK = f"{NETWORK_HEADING}\n\nthin links\n"


def test_the_hand_written_section_is_found_up_to_the_next_section() -> None:
    doc = f"# Performance\n\nold table\n\n{HAND}\n{NETWORK}"
    assert mjpeg.hand_written_section(doc) == HAND
    assert mjpeg.hand_written_section("# Performance\n\ntable\n") == ""


def test_make_bench_rewrites_the_figures_and_keeps_both_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "docs" / "PERFORMANCE.md"
    doc.parent.mkdir()
    doc.write_text(f"# Performance\n\nold table\n\n{HAND}\n{NETWORK}", encoding="utf-8")

    async def run(quick: bool) -> dict[str, Any]:
        return {}

    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    monkeypatch.setattr(bench_main, "run", run)
    monkeypatch.setattr(bench_main, "report", lambda out: "new table")
    monkeypatch.setattr(sys, "argv", ["python -m bench"])
    assert bench_main.main() == 0
    text = doc.read_text(encoding="utf-8")
    assert "old table" not in text and "new table" in text
    assert HAND.rstrip() in text and NETWORK.rstrip() in text
    assert text.index(HAND.rstrip()) > text.index("new table")


def load(label: str, pupils: int, cpu: float, room: float, document: float) -> mjpeg.Load:
    result = mjpeg.Load(label, pupils, CpuSample(cpu, 300.0), 12.0, {"camera-h264-high": 11.0})
    result.fps = {"camera": (room, room), "document": (document, document)}
    return result


@pytest.mark.parametrize(
    ("cpu", "room", "document", "passes"),
    [(80.0, 30.0, 15.0, True), (95.0, 30.0, 15.0, False), (80.0, 25.0, 15.0, False)],
)
def test_the_check_row_needs_the_budget_and_full_rates(
    cpu: float, room: float, document: float, passes: bool
) -> None:
    label = "MJPEG cameras, libjpeg-turbo → I420"
    out = {"files": [], "costs": {}, "loads": [load(label, 30, cpu, room, document)]}
    [(_, measured, ok)] = mjpeg.check_rows(out)
    assert ok is passes
    assert f"{cpu} %" in measured and "capture + decode 12.0" in measured
    assert mjpeg.checks(out)[-1].endswith("PASS |" if passes else "FAIL |")
    rest = out["loads"][0].rest_percent
    assert rest == round(cpu - 12.0 - 11.0, 1)


def test_the_files_are_4_2_2_jpegs_of_the_target_size(tmp_path: Path) -> None:
    turbojpeg = pytest.importorskip("turbojpeg")
    camera = mjpeg.Camera("camera", 640, 360, 30, 20_000, 6)
    file = mjpeg.make_file(camera, tmp_path)
    assert abs(file.median_bytes - 20_000) < 3_000
    capture = cv2.VideoCapture(str(file.path), cv2.CAP_FFMPEG)
    assert int(capture.get(cv2.CAP_PROP_FOURCC)) == cv2.VideoWriter.fourcc(*"MJPG")
    assert capture.set(cv2.CAP_PROP_FORMAT, -1)
    ok, data = capture.read()
    capture.release()
    assert ok
    width, height, subsampling, _ = turbojpeg.TurboJPEG().decode_header(np.asarray(data))
    assert (width, height, subsampling) == (640, 360, turbojpeg.TJSAMP_422)
