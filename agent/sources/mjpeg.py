"""Motion-JPEG pictures straight to I420 with libjpeg-turbo (PyTurboJPEG), for the cameras.

A USB (UVC) camera gives 720p30 and 1080p30 only as MJPEG. OpenCV decodes each JPEG to BGR,
then the camera converts BGR → I420 for the encoders: two passes over every pixel, the colour
conversion done twice. libjpeg-turbo can instead hand the JPEG's own Y, Cb and Cr planes
(``tjDecompressToYUV2``): no colour conversion at all. Measured medians of the process CPU per
picture, the steps taking turns (``python -m bench.mjpeg --decode``: realistic 4:2:2 camera
JPEGs of ~60 KB at 720p and ~140 KB at 1080p, read from an MJPEG file; the shared 2-core dev
VM, noisy by ±20 %):

==============================================  =========  ==========
path                                            1280×720   1920×1080
==============================================  =========  ==========
OpenCV: decode to BGR + ``cvtColor`` to I420    3.2 ms     6.9 ms
libjpeg-turbo → I420 (this module, all in)      1.8 ms     4.2 ms
of which libjpeg-turbo's decode alone           1.4 ms     3.2 ms
libjpeg-turbo's decode at 1/2 scale             1.2 ms     2.5 ms
==============================================  =========  ==========

A camera's JPEG is 4:2:2 (two chroma rows per luma pair) far more often than 4:2:0; the
encoders take 4:2:0, so each chroma row pair is averaged (as ``INTER_AREA`` would), and JPEG's
full range mapped to video range (:data:`LUMA_SCALE`) in the same pass. A scaled decode is
not worth it for the lower quality layers: it costs almost as much as the full decode (the
entropy decoding dominates), while halving the decoded planes in the encoder costs 0.16 ms
(agent/media/encoder.py, ``scaled``). It is used only when the camera gives a bigger picture
than configured by a factor libjpeg-turbo can scale by (1/2, 3/4, …): there it replaces a
resize. A JPEG without Huffman tables (many UVC cameras send them so) gets the standard ones.

The binding needs Debian's ``libturbojpeg0`` (libjpeg-turbo 2.1 in bookworm: PyTurboJPEG 1.x;
2.x wants libjpeg-turbo 3). When either is missing, :func:`turbojpeg` logs it once and returns
None, and the camera keeps OpenCV's decode (the slower path above).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import cv2
import numpy as np

from ..errors import AgentError

log = logging.getLogger("agent.sources")

SUBSAMPLING_420 = 2
"""libjpeg-turbo's TJSAMP_420 (TJSAMP_444 = 0, 422 = 1, 420 = 2, GRAY = 3, 440 = 4, 411 = 5)."""
SUBSAMPLING_422 = 1

_lock = threading.Lock()
_loaded = False
_turbo: Any = None


def turbojpeg() -> Any:
    """The process's ``turbojpeg.TurboJPEG`` (thread-safe: a handle per call), or None with a
    log line saying why, once, when the binding or the library is missing."""
    global _loaded, _turbo
    with _lock:
        if not _loaded:
            _loaded = True
            try:
                from turbojpeg import TurboJPEG

                _turbo = TurboJPEG()
            except ImportError:
                log.warning(
                    "PyTurboJPEG is not installed: MJPEG cameras are decoded by OpenCV, "
                    "which costs about twice the CPU (pip install PyTurboJPEG)"
                )
            except Exception as exc:  # OSError: no libturbojpeg; RuntimeError: wrong version
                log.warning(
                    "libjpeg-turbo cannot be used (%s): MJPEG cameras are decoded by OpenCV, "
                    "which costs about twice the CPU (apt-get install libturbojpeg0)",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
        return _turbo


class MjpegDecodeError(AgentError):
    """A picture that is not a decodable JPEG (a USB glitch, a truncated frame): the camera
    leaves it out and counts it."""


def _scaling(turbo: Any, size: tuple[int, int], want: tuple[int, int]) -> tuple[int, int] | None:
    """The largest libjpeg-turbo scaling factor that gives exactly ``want`` from ``size``, or
    failing that the smallest one that keeps the picture at least as big (None: no scaling)."""
    width, height = size
    exact, bigger = [], []
    for num, den in turbo.scaling_factors:
        if num >= den:
            continue
        w, h = -(-width * num // den), -(-height * num // den)
        if (w, h) == want:
            exact.append((num, den))
        elif w >= want[0] and h >= want[1]:
            bigger.append((num, den))
    if exact:
        return max(exact, key=lambda f: f[0] / f[1])
    if bigger:
        return min(bigger, key=lambda f: f[0] / f[1])
    return None


class MjpegDecoder:
    """One camera's JPEG pictures as I420 of the configured ``width``×``height``."""

    def __init__(self, turbo: Any, width: int, height: int) -> None:
        self._turbo = turbo
        self.width, self.height = width, height
        self._size: tuple[int, int] | None = None
        self._factor: tuple[int, int] | None = None

    def decode(self, jpeg: np.ndarray | bytes) -> np.ndarray:
        """I420 rows ``(height * 3 // 2, width)``; :exc:`MjpegDecodeError` if not a JPEG."""
        try:
            width, height, subsampling, _ = self._turbo.decode_header(jpeg)
            size = (int(width), int(height))
            if size != self._size:  # the first picture, or the camera changed its size
                self._size = size
                self._factor = None
                if size != (self.width, self.height):
                    self._factor = _scaling(self._turbo, size, (self.width, self.height))
            buffer, planes = self._turbo.decode_to_yuv(jpeg, scaling_factor=self._factor, pad=1)
        except (OSError, ValueError) as exc:  # turbojpeg raises OSError on a corrupt picture
            raise MjpegDecodeError(str(exc) or "not a JPEG picture") from exc
        sizes = [(int(h), int(w)) for h, w in planes if h > 0 and w > 0]  # greyscale: Y
        return _to_i420(buffer, sizes, int(subsampling), (self.width, self.height))


LUMA_SCALE, LUMA_OFFSET = 219 / 255, 16.0
CHROMA_SCALE, CHROMA_OFFSET = 224 / 255, 128 * (1 - 224 / 255)
"""JPEG's levels are full range (0–255); the encoders take and signal video range (Y 16–235,
Cb/Cr 16–240, what OpenCV's ``cvtColor`` to I420 gives): without the mapping, black would be
shown below black and white clipped. One multiply-add per sample (``convertScaleAbs``, 0.1 ms
for a 720p luma plane, against 0.26 ms for a look-up table); folded into the 4:2:2 → 4:2:0
chroma average, where it is free."""


def to_video_range(plane: np.ndarray, chroma: bool = False) -> None:
    """A full-range plane (or several, contiguous) mapped in place to video range."""
    scale, offset = (CHROMA_SCALE, CHROMA_OFFSET) if chroma else (LUMA_SCALE, LUMA_OFFSET)
    cv2.convertScaleAbs(plane, dst=plane, alpha=scale, beta=offset)


def _to_i420(
    buffer: np.ndarray, planes: list[tuple[int, int]], subsampling: int, want: tuple[int, int]
) -> np.ndarray:
    """libjpeg-turbo's planes (Y, then Cb, then Cr, no padding; ``planes``: their (rows,
    columns)) as I420 rows of ``want`` = (width, height)."""
    height, width = planes[0]
    luma, quarter = width * height, width * height // 4
    if (width, height) != want or width % 2 or height % 2:
        return _resized(buffer, planes, want)
    if subsampling == SUBSAMPLING_420 and planes[1] == (height // 2, width // 2):
        picture = buffer[: luma + 2 * quarter].reshape(height * 3 // 2, width)
        to_video_range(picture[:height])
        to_video_range(picture[height:], chroma=True)
        return picture
    if subsampling == SUBSAMPLING_422 and planes[1] == (height, width // 2):
        # each (height, width/2) chroma plane seen as (height/2, width): a row holds an even
        # row then the odd one below it; their mean is the 4:2:0 row, written in place
        half, mid = luma // 2, width // 2
        cb = buffer[luma : luma + half].reshape(height // 2, width)
        cr = buffer[luma + half : luma + 2 * half].reshape(height // 2, width)
        weight = CHROMA_SCALE / 2
        cb420 = cv2.addWeighted(cb[:, :mid], weight, cb[:, mid:], weight, CHROMA_OFFSET)
        cr_out = buffer[luma + quarter : luma + 2 * quarter].reshape(height // 2, mid)
        cv2.addWeighted(cr[:, :mid], weight, cr[:, mid:], weight, CHROMA_OFFSET, dst=cr_out)
        buffer[luma : luma + quarter] = cb420.ravel()
        picture = buffer[: luma + 2 * quarter].reshape(height * 3 // 2, width)
        to_video_range(picture[:height])
        return picture
    return _resized(buffer, planes, want)


def _resized(
    buffer: np.ndarray, planes: list[tuple[int, int]], want: tuple[int, int]
) -> np.ndarray:
    """Any other case, plane by plane (``INTER_AREA``): another picture size than configured
    (and no exact libjpeg-turbo scale), 4:4:4, 4:4:0, 4:1:1, greyscale (neutral chroma)."""
    width, height = want
    out = np.empty((height * 3 // 2, width), np.uint8)
    rows, columns = planes[0]
    luma = buffer[: rows * columns].reshape(rows, columns)
    cv2.resize(luma, (width, height), dst=out[:height], interpolation=cv2.INTER_AREA)
    small = out[height:].reshape(2, height // 2, width // 2)
    to_video_range(out[:height])
    if len(planes) < 3:
        small[:] = 128
        return out
    start = rows * columns
    for plane in range(2):
        rows, columns = planes[1 + plane]
        chroma = buffer[start : start + rows * columns].reshape(rows, columns)
        start += rows * columns
        cv2.resize(
            chroma, (width // 2, height // 2), dst=small[plane], interpolation=cv2.INTER_AREA
        )
    to_video_range(out[height:], chroma=True)
    return out
