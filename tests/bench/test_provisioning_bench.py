"""``make bench-provisioning`` keeps measuring what it says: its pure parts (metrics summed
across nodes, quantiles from buckets, the HAProxy configuration rendered from the shipped
template and accepted by ``haproxy -c``), and simulated kits against a real server, whose
reports are acknowledged and none left pending after a drain."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.provisioning.__main__ import _log_errors, parse_args
from bench.provisioning.measure import parse_metrics, quantile_bound, total
from bench.provisioning.nodes import LB_CONNECTIONS, Node, render_haproxy, school_of, seed
from bench.provisioning.sim import Simulation
from provisioning.db import database_url
from tests.conftest import until
from tests.provisioning.conftest import db_url, postgres, server_options, serving

__all__ = ["db_url", "postgres"]  # the provisioning tests' fixtures: SQLite and PostgreSQL

METRICS = """provisioning_kits_online {online}
provisioning_reports_stored_total {stored}
provisioning_report_stored_ms_bucket{{le="50"}} {b50}
provisioning_report_stored_ms_bucket{{le="100"}} {b100}
provisioning_report_stored_ms_bucket{{le="+Inf"}} {inf}
provisioning_report_stored_ms_count {inf}
"""


def metrics(online: int, stored: int, b50: int, b100: int, inf: int) -> str:
    return METRICS.format(online=online, stored=stored, b50=b50, b100=b100, inf=inf)


def test_metrics_of_two_nodes_are_summed_bucket_by_bucket() -> None:
    one = parse_metrics(metrics(10, 100, 90, 99, 100))
    two = parse_metrics(metrics(5, 50, 10, 40, 50))
    both = total([one, two])
    assert both["provisioning_kits_online"] == 15
    assert both["provisioning_reports_stored_total"] == 150
    assert both.histograms["provisioning_report_stored_ms"] == [
        (50.0, 100.0),
        (100.0, 139.0),
        (float("inf"), 150.0),
    ]


def test_quantiles_are_bucket_bounds_of_what_was_observed_in_the_window() -> None:
    before = parse_metrics(metrics(0, 0, 1000, 1000, 1000)).histograms
    after = parse_metrics(metrics(0, 0, 1090, 1099, 1100)).histograms
    name = "provisioning_report_stored_ms"
    assert quantile_bound(before[name], after[name], 0.5) == 50
    assert quantile_bound(before[name], after[name], 0.95) == 100
    assert quantile_bound(before[name], after[name], 0.999) == float("inf")
    assert quantile_bound(after[name], after[name], 0.99) != quantile_bound(
        after[name], after[name], 0.99
    )  # nothing observed: NaN


def test_kits_are_spread_over_schools_of_ten_and_departements_of_1200() -> None:
    assert school_of(0) == school_of(9) == ("B000000", "01")
    assert school_of(10) == ("B000001", "01")
    assert school_of(1199)[1] == "01" and school_of(1200)[1] == "02"


def test_cluster_needs_postgresql() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--nodes", "2"])
    assert parse_args(["--nodes", "2", "--db", "postgresql"]).nodes == 2


def test_a_node_error_is_shown_with_the_exception_that_ended_it() -> None:
    lines = [
        "2026-11-29 16:04:35,643 ERROR provisioning.writer: database write failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in f',
        "asyncpg.exceptions.DeadlockDetectedError: deadlock detected",
        "",
        "The above exception was the direct cause of the following exception:",
        "sqlalchemy.exc.DBAPIError: (asyncpg.Error) deadlock detected",
        "DETAIL:  Process 18379 waits for ShareLock on transaction 792",
        "[SQL: UPDATE kits SET last_seen=$1]",
        "(Background on this error at: https://sqlalche.me/e/20/dbapi)",
        "2026-11-29 16:04:36,000 INFO provisioning: fine",
    ]
    assert _log_errors(lines) == [
        lines[0] + " → sqlalchemy.exc.DBAPIError: (asyncpg.Error) deadlock detected"
    ]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_the_shipped_haproxy_template_renders_to_a_valid_configuration(tmp_path: Path) -> None:
    nodes = [Node(i, tmp_path / f"n{i}", "", None, [], port=18000 + i) for i in range(2)]
    text = render_haproxy(18443, nodes, 1, tmp_path / "s.sock")
    assert "    server node2 127.0.0.1:18001 source 127.0.2.2\n" in text
    assert "bind 127.0.0.1:18443" in text and "ssl crt" not in text
    assert f"maxconn {LB_CONNECTIONS}\n" in text and "maxconn 120000" not in text
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_simulated_kits_are_acknowledged_and_drain_to_nothing_pending(
    tmp_path: Path, db_url: str
) -> None:
    options = server_options(tmp_path, db_url)
    options.data_dir.mkdir(parents=True)
    await seed(database_url(db_url, options.data_dir), 4)
    async with serving(options) as live:
        sim = Simulation(live.url, "127.0.0.1", 0, 4)
        gate = asyncio.Semaphore(4)
        tasks = [asyncio.create_task(sim.run_kit(kit, gate)) for kit in sim.kits]
        try:
            await until(lambda: sim.counters.connected == 4, 10, "kits connected")
            await until(lambda: sim.counters.acked >= 12, 10, "reports acknowledged")
            sim.draining = True
            await until(lambda: sim.pending()["unacked"] == 0, 5, "drained")
            assert sim.pending() == {"unacked": 0, "backlog": 0, "dropped": 0,
                                     "kits_acked": 4, "sent_again": 0}  # fmt: skip
            assert sim.counters.failures == 0 and sim.counters.acked == sim.counters.reports
        finally:
            sim.stopping = True
            for task in tasks:
                task.cancel()
            reporters = [k.reporter for k in sim.kits if k.reporter is not None]
            for task in reporters:
                task.cancel()
            await asyncio.gather(*tasks, *reporters, return_exceptions=True)
