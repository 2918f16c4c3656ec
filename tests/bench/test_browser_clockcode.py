"""The benchmark's page-side clock-code reader (bench/clockcode.js) in real headless Chromium.

Pictures are stamped by the agent's own ``draw_clock_code`` and handed to the page both as a
YUV ``VideoFrame`` (what Chromium's decoder gives the benchmark) and as an RGB PNG in an <img>
(colour-converted by libswscale, read through a canvas and through a ``VideoFrame`` of the
image); the reader must give back exactly what was drawn, and nothing for a picture without a
code.
"""

from __future__ import annotations

import base64
from typing import Any

import av
import cv2
import numpy as np

from agent.sources.clockcode import delay_ms, draw_clock_code
from bench.browser import CLOCK_JS, same_frame
from bench.browser import delay_ms as float_delay_ms
from tests.chromium import BROWSER_MARKS

pytestmark = BROWSER_MARKS

WIDTH, HEIGHT = 800, 48
CODES = [0, 1, 0x7FFFFFFF, 0x80000000, 0xA5A5A5A5, 0x5A5A5A5B, 0xFFFFFFFF, 1_763_866_001_234]

READ_JS = """
async ({i420, png, width, height}) => {
  const bytes = Uint8Array.from(atob(i420), (c) => c.charCodeAt(0));
  const yuv = new VideoFrame(bytes, {format: "I420", codedWidth: width, codedHeight: height,
                                     timestamp: 0});
  const fromYuv = await benchClock.readFrame(yuv);
  yuv.close();
  const img = new Image();
  img.src = "data:image/png;base64," + png;
  await img.decode();
  const fromCanvas = benchClock.readSource(img, img.naturalWidth, img.naturalHeight);
  const rgb = new VideoFrame(img, {timestamp: 0});
  const format = rgb.format;
  const fromRgb = await benchClock.readFrame(rgb);
  rgb.close();
  return {fromYuv, fromCanvas, fromRgb, format};
}
"""


def picture(code: int | None, width: int = WIDTH, height: int = HEIGHT) -> tuple[str, str]:
    """A noisy I420 picture (base64) stamped with ``code``, and the same as an RGB PNG."""
    rng = np.random.default_rng(code or 7)
    i420 = rng.integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
    if code is not None:
        draw_clock_code(i420[:height], code)
        i420[height : height + 12, : 768 // 2] = 128  # neutral chroma under the code, as the
        i420[height + height // 4 : height + height // 4 + 12, : 768 // 2] = 128  # sources do
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    rgb = frame.reformat(format="rgb24").to_ndarray()
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return base64.b64encode(i420.tobytes()).decode(), base64.b64encode(png.tobytes()).decode()


async def reader_page(browser: Any) -> Any:
    page = await browser.new_page()
    await page.goto("about:blank")
    await page.evaluate(CLOCK_JS)
    return page


async def test_reader_decodes_what_the_agent_draws(browser: Any) -> None:
    page = await reader_page(browser)
    for value in CODES:
        i420, png = picture(value)
        got = await page.evaluate(
            READ_JS, {"i420": i420, "png": png, "width": WIDTH, "height": HEIGHT}
        )
        expected = value % 2**32
        assert got["fromYuv"] == expected, (hex(expected), got)
        assert got["fromCanvas"] == expected, (hex(expected), got)
        assert got["fromRgb"] == expected, (hex(expected), got)
    await page.close()


async def test_reader_finds_no_code_where_there_is_none(browser: Any) -> None:
    page = await reader_page(browser)
    i420, png = picture(None)  # noise where the code would be
    got = await page.evaluate(READ_JS, {"i420": i420, "png": png, "width": WIDTH, "height": HEIGHT})
    assert (got["fromYuv"], got["fromCanvas"], got["fromRgb"]) == (None, None, None)
    grey = np.full((HEIGHT * 3 // 2, WIDTH), 128, np.uint8)  # a flat mid-grey picture
    flat = base64.b64encode(grey.tobytes()).decode()
    got = await page.evaluate(READ_JS, {"i420": flat, "png": png, "width": WIDTH, "height": HEIGHT})
    assert got["fromYuv"] is None
    i420, png = picture(0x12345678, width=700)  # narrower than the code: draws and reads nothing
    got = await page.evaluate(READ_JS, {"i420": i420, "png": png, "width": 700, "height": HEIGHT})
    assert (got["fromYuv"], got["fromCanvas"], got["fromRgb"]) == (None, None, None)
    await page.close()


async def test_delay_wraps_like_the_python_reader(browser: Any) -> None:
    pairs = [(1000, 1040), (0xFFFFFFF0, 2**32 + 0x10), (0x10, 2**32 - 0x10), (5, 5), (2**31, 0)]
    page = await reader_page(browser)
    got = await page.evaluate("(pairs) => pairs.map(([c, n]) => benchClock.delayMs(c, n))", pairs)
    assert got == [delay_ms(c, n) for c, n in pairs] == [float_delay_ms(c, n) for c, n in pairs]
    assert got[:3] == [40, 32, -32]
    await page.close()


def test_frames_read_after_being_replaced_are_recognised() -> None:
    """Code and RTP timestamp come from one capture instant: a frame whose code is one frame
    interval off its RTP timestamp was read from the next frame, across both wrap-arounds."""
    rtp0, code0 = 2**32 - 9000, 2**32 - 50  # both wrap within the sample
    frames: list[list[Any]] = []
    for n in range(12):
        code = (code0 + 33 * n + (33 if n in (4, 9) else 0)) % 2**32  # 4 and 9: the next frame
        frames.append([0.0, 0.0, None, code, n, (rtp0 + 2970 * n) % 2**32])
    frames.append([0.0, 0.0, None, 123, 12, None])  # no RTP timestamp: nothing to say
    flags = same_frame(frames)
    assert [i for i, ok in enumerate(flags) if not ok] == [4, 9]
    assert same_frame([[0.0, 0.0, None, 5, 0, None]]) == [True]
