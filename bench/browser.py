"""The browser's view (issue 3): headless Chromium on the real pupil page, on loopback.

Two figures, both read in the page by ``bench/clockcode.js`` (injected with Playwright, not part
of the shipped page):

- **glass-to-glass**: for each frame Chromium hands to the compositor (``requestVideoFrameCallback``
  on ``#camera`` and ``#document``), the clock code is read from the frame itself and compared
  with the frame's ``presentationTime`` on the wall clock; the agent stamps the picture with the
  same machine's wall clock when it renders it;
- **join → first frame**: from just before ``page.goto(join_url)`` (wall clock, here) to the
  ``presentationTime`` of the first room-camera frame, in a fresh browser context per join (one
  Chromium process), with the join's milestones to show where the time goes.

See docs/benchmark.md ("The browser's view") for the method and its limits.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",  # gather 127.0.0.1 (see tests/chromium.py)
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, no mDNS names
]
CLOCK_JS = (Path(__file__).parent / "clockcode.js").read_text(encoding="utf-8")
MIDS = {"0": "camera", "1": "document", "2": "microphone"}
"""The page's offer: room camera, document camera, sound, in that order (docs/whep.md)."""

JOIN_MARKS = {
    "navigation": "navigation started",
    "dom": "page parsed",
    "created": "peer connection created",
    "gathered": "ICE gathered",
    "post": "WHEP POST sent",
    "answer": "answer received",
    "connected": "connected",
    "firstFrame": "first frame",
}
"""The instants bench/clockcode.js records during a join."""

VIDEO_RATE_PER_MS = 90
"""RTP video clock (90 kHz) ticks per millisecond."""
SAME_FRAME_MS = 5.0
"""A frame whose code and RTP timestamp disagree by more than this is not the metadata's frame."""

STATS_JS = """
async () => {
  const out = {};
  if (typeof session === "undefined" || !session) return out;
  (await session.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") {
      out[s.mid] = {decoded: s.framesDecoded || 0, dropped: s.framesDropped || 0,
                    jitterDelay: s.jitterBufferDelay || 0, emitted: s.jitterBufferEmittedCount || 0,
                    targetDelay: s.jitterBufferTargetDelay || 0,
                    minimumDelay: s.jitterBufferMinimumDelay || 0,
                    processing: s.totalProcessingDelay || 0, at: performance.now()};
    }
    if (s.type === "media-playout") {
      out.playout = {delay: s.totalPlayoutDelay || 0, samples: s.totalSamplesCount || 0};
    }
  });
  return out;
}
"""


@dataclass
class VideoView:
    """One video as the page saw it over the measuring window."""

    size: str = ""
    callbacks: int = 0
    unreadable: int = 0
    """Frames whose strip held no code (should be 0 on the synthetic sources)."""
    mismatched: int = 0
    """Frames read after a newer one replaced them on screen (code ≠ the metadata's RTP time)."""
    read_ms: float = 0.0
    """Mean main-thread cost of reading one frame's code."""
    fps: float = 0.0
    """Frames handed to the compositor per second (rVFC ``presentedFrames``)."""
    decoded_fps: float = 0.0
    dropped: int = 0
    delays_ms: list[float] = field(default_factory=list)
    """presentationTime − capture (clock code), per frame read."""
    display_ms: list[float] = field(default_factory=list)
    """expectedDisplayTime − capture."""
    received_ms: list[float] = field(default_factory=list)
    """receiveTime (last packet of the frame) − capture: the agent, SRTP and loopback."""
    jitter_buffer_ms: float = float("nan")
    target_delay_ms: float = float("nan")
    """Mean delay the jitter buffer aimed at (raised above ``minimum_delay_ms`` by lip sync)."""
    minimum_delay_ms: float = float("nan")
    """What the jitter estimate alone needs (getStats ``jitterBufferMinimumDelay``)."""


@dataclass
class AudioView:
    jitter_buffer_ms: float = float("nan")
    playout_ms: float = float("nan")


@dataclass
class BrowserResult:
    videos: dict[str, VideoView] = field(default_factory=dict)
    audio: AudioView = field(default_factory=AudioView)
    window_s: float = 0.0
    first_frame_ms: list[float] = field(default_factory=list)
    join_marks_ms: dict[str, list[float]] = field(default_factory=dict)
    """Per milestone of a join (see ``JOIN_MARKS``), ms after ``goto`` was called, per join."""


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def delay_ms(code: int, wall_ms: float) -> float:
    """As ``agent.sources.clockcode.delay_ms``, for a fractional wall clock."""
    diff = (wall_ms - code) % 2**32
    return diff if diff < 2**31 else diff - 2**32


def same_frame(frames: list[list[Any]]) -> list[bool]:
    """Which frames were read from the frame their metadata describes.

    ``new VideoFrame(video)`` copies the frame on screen when the callback runs, which may
    already be the next one. The agent's RTP timestamp and its clock code come from the same
    capture instant, so (code · 90 − rtpTimestamp) mod 2³² is the same for every frame of a
    stream; a frame off by more than ``SAME_FRAME_MS`` (a frame interval is 33 or 67 ms) was
    read from another frame than the metadata's.
    """
    offsets = [
        (f[3] * VIDEO_RATE_PER_MS - f[5]) % 2**32 if f[5] is not None else None for f in frames
    ]
    known = [o for o in offsets if o is not None]
    if not known:
        return [True] * len(frames)  # no RTP timestamps (not WebRTC): nothing to check against

    def signed(ticks: float) -> float:
        return (ticks + 2**31) % 2**32 - 2**31

    reference = known[0]
    centre = statistics.median(signed(o - reference) for o in known)
    limit = SAME_FRAME_MS * VIDEO_RATE_PER_MS
    return [o is None or abs(signed(o - reference) - centre) <= limit for o in offsets]


def video_view(sample: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> VideoView:
    """What ``benchClock.take()`` returned for one video, with its getStats before and after."""
    frames = sorted(sample["frames"], key=lambda f: f[0])
    view = VideoView(
        size=f"{sample['width']}×{sample['height']}",
        callbacks=len(frames),
        unreadable=sample["unreadable"],
        read_ms=round(sample["readMs"] / len(frames), 2) if frames else 0.0,
    )
    readable = [f for f in frames if f[3] is not None]
    for frame, ok in zip(readable, same_frame(readable), strict=True):
        presented, expected, received, code = frame[:4]
        if not ok:
            view.mismatched += 1
            continue
        view.delays_ms.append(delay_ms(code, presented))
        view.display_ms.append(delay_ms(code, expected))
        if received is not None:
            view.received_ms.append(delay_ms(code, received))
    if len(frames) >= 2 and frames[-1][0] > frames[0][0]:
        view.fps = round((frames[-1][4] - frames[0][4]) / (frames[-1][0] - frames[0][0]) * 1000, 1)
    if before and after:
        seconds = (after["at"] - before["at"]) / 1000
        view.decoded_fps = round((after["decoded"] - before["decoded"]) / seconds, 1)
        view.dropped = after["dropped"] - before["dropped"]
        emitted = after["emitted"] - before["emitted"]
        if emitted > 0:

            def mean(key: str) -> float:
                value: float = (after[key] - before[key]) / emitted * 1000
                return round(value, 1)

            view.jitter_buffer_ms = mean("jitterDelay")
            view.target_delay_ms = mean("targetDelay")
            view.minimum_delay_ms = mean("minimumDelay")
    return view


def audio_view(before: dict[str, Any], after: dict[str, Any]) -> AudioView:
    view = AudioView()
    audio_before, audio_after = before.get("2"), after.get("2")
    if audio_before and audio_after and audio_after["emitted"] > audio_before["emitted"]:
        emitted = audio_after["emitted"] - audio_before["emitted"]
        delay = audio_after["jitterDelay"] - audio_before["jitterDelay"]
        view.jitter_buffer_ms = round(delay / emitted * 1000, 1)
    playout_before, playout_after = before.get("playout"), after.get("playout")
    if playout_before and playout_after:
        samples = playout_after["samples"] - playout_before["samples"]
        if samples > 0:
            delay = playout_after["delay"] - playout_before["delay"]
            view.playout_ms = round(delay / samples * 1000, 1)
    return view


async def new_pupil_context(browser: Any) -> Any:
    """A fresh context (no cache, cookies or storage from an earlier join) with our script."""
    context = await browser.new_context(
        locale="fr-FR",
        permissions=["camera", "microphone"],  # Chromium gathers 127.0.0.1 only then
        viewport={"width": 1280, "height": 800},
    )
    await context.add_init_script(CLOCK_JS)
    return context


async def first_frame(page: Any, timeout: float) -> None:
    """Wait for the room camera's first frame (a promise in the page: the page's CSP forbids
    the string evaluation that ``wait_for_function`` relies on)."""
    await asyncio.wait_for(page.evaluate("window.benchClock.firstFrame"), timeout)


async def watch_page(browser: Any, join_url: str, warmup: float, seconds: float) -> BrowserResult:
    """One pupil page playing: ``seconds`` of frames after ``warmup`` seconds."""
    context = await new_pupil_context(browser)
    try:
        page = await context.new_page()
        await page.goto(join_url)
        await first_frame(page, 20.0)
        await asyncio.sleep(warmup)
        await page.evaluate("window.benchClock.take()")
        before = await page.evaluate(STATS_JS)
        started = time.monotonic()
        await asyncio.sleep(seconds)
        samples = await page.evaluate("window.benchClock.take()")
        after = await page.evaluate(STATS_JS)
        window = time.monotonic() - started
    finally:
        await context.close()
    result = BrowserResult(window_s=round(window, 1), audio=audio_view(before, after))
    for mid in ("0", "1"):
        name = MIDS[mid]
        if name in samples:
            result.videos[name] = video_view(samples[name], before.get(mid, {}), after.get(mid, {}))
    return result


async def one_join(browser: Any, join_url: str, timeout: float = 10.0) -> dict[str, float]:
    """Open the link in a fresh context: the join's milestones, in ms after ``goto`` is called."""
    context = await new_pupil_context(browser)
    try:
        page = await context.new_page()
        opened = time.time() * 1000
        await page.goto(join_url)
        await first_frame(page, timeout)
        marks: dict[str, float] = await page.evaluate("({...window.benchClock.marks})")
        await page.goto("about:blank")  # pagehide: the page DELETEs its WHEP session
    finally:
        await context.close()
    return {name: value - opened for name, value in marks.items()}


async def measure_joins(browser: Any, join_url: str, joins: int) -> BrowserResult:
    result = BrowserResult()
    for _ in range(joins):
        marks = await one_join(browser, join_url)
        result.first_frame_ms.append(marks["firstFrame"])
        for name, value in marks.items():
            result.join_marks_ms.setdefault(name, []).append(value)
        await asyncio.sleep(0.6)  # past the keyframe rate limit: each join gets its own
    return result


async def measure_browser(
    join_url: str, warmup: float, seconds: float, joins: int
) -> BrowserResult:
    """Both figures with one Chromium process; the class at ``join_url`` must be live."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            result = await watch_page(browser, join_url, warmup, seconds)
            joined = await measure_joins(browser, join_url, joins)
        finally:
            await browser.close()
    result.first_frame_ms = joined.first_frame_ms
    result.join_marks_ms = joined.join_marks_ms
    return result


def report_lines(result: BrowserResult) -> list[str]:
    lines = []
    for name, label in (("camera", "room camera"), ("document", "document camera")):
        view = result.videos.get(name)
        if view is None:
            lines.append(f"- Chromium glass-to-glass, {label}: no frame")
            continue
        d = view.delays_ms
        lines.append(
            f"- Chromium glass-to-glass, {label} ({view.size}), capture → frame handed to the "
            f"compositor: p50 {pct(d, 50)} ms, p95 {pct(d, 95)} ms ({len(d)} frames over "
            f"{result.window_s} s; {view.mismatched} read after being replaced and "
            f"{view.unreadable} unreadable, left out); → expected on screen p50 "
            f"{pct(view.display_ms, 50)} ms; → last packet received p50 "
            f"{pct(view.received_ms, 50)} ms; jitter buffer {view.jitter_buffer_ms} ms (target "
            f"{view.target_delay_ms} ms, of which jitter alone {view.minimum_delay_ms} ms); "
            f"{view.fps} frames/s presented, {view.decoded_fps} decoded, {view.dropped} dropped; "
            f"reading the code took {view.read_ms} ms per frame"
        )
    audio = result.audio
    lines.append(
        f"- Chromium sound (its own stream: not lip-synced with the cameras): jitter buffer "
        f"{audio.jitter_buffer_ms} ms, playout {audio.playout_ms} ms"
    )
    ff = result.first_frame_ms
    medians = {name: statistics.median(v) for name, v in result.join_marks_ms.items()}
    steps = ", ".join(
        f"{JOIN_MARKS.get(name, name)} {value:.0f}"
        for name, value in sorted(medians.items(), key=lambda item: item[1])
    )
    lines.append(
        f"- Chromium, join link opened → first room-camera frame handed to the compositor: p50 "
        f"{pct(ff, 50)} ms, p95 {pct(ff, 95)} ms ({len(ff)} joins, a fresh context each); "
        f"medians of each step, ms after opening: {steps}"
    )
    return lines


def check_rows(result: BrowserResult) -> list[tuple[str, str, bool]]:
    camera = result.videos.get("camera")
    delays = camera.delays_ms if camera else []
    ff = result.first_frame_ms
    return [
        (
            "Chromium on loopback: glass-to-glass p95 ≤ 100 ms (room camera)",
            f"{pct(delays, 95)} ms",
            bool(delays) and pct(delays, 95) <= 100,
        ),
        (
            "Chromium: join link opened → first frame p95 ≤ 1.5 s",
            f"{pct(ff, 95)} ms",
            bool(ff) and pct(ff, 95) <= 1500,
        ),
    ]
