"""bench/mixed_class.py: its VP8 pupils really take VP8, and its "Done when" rows judge every
pupil of the class (a pupil missing from the figures is a failure, not a pass) in the median of
its windows."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bench import mixed_class
from bench.mixed_class import H264_PUPILS, VP8_PUPILS, MixedClass, Window
from bench.processes import ROOT, CpuSample
from tests.conftest import LiveAgent


def pupil(camera: float, document: float) -> dict[str, dict[str, float]]:
    return {"camera": {"fps": camera}, "document": {"fps": document}, "microphone": {"fps": 50}}


def a_window(cpu: float, camera: float = 30.0, firefox: bool = True) -> Window:
    window = Window(CpuSample(cpu, 300.0))
    window.h264 = [pupil(30.0, 15.0) for _ in range(H264_PUPILS)]
    window.vp8 = [pupil(camera, 15.0) for _ in range(VP8_PUPILS - firefox)]
    window.firefox = {"camera": 29.6, "document": 14.8} if firefox else None
    return window


def a_class(cpu: float, camera: float = 30.0, firefox: bool = True) -> MixedClass:
    return MixedClass([a_window(cpu, camera, firefox)])


def test_the_rows_pass_a_full_class_within_one_core() -> None:
    rows = mixed_class.check_rows(a_class(85.0))
    assert [ok for _, _, ok in rows] == [True, True]
    assert rows[0][1] == "30 pupils, min 29.6 / 14.8 fps"
    assert "one a real Firefox" in rows[0][0]


def test_the_rows_fail_a_slow_pupil_a_missing_one_or_over_one_core() -> None:
    assert not mixed_class.check_rows(a_class(85.0, camera=28.0))[0][2]
    missing = a_class(85.0)
    missing.windows[0].vp8.pop()
    assert not mixed_class.check_rows(missing)[0][2]
    assert not mixed_class.check_rows(a_class(101.0))[1][2]
    no_firefox = a_class(85.0, firefox=False)  # five aiortc VP8 pupils
    assert mixed_class.check_rows(no_firefox)[0][2]
    assert "no Firefox here" in mixed_class.check_rows(no_firefox)[0][0]
    assert "no firefox-esr here" in "\n".join(mixed_class.lines(no_firefox))


def test_the_class_is_judged_on_its_median_window() -> None:
    """One window where a starved pupil backed off passes; two do not. The rows and the
    bullets are the judged window's, and every window is listed."""
    starved = a_window(97.0)
    starved.h264[3] = pupil(30.0, 9.5)
    one_bad = MixedClass([a_window(92.0), starved, a_window(93.0)])
    assert one_bad.median.cpu.cpu_percent == 92.0
    assert [ok for _, _, ok in mixed_class.check_rows(one_bad)] == [True, True]
    text = "\n".join(mixed_class.lines(one_bad))
    assert "agent CPU 92.0 %" in text
    assert "29.6 / 9.5 fps, agent 97.0 %" in text
    two_bad = MixedClass([starved, a_window(92.0), starved])
    assert mixed_class.check_rows(two_bad)[0][1] == "30 pupils, min 29.6 / 9.5 fps"
    assert not mixed_class.check_rows(two_bad)[0][2]


async def test_its_vp8_pupils_offer_vp8_only_and_get_it(agent: LiveAgent) -> None:
    """The ``--vp8-receivers`` process against a real agent: what the kit answered them."""
    whep = await agent.start()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.mixed_class",
        "--vp8-receivers",
        "--whep",
        whep,
        "--count",
        "2",
        "--warmup",
        "1",
        "--duration",
        "1.5",
        "--windows",
        "2",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    codecs: set[str] = set()
    async with asyncio.timeout(30):
        while process.returncode is None:
            for viewer in agent.session.viewers.values():
                codecs |= {t.codec for t in viewer.tracks if t.kind == "video" and t.codec}
            try:
                async with asyncio.timeout(0.2):
                    await process.wait()
            except TimeoutError:
                pass
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    assert codecs == {"vp8"}
    windows = json.loads(out)["windows"]
    assert [len(viewers) for viewers in windows] == [2, 2]
    for viewers in windows:
        assert all(v["camera"]["fps"] > 0 and v["document"]["fps"] > 0 for v in viewers), windows


def test_receive_drops_read_from_the_udp_counters(tmp_path: Path) -> None:
    snmp = tmp_path / "snmp"
    snmp.write_text(
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 38789353 36062 5210 17330540 5208 29520\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "UdpLite: 0 0 0 0 0 0\n"
    )
    assert mixed_class.receive_drops(snmp) == 5208
    assert mixed_class.receive_drops() >= 0  # this machine's own


def test_each_window_line_says_how_the_pupils_were_held_back() -> None:
    result = a_class(95.0)
    result.isolation = "cgroup v1 groups, cpu.shares kit 2048, pupils 1024"
    result.windows[0].dropped, result.warmup_dropped = 3, 7
    text = "\n".join(mixed_class.lines(result))
    assert "3 datagrams dropped" in text and "during the warm-up: 7" in text
    result.windows[0].harness = {"aiortc receivers": 40.0}
    assert "cpu.shares kit 2048, pupils 1024): aiortc receivers 40.0 %" in "\n".join(
        mixed_class.lines(result)
    )
