"""One pupil: one WHEP resource, one peer connection, three packet tracks.

The offer's m-lines are served in order: the first video section gets the room camera, the
second the document camera, the first audio section the microphone; any other section is
answered inactive. Each sender prefers H.264 and falls back to VP8, and its keyframe requests
(PLI/FIR, which aiortc ignores for pre-encoded packets) go to the shared encoder.

A pupil page also opens one data channel (``classroom``) in the same peer connection for its
display name, raised hand and written questions (docs/pupil-channel.md); its messages are parsed
by ``pupil_channel`` and handed to the session through ``on_event``.

A pupil in the waiting room (``admitted=False``) is connected but gets no media at all: its
tracks are bound to their streams only when the teacher admits it (:meth:`Viewer.admit`), and
until then a track's sender waits for its first packet forever, so not one RTP packet (media or
probe padding: the adaptation loop starts at admission too) leaves for it. Its data channel
works: it gives its name and learns when it is let in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..errors import BadRequest, ProtocolError
from ..media.pipeline import MediaPipeline
from ..media.talkback import Downmix
from . import pupil_channel, rtpsend
from .control import FULL, PupilControl
from .feedback import PupilFeedback
from .sdp import MAX_MDNS_NAMES, MAX_REMOTE_CANDIDATES, Offer, is_mdns, negotiated_codecs
from .tracks import PacketTrack

log = logging.getLogger("agent.webrtc")

# msid stream ids: the two cameras share one, the sound has its own, so a browser does not
# hold the room camera's pictures back to lip-sync them with the (more deeply buffered) sound.
VIDEO_STREAM_ID = "classroom"
AUDIO_STREAM_ID = "classroom-sound"
BAD_MESSAGES_LOGGED = 5
VIDEO_TRACK_IDS = ("camera", "document")
AUDIO_TRACK_IDS = ("microphone",)
NOT_ADMITTED = "not admitted yet: only the name can be sent"
MINUS = "minus"
"""The audio track's "layer" while its pupil has the floor: the room without their voice."""


def _preferences(kind: str) -> list[Any]:
    """Capabilities ordered H.264 → VP8 (video) / Opus first (audio), RTX kept."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    order = ["video/h264", "video/vp8", "video/rtx"] if kind == "video" else ["audio/opus"]
    return sorted(
        (c for c in caps if c.mimeType.lower() in order),
        key=lambda c: order.index(c.mimeType.lower()),
    )


VOICE_JITTER_PREFETCH = 0
"""aiortc holds 4 audio packets (80 ms) before handing the first one to its decoder; the voice
has its own bounded jitter buffer after decoding (agent/media/talkback.py), so the kit keeps
none here: a packet is decoded when the next one arrives (20 ms). Measured on loopback, pupil
voice → speaker p50 171 ms with aiortc's default, 74 ms without (docs/talkback.md)."""


def _lean_jitter_buffer(receiver: Any) -> None:
    """Replace aiortc's audio jitter buffer of ``receiver`` by one without prefetch (a private
    attribute of aiortc 1.x's RTCRtpReceiver: kept as is if a later version renames it)."""
    name = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, name, None), JitterBuffer):
        setattr(receiver, name, JitterBuffer(capacity=16, prefetch=VOICE_JITTER_PREFETCH))


class Viewer:
    """A WHEP session; ``close()`` ends it and releases its fan-out queues."""

    def __init__(
        self,
        viewer_id: str,
        pipeline: MediaPipeline,
        rtc_config: RTCConfiguration,
        on_closed: Callable[[Viewer], None],
        connect_timeout: float,
        on_event: Callable[[Viewer, pupil_channel.PupilEvent], None] = lambda v, e: None,
        admitted: bool = True,
    ) -> None:
        self.id = viewer_id
        self.admitted = admitted
        """False while in the waiting room: no media until :meth:`admit`."""
        self.key: str | None = None
        """The page's rejoin key (``X-Pupil-Key``), kept to refuse this tab once removed."""
        self._binds: list[Callable[[], None]] = []
        self._pipeline = pipeline
        self._on_closed = on_closed
        self._on_event = on_event
        self.name: str | None = None
        self.hand_raised_at: float | None = None
        self.channel: Any = None
        self._bad_messages = 0
        self._budget = pupil_channel.MessageBudget(time.monotonic())
        self._connect_timeout = connect_timeout
        self.pc = RTCPeerConnection(rtc_config)
        self.tracks: list[PacketTrack] = []
        self.feedback = PupilFeedback(self._sent_bytes)
        """The pupil's bandwidth estimate and retransmission budget (docs/adaptation.md)."""
        config = pipeline.config
        layers = {source_id: pipeline.layers(source_id) for source_id in VIDEO_TRACK_IDS}
        sound_bps = config.microphone.bitrate_kbps * 1000 if pipeline.audio is not None else 0
        self.control = PupilControl(layers, sound_bps, self.feedback)
        """Layers, pacing and probing from that estimate (docs/adaptation.md)."""
        self.control.on_quality = self._on_quality
        self._control_task: asyncio.Task[None] | None = None
        self.created = time.time()
        self.connected_at: float | None = None
        self.peer: str | None = None
        """The LAN address (or IPv6 /64) it joined from; None: the kit itself, or the relay."""
        self.on_connected: Callable[[Viewer], None] = lambda viewer: None
        self._closing = False
        self._timeout_task: asyncio.Task[None] | None = None
        self._mdns_tasks: list[asyncio.Task[None]] = []
        self._can_send_audio = False
        """The offer's audio m-line is sendrecv: the page can send its microphone."""
        self._floor = False
        self._voice_task: asyncio.Task[None] | None = None
        self.voice_frames = 0
        """Audio frames received from the pupil (with or without the floor)."""
        self.voice_discarded = 0
        """Of those, frames discarded: received while the pupil did not have the floor."""
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def answer(self, offer: Offer) -> str:
        """Negotiate; returns the answer SDP with every ICE candidate (no trickle needed)."""
        self._add_transceivers(offer)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, KeyError, AttributeError) as exc:
            log.info("pupil %s: offer refused: %s", self.id, exc)
            raise BadRequest("SDP offer could not be negotiated") from exc
        except Exception as exc:  # aiortc's own errors (OperationError, InternalError, ...)
            log.info("pupil %s: offer refused: %s", self.id, exc)
            raise BadRequest("SDP offer could not be negotiated") from exc
        answer = self.pc.localDescription.sdp
        mids = [media.rtp.muxId for media in aiortc_sdp.SessionDescription.parse(answer).media]
        self._bind(dict(zip(mids, negotiated_codecs(answer), strict=True)))
        self._timeout_task = asyncio.create_task(self._expire_if_never_connected())
        if offer.dropped_candidates:
            log.info(
                "viewer %s: offer had %d candidates over the caps (%d, %d mDNS names): dropped",
                self.id,
                offer.dropped_candidates,
                MAX_REMOTE_CANDIDATES,
                MAX_MDNS_NAMES,
            )
        transports = self._ice_transports()
        for mid, line in offer.candidates:
            if is_mdns(line):
                task = asyncio.create_task(self._add_candidate(transports.get(mid), line))
                self._mdns_tasks.append(task)
            else:
                await self._add_candidate(transports.get(mid), line)
        return str(answer)

    def _ice_transports(self) -> dict[str, RTCIceTransport]:
        """The ICE transport each m-line (by mid) ended up on: one for all once bundled."""
        transports = {
            t.mid: t.receiver.transport.transport
            for t in self.pc.getTransceivers()
            if t.mid is not None
        }
        sctp = self.pc.sctp
        if sctp is not None and sctp.mid is not None:
            transports[sctp.mid] = sctp.transport.transport
        return transports

    async def _add_candidate(self, transport: RTCIceTransport | None, line: str) -> None:
        """A candidate of the offer, added after the answer (see ``sdp._take_candidates``) to
        the transport of its m-line; aioice ignores one whose address it already has. A
        ``….local`` one is used if the name resolves (in the background: the resolver waits up
        to 1 s); else the pupil's own checks tell the kit its address."""
        if transport is None:  # an m-line the kit answered without a transport (rejected)
            return
        try:
            await transport.addRemoteCandidate(
                aiortc_sdp.candidate_from_sdp(line.removeprefix("candidate:"))
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the viewer closed meanwhile
            log.debug("pupil %s: candidate not used: %s", self.id, exc)

    def _add_transceivers(self, offer: Offer) -> None:
        videos = iter(VIDEO_TRACK_IDS)
        audios = iter(AUDIO_TRACK_IDS)
        for kind, offered in zip(offer.kinds, offer.directions, strict=True):
            if kind not in ("audio", "video"):
                continue
            track_id = next(videos if kind == "video" else audios, None)
            if track_id is None:
                continue  # aiortc answers the extra section itself, without media
            track = PacketTrack(kind, track_id)
            direction = "sendonly"
            if kind == "audio" and offered == "sendrecv" and self._pipeline.talkback is not None:
                direction = "sendrecv"  # talk-back: the page may send its microphone
                self._can_send_audio = True
            transceiver = self.pc.addTransceiver(track, direction=direction)
            if direction == "sendrecv":
                _lean_jitter_buffer(transceiver.receiver)
            transceiver.setCodecPreferences(_preferences(kind))
            stream_id = VIDEO_STREAM_ID if kind == "video" else AUDIO_STREAM_ID
            loop = rtpsend.install(
                transceiver.sender,
                track,
                stream_id,
                track.request_keyframe,
                self.feedback,
                self.control.pacer,
            )
            self.tracks.append(track)
            if kind == "video":
                self.control.tracks[track_id] = track
                if self.control.padder is None:
                    self.control.padder = loop

    def _bind(self, codecs: dict[str, str]) -> None:
        """Bind each track to the codec of its own m-line (by mid: a data channel m-line may
        come first, and m-lines we did not add a track for have a transceiver too)."""
        for transceiver in self.pc.getTransceivers():
            codec = codecs.get(transceiver.mid or "", "")
            track = transceiver.sender.track
            if not isinstance(track, PacketTrack) or not codec:
                continue
            if track.kind == "audio":
                self._bind_when_admitted(
                    functools.partial(
                        track.bind, codec, self._subscribe_audio, self._unsubscribe_audio
                    )
                )
                continue
            source_id = track.id

            def subscribe(
                layer: str, join: bool = False, source_id: str = source_id, codec: str = codec
            ) -> Any:
                return self._pipeline.subscribe_video(source_id, codec, layer, join)

            def unsubscribe(
                queue: Any, layer: str, source_id: str = source_id, codec: str = codec
            ) -> None:
                self._pipeline.unsubscribe_video(source_id, codec, queue, layer)

            start = self.control.start_layer(source_id)
            self._bind_when_admitted(
                functools.partial(track.bind, codec, subscribe, unsubscribe, start)
            )

    def _bind_when_admitted(self, bind: Callable[[], None]) -> None:
        """Bind now if admitted, else at :meth:`admit` (an unbound track sends nothing)."""
        if self.admitted:
            bind()
        else:
            self._binds.append(bind)

    def admit(self) -> None:
        """The teacher lets this pupil in: its tracks start (each asks for a keyframe), the
        adaptation loop too if connected, and the page is told."""
        if self.admitted or self._closing:
            return
        self.admitted = True
        binds, self._binds = self._binds, []
        for bind in binds:
            bind()
        if self.connected_at is not None and self._control_task is None:
            self._start_control()
        self.send(pupil_channel.admitted_message())

    def _start_control(self) -> None:
        self._control_task = asyncio.create_task(self.control.run(), name="pupil-control")

    def _subscribe_audio(self, layer: str) -> Any:
        return self._pipeline.subscribe_audio(self.id if layer == MINUS else None)

    def _unsubscribe_audio(self, queue: Any, layer: str) -> None:
        self._pipeline.unsubscribe_audio(queue, self.id if layer == MINUS else None)

    # -- talk-back (docs/talkback.md, "The media path") -----------------------------------------

    @property
    def can_speak(self) -> bool:
        """The page offered to send sound (sendrecv audio) and this class has talk-back."""
        return self._can_send_audio and self._pipeline.talkback is not None

    @property
    def has_floor(self) -> bool:
        return self._floor

    def set_floor(self, on: bool) -> None:
        """Route (or stop routing) this pupil's sound to the room's speaker and into the other
        pupils' sound; while on, this pupil gets the room without their own voice. Idempotent;
        giving the floor to a pupil who cannot speak, or beyond ``floor_max``, does nothing."""
        if on == self._floor:
            return
        audio = next((t for t in self.tracks if t.kind == "audio"), None)
        if on:
            if self._closing or not self.can_speak or not self._pipeline.open_voice(self.id):
                return
            self._floor = True
            if audio is not None:
                audio.want(MINUS)
            log.info("pupil %s: has the floor", self.id)
            return
        self._floor = False
        if audio is not None:
            audio.want("high")
        self._pipeline.close_voice(self.id)
        log.info("pupil %s: floor taken back", self.id)

    def _on_track(self, track: MediaStreamTrack) -> None:
        """The pupil's sound (a sendrecv audio m-line): consumed for the whole connection, so
        aiortc's queue of decoded frames never grows, and used only while it has the floor."""
        if track.kind == "audio" and self._voice_task is None and self._can_send_audio:
            self._voice_task = asyncio.create_task(self._consume_voice(track), name="pupil-voice")

    async def _consume_voice(self, track: MediaStreamTrack) -> None:
        downmix = Downmix()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.voice_frames += 1
            if not self._floor or not isinstance(frame, av.AudioFrame):
                self.voice_discarded += 1
                continue
            try:
                samples = downmix(frame)
            except (ValueError, av.FFmpegError) as exc:  # a frame PyAV cannot convert
                log.info("pupil %s: voice frame dropped: %s", self.id, exc)
                continue
            if not self._pipeline.push_voice(self.id, samples):
                self.voice_discarded += 1

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("pupil %s: %s", self.id, state)
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.time()
            if self.admitted:
                self._start_control()
            self.on_connected(self)
        elif state in ("failed", "closed"):
            await self.close()

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != pupil_channel.CHANNEL_LABEL or self.channel is not None:
            log.info("pupil %s: unexpected data channel %r closed", self.id, channel.label)
            channel.close()
            return
        self.channel = channel
        channel.on("message", self._on_message)
        config = self._pipeline.config
        fps = {"camera": config.camera.fps, "document": config.document.fps}
        self.send(pupil_channel.welcome_message(fps, self.admitted))
        if self.admitted and self.control.quality != FULL:
            self.send(pupil_channel.quality_message(self.control.quality))

    def _on_quality(self, quality: str) -> None:
        log.info("pupil %s: %s quality", self.id, quality)
        self.send(pupil_channel.quality_message(quality))

    def _sent_bytes(self) -> int:
        """Bytes sent to the pupil so far: media and probe padding."""
        return sum(t.bytes_sent for t in self.tracks) + self.control.pacer.padding_bytes

    def _on_message(self, data: str | bytes) -> None:
        if not self._within_budget():
            return
        try:
            event = pupil_channel.parse_pupil_message(data)
        except ProtocolError as exc:
            self._bad_messages += 1
            if self._bad_messages <= BAD_MESSAGES_LOGGED:  # a buggy page must not flood the log
                log.info("pupil %s: bad data channel message: %s", self.id, exc)
            self.send(pupil_channel.error_message(str(exc)))
            return
        waiting_may = (pupil_channel.SetName, pupil_channel.MicState)  # the name, what it can do
        if not isinstance(event, waiting_may) and not self.admitted:
            self.send(pupil_channel.error_message(NOT_ADMITTED))
            return
        if not isinstance(event, pupil_channel.SetName | pupil_channel.SetHand):
            self._on_event(self, event)  # questions and the floor: the session decides
            return
        before = (self.name, self.hand_raised_at is not None)
        if isinstance(event, pupil_channel.SetName):
            self.name = event.name
        elif event.raised:
            self.hand_raised_at = self.hand_raised_at or time.time()
        else:
            self.hand_raised_at = None
        if (self.name, self.hand_raised_at is not None) != before:
            self._on_event(self, event)  # changes only: a page repeating itself is not news

    def _within_budget(self) -> bool:
        """Apply the pupil's message budget (``pupil_channel.MessageBudget``); logs and tells
        the page only when its state changes, so a flood costs neither log nor replies."""
        verdict = self._budget.admit(time.monotonic())
        Verdict = pupil_channel.Verdict
        if verdict is Verdict.ACCEPT:
            return True
        if verdict is Verdict.RESUME:
            log.info("pupil %s: data channel back within its budget", self.id)
            return True
        if verdict is Verdict.START_DROPPING:
            log.info("pupil %s: data channel over its budget, dropping messages", self.id)
            self.send(pupil_channel.error_message(pupil_channel.TOO_MANY_MESSAGES))
        elif verdict is Verdict.CLOSE:
            log.warning("pupil %s: data channel flooded, closing it", self.id)
            self.send(pupil_channel.error_message(pupil_channel.CLOSED_FOR_FLOODING))
            if self.channel is not None:
                self.channel.close()
        return False

    def send(self, message: str) -> None:
        """Send on the pupil channel if it is open (messages to a gone page are dropped)."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(message)

    def lower_hand(self) -> None:
        """The teacher lowers this pupil's hand; the page is told."""
        self.hand_raised_at = None
        self.send(pupil_channel.hand_message(False))

    async def _expire_if_never_connected(self) -> None:
        await asyncio.sleep(self._connect_timeout)
        if self.connected_at is None:
            log.info("pupil %s: never connected, closing", self.id)
            await self.close()

    async def close(self) -> None:
        if self._closing:
            return
        self.set_floor(False)
        self._closing = True
        if self._timeout_task is not None and self._timeout_task is not asyncio.current_task():
            self._timeout_task.cancel()
        if self._voice_task is not None:
            self._voice_task.cancel()
        if self._control_task is not None:
            self._control_task.cancel()
        for task in self._mdns_tasks:
            task.cancel()
        for track in self.tracks:
            track.stop()
        try:
            await self.pc.close()
        except Exception as exc:  # aiortc stops half-way after a failed negotiation
            log.info("pupil %s: peer connection closed with an error: %s", self.id, exc)
            await self._stop_transports()
        finally:
            self._on_closed(self)

    async def _stop_transports(self) -> None:
        """What ``RTCPeerConnection.close`` did not reach when it raised: every DTLS and ICE
        transport, so that no socket outlives the viewer."""
        dtls = [t.receiver.transport for t in self.pc.getTransceivers()]
        sctp = self.pc.sctp
        if sctp is not None:
            dtls.append(sctp.transport)
        for transport in dtls:
            if transport is None:  # an m-line aiortc never bound to a transport
                continue
            for stop in (transport.stop, transport.transport.stop):
                try:
                    await stop()
                except Exception as exc:
                    log.debug("pupil %s: transport not stopped: %s", self.id, exc)

    def path(self) -> str | None:
        """How this pupil's media flows once connected: ``relay`` when either end relays
        through a TURN server (over the kit's TURN transport, ``udp``/``tcp``/``tls``, when the
        kit relays), else the kit's candidate type (``host``, ``srflx``, ``prflx``) over
        ``udp``; None before the pair is chosen. Read from aioice's nominated pair."""
        sctp = self.pc.sctp
        transports = [t.receiver.transport for t in self.pc.getTransceivers()]
        if sctp is not None:
            transports.append(sctp.transport)
        for dtls in transports:
            connection: Any = getattr(dtls.transport, "_connection", None)
            pair = getattr(connection, "_nominated", {}).get(1)
            if connection is None or pair is None:
                continue
            local, remote = pair.local_candidate, pair.remote_candidate
            transport = "udp"
            if local.type == "relay":
                transport = "tls" if connection.turn_ssl else str(connection.turn_transport)
            kind = "relay" if "relay" in (local.type, remote.type) else local.type
            return f"{kind}/{transport}"
        return None

    def stats(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hand_raised_at": self.hand_raised_at,
            "admitted": self.admitted,
            "can_speak": self.can_speak,
            "floor": self._floor,
            "voice_frames": self.voice_frames,
            "voice_discarded": self.voice_discarded,
            "state": self.state,
            "connected_s": (
                round(time.time() - self.connected_at, 1) if self.connected_at else None
            ),
            "tracks": {track.id: track.stats() for track in self.tracks},
            "link": {**self.feedback.stats(), **self.control.stats()},
        }
