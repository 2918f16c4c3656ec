"""The one task that writes link traffic to the database: batched, one transaction per tick.

Health reports arrive at ~1,500/s from a full fleet. Writing each on its own would cost a
transaction per report; instead the link handlers only update memory and queue a row here, and
every ``interval_s`` (50 ms) this task writes everything queued with ``executemany`` in one
transaction. A kit's latest report overwrites its queued one (one UPDATE per kit per tick).
On a database error the rows stay queued and are retried; on shutdown the queue is flushed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from . import store
from .db import sqlite_pragmas

log = logging.getLogger("provisioning.writer")

LATENCY_BUCKETS_MS = (
    1, 2, 5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 125, 150, 175, 200, 225, 250,
    300, 400, 500, 750, 1000, 2000, 5000, 10000,
)  # fmt: skip


def sqlite_writer(engine: AsyncEngine) -> sa.Engine | None:
    """A synchronous engine on the same SQLite file, for the writer thread (None otherwise)."""
    if engine.dialect.name != "sqlite":
        return None
    url = engine.url.set(drivername="sqlite")
    # One connection, used by one flush at a time, from whichever worker thread runs it.
    writer = sa.create_engine(
        url, pool_size=1, max_overflow=0, connect_args={"check_same_thread": False}
    )
    sa.event.listen(writer, "connect", sqlite_pragmas)
    return writer


@dataclass(frozen=True, slots=True)
class Report:
    """A kit's latest health report, as the writer stores it."""

    text: str
    """The validated report as JSON text."""
    software: str
    session: str
    problems: tuple[str, ...]
    sent_at: float
    """The kit's clock when it made the report (unique per kit in the history)."""


class LatencyHistogram:
    """Report sent (kit clock) → stored (committed), in the buckets above (+ overflow)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.total = 0
        self.sum_ms = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        self.total += 1
        self.sum_ms += ms


class Writer:
    def __init__(
        self,
        engine: AsyncEngine,
        interval_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.clock = clock
        self.latest: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.config: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.audits: list[dict[str, Any]] = []
        self.acks: dict[str, float] = {}
        """Kit → the newest ``sent_at`` among its reports in the next batch."""
        self.on_stored: Callable[[dict[str, float]], None] | None = None
        """Called after each commit with the kits' acknowledgements (provisioning/link.py)."""
        self.sent_at: list[float] = []
        self.received_at: list[float] = []
        self.latency = LatencyHistogram()
        self.server_latency = LatencyHistogram()
        """Received → stored: the server's own share of :attr:`latency`."""
        self.reports_stored = 0
        self.batches = 0
        self.errors = 0
        self.write_seconds_max = 0.0
        self.in_flight = 0
        """Rows of the batch being written (still counted as queued until committed)."""
        self.write_seconds_total = 0.0
        self._sqlite = sqlite_writer(engine)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- queueing (called from link handlers, never blocks) ---------------------------------

    def health(self, kit_id: str, seen: float, report: Report, keep: bool) -> None:
        self.latest[kit_id] = {
            "k_id": kit_id,
            "k_seen": seen,
            "k_health": report.text,
            "k_software": report.software,
            "k_session": report.session,
            "k_problems": " ".join(report.problems)[:500],
        }
        if keep:
            self.history.append(
                {
                    "kit_id": kit_id,
                    "received_at": seen,
                    "report": report.text,
                    "sent_at": report.sent_at,
                }
            )
        self.sent_at.append(report.sent_at)
        self.received_at.append(seen)
        self.acknowledge(kit_id, report.sent_at)

    def acknowledge(self, kit_id: str, sent_at: float) -> None:
        """Tell the kit, after the next commit, that its reports up to ``sent_at`` are in (a
        queued report the history does not keep is acknowledged all the same: it was taken)."""
        if sent_at > self.acks.get(kit_id, float("-inf")):
            self.acks[kit_id] = sent_at

    def backlog(self, kit_id: str, at: float, report: str, sent_at: float) -> None:
        """A report a kit queued while offline: history only, at the time the kit made it."""
        self.history.append(
            {"kit_id": kit_id, "received_at": at, "report": report, "sent_at": sent_at}
        )
        self.acknowledge(kit_id, sent_at)

    def online(self, kit_id: str, online: bool, offline_since: float | None, seen: float) -> None:
        self.status[kit_id] = {
            "k_id": kit_id,
            "k_online": online,
            "k_offline_since": offline_since,
            "k_seen": seen,
        }

    def config_ack(self, kit_id: str, applied: str | None, status: str, reason: str) -> None:
        self.config[kit_id] = {
            "k_id": kit_id,
            "k_applied": applied,
            "k_status": status,
            "k_reason": reason[:500],
        }

    def token(self, digest: str, kit_id: str, claimed_at: float, ended_at: float | None) -> None:
        """A class-token binding: claimed (``ended_at`` None), then ended."""
        self.tokens[digest] = {
            "digest": digest,
            "kit_id": kit_id,
            "claimed_at": claimed_at,
            "ended_at": ended_at,
        }

    def audit(self, at: float, actor: str, action: str, target: str, detail: str) -> None:
        """An audit entry seen on a link (``detail``: JSON text)."""
        self.audits.append(
            {"at": at, "actor": actor, "action": action, "target": target, "detail": detail}
        )

    @property
    def queued(self) -> int:
        pending = len(self.latest) + len(self.history) + len(self.status) + len(self.config)
        return pending + len(self.tokens) + len(self.audits) + self.in_flight

    # -- the task ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="provisioning-writer")

    async def close(self) -> None:
        """Stop the task and write whatever is still queued."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
        await self.flush()
        if self._sqlite is not None:
            self._sqlite.dispose()

    async def _run(self) -> None:
        """Flush on a fixed cadence: a slow write shortens the next wait, not the rate."""
        while not self._closing:
            started = time.monotonic()
            try:
                await self.flush()
            except Exception:
                self.errors += 1
                log.exception("database write failed; %d rows kept for the next try", self.queued)
                await asyncio.sleep(1.0)
            wait = max(0.005, self.interval_s - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def flush(self) -> None:
        if not self.queued and not self.acks:
            return
        latest, history, status, sent_at = self.latest, self.history, self.status, self.sent_at
        config, received_at = self.config, self.received_at
        tokens, audits, acks = self.tokens, self.audits, self.acks
        self.latest, self.history, self.status, self.sent_at = {}, [], {}, []
        self.received_at = []
        self.config, self.tokens, self.audits, self.acks = {}, {}, [], {}
        started = time.perf_counter()
        rows = (
            list(latest.values()),
            history,
            list(status.values()),
            list(config.values()),
            list(tokens.values()),
            audits,
        )
        self.in_flight = sum(len(part) for part in rows)
        try:
            if self.in_flight and self._sqlite is not None:
                await asyncio.to_thread(self._write_sqlite, *rows)
            elif self.in_flight:
                await store.write_batch(self.engine, *rows)
        except BaseException:
            self._requeue(latest, history, status, sent_at)
            self.received_at[:0] = received_at
            for kit_id, row in config.items():
                self.config.setdefault(kit_id, row)
            for digest, row in tokens.items():
                self.tokens.setdefault(digest, row)
            self.audits[:0] = audits
            for kit_id, sent in acks.items():
                self.acknowledge(kit_id, sent)
            raise
        finally:
            self.in_flight = 0
        self._committed(time.perf_counter() - started, sent_at, received_at, acks)

    def _committed(
        self, took: float, sent_at: list[float], received_at: list[float], acks: dict[str, float]
    ) -> None:
        self.write_seconds_max = max(self.write_seconds_max, took)
        self.write_seconds_total += took
        self.batches += 1
        self.reports_stored += len(sent_at)
        now = self.clock()
        for sent in sent_at:
            self.latency.observe(max(0.0, (now - sent) * 1000))
        for received in received_at:
            self.server_latency.observe(max(0.0, (now - received) * 1000))
        if acks and self.on_stored is not None:
            self.on_stored(acks)

    def _write_sqlite(self, *rows: Any) -> None:
        """The whole transaction in one worker-thread call: with the event loop saturated
        (every kit reconnecting at once), each await of an async driver is a trip through a
        long loop iteration; here there is one per batch."""
        assert self._sqlite is not None
        with self._sqlite.begin() as conn:
            store.write_rows(conn, *rows)

    def _requeue(
        self,
        latest: dict[str, dict[str, Any]],
        history: list[dict[str, Any]],
        status: dict[str, dict[str, Any]],
        sent_at: list[float],
    ) -> None:
        for kit_id, row in latest.items():
            self.latest.setdefault(kit_id, row)
        for kit_id, row in status.items():
            self.status.setdefault(kit_id, row)
        self.history[:0] = history
        self.sent_at[:0] = sent_at
