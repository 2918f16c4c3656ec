"""The class session: Start, Stop, the join token, the viewers, and who is in.

States: ``idle`` → ``starting`` → ``live`` → ``stopping`` → ``idle``. Nothing is captured
while idle (devices closed, camera LEDs off). Start opens the devices and creates a join token
(192 random bits, URL-safe); Stop closes every viewer, releases the devices and invalidates the
token. Tokens of ended sessions are remembered (hashed) so a stale link gets "expired" (404)
rather than "not live" (409).

Who may join and what pupils asked is the live class's :class:`~agent.classroom.Classroom`
(the waiting room, removal, lock, questions, who has the floor, the audit): created at Start,
dropped at Stop with every name in it. The teacher's controls below apply its decisions to the
viewers (``Viewer.set_floor`` routes a holder's voice to the room, docs/talkback.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .classroom import WAITING_MAX_S, Classroom
from .clock import MediaClock
from .config import AgentConfig
from .errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from .media.pipeline import MediaPipeline
from .sources.presence import idle_sources_status
from .webrtc import pupil_channel, uplink
from .webrtc.admission import JoinGate
from .webrtc.reach import IceServerSet
from .webrtc.sdp import parse_offer
from .webrtc.viewer import Viewer

log = logging.getLogger("agent.session")

TOKEN_BYTES = 24  # 192 bits
ENDED_FLUSH_S = 0.2
"""At Stop, time given to the "ended" data channel messages to leave before the close."""
STARTING_WAIT_S = 10.0
UPLINK_SHARE_S = 1.0
"""How often the school's uplink is shared again among the pupils (``share_uplink``)."""
"""A pupil who joins while the class is starting (or resuming) waits this long for it."""


class SessionState(enum.StrEnum):
    IDLE = "idle"
    STARTING = "starting"
    LIVE = "live"
    STOPPING = "stopping"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ClassSession:
    """Owns the media pipeline and the viewers of the class that is live (if any)."""

    def __init__(
        self,
        config: AgentConfig,
        base_url: str,
        pipeline_factory: Callable[
            [AgentConfig, MediaClock, asyncio.AbstractEventLoop], MediaPipeline
        ] = MediaPipeline,
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES),
        on_live: Callable[[ClassSession], None] | None = None,
    ) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self._pipeline_factory = pipeline_factory
        self._new_token = new_token
        self._on_live = on_live
        self.network = IceServerSet(config.webrtc.ice_servers)
        """The kit's ICE servers (the server's, else its own), probed (webrtc/reach.py)."""
        self.state = SessionState.IDLE
        self.token: str | None = None
        self.started_at: float | None = None
        self.pipeline: MediaPipeline | None = None
        self.viewers: dict[str, Viewer] = {}
        self._joins = JoinGate()
        self._expired: collections.deque[bytes] = collections.deque(maxlen=1000)
        self._lock = asyncio.Lock()
        self.muted = False
        self.listeners: list[Callable[[ClassSession], None]] = []
        """Called (on the loop) after every Start and Stop: the server link reports the state."""
        self._uplink_task: asyncio.Task[None] | None = None
        self.persist: Callable[[ClassSession], Awaitable[None]] | None = None
        """Awaited after every Start, Stop and mute change: saves the state (agent/resume.py)."""
        self.waiting_room = config.kiosk.waiting_room
        """The next class's waiting room (the teacher may switch it before Start); back to the
        configured default at Stop."""
        self.classroom: Classroom | None = None
        """Who is in and what they asked, for the live class only (agent/classroom.py):
        dropped at Stop with every name and question."""

    # -- Start / Stop ----------------------------------------------------------------------

    async def start(self, resume_token: str | None = None, started_at: float | None = None) -> None:
        """Go live (idempotent). ``resume_token``: the class left live by a previous run of the
        agent goes on with the same join link (and ``started_at``)."""
        async with self._lock:
            if self.state == SessionState.LIVE:
                return
            self.state = SessionState.STARTING
            # A resumed class has its token from the start: the server link's hello, sent while
            # the devices open, then routes pupils here rather than calling their link expired.
            self.token = resume_token
            loop = asyncio.get_running_loop()
            pipeline = self._pipeline_factory(self.config, MediaClock(), loop)
            try:
                await pipeline.start()
            except Exception:
                log.exception("could not start the media pipeline")
                await pipeline.stop()
                self.state, self.token = SessionState.IDLE, None
                raise
            self.pipeline = pipeline
            self.muted = pipeline.muted = False
            self.token = resume_token or self._new_token()
            self.started_at = started_at if resume_token and started_at else time.time()
            self.classroom = Classroom(
                self.waiting_room, self.started_at, self.config.kiosk.floor_max
            )
            self.state = SessionState.LIVE
            self._uplink_task = asyncio.create_task(self._share_uplink(), name="uplink-share")
            log.info("class is live")
        await self._persist()
        if self._on_live is not None:
            self._on_live(self)
        self._notify()

    async def stop(self) -> None:
        """End the class (idempotent): viewers closed, devices released, token invalid."""
        async with self._lock:
            if self.state == SessionState.IDLE:
                return
            self.state = SessionState.STOPPING
            if self._uplink_task is not None:
                self._uplink_task.cancel()
                self._uplink_task = None
            if self.token is not None:
                self._expired.append(_digest(self.token))
            self.token = None
            viewers = list(self.viewers.values())
            if self.classroom is not None:  # nobody is heard any more, from now
                for viewer_id in self.classroom.end_floor(time.time()):
                    if viewer_id in self.viewers:
                        self.viewers[viewer_id].set_floor(False)
            for viewer in viewers:  # pages show "class ended" at once instead of retrying
                viewer.send(pupil_channel.ended_message())
            if any(v.channel is not None for v in viewers):
                await asyncio.sleep(ENDED_FLUSH_S)
            await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
            self.viewers.clear()
            self.classroom = None  # names, questions and the audit go with it
            self.waiting_room = self.config.kiosk.waiting_room
            if self.pipeline is not None:
                await self.pipeline.stop()
            self.pipeline = None
            self.started_at = None
            self.state = SessionState.IDLE
            log.info("class ended")
        await self._persist()
        self._notify()

    async def save_state(self) -> None:
        """Persist the state now (after a change the teacher made, e.g. mute)."""
        await self._persist()

    async def _persist(self) -> None:
        if self.persist is not None:
            await self.persist(self)

    def expired_digests(self) -> list[bytes]:
        """SHA-256 digests of ended classes' tokens, oldest first (for persistence)."""
        return list(self._expired)

    def restore_expired(self, digests: Iterable[bytes]) -> None:
        """Remember the ended classes of a previous run (their links keep saying "ended")."""
        known = set(self._expired)
        self._expired.extend(d for d in digests if d not in known)

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)

    def reconfigure(self, config: AgentConfig) -> None:
        """Use ``config`` from now on: viewers that join next get its ICE servers and limits;
        the media settings take effect at the next Start (the caller waits for idle)."""
        if self.state == SessionState.IDLE and self.waiting_room == self.config.kiosk.waiting_room:
            self.waiting_room = config.kiosk.waiting_room  # unless the teacher chose already
        self.config = config
        self.network.set_configured(config.webrtc.ice_servers)

    # -- Viewers (WHEP) ----------------------------------------------------------------------

    def check_token(self, token: str) -> None:
        """Raise the right refusal for a join token that cannot be used now."""
        live = self.state == SessionState.LIVE and self.token is not None
        if live and hmac.compare_digest(token.encode(), self.token.encode()):  # type: ignore[union-attr]
            return
        if _digest(token) in self._expired:
            raise NotFound("this link has expired: the class has ended", "ended")
        if live:
            raise NotFound("unknown link", "invalid")
        raise Conflict("the class is not live", "waiting")

    async def wait_started(self, timeout: float = STARTING_WAIT_S) -> None:
        """While the class is starting (e.g. resuming after a restart), wait for it to be live
        rather than turning pupils away with "not live"."""
        if self.state == SessionState.STARTING:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout), self._lock:
                    pass

    async def add_viewer(
        self, token: str, body: bytes, peer: str | None = None, key: str | None = None
    ) -> tuple[Viewer, str]:
        """WHEP POST: validate, negotiate and return the viewer and the answer SDP. ``peer``:
        the LAN address it comes from (``ratelimit.peer_key``), None for the kit or the relay;
        ``key``: the page's rejoin key (``X-Pupil-Key``, agent/classroom.py)."""
        await self.wait_started()
        self.check_token(token)
        self.check_join(key)
        offer = parse_offer(body)
        webrtc = self.config.webrtc
        if len(self.viewers) >= webrtc.max_viewers:
            raise ServiceUnavailable("this class is full", "full")
        await self._joins.admit(
            self._connecting,
            peer,
            webrtc.max_connecting,
            webrtc.max_connecting_per_address,
            max_waiting=webrtc.max_viewers,
        )
        # A first probe of new ICE servers may be running: wait until it has decided (a few
        # round trips), rather than gather with a STUN/TURN server that times out (webrtc/reach.py).
        waited = await self.network.wait_settled(webrtc.probe_timeout_s)
        if waited >= 0.05:
            log.info("a join waited %.2f s for the network probe", waited)
        self.check_token(token)  # the class may have ended while this join waited
        self.check_join(key)  # or been locked
        if len(self.viewers) >= webrtc.max_viewers:
            raise ServiceUnavailable("this class is full", "full")
        assert self.pipeline is not None and self.classroom is not None
        viewer_id = secrets.token_urlsafe(16)
        viewer = Viewer(
            viewer_id,
            self.pipeline,
            self.network.rtc_configuration(),
            self._viewer_closed,
            self.config.webrtc.connect_timeout_s,
            self._pupil_event,
            admitted=self.classroom.joined(viewer_id, key, time.time()),
        )
        viewer.peer = peer
        viewer.key = key
        viewer.on_connected = self._viewer_connected
        self.viewers[viewer.id] = viewer
        try:
            answer = await viewer.answer(offer)
        except BaseException:
            await viewer.close()
            raise
        if self.state != SessionState.LIVE:  # stopped while negotiating
            await viewer.close()
            raise NotFound("this link has expired: the class has ended", "ended")
        return viewer, answer

    def share_uplink(self) -> dict[str, int]:
        """Share ``[network] uplink_kbps`` among the pupils who reach the kit from outside the
        school (max-min fair, ``webrtc.uplink``): each pupil's share caps their layers and
        probes. A pupil's demand is their best level's cost, up to 1.5 × their estimate (room
        to probe). Pupils on the school's LAN do not use the uplink and are not counted. Read
        at each round: a budget pushed during a class applies at once."""
        budget = self.config.network.uplink_kbps * 1000
        outside = {  # a pupil in the waiting room is sent nothing: no share
            v.id: v.control.demand_bps
            for v in self.viewers.values()
            if v.peer is None and v.admitted
        }
        shares = uplink.share(budget, outside) if budget else {}
        for viewer in self.viewers.values():
            viewer.control.cap_bps = shares.get(viewer.id, 0)
        return shares

    async def _share_uplink(self) -> None:
        while True:
            await asyncio.sleep(UPLINK_SHARE_S)
            try:
                self.share_uplink()
            except Exception:  # the class goes on with the shares it had
                log.exception("uplink shares not updated")
            try:
                await self.send_away_overdue(time.time())
            except Exception:
                log.exception("waiting pupils not checked")

    async def send_away_overdue(self, now: float) -> list[str]:
        """Pupils who waited ``classroom.WAITING_MAX_S`` without being let in: their page is
        told (``lobby_timeout``) and their connection closed, so a link forgotten in a tab does
        not hold a place (and a connection) for the whole class. Returns their ids."""
        overdue = [
            v for v in self.viewers.values() if not v.admitted and now - v.created > WAITING_MAX_S
        ]
        for viewer in overdue:
            log.info(
                "pupil %s: waited %.0f s without being let in, closing",
                viewer.id,
                now - viewer.created,
            )
            viewer.send(pupil_channel.lobby_timeout_message())
        if any(v.channel is not None for v in overdue):
            await asyncio.sleep(ENDED_FLUSH_S)
        await asyncio.gather(*(v.close() for v in overdue), return_exceptions=True)
        return [v.id for v in overdue]

    async def remove_viewer(self, viewer_id: str) -> None:
        viewer = self.viewers.get(viewer_id)
        if viewer is None:
            raise NotFound("unknown WHEP session")
        await viewer.close()

    def check_join(self, key: str | None) -> None:
        """Refuse a removed tab, or a new pupil of a locked class (403, agent/classroom.py)."""
        if self.classroom is not None:
            self.classroom.check_join(key, time.time())

    def _viewer_closed(self, viewer: Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is not None and self.classroom is not None:
            before = list(self.classroom.floor)
            self.classroom.left(viewer.id, viewer.name, time.time())
            self._floor_changed(before)
        self._joins.changed()

    def _viewer_connected(self, viewer: Viewer) -> None:
        self._joins.changed()

    def _connecting(self, peer: str | None) -> int:
        """Half-open viewers (answered, not connected), in all or from ``peer``."""
        return sum(
            1
            for v in self.viewers.values()
            if v.connected_at is None and (peer is None or v.peer == peer)
        )

    def _pupil_event(self, viewer: Viewer, event: pupil_channel.PupilEvent) -> None:
        if isinstance(event, pupil_channel.SetHand):
            log.info("pupil %s: hand %s", viewer.id, "raised" if event.raised else "lowered")
        elif isinstance(event, pupil_channel.ReleaseFloor | pupil_channel.MicState):
            self._floor_event(viewer, event)
        elif isinstance(event, pupil_channel.SetName) and self.classroom is not None:
            if viewer.id in self.classroom.floor:  # every page shows the new name
                self.classroom.rename(viewer.id, viewer.name)
                self._send_floor()
        elif isinstance(event, pupil_channel.Ask) and self.classroom is not None:
            try:
                question = self.classroom.ask(viewer.id, viewer.name, event.text, time.time())
            except ValueError as exc:  # over the pupil's question budget: our own text
                viewer.send(pupil_channel.error_message(str(exc)))
                return
            log.info("pupil %s: asked a question (%d characters)", viewer.id, len(event.text))
            viewer.send(pupil_channel.question_message(question.id, "open"))

    def _floor_event(
        self, viewer: Viewer, event: pupil_channel.ReleaseFloor | pupil_channel.MicState
    ) -> None:
        """The pupil's stop button, or what its page says of its microphone: a holder whose
        microphone is refused or missing loses the floor (the kiosk shows why)."""
        classroom = self.classroom
        if classroom is None or self.state != SessionState.LIVE:
            return
        before = list(classroom.floor)
        now = time.time()
        if isinstance(event, pupil_channel.ReleaseFloor):
            if classroom.take_floor(viewer.id, now, "pupil"):
                log.info("pupil %s: gave the floor back", viewer.id)
        elif classroom.set_mic(viewer.id, event.state, now):
            log.info("pupil %s: microphone %s, floor taken back", viewer.id, event.state)
        if not self._floor_changed(before) and viewer.admitted:
            viewer.send(self._floor_message(viewer.id))  # the page learns the floor as it is

    def _floor_message(self, viewer_id: str) -> str:
        assert self.classroom is not None
        floor = self.classroom.floor
        return pupil_channel.floor_message(
            viewer_id in floor, [turn.name for turn in floor.values()]
        )

    def _send_floor(self) -> None:
        """Tell every admitted pupil who has the floor (and whether it is them)."""
        if self.classroom is None:
            return
        for viewer in self.viewers.values():
            if viewer.admitted:
                viewer.send(self._floor_message(viewer.id))

    def _floor_changed(self, before: list[str]) -> bool:
        """Apply the classroom's floor to the viewers (``set_floor``: whose sound reaches the
        room) and tell every page, if it changed from ``before``; returns whether it did."""
        if self.classroom is None:
            return False
        now = list(self.classroom.floor)
        if now == before:
            return False
        for viewer_id in before:
            if viewer_id not in now and viewer_id in self.viewers:
                self.viewers[viewer_id].set_floor(False)
        for viewer_id in now:
            if viewer_id not in before:
                viewer = self.viewers[viewer_id]
                viewer.set_floor(True)
                if not viewer.has_floor:  # the media side refused: the kiosk would be wrong
                    log.warning("pupil %s: given the floor but its sound is not routed", viewer_id)
        self._send_floor()
        return True

    # -- Teacher's controls ----------------------------------------------------------------

    def give_floor(self, viewer_id: str) -> None:
        """The teacher gives this pupil the floor: their page opens its microphone, the kit
        plays their voice in the room and sends it to the others; their raised hand goes down.
        Full (``[kiosk] floor_max``): the oldest turn ends (agent/classroom.py ``give_floor``)."""
        classroom = self._live_classroom()
        viewer = self._pupil(viewer_id)
        before = list(classroom.floor)
        passed = classroom.give_floor(
            viewer.id, viewer.name, viewer.admitted, viewer.can_speak, time.time()
        )
        for other in passed:
            log.info("pupil %s: floor passed on", other)
        if self._floor_changed(before):
            log.info("pupil %s: given the floor", viewer.id)
            if viewer.hand_raised_at is not None:  # the hand was for this: it goes down
                viewer.lower_hand()

    def take_floor(self, viewer_id: str) -> None:
        """The teacher takes the floor back (idempotent): the pupil's page closes its
        microphone, and whatever it still sends is discarded by the kit."""
        classroom = self._live_classroom()
        viewer = self._pupil(viewer_id)
        before = list(classroom.floor)
        if classroom.take_floor(viewer.id, time.time(), "teacher"):
            log.info("pupil %s: floor taken back", viewer.id)
        self._floor_changed(before)

    def lower_hand(self, viewer_id: str) -> None:
        viewer = self.viewers.get(viewer_id)
        if viewer is None:
            raise NotFound("this pupil has left")
        viewer.lower_hand()

    def lower_all_hands(self) -> None:
        for viewer in self.viewers.values():
            if viewer.hand_raised_at is not None:
                viewer.lower_hand()

    # -- Who is in, and the questions (agent/classroom.py, docs/kiosk.md) --------------------

    def _live_classroom(self) -> Classroom:
        if self.state != SessionState.LIVE or self.classroom is None:
            raise Conflict("the class is not live")
        return self.classroom

    def _pupil(self, viewer_id: str) -> Viewer:
        viewer = self.viewers.get(viewer_id)
        if viewer is None:
            raise NotFound("this pupil has left")
        return viewer

    def admit(self, viewer_id: str) -> None:
        """Let a waiting pupil in: their media starts, and the question shown to the class."""
        classroom = self._live_classroom()
        viewer = self._pupil(viewer_id)
        if viewer.admitted:
            return
        classroom.admitted(viewer.id, viewer.key, viewer.name, time.time())
        viewer.admit()
        shown = classroom.shown_text()
        if shown is not None:
            viewer.send(pupil_channel.shown_message(shown))
        if classroom.floor:
            viewer.send(self._floor_message(viewer.id))
        log.info("pupil %s: admitted", viewer.id)

    def admit_all(self) -> None:
        self._live_classroom()
        for viewer in sorted(self.viewers.values(), key=lambda v: v.created):
            if not viewer.admitted:
                self.admit(viewer.id)

    async def remove_pupil(self, viewer_id: str) -> None:
        """The teacher removes a pupil (waiting or in): the page is told, the connection ends,
        and that tab's rejoin key is refused for the rest of the class."""
        classroom = self._live_classroom()
        viewer = self._pupil(viewer_id)
        before = classroom.shown
        holders = list(classroom.floor)
        classroom.removed(viewer.id, viewer.key, viewer.name, time.time())
        self._floor_changed(holders)  # their sound stops before anything else
        log.info("pupil %s: removed by the teacher", viewer.id)
        if viewer.channel is not None:
            viewer.send(pupil_channel.removed_message())
            await asyncio.sleep(ENDED_FLUSH_S)  # the message leaves before the close
        await viewer.close()
        self._shown_changed(before)

    def set_locked(self, locked: bool) -> None:
        """Lock the class: no new pupil may join (pupils already in, or admitted earlier and
        coming back from a network blip, still may)."""
        self._live_classroom().locked = locked
        log.info("class %s", "locked" if locked else "unlocked")

    def set_waiting_room(self, enabled: bool) -> None:
        """Switch the waiting room: while idle for the next class, while live for this one
        (switched off, everyone waiting is let in)."""
        if self.state != SessionState.LIVE or self.classroom is None:
            self.waiting_room = enabled
            return
        self.classroom.waiting_room = self.waiting_room = enabled
        if not enabled:
            self.admit_all()

    def mark_question(self, question_id: str, state: str) -> None:
        """``answered`` or ``dismissed``: it leaves the kiosk's list (and the class's screen
        if shown); the asker's page is told."""
        classroom = self._live_classroom()
        before = classroom.shown
        try:
            question = classroom.set_question(question_id, state)
        except ValueError:
            raise BadRequest("state must be answered or dismissed") from None
        asker = self.viewers.get(question.viewer_id)
        if asker is not None:
            asker.send(pupil_channel.question_message(question.id, state))
        self._shown_changed(before)

    def show_question(self, question_id: str | None) -> None:
        """Show an open question's text (never its asker's name) on every admitted pupil's
        page; None hides it."""
        classroom = self._live_classroom()
        before = classroom.shown
        classroom.show(question_id)
        self._shown_changed(before)

    def _shown_changed(self, before: str | None) -> None:
        """Tell every admitted pupil what is shown now, if it changed from ``before``."""
        if self.classroom is None or self.classroom.shown == before:
            return
        message = pupil_channel.shown_message(self.classroom.shown_text())
        for viewer in self.viewers.values():
            if viewer.admitted:
                viewer.send(message)

    def audit(self) -> list[dict[str, Any]]:
        """The live class's audit, oldest first (empty while idle: nothing outlives Stop)."""
        return list(self.classroom.audit) if self.classroom is not None else []

    def set_muted(self, muted: bool) -> None:
        if self.state != SessionState.LIVE or self.pipeline is None:
            raise Conflict("the class is not live")
        self.muted = self.pipeline.muted = muted

    async def preview_jpeg(self, source_id: str) -> bytes:
        pipeline = self.pipeline
        if self.state != SessionState.LIVE or pipeline is None:
            raise Conflict("the class is not live")
        data = await asyncio.to_thread(pipeline.preview_jpeg, source_id)
        if data is None:
            raise NotFound("no picture from this camera yet")
        return data

    def pupils(self) -> list[dict[str, Any]]:
        """Connected pupils, in order of arrival, for the kiosk (``admitted`` false: in the
        waiting room; ``floor``: has the floor; ``can_speak``: could be given it; ``mic``: what
        its page says of its microphone, docs/kiosk.md)."""
        floor = self.classroom.floor if self.classroom is not None else {}
        mic = self.classroom.mic if self.classroom is not None else {}
        return [
            {
                "id": v.id,
                "name": v.name,
                "admitted": v.admitted,
                "hand_raised_at": v.hand_raised_at,
                "connected": v.connected_at is not None and v.state == "connected",
                "path": v.path(),
                "floor": v.id in floor,
                "can_speak": v.can_speak and mic.get(v.id) != "insecure",
                "mic": mic.get(v.id),
            }
            for v in sorted(self.viewers.values(), key=lambda v: v.created)
        ]

    # -- Status ----------------------------------------------------------------------------

    def classroom_health(self) -> dict[str, Any] | None:
        """The live class's admissions for the health report: counts only, never a name
        (kitlink ``ClassroomHealth``); None while idle."""
        classroom = self.classroom
        if self.state != SessionState.LIVE or classroom is None:
            return None
        waiting = sum(1 for v in self.viewers.values() if not v.admitted)
        return {
            "waiting_room": classroom.waiting_room,
            "locked": classroom.locked,
            "waiting": waiting,
            **classroom.audit_counts(),
            **classroom.floor_counts(),
        }

    def class_status(self) -> dict[str, Any]:
        """The kiosk's "who is in" settings and the open questions, oldest first."""
        classroom = self.classroom
        if classroom is None:
            return {
                "waiting_room": self.waiting_room,
                "locked": False,
                "shown": None,
                "floor": [],
                "floor_max": self.config.kiosk.floor_max,
                "questions": [],
            }
        return {**classroom.settings(), "questions": classroom.open_questions()}

    @property
    def join_url(self) -> str | None:
        return f"{self.base_url}/join/{self.token}" if self.token else None

    @property
    def whep_url(self) -> str | None:
        return f"{self.base_url}/whep/{self.token}" if self.token else None

    def paths(self) -> dict[str, int]:
        """Connected pupils counted by path (``relay/udp``, ``host/udp``…: health report)."""
        counts: dict[str, int] = {}
        for viewer in self.viewers.values():
            path = viewer.path()
            if path is not None:
                counts[path] = counts.get(path, 0) + 1
        return counts

    def network_status(self) -> dict[str, Any]:
        """The school's way out and the pupils' paths, for the kiosk (docs/kiosk.md)."""
        health = self.network.health(self.paths())
        return {**health.model_dump(), "servers": bool(self.network.endpoints())}

    def status(self) -> dict[str, Any]:
        live = self.state == SessionState.LIVE
        pipeline = self.pipeline
        return {
            "session": {
                "state": "live" if live else "idle",
                "phase": str(self.state),
                "join_url": self.join_url if live else None,
                "whep_url": self.whep_url if live else None,
                "viewers": len(self.viewers),
                "muted": self.muted,
                "started_at": self.started_at,
                "elapsed_s": round(time.time() - self.started_at, 1) if self.started_at else 0,
            },
            "sources": (
                pipeline.source_status()
                if pipeline is not None
                else idle_sources_status(self.config)
            ),
            "encoders": pipeline.encoder_stats() if pipeline is not None else [],
            "viewers": [v.stats() for v in self.viewers.values()],
            "pupils": self.pupils(),
            "class": self.class_status(),
            "network": self.network_status(),
            "language": self.config.kiosk.language,
        }
