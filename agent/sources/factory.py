"""Build a source from its configuration: synthetic, OpenCV (V4L2 / RTSP / file) or sounddevice.

An empty ``device`` disables that source (``None``).
"""

from __future__ import annotations

from ..config import SYNTHETIC, MicrophoneConfig, VideoSourceConfig
from .base import DEFAULT_RETRY_INTERVAL, AudioSource, VideoSource
from .synthetic import SyntheticCamera, SyntheticDocument, SyntheticMicrophone

__all__ = ["DEFAULT_RETRY_INTERVAL", "make_audio_source", "make_video_source"]


def make_video_source(
    source_id: str, cfg: VideoSourceConfig, retry_interval: float = DEFAULT_RETRY_INTERVAL
) -> VideoSource | None:
    if not cfg.device:
        return None
    if cfg.device == SYNTHETIC:
        card = SyntheticDocument if source_id == "document" else SyntheticCamera
        return card(source_id, cfg.width, cfg.height, cfg.fps)
    from .camera import OpenCVCamera

    return OpenCVCamera(source_id, cfg, retry_interval)


def make_audio_source(
    cfg: MicrophoneConfig, retry_interval: float = DEFAULT_RETRY_INTERVAL
) -> AudioSource | None:
    if not cfg.device:
        return None
    if cfg.device == SYNTHETIC:
        return SyntheticMicrophone()
    from .microphone import SoundDeviceMicrophone

    return SoundDeviceMicrophone(cfg, retry_interval)
