"""One class session's media: sources → shared encoders → fan-outs.

``MediaPipeline`` owns, for the length of a session, each configured source, one encoder per
(source, codec) and one fan-out per encoder. H.264 encoders start with the session; a VP8
encoder for a source starts only when a viewer that cannot take H.264 subscribes, and stops
when the last such viewer leaves. Viewers never see a source or an encoder: they subscribe to
a stream by source id and codec and get a queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..clock import MediaClock
from ..config import AgentConfig, VideoSourceConfig
from ..sources.base import AudioSource, RawAudioBlock, RawVideoFrame, VideoSource
from ..sources.factory import make_audio_source, make_video_source
from ..webrtc.packetize import make_packer
from .encoder import AudioEncoder, VideoEncoder, VideoEncoderSettings
from .fanout import Fanout, ViewerQueue
from .keyframes import KeyframeLimiter
from .layers import HIGH, LAYER_NAMES, Layer, layers_of
from .preview import PreviewTap

log = logging.getLogger("agent.media")

VIDEO_SOURCE_IDS = ("camera", "document")
AUDIO_SOURCE_ID = "microphone"


class _EncodedStream:
    """An encoder, its fan-out and its keyframe limiter."""

    def __init__(
        self, encoder: VideoEncoder | AudioEncoder, fanout: Fanout, limiter: KeyframeLimiter | None
    ) -> None:
        self.encoder = encoder
        self.fanout = fanout
        self.limiter = limiter


class VideoStreams:
    """All encodings of one video source: one per (codec, layer) in use. The device thread
    calls :meth:`offer`."""

    def __init__(
        self,
        source: VideoSource,
        cfg: VideoSourceConfig,
        pipeline: MediaPipeline,
    ) -> None:
        self.source = source
        self.cfg = cfg
        self.layers = layers_of(source.id, cfg)
        """This camera's layers, top first (agent/media/layers.py)."""
        self._pipeline = pipeline
        self._streams: dict[tuple[str, str], _EncodedStream] = {}
        self._encoders: tuple[VideoEncoder, ...] = ()  # read by the device thread
        self.preview = PreviewTap()

    def offer(self, frame: RawVideoFrame) -> None:
        self.preview.offer(frame)
        for encoder in self._encoders:  # an immutable snapshot: safe from the device thread
            encoder.offer(frame)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``, or the nearest one below it this camera has."""
        names = [layer.name for layer in self.layers]
        if name in names:
            return self.layers[names.index(name)]
        below = [
            layer
            for layer in self.layers
            if LAYER_NAMES.index(layer.name) > LAYER_NAMES.index(name)
        ]
        return below[0] if below else self.layers[-1]

    def stream(self, codec: str, layer_name: str = HIGH) -> _EncodedStream:
        layer = self.layer(layer_name)
        existing = self._streams.get((codec, layer.name))
        if existing is not None:
            return existing
        p = self._pipeline
        settings = VideoEncoderSettings(
            codec=codec,
            width=layer.width,
            height=layer.height,
            fps=layer.fps,
            bitrate_kbps=layer.bitrate_kbps,
            keyframe_interval_s=layer.keyframe_interval_s or p.config.encoder.keyframe_interval_s,
            h264_preset=p.config.encoder.h264_preset,
            threads=p.config.encoder.threads,
            rate_buffer_s=layer.rate_buffer_s,
            layer=layer.name,
            source_fps=self.cfg.fps,
        )
        fanout_box: list[Fanout] = []
        encoder = VideoEncoder(
            self.source.id,
            settings,
            p.clock,
            p.loop,
            lambda item: fanout_box[0].publish(item),
            make_packer(codec),
        )
        limiter = KeyframeLimiter(
            encoder.request_keyframe, p.config.encoder.keyframe_min_interval_s, p.clock.now
        )
        fanout = Fanout(
            video=True,
            request_keyframe=limiter.request,
            now=p.clock.now,
            queue_len=p.config.webrtc.viewer_queue_packets,
        )
        fanout_box.append(fanout)
        stream = _EncodedStream(encoder, fanout, limiter)
        self._streams[(codec, layer.name)] = stream
        encoder.start()
        self._encoders = self._video_encoders()
        log.info("%s: %s %s encoder started", self.source.id, codec, layer.name)
        return stream

    async def drop(self, codec: str, layer: str = HIGH, if_unused: bool = False) -> None:
        stream = self._streams.get((codec, layer))
        if stream is None or (if_unused and stream.fanout.subscribers):
            return  # with if_unused: a viewer subscribed again since the drop was scheduled
        del self._streams[(codec, layer)]
        self._encoders = self._video_encoders()
        if stream.limiter is not None:
            stream.limiter.cancel()
        stream.fanout.close()
        await asyncio.to_thread(stream.encoder.stop)
        log.info("%s: %s %s encoder stopped", self.source.id, codec, layer)

    def _video_encoders(self) -> tuple[VideoEncoder, ...]:
        return tuple(
            s.encoder for s in self._streams.values() if isinstance(s.encoder, VideoEncoder)
        )

    def get(self, codec: str, layer: str = HIGH) -> _EncodedStream | None:
        """The running stream of ``codec`` at ``layer``, if any (never starts one)."""
        return self._streams.get((codec, layer))

    def running(self) -> list[tuple[str, str]]:
        """(codec, layer) of every running encoder."""
        return list(self._streams)

    def streams(self) -> list[_EncodedStream]:
        return list(self._streams.values())


class MediaPipeline:
    """Sources, encoders and fan-outs of one live session."""

    PRIMARY_CODEC = "h264"

    def __init__(
        self,
        config: AgentConfig,
        clock: MediaClock,
        loop: asyncio.AbstractEventLoop,
        make_video: Callable[[str, VideoSourceConfig], VideoSource | None] = make_video_source,
        make_audio: Callable[..., AudioSource | None] = make_audio_source,
    ) -> None:
        self.config = config
        self.clock = clock
        self.loop = loop
        self._make_video = make_video
        self._make_audio = make_audio
        self.video: dict[str, VideoStreams] = {}
        self.audio_source: AudioSource | None = None
        self.audio: _EncodedStream | None = None
        self._audio_offer: Callable[[RawAudioBlock], None] = lambda block: None
        self.muted = False
        """The teacher's mute button: the microphone keeps running (its level meter too) but
        pupils get silence."""

    async def start(self) -> None:
        """Open the devices and start encoding. Missing devices are not errors (placeholders)."""
        for source_id, cfg in (("camera", self.config.camera), ("document", self.config.document)):
            source = self._make_video(source_id, cfg)
            if source is None:
                continue
            streams = VideoStreams(source, cfg, self)
            streams.stream(self.PRIMARY_CODEC)
            self.video[source_id] = streams
            source.start(streams.offer, self.clock)
        mic = self._make_audio(self.config.microphone)
        if mic is not None:
            encoder = AudioEncoder(
                self.config.microphone.bitrate_kbps,
                self.clock,
                self.loop,
                self._publish_audio,
                make_packer("opus"),
            )
            fanout = Fanout(
                False, lambda: None, self.clock.now, self.config.webrtc.viewer_queue_packets
            )
            self.audio = _EncodedStream(encoder, fanout, None)
            self.audio_source = mic
            self._audio_offer = encoder.offer
            encoder.start()
            mic.start(self._audio_in, self.clock)

    def _audio_in(self, block: RawAudioBlock) -> None:
        """From the microphone thread: blocks go to the encoder, as silence while muted."""
        if self.muted and not block.silent_placeholder:
            block = RawAudioBlock(np.zeros_like(block.samples), block.capture_time, True)
        self._audio_offer(block)

    def preview_jpeg(self, source_id: str) -> bytes | None:
        """A small JPEG of what pupils see of ``source_id`` (blocking, about 1 ms)."""
        streams = self.video.get(source_id)
        return None if streams is None else streams.preview.jpeg()

    def _publish_audio(self, item: Any) -> None:
        if self.audio is not None:
            self.audio.fanout.publish(item)

    def subscribe_video(self, source_id: str, codec: str, layer: str = HIGH) -> ViewerQueue | None:
        """A queue of ``source_id`` in ``codec`` at ``layer`` (or the nearest layer below that
        the camera has); the encoder starts if it was not running. None: no such camera."""
        streams = self.video.get(source_id)
        if streams is None:
            return None
        return streams.stream(codec, layer).fanout.subscribe()

    def layers(self, source_id: str) -> tuple[Layer, ...]:
        """The layers of ``source_id``, top first; empty when that camera is not configured."""
        streams = self.video.get(source_id)
        return () if streams is None else streams.layers

    def subscribe_audio(self) -> ViewerQueue | None:
        return None if self.audio is None else self.audio.fanout.subscribe()

    def unsubscribe_video(
        self, source_id: str, codec: str, queue: ViewerQueue, layer: str = HIGH
    ) -> None:
        """The pupil's queue goes; an encoder nobody watches any more stops (except the
        primary codec's top layer, which runs for the whole class: the first pupil's first
        picture, the kiosk's preview and the health report's figures come from it)."""
        streams = self.video.get(source_id)
        if streams is None:
            return
        name = streams.layer(layer).name
        stream = streams.get(codec, name)
        if stream is None:
            return
        stream.fanout.unsubscribe(queue)
        primary = codec == self.PRIMARY_CODEC and name == HIGH
        if not primary and stream.fanout.subscribers == 0:
            self.loop.create_task(streams.drop(codec, name, if_unused=True))

    def unsubscribe_audio(self, queue: ViewerQueue) -> None:
        if self.audio is not None:
            self.audio.fanout.unsubscribe(queue)

    async def stop(self) -> None:
        """Stop sources first (devices released, camera LED off), then encoders."""
        sources: list[VideoSource | AudioSource] = [s.source for s in self.video.values()]
        if self.audio_source is not None:
            sources.append(self.audio_source)
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in sources))
        for streams in self.video.values():
            for codec, layer in streams.running():
                await streams.drop(codec, layer)
        if self.audio is not None:
            self.audio.fanout.close()
            await asyncio.to_thread(self.audio.encoder.stop)
        self.video.clear()
        self.audio = None
        self.audio_source = None

    def source_status(self) -> list[dict[str, Any]]:
        out = [s.source.status().as_dict() for s in self.video.values()]
        if self.audio_source is not None:
            status = self.audio_source.status().as_dict()
            status["level_dbfs"] = self.audio_source.level_dbfs()
            out.append(status)
        return out

    def encoder_stats(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for streams in self.video.values():
            for stream in streams.streams():
                stats = stream.encoder.stats()
                stats["viewers"] = stream.fanout.subscribers
                out.append(stats)
        if self.audio is not None:
            stats = self.audio.encoder.stats()
            stats["viewers"] = self.audio.fanout.subscribers
            out.append(stats)
        return out
