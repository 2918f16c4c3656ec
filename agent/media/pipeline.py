"""One class session's media: sources → shared encoders → fan-outs.

``MediaPipeline`` owns, for the length of a session, each configured source, one encoder per
(source, codec, quality layer) in use and one fan-out per encoder. The H.264 top layer of each
camera starts with the session and runs the whole class (the health report's figures come from
it, and most pupils end up on it), except while nobody watches it and the camera is encoded in
VP8 for Firefox pupils (:meth:`VideoStreams.keep`); every other encoder — the lower H.264
layers, and every VP8 layer (Debian's Firefox has no H.264) — starts when the first viewer on
that codec and layer subscribes and stops when the last one leaves it, so a class with Firefox
pupils runs only the VP8 layers they are on (measured in ``bench/mixed_class.py``). Viewers
never see a source or an encoder: they subscribe to a stream by source id, codec and layer and
get a queue.
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
from .talkback import Talkback, mix_for_pupils

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
        limiter = KeyframeLimiter(  # joins sooner on the room camera only (keyframes.py)
            encoder.request_keyframe,
            p.config.encoder.keyframe_min_interval_s,
            p.clock.now,
            join_interval=(
                p.config.encoder.keyframe_join_interval_s if self.source.id == "camera" else None
            ),
        )
        fanout = Fanout(
            video=True,
            request_keyframe=limiter.request,
            now=p.clock.now,
            queue_len=p.config.webrtc.viewer_queue_packets,
            request_join=limiter.join,
        )
        fanout_box.append(fanout)
        stream = _EncodedStream(encoder, fanout, limiter)
        self._streams[(codec, layer.name)] = stream
        encoder.start()
        self._encoders = self._video_encoders()
        log.info("%s: %s %s encoder started", self.source.id, codec, layer.name)
        self._settle()
        return stream

    def keep(self, codec: str, layer: str) -> bool:
        """Whether the encoder of ``codec`` at ``layer`` has to keep running: someone watches
        it, or it is the primary codec's top layer and this camera is encoded in no other codec.

        The primary top layer runs for the whole class (the health report's figures come from
        it; the kiosk's preview does not: it is taken from the camera's pictures) — but not
        for nobody beside VP8 layers that Firefox pupils watch: a class of Debian Firefox
        pupils only paid 26 % of a core for two H.264 encodes nobody received (one Firefox
        pupil, measured in the agent: camera 13.6 %, document 12.0 %). It comes back when the
        last VP8 layer stops, and an H.264 pupil starts any layer it needs as before."""
        stream = self._streams.get((codec, layer))
        if stream is None:
            return False
        if stream.fanout.subscribers:
            return True
        primary = self._pipeline.PRIMARY_CODEC
        return (codec, layer) == (primary, HIGH) and all(c == primary for c, _ in self._streams)

    def _settle(self) -> None:
        """Stop the primary top layer if nothing needs it (:meth:`keep`), or start it again
        once the camera is encoded in no other codec."""
        p = self._pipeline
        if (p.PRIMARY_CODEC, HIGH) not in self._streams:
            if all(codec == p.PRIMARY_CODEC for codec, _ in self._streams):
                self.stream(p.PRIMARY_CODEC, HIGH)
        elif not self.keep(p.PRIMARY_CODEC, HIGH):
            p.loop.create_task(self.drop(p.PRIMARY_CODEC, HIGH, if_unused=True))

    async def drop(self, codec: str, layer: str = HIGH, if_unused: bool = False) -> None:
        """Stop an encoder; ``if_unused``: only if it need not run any more (:meth:`keep`: a
        viewer may have subscribed again since the drop was scheduled), and then start the
        primary top layer again if it was the camera's last encoder of another codec."""
        stream = self._streams.get((codec, layer))
        if stream is None or (if_unused and self.keep(codec, layer)):
            return
        del self._streams[(codec, layer)]
        self._encoders = self._video_encoders()
        if stream.limiter is not None:
            stream.limiter.cancel()
        stream.fanout.close()
        if if_unused:  # not while the pipeline stops (it drops every encoder, without if_unused)
            self._settle()
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
        self.talkback: Talkback | None = None
        """Talk-back (agent/media/talkback.py): None when ``[speaker] device`` is empty."""
        self._minus: dict[str, _EncodedStream] = {}
        """Per floor holder, the Opus stream of the room without their own voice."""
        self._minus_offers: tuple[tuple[str, Callable[[RawAudioBlock], None]], ...] = ()
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
            if self.config.speaker.device:
                self.talkback = Talkback(self.config.speaker.device, self.config.kiosk.floor_max)
                self.talkback.start()
            mic.start(self._audio_in, self.clock)

    def _audio_in(self, block: RawAudioBlock) -> None:
        """From the microphone thread: blocks go to the encoder, as silence while muted. While
        pupils have the floor, the room's block has the speaker's echo removed and their voices
        are mixed in; each of them gets a mix without their own voice (mix-minus)."""
        talkback = self.talkback
        if talkback is not None:
            samples = talkback.room(block.samples, block.silent_placeholder, block.capture_time)
            if samples is not block.samples:
                block = RawAudioBlock(samples, block.capture_time, block.silent_placeholder)
        if self.muted and not block.silent_placeholder:
            block = RawAudioBlock(np.zeros_like(block.samples), block.capture_time, True)
        voices = talkback.mixer.take_send() if talkback is not None else {}
        if not voices:
            self._audio_offer(block)
            return
        everyone, minus = mix_for_pupils(block.samples, voices)
        self._audio_offer(RawAudioBlock(everyone, block.capture_time))
        for voice, offer in self._minus_offers:
            offer(RawAudioBlock(minus.get(voice, everyone), block.capture_time))

    def preview_jpeg(self, source_id: str) -> bytes | None:
        """A small JPEG of what pupils see of ``source_id`` (blocking, about 1 ms)."""
        streams = self.video.get(source_id)
        return None if streams is None else streams.preview.jpeg()

    def _publish_audio(self, item: Any) -> None:
        if self.audio is not None:
            self.audio.fanout.publish(item)

    def subscribe_video(
        self, source_id: str, codec: str, layer: str = HIGH, join: bool = False
    ) -> ViewerQueue | None:
        """A queue of ``source_id`` in ``codec`` at ``layer`` (or the nearest layer below that
        the camera has); the encoder starts if it was not running. None: no such camera.
        ``join``: the viewer has no picture yet (its keyframe comes sooner: keyframes.py)."""
        streams = self.video.get(source_id)
        if streams is None:
            return None
        return streams.stream(codec, layer).fanout.subscribe(join)

    def layers(self, source_id: str) -> tuple[Layer, ...]:
        """The layers of ``source_id``, top first; empty when that camera is not configured."""
        streams = self.video.get(source_id)
        return () if streams is None else streams.layers

    def subscribe_audio(self, minus_of: str | None = None) -> ViewerQueue | None:
        """The room's sound; with ``minus_of``, that floor holder's mix without their voice
        (the room's sound if they no longer hold the floor)."""
        stream = self._minus.get(minus_of or "") or self.audio
        return None if stream is None else stream.fanout.subscribe()

    def unsubscribe_video(
        self, source_id: str, codec: str, queue: ViewerQueue, layer: str = HIGH
    ) -> None:
        """The pupil's queue goes; an encoder nobody watches any more stops (except the
        primary codec's top layer while the camera is encoded in no other codec:
        :meth:`VideoStreams.keep`)."""
        streams = self.video.get(source_id)
        if streams is None:
            return
        name = streams.layer(layer).name
        stream = streams.get(codec, name)
        if stream is None:
            return
        stream.fanout.unsubscribe(queue)
        if not streams.keep(codec, name):
            self.loop.create_task(streams.drop(codec, name, if_unused=True))

    def unsubscribe_audio(self, queue: ViewerQueue, minus_of: str | None = None) -> None:
        """``minus_of``: the queue came from :meth:`subscribe_audio` with that floor holder."""
        minus = self._minus.get(minus_of or "")
        if minus is not None:
            minus.fanout.unsubscribe(queue)
            self._drop_minus_if_unused(minus.fanout, minus_of or "")
        elif self.audio is not None:
            self.audio.fanout.unsubscribe(queue)

    # -- talk-back -----------------------------------------------------------------------------

    def open_voice(self, voice: str) -> bool:
        """``voice`` (a viewer id) gets the floor: its audio is played and mixed, and its own
        mix-minus stream starts. False: talk-back is off, or ``floor_max`` voices are open."""
        if self.talkback is None or self.audio is None or not self.talkback.open(voice):
            return False
        if voice not in self._minus:
            encoder = AudioEncoder(
                self.config.microphone.bitrate_kbps,
                self.clock,
                self.loop,
                lambda item: fanout.publish(item),
                make_packer("opus"),
            )
            fanout = Fanout(
                False, lambda: None, self.clock.now, self.config.webrtc.viewer_queue_packets
            )
            self._minus[voice] = _EncodedStream(encoder, fanout, None)
            encoder.start()
        self._minus_offers = tuple(
            (v, s.encoder.offer)
            for v, s in self._minus.items()
            if isinstance(s.encoder, AudioEncoder)
        )
        return True

    def close_voice(self, voice: str) -> None:
        """The floor is taken back: its audio is discarded from now on; its mix-minus stream
        stops once the viewer's track has switched back to the room's sound."""
        if self.talkback is not None:
            self.talkback.close(voice)
        stream = self._minus.get(voice)
        if stream is not None:
            self._drop_minus_if_unused(stream.fanout, voice)

    def push_voice(self, voice: str, samples: np.ndarray) -> bool:
        """Decoded audio from ``voice``; False (discarded) if it does not hold the floor."""
        return self.talkback is not None and self.talkback.mixer.push(voice, samples)

    def speaker_status(self) -> dict[str, str]:
        """``{"state": "ok"|"missing"|"error"|"off"|"stopped", "detail", ...}``."""
        if self.talkback is None:
            return {"state": "off", "detail": "talk-back disabled or no class"}
        return self.talkback.speaker.status()

    def _drop_minus_if_unused(self, fanout: Fanout, voice: str) -> None:
        stream = self._minus.get(voice)
        talkback = self.talkback
        holding = talkback is not None and voice in talkback.mixer.voices()
        if stream is None or stream.fanout is not fanout or holding or fanout.subscribers:
            return
        del self._minus[voice]
        self._minus_offers = tuple((v, o) for v, o in self._minus_offers if v != voice)
        stream.fanout.close()
        self.loop.create_task(asyncio.to_thread(stream.encoder.stop))

    async def stop(self) -> None:
        """Stop sources first (devices released, camera LED off), then encoders."""
        sources: list[VideoSource | AudioSource] = [s.source for s in self.video.values()]
        if self.audio_source is not None:
            sources.append(self.audio_source)
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in sources))
        if self.talkback is not None:
            await asyncio.to_thread(self.talkback.stop)
        minus, self._minus, self._minus_offers = list(self._minus.values()), {}, ()
        for stream in minus:
            stream.fanout.close()
            await asyncio.to_thread(stream.encoder.stop)
        for streams in self.video.values():
            for codec, layer in streams.running():
                await streams.drop(codec, layer)
        if self.audio is not None:
            self.audio.fanout.close()
            await asyncio.to_thread(self.audio.encoder.stop)
        self.video.clear()
        self.audio = None
        self.audio_source = None
        self.talkback = None

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
