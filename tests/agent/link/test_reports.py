"""The kit's report bookkeeping (agent/link/reports.py), message in, decision out."""

from __future__ import annotations

from agent.link.reports import Reports
from kitlink import Health, HealthReport

from ...provisioning.test_protocol import REPORT


def report(at: float) -> Health:
    return Health(seq=int(at), sent_at=at, report=HealthReport.model_validate(REPORT))


def test_acknowledged_reports_are_forgotten_and_the_rest_sent_again_in_order() -> None:
    reports = Reports()
    for at in (1.0, 2.0, 3.0, 4.0):
        reports.sent(report(at))
    assert reports.stored(2.0) == 2
    reports.made_offline(report(5.0))
    reports.link_lost()
    again = list(reports.to_send())
    assert [h.sent_at for h in again] == [3.0, 4.0, 5.0]
    assert all(h.queued for h in again)
    assert reports.sent_again == 2 and not reports.backlog
    assert [h.sent_at for h in reports.unacknowledged] == [3.0, 4.0, 5.0]  # sent, waiting


def test_a_server_that_never_acknowledges_gets_nothing_twice() -> None:
    reports = Reports()
    reports.sent(report(1.0))
    reports.sent(report(2.0))
    reports.link_lost()
    assert list(reports.to_send()) == []
    assert reports.sent_again == 0


def test_a_send_that_fails_keeps_the_report() -> None:
    reports = Reports()
    reports.made_offline(report(1.0))
    reports.made_offline(report(2.0))
    sending = reports.to_send()
    assert next(sending).sent_at == 1.0
    # the link fails here: the generator is not resumed
    assert [h.sent_at for h in reports.backlog] == [1.0, 2.0]


def test_the_bound_drops_the_oldest_and_counts_them() -> None:
    reports = Reports(limit=3)
    reports.stored(0.0)  # a server that acknowledges
    for at in (1.0, 2.0, 3.0):
        reports.sent(report(at))
    reports.made_offline(report(4.0))
    reports.made_offline(report(5.0))
    reports.link_lost()
    assert [h.sent_at for h in reports.backlog] == [3.0, 4.0, 5.0]
    first, *rest = list(reports.to_send())
    assert first.dropped == 2 and all(h.dropped == 0 for h in rest)
    assert reports.dropped == 0
