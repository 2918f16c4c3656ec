"""Which layers one pupil gets, from their bandwidth estimate: pure logic, time injected.

A pupil's cameras move together along one ladder of *levels*, lowest first (default config)::

    0  sound only                        (both cameras paused)
    1  room low                          (document paused)
    2  room low   + document keyframes   (the low layer's keyframes only)
    3  room low   + document low
    4  room mid   + document low         ← where a pupil starts (the safe start)
    5  room high  + document low
    6  room high  + document high

Going down, the document camera gives way first — keyframes only, then paused — and the room
camera pauses last; the sound is never paused to make room for video (it is in every level's
cost and alone at the bottom). Each level costs the nominal bitrates of its layers plus the
sound (:func:`ladder`).

:class:`LayerChoice` keeps one pupil's level, with hysteresis so that it does not flap:

- **down** at once when the level costs more than ``DOWN_FRACTION`` of the estimate (or more
  than the pupil's share of the school's uplink);
- **up** when the next level costs at most ``UP_FRACTION`` of the estimate and has for
  ``UP_HOLD_S``, as many levels as the estimate then allows; each up-switch that had to be
  undone within ``FAILED_UP_S`` doubles that hold (up to ``MAX_HOLD_S``), a minute without one
  resets it.

The estimate cannot rise much above what the kit sends (the pupil's reports only tell what got
through, and a receiver's REMB grows with what it receives), so a pupil on a level cheaper
than their link would stay there. :meth:`LayerChoice.probe` therefore asks the pupil's pacer
for *padding* (``pacer``) up to a probe rate, for up to ``PROBE_S`` (less once the estimate
reaches it), then waits up to ``PROBE_JUDGE_S`` for the reports covering it: the estimator
sees the path carry it (the estimate rises at least halfway to the probe rate), or not. A probe
aims at the best level the pupil's uplink share allows; probes double the rate while they work
(a LAN pupil is on the top level a few seconds after joining), then grow by a fifth once one
has failed; a failed probe waits ``FIRST_FAILED_PROBE_WAIT_S``, a second failure in a row
``FAILED_PROBE_WAIT_S``, then twice as long after each (up to ``MAX_PROBE_WAIT_S``): each
overshoot costs the pupil some loss. A probe ends at once, failed, when the pupil NACKs more
than 1 % of what was sent during it, a step loses ≥ 2 % or the receiver's REMB falls
(``control``). Going down counts as a failed probe: the link just proved its limit, the next
probe waits ``FAILED_PROBE_WAIT_S`` and grows by a fifth — unless the pupil had held the top
level for ``RECOVERY_HELD_S`` (the link carried everything: a moment's trouble, such as the
pupil's own device busy, or the link changed): then *recovery probes*, aimed back at the top
level (each at most twice the estimate, doubling while they work), start ``RECOVERY_WAIT_S``
after the last step down, at most once per ``RECOVERY_EVERY_S`` (libwebrtc probes again after a
large drop, at 85 % of the estimate before it). A recovery probe that fails counts as a first
failure (the next probe in ``FIRST_FAILED_PROBE_WAIT_S``, a fifth more), then the usual waits
follow. Below the top level the estimate is what the link carries, and a thin link is probed
no more often than before. No probe past the uplink share, while the last step lost packets,
or on the top level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..media.layers import Layer
from .tracks import KEYFRAMES, PAUSED

DOWN_FRACTION = 0.9
UP_FRACTION = 0.75
UP_HOLD_S = 0.5
FAILED_UP_S = 10.0
MAX_HOLD_S = 32.0
CALM_S = 60.0
PROBE_S = 2.0
PROBE_JUDGE_S = 1.5
"""After the padding, how long the reports covering it may take to raise the estimate (a
browser reports each stream about once a second) before the probe counts as failed."""
PROBE_WAIT_S = 0.5
MAX_PROBE_WAIT_S = 300.0
FIRST_FAILED_PROBE_WAIT_S = 4.0
"""The wait after a first failed probe (a busy moment: five pupils joining at once)."""
FAILED_PROBE_WAIT_S = 30.0
"""The wait after a second failure in a row, then doubled after each (up to the maximum)."""
RECOVERY_HELD_S = 10.0
"""The top level held this long before going down had been carried by the link (an up-switch
undone sooner doubles the hold instead: ``FAILED_UP_S``)."""
RECOVERY_WAIT_S = 4.0
"""How long after going down the recovery probe comes (the trouble may still be there)."""
RECOVERY_EVERY_S = 60.0
"""At most one recovery probe this often: a link that keeps changing pays one overshoot a
minute, not one per drop."""
FAST_PROBE = 2.0
SLOW_PROBE = 1.2
LOW_LOSS = 0.02
"""A probe ends, failed, as soon as a step loses this much (and none starts while it does)."""
KEYFRAMES_SHARE = 6
"""A low layer's keyframes only cost about a sixth of the layer (its P-frames of a still page
are small; its keyframes are most of its bytes)."""
RTP_OVERHEAD = 1.06
"""IP, UDP, SRTP and RTP headers over a media payload of ~1,100 bytes a packet."""


@dataclass(frozen=True, slots=True)
class Level:
    """One rung: the room camera's and the document camera's state (a layer name, ``paused``
    or ``keyframes``; None: that camera is absent) and what it costs in bit/s."""

    camera: str | None
    document: str | None
    bps: int


def ladder(camera: Sequence[Layer], document: Sequence[Layer], sound_bps: int) -> tuple[Level, ...]:
    """Every level for these layers (each top first, as ``layers_of`` gives them), lowest
    first. A camera that is absent has no layers and stays None."""
    cams = list(reversed(camera))
    docs = list(reversed(document))
    cam0 = cams[0] if cams else None
    doc0 = docs[0] if docs else None
    rungs: list[tuple[Layer | str | None, Layer | str | None]] = []
    cam_paused = PAUSED if cams else None
    doc_paused = PAUSED if docs else None
    rungs.append((cam_paused, doc_paused))
    if cam0 is not None:
        rungs.append((cam0, doc_paused))
    if doc0 is not None:
        rungs.append((cam0 or cam_paused, KEYFRAMES))
        rungs.append((cam0 or cam_paused, doc0))
    for layer in cams[1:]:
        rungs.append((layer, doc0 or doc_paused))
    for layer in docs[1:]:
        rungs.append((cams[-1] if cams else cam_paused, layer))
    levels = []
    for cam, doc in rungs:
        bps = sound_bps + _cost(cam, doc0) + _cost(doc, doc0)
        levels.append(Level(_name(cam), _name(doc), int(bps * RTP_OVERHEAD)))
    return tuple(levels)


def _cost(state: Layer | str | None, doc0: Layer | None) -> int:
    if isinstance(state, Layer):
        return state.bps
    if state == KEYFRAMES and doc0 is not None:
        return doc0.bps // KEYFRAMES_SHARE
    return 0


def _name(state: Layer | str | None) -> str | None:
    return state.name if isinstance(state, Layer) else state


def start_index(levels: Sequence[Level]) -> int:
    """The safe start: the first level with the room camera's middle layer (else the one
    below the top, else the top)."""
    for i, level in enumerate(levels):
        if level.camera == "mid":
            return i
    return max(0, len(levels) - 2)


class LayerChoice:
    """One pupil's level; :meth:`update` on every estimate, :meth:`probe` for padding."""

    def __init__(self, levels: Sequence[Level], now: float) -> None:
        if not levels:
            raise ValueError("a ladder has at least the sound-only level")
        self.levels = tuple(levels)
        self.index = start_index(self.levels)
        self._up_since: float | None = None
        self._up_at: float | None = None
        self._level_at = now
        """When the level last changed."""
        self._recover_bps = 0
        """What recovery probes aim at: the top level's need (0: none due)."""
        self._recovered_at: float | None = None
        """When the last recovery began."""
        self._hold = UP_HOLD_S
        self._calm_since = now
        self._probe_until: float | None = None
        self._probe_bps = 0
        self._probe_from = 0
        self._probe_started = now
        self._probe_wait = PROBE_WAIT_S
        self._next_probe = now + PROBE_WAIT_S
        self._growth = FAST_PROBE
        self._failures = 0
        self.failed_from: int | None = None
        """The estimate before the last probe, when it failed (for ``control``: the loss it
        caused is the kit's own); read and cleared by the caller."""
        self.downs = 0
        self.ups = 0

    @property
    def level(self) -> Level:
        return self.levels[self.index]

    @property
    def top(self) -> bool:
        return self.index == len(self.levels) - 1

    def update(self, now: float, estimate: int, cap: int = 0) -> Level:
        """The level for this estimate (bit/s) and the pupil's uplink share ``cap`` (0: none)."""
        down_at = min(estimate * DOWN_FRACTION, cap) if cap > 0 else estimate * DOWN_FRACTION
        went_down, left = False, self.index
        while self.index > 0 and self.level.bps > down_at:
            self.index -= 1
            went_down = True
        if went_down:
            self.downs += 1
            self._up_since = None
            self._held_back(now, left)
            if self._up_at is not None and now - self._up_at < FAILED_UP_S:
                self._hold = min(self._hold * 2, MAX_HOLD_S)  # that up-switch did not hold
            self._calm_since = self._level_at = now
            return self.level
        if now - self._calm_since >= CALM_S:
            self._hold = UP_HOLD_S
        up_at = min(estimate * UP_FRACTION, cap) if cap > 0 else estimate * UP_FRACTION
        if not self.top and self.levels[self.index + 1].bps <= up_at:
            self._up_since = now if self._up_since is None else self._up_since
            if now - self._up_since >= self._hold:
                while not self.top and self.levels[self.index + 1].bps <= up_at:
                    self.index += 1  # as far as the estimate allows, at once
                self.ups += 1
                self._up_at = self._level_at = now
                if self.top:
                    self._recover_bps = 0  # recovered
                self._up_since = None
        else:
            self._up_since = None
        return self.level

    def probe(
        self,
        now: float,
        estimate: int,
        loss: float | None,
        cap: int = 0,
        congested: Callable[[float], bool] = lambda since: False,
    ) -> int:
        """The rate (bit/s, media and padding together) the pupil's pacer should fill up to
        now; 0: no probe. ``congested(since)``: whether the pupil's receiver said "less" since
        then (a falling REMB), which ends a probe at once, as a failure."""
        if self._probe_until is not None:
            carried = estimate >= self._probe_from + (self._probe_bps - self._probe_from) / 2
            if congested(self._probe_started) or (loss is not None and loss >= LOW_LOSS):
                self._end_probe(now, False)
                return 0
            if carried:
                self._end_probe(now, True)
            elif now < self._probe_until:
                return self._probe_bps
            elif now < self._probe_until + PROBE_JUDGE_S:
                return 0  # padding over; the reports covering it are still coming
            else:
                self._end_probe(now, False)
        if self.top or now < self._next_probe or (loss is not None and loss >= LOW_LOSS):
            return 0
        fitting = [level for level in self.levels if cap <= 0 or level.bps <= cap]
        if not fitting or fitting[-1] == self.level:
            self._recover_bps = 0
            return 0  # the school's uplink has no room for more
        need = int(fitting[-1].bps / UP_FRACTION)  # the best level the uplink share allows
        if estimate >= need:
            return 0  # it goes up on its own
        grown = int(estimate * self._growth)
        if self._recover_bps:  # doubling while they work; a link that did change is overshot
            grown = max(grown, min(self._recover_bps, int(estimate * FAST_PROBE)))  # twice at most
        self._probe_bps = min(int(need * 1.05), grown)
        self._probe_from = estimate
        self._probe_started = now
        self._probe_until = now + PROBE_S
        return self._probe_bps

    def _end_probe(self, now: float, carried: bool) -> None:
        self._probe_until = None
        if carried:  # the path carried it: go on
            self._probe_wait = PROBE_WAIT_S
            self._failures = 0
            self._next_probe = now
        else:
            self.failed_from = self._probe_from
            self._recover_bps = 0
            self._growth = SLOW_PROBE
            self._failures += 1
            if self._failures == 1:
                self._probe_wait = FIRST_FAILED_PROBE_WAIT_S
            else:
                wait = FAILED_PROBE_WAIT_S * 2 ** (self._failures - 2)
                self._probe_wait = min(wait, MAX_PROBE_WAIT_S)
            self._next_probe = now + self._probe_wait

    def _held_back(self, now: float, left: int) -> None:
        """The link just proved it carries less than the level ``left``: no probe for a while,
        and then gently (a first probe at twice the estimate into an 800 kbit/s line overshot
        it by ~75 % and froze a Chromium pupil for 2 s) — or recovery probes soon, if ``left``
        is the top level and the pupil had held it long enough."""
        probing, self._probe_until = self._probe_until is not None, None
        if probing:
            self._recover_bps = 0  # the probe took the pupil down: the link did change
        held = now - self._level_at >= RECOVERY_HELD_S
        recovered = self._recovered_at
        if (
            left == len(self.levels) - 1
            and held
            and not probing
            and (recovered is None or now - recovered >= RECOVERY_EVERY_S)
        ):
            self._recover_bps = int(self.levels[left].bps / UP_FRACTION * 1.05)
            self._recovered_at = now
        self._growth = SLOW_PROBE
        if self._recover_bps:  # RECOVERY_WAIT_S after the last step down of the trouble
            self._failures = 0  # a recovery probe that fails is a first failure: 4 s, once
            self._next_probe = now + RECOVERY_WAIT_S
        else:
            self._failures = max(self._failures, 1)
            self._next_probe = max(self._next_probe, now + FAILED_PROBE_WAIT_S)

    @property
    def probing(self) -> bool:
        return self._probe_until is not None
