"""A pupil's retransmission budget: which NACKed packets are sent again. Pure, time injected.

Before, every NACK was answered: a pupil on an 800 kbit/s–3 Mbit/s link asked for 70k–162k
retransmissions over a class, each one pushed into the link that had just lost the original,
so the repairs themselves overflowed it (issue 14). Now a NACKed packet is sent again

- at most once per round-trip time (a second NACK for it within one RTT was sent before our
  copy could have arrived; 30 ms at least), and
- only while the bytes resent to this pupil over the last :data:`WINDOW_S` stay within
  :data:`FRACTION` of the pupil's estimate over that window;

the other NACKs are ignored and counted. The per-packet send path is not touched: only the
NACK path calls :meth:`ResendBudget.admit`.
"""

from __future__ import annotations

from collections import OrderedDict, deque

FRACTION = 0.15
"""Share of the pupil's estimate that retransmissions may take (libwebrtc's NACK limit is of
the same order; beyond it the repairs crowd out the stream they repair)."""
WINDOW_S = 2.0
"""Over 1 s, Chromium at 5 % random loss (tests/agent/webrtc/test_packet_loss.py) had 23–75
NACKs refused in some runs (the losses of one second, and its repeated NACKs for them, exceed
15 % now and then) and gaps of 0.7–1.07 s; over 2 s, none refused in four runs, gaps ≤ 0.2 s.
The long-run share is the same."""
DEFAULT_RTT_S = 0.1
"""The once-per-RTT rule before the pupil's RTT is measured."""
MIN_RTT_S = 0.03
"""The once-per-RTT rule's floor: on a LAN the measured RTT is ~1 ms, less than a receiver's
own NACK timing and our send loop's jitter; a retransmission is given this long to arrive
before the same packet is sent again."""
MAX_RTT_S = 1.0
"""RTTs are clamped to this for the once-per-RTT rule (and the memory of resent packets)."""


class ResendBudget:
    """One pupil's budget, shared by its streams (a stream is told apart by ``ssrc``)."""

    def __init__(self, fraction: float = FRACTION, window_s: float = WINDOW_S) -> None:
        self.fraction = fraction
        self.window_s = window_s
        self._sent: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._last: OrderedDict[tuple[int, int], float] = OrderedDict()
        self.resent_bytes = 0
        self.resent_packets = 0
        self.ignored_repeat = 0
        """NACKs for a packet already resent within one RTT."""
        self.ignored_budget = 0
        """NACKs over the byte budget."""

    @property
    def ignored(self) -> int:
        return self.ignored_repeat + self.ignored_budget

    def admit(
        self, now: float, ssrc: int, seq: int, size: int, estimate_bps: int, rtt: float | None
    ) -> bool:
        """Whether to resend packet ``seq`` of stream ``ssrc`` (``size`` bytes) now; if so it
        is counted as sent."""
        rtt = min(max(rtt if rtt is not None else DEFAULT_RTT_S, MIN_RTT_S), MAX_RTT_S)
        self._expire(now)
        key = (ssrc, seq)
        last = self._last.get(key)
        if last is not None and now - last < rtt:
            self.ignored_repeat += 1
            return False
        allowed = self.fraction * estimate_bps / 8 * self.window_s
        if self._in_window + size > allowed:
            self.ignored_budget += 1
            return False
        self._sent.append((now, size))
        self._in_window += size
        self._last[key] = now
        self._last.move_to_end(key)
        self.resent_bytes += size
        self.resent_packets += 1
        return True

    def _expire(self, now: float) -> None:
        sent = self._sent
        while sent and now - sent[0][0] >= self.window_s:
            self._in_window -= sent.popleft()[1]
        last = self._last
        while last:
            key, at = next(iter(last.items()))
            if now - at < MAX_RTT_S:
                break
            del last[key]

    def window_bytes(self, now: float) -> int:
        """Bytes resent over the last window."""
        self._expire(now)
        return self._in_window
