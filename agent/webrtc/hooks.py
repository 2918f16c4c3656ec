"""The two places where we reach into aiortc's sender (pinned in pyproject.toml).

- Keyframe requests: on a PLI or FIR, ``RTCRtpSender`` calls its own ``_send_keyframe``,
  which only matters when aiortc encodes. Our senders send pre-encoded packets, so we route
  that call to the shared encoder (rate-limited there) instead.
- Stream id: aiortc gives each peer connection a random msid stream id; ours is fixed so that
  a page can tell the tracks apart from the SDP alone (``a=msid:classroom camera``).

Both are covered by tests (tests/agent/webrtc) that fail if aiortc changes these internals.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpSender


def prepare_sender(sender: RTCRtpSender, stream_id: str, on_keyframe: Callable[[], None]) -> None:
    if not hasattr(sender, "_send_keyframe") or not hasattr(sender, "_stream_id"):
        raise RuntimeError("this aiortc version is not supported (RTCRtpSender internals)")
    sender._send_keyframe = on_keyframe
    sender._stream_id = stream_id
