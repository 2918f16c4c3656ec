"""agent/webrtc/resend.py: which NACKed packets are sent again, with the clock injected."""

from __future__ import annotations

from agent.webrtc.resend import DEFAULT_RTT_S, MIN_RTT_S, ResendBudget

A, B = 0xA, 0xB


def test_a_lan_rtt_does_not_let_repeated_nacks_through() -> None:
    budget = ResendBudget()
    assert budget.admit(0.0, A, 7, 1000, 8_000_000, 0.001)
    assert not budget.admit(0.01, A, 7, 1000, 8_000_000, 0.001)
    assert budget.admit(MIN_RTT_S, A, 7, 1000, 8_000_000, 0.001)


def test_a_packet_is_resent_at_most_once_per_rtt() -> None:
    budget = ResendBudget()
    assert budget.admit(0.0, A, 7, 1000, 8_000_000, 0.05)
    assert not budget.admit(0.04, A, 7, 1000, 8_000_000, 0.05)
    assert budget.admit(0.04, B, 7, 1000, 8_000_000, 0.05)  # another stream's packet 7
    assert budget.admit(0.06, A, 7, 1000, 8_000_000, 0.05)
    assert not budget.admit(0.06 + DEFAULT_RTT_S / 2, A, 7, 1000, 8_000_000, None)
    assert (budget.resent_packets, budget.ignored_repeat, budget.ignored_budget) == (3, 2, 0)


def test_resent_bytes_stay_within_the_share_of_the_estimate_over_the_window() -> None:
    budget = ResendBudget(fraction=0.15, window_s=1.0)
    estimate = 800_000  # 15 % over 1 s: 15,000 bytes
    admitted = [budget.admit(i / 100, A, i, 1000, estimate, 0.05) for i in range(40)]
    assert admitted == [True] * 15 + [False] * 25
    assert budget.resent_bytes == budget.window_bytes(0.39) == 15_000
    assert budget.ignored_budget == 25 and budget.ignored == 25
    assert budget.admit(1.0, A, 100, 1000, estimate, 0.05)  # packet 0 has left the window
    assert not budget.admit(1.0, A, 101, 1000, estimate, 0.05)
    assert budget.window_bytes(5.0) == 0


def test_a_lower_estimate_means_a_smaller_budget() -> None:
    budget = ResendBudget(window_s=1.0)
    assert not budget.admit(0.0, A, 1, 1200, 50_000, 0.05)  # 937 bytes a second: not even one
    assert budget.admit(0.0, A, 1, 1200, 100_000, 0.05)


def test_its_memory_of_resent_packets_is_bounded() -> None:
    budget = ResendBudget(fraction=1.0)
    for i in range(10_000):
        budget.admit(i * 0.01, A, i % 65536, 10, 100_000_000, 0.05)
    assert len(budget._last) <= 101
