"""ICE servers for kits and pupils: which STUN/TURN URLs, with which TURN credentials, for how
long (issue 12; docs/provisioning.md, "TURN").

The server is given TURN URLs (``--turn-url``) and coturn's shared secret
(``--turn-secret-file``); :mod:`provisioning.turn` validates them and mints coturn REST
credentials. This module decides *what* each party gets:

- **Kits** that list the ``ice_servers`` feature in their ``hello`` get an ``ice_servers``
  message after ``welcome``, when a class starts, and again before it expires while the link is
  up (:meth:`IceIssuer.kit_credential`, driven by a per-link task in :mod:`provisioning.link`).
- **Pupils** get ``Link: <…>; rel="ice-server"`` headers (RFC 9725 §4.6, the same in
  draft-ietf-wish-whep) on the relay's WHEP answers and on ``OPTIONS`` for a live class
  (:meth:`IceIssuer.pupil_links`), minted per request under a random ``pupil-…`` subject.

Lifetimes. coturn checks a REST credential on every authenticated request, including the
refreshes that keep an allocation alive (every ~10 minutes), so an allocation dies when its
credential expires: a credential must outlast the stay it serves. ``class_s`` is the longest
class expected (default 2 h: a double period with its break), ``margin_s`` the slack after it
(default 30 min: a class that overruns, a late clock):

- a pupil's expires at the class's expected end + margin (the class's start as the server saw
  it + ``class_s`` + ``margin_s``; a pupil who joins an overrunning class gets ``margin_s``);
- a kit's set is minted for ``class_s + margin_s`` and replaced once less than ``class_s`` is
  left, i.e. every ``margin_s``: any allocation the kit makes with the set it holds stays good
  for at least a whole class.

Nothing is stored anywhere but in memory, and nothing outlives its expiry: coturn refuses it.

**One live set per kit.** A kit's set is kept (``KitIce``) and re-sent unchanged while it has
more than ``class_s`` left, also across reconnections; a new one is minted only when it is due
for renewal or when a class starts (new subject), and class starts beyond a small budget reuse
the set the kit has. A stolen kit credential therefore yields what the kit has anyway, never a
stream of fresh usernames (each of which would get its own coturn quota).

Pure logic: the clock is passed in or injected; only :func:`load_turn` reads a file.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kitlink import FEATURE_ICE_SERVERS, IceServers, PushedIceServer
from kitsys.icelinks import link_header

from .errors import ConfigError
from .turn import TurnUrl, mint, parse_turn_url, read_secret_file

ICE_FEATURE = FEATURE_ICE_SERVERS
"""The ``hello.features`` entry of a kit that understands the ``ice_servers`` message."""

DEFAULT_CLASS_S = 2 * 3600.0
DEFAULT_MARGIN_S = 30 * 60.0
MIN_DURATION_S = 60.0
MAX_DURATION_S = 24 * 3600.0
MAX_ICE_SERVERS = 8
"""``IceServers.ice_servers`` holds at most 8 entries (TURN URLs plus the STUN URLs derived)."""

MINT_BURST = 4.0
MINT_REFILL_PER_S = 1 / 600
"""New kit sets for class starts: 4 at once, then one every 10 minutes (renewals are due by
time and need none); beyond that a class start reuses the kit's current set."""

_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class TurnSettings:
    """The validated TURN configuration of the server. ``secret`` is never shown."""

    urls: tuple[TurnUrl, ...]
    secret: bytes = field(repr=False)
    class_s: float = DEFAULT_CLASS_S
    margin_s: float = DEFAULT_MARGIN_S

    @property
    def ttl_s(self) -> float:
        """Lifetime of a kit's set when minted."""
        return self.class_s + self.margin_s

    @property
    def stun_urls(self) -> tuple[str, ...]:
        """``stun:HOST:PORT`` of every UDP TURN URL (coturn answers STUN Binding on its
        listening ports): pupils and kits learn their public address from the fleet's own
        server, never a third party's. Browsers speak STUN over UDP only, so TCP and TLS URLs
        give none."""
        out: list[str] = []
        for url in self.urls:
            stun = f"stun:{url.host}:{url.port}"
            if url.transport == "udp" and url.scheme == "turn" and stun not in out:
                out.append(stun)
        return tuple(out)

    def public(self) -> dict[str, Any]:
        """What the admin API shows: never the secret, only that there is one."""
        return {
            "configured": True,
            "urls": [str(url) for url in self.urls],
            "stun_urls": list(self.stun_urls),
            "secret_set": bool(self.secret),
            "class_s": self.class_s,
            "margin_s": self.margin_s,
            "kit_ttl_s": self.ttl_s,
            "kit_renew_every_s": self.margin_s,
        }


NOT_CONFIGURED: dict[str, Any] = {
    "configured": False,
    "urls": [],
    "stun_urls": [],
    "secret_set": False,
    "class_s": None,
    "margin_s": None,
    "kit_ttl_s": None,
    "kit_renew_every_s": None,
}


def _check_duration(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value)):
        raise ConfigError(f"{name} must be a number of seconds")
    if not MIN_DURATION_S <= value <= MAX_DURATION_S:
        raise ConfigError(
            f"{name} must be from {MIN_DURATION_S:.0f} s to {MAX_DURATION_S / 3600:.0f} h, "
            f"not {value:g} s"
        )


def load_turn(
    urls: Sequence[str],
    secret_file: Path | None,
    class_s: float = DEFAULT_CLASS_S,
    margin_s: float = DEFAULT_MARGIN_S,
) -> TurnSettings | None:
    """The server's TURN settings from its options, checked at start-up: ``None`` when neither
    URLs nor a secret file is given; otherwise both are needed, every URL must be valid and
    distinct, and the secret file readable by its owner only (:func:`read_secret_file`)."""
    if not urls and secret_file is None:
        return None
    if not urls:
        raise ConfigError("--turn-secret-file is set but no --turn-url: give at least one")
    if secret_file is None:
        raise ConfigError("--turn-url needs --turn-secret-file (coturn's static-auth-secret)")
    _check_duration("the TURN class length (--turn-class-length)", class_s)
    _check_duration("the TURN margin (--turn-margin)", margin_s)
    parsed = tuple(parse_turn_url(text) for text in urls)
    if len({str(url) for url in parsed}) != len(parsed):
        raise ConfigError("a --turn-url is given twice")
    settings = TurnSettings(parsed, b"", class_s, margin_s)
    if len(parsed) + len(settings.stun_urls) > MAX_ICE_SERVERS:
        raise ConfigError(
            f"too many TURN URLs: with the STUN URLs derived from them, at most "
            f"{MAX_ICE_SERVERS} ICE servers fit in a kit's ice_servers message"
        )
    return TurnSettings(parsed, read_secret_file(secret_file), class_s, margin_s)


# -- who gets what ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KitCredential:
    """A kit's current set: the same subject and expiry mint the same passwords."""

    subject: str
    expires_at: int


@dataclass(slots=True)
class KitIce:
    """What the server remembers of one kit's ICE credentials (in memory, per kit)."""

    credential: KitCredential | None = None
    budget: float = MINT_BURST
    budget_at: float = 0.0
    minted: int = 0


def kit_subject(kit_id: str, class_digest: str | None) -> str:
    """``class-<first 16 hex digits of the class token's SHA-256>`` while a class is live, else
    ``kit-<id>`` (the kit's own probes): coturn's logs then tell which class a relay served."""
    if class_digest:
        return "class-" + class_digest[:16]
    safe = _SUBJECT_UNSAFE.sub("_", kit_id)
    return (safe if safe.startswith("kit-") else "kit-" + safe)[:64]


class IceIssuer:
    """Mints what kits and pupils get; disabled (nothing minted, nothing sent) without TURN."""

    def __init__(
        self, settings: TurnSettings | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.kit_sets = 0
        self.pupil_sets = 0

    @property
    def enabled(self) -> bool:
        return self.settings is not None

    def public(self) -> dict[str, Any]:
        return self.settings.public() if self.settings else dict(NOT_CONFIGURED)

    # -- kits -----------------------------------------------------------------------------------

    def kit_credential(self, state: KitIce, kit_id: str, class_digest: str | None) -> KitCredential:
        """The set the kit should hold now; updates ``state``. Kept while it has more than
        ``class_s`` left and its subject still fits (or a class start finds the budget spent);
        else a new one, good for ``class_s + margin_s``."""
        assert self.settings is not None
        now = self.clock()
        subject = kit_subject(kit_id, class_digest)
        current = state.credential
        if current is not None and current.expires_at - now > self.settings.class_s:
            keep = current.subject == subject or not self._spend(state, now)
            if keep:  # still long-lived: same subject, or a class start beyond the budget
                return current
        state.credential = KitCredential(subject, math.ceil(now + self.settings.ttl_s))
        state.minted += 1
        self.kit_sets += 1
        return state.credential

    def _spend(self, state: KitIce, now: float) -> bool:
        refill = max(0.0, now - state.budget_at) * MINT_REFILL_PER_S
        state.budget = min(MINT_BURST, state.budget + refill)
        state.budget_at = now
        if state.budget < 1:
            return False
        state.budget -= 1
        return True

    def renew_at(self, credential: KitCredential) -> float:
        """When the kit's set must be replaced: once less than ``class_s`` is left."""
        assert self.settings is not None
        return credential.expires_at - self.settings.class_s

    def kit_message(self, credential: KitCredential) -> IceServers:
        """The ``ice_servers`` frame for ``credential``: STUN first, then each TURN URL in the
        configured order, one entry each (the kit reorders them by what its probes found)."""
        assert self.settings is not None
        turn = mint(self.settings.secret, credential.subject, credential.expires_at)
        servers = [PushedIceServer(urls=[stun]) for stun in self.settings.stun_urls]
        servers += [
            PushedIceServer(urls=[str(url)], username=turn.username, credential=turn.password)
            for url in self.settings.urls
        ]
        return IceServers(ice_servers=servers, expires_at=credential.expires_at)

    # -- pupils ---------------------------------------------------------------------------------

    def pupil_expiry(self, class_started_at: float | None) -> int:
        """The class's expected end + margin; at least ``margin_s`` from now."""
        assert self.settings is not None
        now = self.clock()
        started = now if class_started_at is None else min(class_started_at, now)
        return math.ceil(max(started + self.settings.class_s, now) + self.settings.margin_s)

    def pupil_links(self, class_started_at: float | None) -> list[str]:
        """``Link`` values for one pupil's request: the STUN URLs, then every TURN URL with a
        credential minted for this request alone (``pupil-<random>``). None without TURN."""
        if self.settings is None:
            return []
        subject = "pupil-" + secrets.token_hex(8)
        turn = mint(self.settings.secret, subject, self.pupil_expiry(class_started_at))
        self.pupil_sets += 1
        links = [link_header(stun) for stun in self.settings.stun_urls]
        links += [link_header(str(url), turn.username, turn.password) for url in self.settings.urls]
        return links
