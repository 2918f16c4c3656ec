"""The live class survives a crash of the agent: its state is kept in ``state_dir``.

When a class starts or stops (and every :data:`HEARTBEAT_S` while it is live) the agent writes
``session.json`` atomically (temporary file, fsync, ``os.replace``, fsync of the directory)::

    {"version": 1, "state": "live", "token": "…", "started_at": 1763890000.0,
     "muted": false, "alive_at": 1763890060.0, "expired": ["<sha256 hex>", …]}

At start-up, if the file says ``live`` and the agent was alive less than
:data:`RESUME_WINDOW_S` ago, the class is started again with the same join token: pupils'
pages, which retry on their own, find their class again. A kit switched off overnight does not
resume (cameras never switch on without the teacher). A file that cannot be read or parsed is
logged and ignored (the kit starts idle); it is overwritten at the next Start or Stop.
The digests of ended classes' tokens are kept too, so an old link still says "ended".

With an empty ``state_dir`` nothing is written and nothing is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StateFileError
from .problems import Problems
from .session import ClassSession, SessionState
from .statefile import write_atomic

log = logging.getLogger("agent.resume")

STATE_FILE = "session.json"
VERSION = 1
HEARTBEAT_S = 30.0
"""While live, ``alive_at`` is refreshed this often (one small write)."""
RESUME_WINDOW_S = 300.0
"""A live class is resumed only if the agent was alive this recently."""
MAX_EXPIRED = 200
"""Digests of ended classes' tokens kept in the file."""
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class SavedSession:
    state: str
    """``live`` or ``idle``."""
    token: str | None = None
    started_at: float | None = None
    muted: bool = False
    alive_at: float = 0.0
    expired: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": VERSION,
                "state": self.state,
                "token": self.token,
                "started_at": self.started_at,
                "muted": self.muted,
                "alive_at": self.alive_at,
                "expired": self.expired[-MAX_EXPIRED:],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> SavedSession:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StateFileError(f"not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise StateFileError("not a version 1 session state")
        state, token, started_at = data.get("state"), data.get("token"), data.get("started_at")
        alive_at, muted, expired = data.get("alive_at"), data.get("muted"), data.get("expired")
        if state not in ("live", "idle") or not isinstance(alive_at, int | float):
            raise StateFileError("bad state or alive_at")
        if not isinstance(muted, bool) or not isinstance(expired, list):
            raise StateFileError("bad muted or expired")
        if not all(isinstance(d, str) and _DIGEST.match(d) for d in expired):
            raise StateFileError("bad expired digest")
        if state == "live" and not (
            isinstance(token, str) and _TOKEN.match(token) and isinstance(started_at, int | float)
        ):
            raise StateFileError("a live state needs a token and started_at")
        return cls(
            state=state,
            token=token if state == "live" else None,
            started_at=float(started_at) if state == "live" else None,  # type: ignore[arg-type]
            muted=muted,
            alive_at=float(alive_at),
            expired=list(expired),
        )


def read_state(path: Path) -> SavedSession | None:
    """The saved state, None if there is none; raises :class:`StateFileError` if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"cannot read it ({exc})") from exc
    return SavedSession.from_json(text)


class SessionPersistence:
    """Writes the session's state on Start/Stop and while live; resumes it at start-up."""

    def __init__(
        self,
        session: ClassSession,
        state_dir: Path,
        clock: Callable[[], float] = time.time,
        heartbeat_s: float = HEARTBEAT_S,
        resume_window_s: float = RESUME_WINDOW_S,
        problems: Problems | None = None,
    ) -> None:
        self.session = session
        self.problems = problems if problems is not None else Problems()
        """Where a full disk is reported (the kiosk shows it)."""
        self.path = state_dir / STATE_FILE
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self.resume_window_s = resume_window_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def attach(cls, session: ClassSession, state_dir: str, **kwargs: Any) -> SessionPersistence:
        """Persistence for ``session`` (nothing is written when ``state_dir`` is empty)."""
        persistence = cls(session, Path(state_dir), **kwargs)
        if state_dir:
            session.persist = persistence.save
        return persistence

    @property
    def enabled(self) -> bool:
        return self.session.persist == self.save

    def snapshot(self) -> SavedSession:
        session = self.session
        live = session.state == SessionState.LIVE and session.token is not None
        return SavedSession(
            state="live" if live else "idle",
            token=session.token if live else None,
            started_at=session.started_at if live else None,
            muted=session.muted,
            alive_at=self.clock(),
            expired=[d.hex() for d in session.expired_digests()],
        )

    async def save(self, _session: ClassSession | None = None) -> None:
        """Write the current state now. A failed write is logged: the class goes on."""
        async with self._lock:
            saved = self.snapshot()  # taken under the lock: the last write is the newest state
            data = saved.to_json().encode("utf-8")
            if not await asyncio.to_thread(write_atomic, self.path, data, self.problems):
                log.error("cannot save the session state to %s; the class goes on", self.path)

    def load(self) -> SavedSession | None:
        """The saved state, or None (none, disabled, or unusable: logged). Blocking, but one
        small file read, done once at start-up."""
        if not self.enabled:
            return None
        try:
            return read_state(self.path)
        except StateFileError as exc:
            log.error("ignoring %s: %s; the kit starts idle", self.path, exc)
            return None

    async def resume(self, saved: SavedSession | None) -> bool:
        """Start the class ``saved`` as live (from :meth:`load`, read before the HTTP server
        starts), if recent enough; True if it was resumed. No await comes before the session
        is ``starting``, so a pupil who arrives meanwhile waits for it instead of being told
        the class is not live."""
        if not self.enabled or saved is None:
            return False
        self.session.restore_expired(bytes.fromhex(d) for d in saved.expired)
        if saved.state != "live" or saved.token is None:
            return False
        age = self.clock() - saved.alive_at
        if not 0 <= age <= self.resume_window_s:
            log.info("not resuming the class left live %.0f s ago: too old", age)
            await self.save()
            return False
        log.info("resuming the class left live %.1f s ago (same join link)", age)
        try:
            await self.session.start(resume_token=saved.token, started_at=saved.started_at)
        except Exception:
            log.exception("could not resume the class")
            return False
        if saved.muted:
            self.session.set_muted(True)
            await self.save()
        return True

    def start_heartbeat(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._heartbeat(), name="session-heartbeat")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self.session.state == SessionState.LIVE:
                await self.save()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
