"""``make bench-provisioning``: simulated kits against the fleet server on this machine.

python -m bench.provisioning [--kits 15000] [--db postgresql|URL] [--nodes N] [--haproxy]
                             [--duration 60] [--short-downtime 5] [--long-downtime 60] …

The server is ``--nodes`` real ``kit-provisioning serve`` processes (cluster options with two or
more) on SQLite or on a PostgreSQL the bench starts (``--db postgresql``), behind a real HAProxy
(with two or more nodes, or ``--haproxy``) configured from systemd/haproxy-kit.cfg.in. The kits
are simulator processes (sim.py) speaking the real protocol with the agent's redial policy and
report bookkeeping. Phases:

1. every kit connects (time, peak connection rate);
2. sustained health traffic (``--duration`` s): reports/s stored, report → stored p50/p95/p99
   (the nodes' histograms, summed), each node's CPU and RSS, the event loop's longest hold; an
   admin's dashboard open (event stream) with the kit list and counts fetched every 10 s; some
   kits fall silent without closing (time until the server drops them);
3. the whole service restarted after a SHORT and a LONG downtime: all kits back, peak rate;
4. with two nodes or more: one node killed (SIGKILL): time until all its kits are back on the
   others;
5. a sustained window afterwards; then the kits drain (no new reports): reports lost (made and
   never acknowledged) and stored twice (SQL on the history).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import sqlalchemy as sa

from bench.postgres import Postgres, postgres
from provisioning.db import database_url, open_database

from .measure import (
    REPORT_HISTOGRAM,
    SERVER_HISTOGRAM,
    Dashboard,
    Metrics,
    bound_text,
    cpu_seconds,
    fetch_metrics,
    pss,
    quantile_bound,
    rss,
    summary,
    total,
    with_children,
)
from .nodes import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    LB_CONNECTIONS,
    HAProxy,
    Node,
    add_admin,
    new_cluster_secret,
    seed,
)

PG_SETTINGS = {"max_connections": "300", "shared_buffers": "256MB"}
"""The bench's PostgreSQL: durable commits (fsync on, unlike the tests'), room for the nodes'
pools."""
DISTINCT_SQL = "SELECT count(*) FROM (SELECT DISTINCT kit_id, sent_at FROM health_history) AS d"
"""``count(DISTINCT (kit_id, sent_at))``, which SQLite does not take."""
SETTLE_S = 12.0
"""One health interval and a bit: every kit has reported since the last change."""


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    db: str = ""
    pg: Postgres | None = None
    nodes: list[Node] = field(default_factory=list)
    lb: HAProxy | None = None
    sims: list[subprocess.Popen[str]] = field(default_factory=list)
    sim_status: list[dict[str, Any]] = field(default_factory=list)
    dials: collections.Counter[int] = field(default_factory=collections.Counter)
    welcomes: collections.Counter[int] = field(default_factory=collections.Counter)
    sim_lags: list[tuple[float, float]] = field(default_factory=list)
    """(monotonic time, lateness of a simulator's 1 s tick)."""
    results: dict[str, str] = field(default_factory=dict)
    http: aiohttp.ClientSession = field(init=False)

    @property
    def entry(self) -> str:
        """Where kits and admins connect: HAProxy, or the one node."""
        return self.lb.url if self.lb is not None else self.nodes[0].url

    @property
    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.running]

    def put(self, key: str, value: str) -> None:
        self.results[key] = value
        print(f"  {key}: {value}", flush=True)

    # -- simulators --------------------------------------------------------------------------

    def start_sims(self) -> None:
        per = -(-self.args.kits // self.args.procs)
        for i in range(self.args.procs):
            first, count = i * per, min(per, self.args.kits - i * per)
            sim = subprocess.Popen(
                [sys.executable, "-m", "bench.provisioning.sim", self.entry, f"127.0.0.{11 + i}",
                 str(first), str(count), str(self.args.concurrency)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            )  # fmt: skip
            self.sims.append(sim)
            self.sim_status.append({})
            asyncio.get_running_loop().add_reader(sim.stdout.fileno(), self._read_sim, i)  # type: ignore[union-attr]

    def _read_sim(self, index: int) -> None:
        stdout = self.sims[index].stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            asyncio.get_running_loop().remove_reader(stdout.fileno())
            return
        status = json.loads(line)
        self.sim_status[index] = status
        for second, count in status["dials"].items():
            self.dials[int(second)] += count
        for second, count in status["welcomes"].items():
            self.welcomes[int(second)] += count
        self.sim_lags.append((time.monotonic(), float(status.get("lag", 0.0))))

    def tell(self, command: str) -> None:
        for sim in self.sims:
            if sim.poll() is None and sim.stdin is not None:
                sim.stdin.write(command + "\n")
                sim.stdin.flush()

    def sim_sum(self, key: str) -> int:
        return sum(int(s.get(key, 0)) for s in self.sim_status)

    def all_connected(self) -> bool:
        return self.sim_sum("connected") >= int(self.args.kits)

    async def until(self, done: Callable[[], bool], limit: float, what: str) -> float:
        started = shown = time.monotonic()
        while not done():
            if time.monotonic() - started > limit:
                raise RuntimeError(f"{what}: not after {limit:.0f} s")
            if time.monotonic() - shown >= 10:
                shown = time.monotonic()
                print(f"    ({what}: {shown - started:.0f} s, kits connected "
                      f"{self.sim_sum('connected')}, failed dials {self.sim_sum('failures')})",
                      flush=True)  # fmt: skip
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    def peak(self, counts: collections.Counter[int], start: float, end: float) -> int:
        """The most in one wall-clock second of [start, end]."""
        return max((n for s, n in counts.items() if int(start) <= s <= int(end)), default=0)

    # -- servers -----------------------------------------------------------------------------

    async def answering(self, node: Node, limit: float = 60) -> None:
        async def ok() -> bool:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with asyncio.timeout(2):
                    async with self.http.get(node.url + "/healthz") as response:
                        return bool(response.status == 200)
            return False

        started = time.monotonic()
        while not await ok():
            if not node.running:
                raise RuntimeError(f"{node.name} exited: see {node.data_dir / 'server.log'}")
            if time.monotonic() - started > limit:
                raise RuntimeError(f"{node.name} not answering after {limit:.0f} s")
            await asyncio.sleep(0.1)

    async def start_nodes(self, nodes: list[Node]) -> None:
        for node in nodes:
            node.start()
        await asyncio.gather(*(self.answering(n) for n in nodes))

    async def probe(self, node: Node) -> list[float]:
        """GET /healthz every 0.1 s until cancelled: the answer times (s). A node's event loop
        held by anything (a large admin answer, a GC pause) delays this trivial answer."""
        seen: list[float] = []
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                started = time.perf_counter()
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with asyncio.timeout(10):
                        async with self.http.get(node.url + "/healthz") as response:
                            await response.read()
                    seen.append(time.perf_counter() - started)
                await asyncio.sleep(0.1)
        return seen

    async def node_metrics(self) -> dict[str, Metrics]:
        found = await asyncio.gather(*(fetch_metrics(self.http, n.url) for n in self.live_nodes))
        return {n.name: m for n, m in zip(self.live_nodes, found, strict=True) if m is not None}

    def other_processes(self) -> dict[str, list[psutil.Process]]:
        groups: dict[str, list[psutil.Process]] = {}
        if self.pg is not None:
            groups["PostgreSQL"] = [p for pid in self.pg.pids()[:1] for p in with_children(pid)]
        if self.lb is not None:
            groups["HAProxy"] = self.lb.ps
        groups["simulators"] = [psutil.Process(s.pid) for s in self.sims if s.poll() is None]
        return groups

    # -- measuring a window ------------------------------------------------------------------

    async def window(self, label: str, done: Callable[[], bool], limit: float = 600) -> float:
        """Reports/s, report → stored p50/p95/p99, CPU and RSS of every process, the event
        loop's longest hold, from now until ``done()``; returns the window's length."""
        nodes = self.live_nodes
        before = await self.node_metrics()
        cpu0 = {n.name: cpu_seconds([n.ps]) for n in nodes if n.ps}
        others = self.other_processes()
        others_cpu0 = {k: cpu_seconds(v) for k, v in others.items()}
        rss_max: dict[str, int] = collections.defaultdict(int)
        probes = {n.name: asyncio.create_task(self.probe(n)) for n in nodes}
        t0 = time.monotonic()
        while not done() and time.monotonic() - t0 < limit:
            for n in nodes:
                if n.ps is not None and n.running:
                    rss_max[n.name] = max(rss_max[n.name], rss([n.ps]))
            for name, group in others.items():
                rss_max[name] = max(rss_max[name], pss(group))
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - t0
        for task in probes.values():
            task.cancel()
        waits = {name: await task for name, task in probes.items()}
        after = await self.node_metrics()
        self._window_results(label, elapsed, before, after)
        for name, seen in waits.items():
            self.put(f"{label}: {name} GET /healthz every 0.1 s: p99 / max",
                     f"{_ms(seen, 0.99)} / {_ms(seen, 1.0)}")  # fmt: skip
        for n in nodes:
            if n.ps is not None and n.running:
                used = cpu_seconds([n.ps]) - cpu0[n.name]
                self.put(f"{label}: {n.name} CPU / RSS max",
                         f"{used / elapsed * 100:.0f} % of a core / "
                         f"{rss_max[n.name] / 2**20:.0f} MiB")  # fmt: skip
        late = max((lag for at, lag in self.sim_lags if at >= t0), default=0.0)
        self.put(f"{label}: simulators' event loop late by (max, s)", f"{late:.2f}")
        for name, group in others.items():
            used = cpu_seconds(group) - others_cpu0[name]
            self.put(f"{label}: {name} CPU / memory (PSS) max",
                     f"{used / elapsed * 100:.0f} % of a core / "
                     f"{rss_max[name] / 2**20:.0f} MiB")  # fmt: skip
        return elapsed

    def _window_results(
        self, label: str, elapsed: float, before: dict[str, Metrics], after: dict[str, Metrics]
    ) -> None:
        common = [name for name in after if name in before]
        b, a = total(before[n] for n in common), total(after[n] for n in common)
        stored = "provisioning_reports_stored_total"
        self.put(f"{label}: window (s)", f"{elapsed:.0f}")
        self.put(f"{label}: reports stored/s", f"{(a[stored] - b[stored]) / elapsed:.0f}")
        bounds = [
            bound_text(quantile_bound(b.histograms.get(REPORT_HISTOGRAM, []),
                                      a.histograms.get(REPORT_HISTOGRAM, []), q))
            for q in (0.5, 0.95, 0.99)
        ]  # fmt: skip
        self.put(f"{label}: report→stored p50 / p95 / p99 (ms, bucket bound)", " / ".join(bounds))
        server_p99 = quantile_bound(
            b.histograms.get(SERVER_HISTOGRAM, []), a.histograms.get(SERVER_HISTOGRAM, []), 0.99
        )
        self.put(f"{label}: received→stored p99, server only (ms)", bound_text(server_p99))
        lag = "provisioning_loop_lag_seconds_max"
        for name in common:
            new = after[name][lag] > before[name][lag]
            held = f"{after[name][lag] * 1000:.0f} ms" if new else (
                f"≤ {before[name][lag] * 1000:.0f} ms (no new maximum)")  # fmt: skip
            self.put(f"{label}: {name} event-loop hold max", held)
        self.put(f"{label}: write queue now", f"{a['provisioning_write_queue']:.0f}")

    # -- phases ------------------------------------------------------------------------------

    async def connect(self) -> None:
        started = time.time()
        self.start_sims()
        took = await self.until(self.all_connected, 300, "every kit connected")
        await asyncio.sleep(1.5)  # the last second's dials reach us
        self.put("connect: all kits online (s)", f"{took:.1f}")
        self.put("connect: mean rate (kits/s)", f"{self.args.kits / took:.0f}")
        self.put("connect: peak welcomes/s", f"{self.peak(self.welcomes, started, time.time())}")

    async def steady(self, dashboard: Dashboard) -> None:
        """The sustained window, the dashboard polled, some kits silenced meanwhile."""
        self.tell(f"silence {self.args.silent}")
        poll = asyncio.create_task(dashboard.poll(self.args.duration))
        deadline = time.monotonic() + self.args.duration
        await self.window("steady", lambda: time.monotonic() >= deadline)
        await poll
        self.put("steady: admin list (GET /api/v1/kits?limit=100)", summary(dashboard.list_times))
        self.put("steady: admin counts (GET /api/v1/kits/counts)", summary(dashboard.counts_times))
        self.put("steady: list + counts together (first paint)", summary(dashboard.page_times))
        self.put("steady: admin list total / fetches",
                 f"{dashboard.kits_total} / {len(dashboard.page_times)}")  # fmt: skip
        for error in dashboard.errors[:3]:
            self.put("steady: admin error", error)
        expected = self.args.silent * len(self.sims)
        await self.until(lambda: self._detections() >= expected, 60, "silent kits dropped")
        found = sorted(d for s in self.sim_status for d in s.get("detections", []))
        self.put("offline detection: silent kits dropped", f"{len(found)} of {expected}")
        self.put("offline detection after the last report (s): median / max",
                 f"{found[len(found) // 2]:.1f} / {found[-1]:.1f}")  # fmt: skip

    def _detections(self) -> int:
        return sum(len(s.get("detections", [])) for s in self.sim_status)

    async def restart(self, label: str, downtime: float) -> None:
        """Stop every node (SIGTERM), wait ``downtime`` s, start them again: all kits back."""
        started, wall = time.monotonic(), time.time()
        await asyncio.gather(*(asyncio.to_thread(n.stop) for n in self.nodes))
        stopped = time.monotonic()
        await asyncio.sleep(downtime)
        restarting = time.monotonic()
        await self.start_nodes(self.nodes)
        answering = time.monotonic()
        # the kits see the stop at once: wait until they have noticed before testing "all back"
        await self.until(lambda: not self.all_connected(), 10, "kits notice the stop")
        most: list[float] = []

        def back_yet() -> bool:
            if not most and self.sim_sum("connected") >= 0.99 * self.args.kits:
                most.append(time.monotonic())
            return self.all_connected()

        await self.window(f"{label}: reconnection", back_yet, limit=300)
        back = time.monotonic()
        await asyncio.sleep(1.5)
        self.put(f"{label}: nodes stopped (SIGTERM → exit, s)", f"{stopped - started:.1f}")
        self.put(f"{label}: down (s)", f"{restarting - stopped:.1f}")
        self.put(f"{label}: nodes answering after start (s)", f"{answering - restarting:.1f}")
        self.put(f"{label}: 99 % of the kits back after the nodes answer (s)",
                 f"{(most or [back])[0] - answering:.1f}")  # fmt: skip
        self.put(f"{label}: ALL KITS BACK after the nodes answer (s)", f"{back - answering:.1f}")
        end, returned = wall + (back - started), wall + (answering - started)
        self.put(f"{label}: peak dials/s while down (refused at once)",
                 f"{self.peak(self.dials, wall, returned - 1)}")  # fmt: skip
        self.put(f"{label}: PEAK DIALS/s once the nodes answer",
                 f"{self.peak(self.dials, returned, end)}")  # fmt: skip
        self.put(f"{label}: peak welcomes/s", f"{self.peak(self.welcomes, returned, end)}")

    async def kill_node(self) -> None:
        """``kill -9`` the node holding the most links: time until its kits are all back."""
        held = {n.name: _links(n) for n in self.live_nodes}
        self.put("node kill: links per node before", ", ".join(f"{k} {v}" for k, v in held.items()))
        victim = max(self.live_nodes, key=lambda n: held[n.name])
        started, wall = time.monotonic(), time.time()
        victim.kill()
        await self.until(lambda: not self.all_connected(), 10, "kits notice the kill")
        await self.until(self.all_connected, 180, "the killed node's kits back")
        took = time.monotonic() - started
        await asyncio.sleep(1.5)
        self.put(f"node kill: {victim.name} killed with {held[victim.name]} links; "
                 "ALL ITS KITS BACK on the others (s)", f"{took:.1f}")  # fmt: skip
        self.put("node kill: peak welcomes/s",
                 f"{self.peak(self.welcomes, wall, wall + took)}")  # fmt: skip
        self.put("node kill: links per node after",
                 ", ".join(f"{n.name} {_links(n)}" for n in self.live_nodes))  # fmt: skip

    async def drain(self) -> None:
        """No new reports: what is pending gets sent and acknowledged; what is left is lost."""
        self.tell("drain")
        pending = ("unacked", "backlog")
        with contextlib.suppress(RuntimeError):
            await self.until(lambda: sum(self.sim_sum(k) for k in pending) == 0, 30, "drain")
        await asyncio.sleep(1.5)
        acked_kits = self.sim_sum("kits_acked")
        self.put("reports: acknowledged by the server (stored)", f"{self.sim_sum('acked')}")
        self.put("reports: sent again after a reconnect", f"{self.sim_sum('sent_again')}")
        if acked_kits == 0:
            self.put("reports: LOST", "n/a (the server sent no stored acknowledgements)")
        else:
            lost = sum(self.sim_sum(k) for k in (*pending, "dropped"))
            self.put("reports: LOST (made, never acknowledged after the drain)", f"{lost}")
        rows, duplicates = await history_duplicates(self.db_url)
        self.put("reports: history rows / STORED TWICE (same kit and sent_at)",
                 f"{rows} / {duplicates}")  # fmt: skip

    @property
    def db_url(self) -> str:
        return database_url(self.db, self.nodes[0].data_dir)

    # -- the run -----------------------------------------------------------------------------

    async def setup(self) -> None:
        cluster = self.args.nodes >= 2
        secret = new_cluster_secret(self.work) if cluster else None
        extra = []
        if self.args.history_every is not None:
            extra = ["--history-every", str(self.args.history_every)]
        self.nodes = [Node(i, self.work / f"n{i}", self.db, secret, extra)
                      for i in range(self.args.nodes)]  # fmt: skip
        for node in self.nodes:
            node.data_dir.mkdir(parents=True)
        await seed(self.db_url, self.args.kits)
        add_admin(self.db, self.nodes[0].data_dir)
        await self.start_nodes(self.nodes)
        if cluster or self.args.haproxy:
            self.lb = HAProxy(self.work, -(-self.args.kits // (LB_CONNECTIONS - 500)))
            self.lb.start(self.nodes)
            await asyncio.sleep(2.5)  # health checks: every node up (rise 2, inter 1 s)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as self.http:
            await self.setup()
            async with Dashboard(self.entry, ADMIN_EMAIL, ADMIN_PASSWORD) as dashboard:
                await dashboard.login()
                await self.connect()
                await asyncio.sleep(SETTLE_S)
                await self.steady(dashboard)
                for label, downtime in (("short restart", self.args.short_downtime),
                                        ("long restart", self.args.long_downtime)):  # fmt: skip
                    if downtime >= 0:
                        await self.restart(f"{label} ({downtime:.0f} s down)", downtime)
                if len(self.nodes) >= 2:
                    await asyncio.sleep(SETTLE_S)
                    await self.kill_node()
                await asyncio.sleep(SETTLE_S)
                deadline = time.monotonic() + self.args.after
                await self.window("after", lambda: time.monotonic() >= deadline)
                await self.drain()
                self.put("dashboard: event stream opened / events received",
                         f"{dashboard.stream_opens} / {dashboard.events}")  # fmt: skip

    def stop(self) -> None:
        self.tell("quit")
        for sim in self.sims:
            try:
                sim.wait(15)
            except subprocess.TimeoutExpired:
                sim.kill()
        for node in self.nodes:
            node.stop()
        if self.lb is not None:
            self.lb.stop()


EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def _log_errors(lines: list[str]) -> list[str]:
    """Each ERROR line of a node's log, with the last exception its traceback named."""
    errors: list[str] = []
    for index, line in enumerate(lines):
        if " ERROR " not in line:
            continue
        ending = ""
        for after in lines[index + 1 : index + 200]:
            if after[:4].isdigit():  # the next log line
                break
            if EXCEPTION.match(after):
                ending = after
        errors.append(line + (f" → {ending[:200]}" if ending else ""))
    return errors


def _ms(seen: list[float], q: float) -> str:
    if not seen:
        return "n/a"
    ordered = sorted(seen)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f} ms"


def _links(node: Node) -> int:
    """Established connections to a node's port: its kits' links (and an admin's stream)."""
    if node.ps is None or not node.running:
        return 0
    with contextlib.suppress(psutil.Error):
        return sum(
            1
            for c in node.ps.net_connections("tcp")
            if c.status == "ESTABLISHED" and c.laddr and c.laddr.port == node.port
        )
    return 0


async def history_duplicates(url: str) -> tuple[int, int]:
    engine = await open_database(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT count(*) FROM health_history"))).scalar()
            distinct = (await conn.execute(sa.text(DISTINCT_SQL))).scalar()
    finally:
        await engine.dispose()
    return int(rows or 0), int(rows or 0) - int(distinct or 0)


@contextlib.contextmanager
def work_dir(keep: Path | None) -> Iterator[Path]:
    """Where the nodes' data and logs go: ``--keep DIR`` (kept), else a temporary directory."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="bench-prov-") as tmp:
            yield Path(tmp)
        return
    keep.mkdir(parents=True, exist_ok=False)
    yield keep.resolve()


@contextlib.contextmanager
def database(choice: str) -> Iterator[tuple[str, Postgres | None]]:
    """``--db``: "" (SQLite), ``postgresql`` (a server of our own) or a URL."""
    if choice != "postgresql":
        yield choice, None
        return
    with postgres(PG_SETTINGS) as server:

        async def create() -> None:
            connection = await asyncpg.connect(server.url + "/postgres")
            try:
                await connection.execute("CREATE DATABASE bench")
            finally:
                await connection.close()

        asyncio.run(create())
        yield server.url + "/bench", server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.provisioning", description=__doc__)
    parser.add_argument("--kits", type=int, default=15000)
    parser.add_argument("--procs", type=int, default=3, help="simulator processes")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="handshakes in flight per simulator")  # fmt: skip
    parser.add_argument("--duration", type=float, default=60.0, help="steady window (s)")
    parser.add_argument("--after", type=float, default=20.0, help="window after the restarts (s)")
    parser.add_argument("--silent", type=int, default=30, help="kits silenced per simulator")
    parser.add_argument("--db", default="",
                        help="postgresql (a PostgreSQL of the bench's own), a postgresql:// URL, "
                             "or nothing for SQLite")  # fmt: skip
    parser.add_argument("--nodes", type=int, default=1, help="server processes (≥ 2: cluster)")
    parser.add_argument("--haproxy", action="store_true", help="HAProxy in front of one node too")
    parser.add_argument("--short-downtime", type=float, default=5.0, help="s; < 0: skip")
    parser.add_argument(
        "--long-downtime",
        type=float,
        default=60.0,
        help="s (beyond ~31 s every kit's backoff is at its cap); < 0: skip",
    )
    parser.add_argument("--history-every", type=float, default=None,
                        help="the nodes' --history-every (default: theirs)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="a new directory for the nodes' data and logs")
    args = parser.parse_args(argv)
    if args.nodes >= 2 and not args.db:
        parser.error("--nodes 2 or more needs PostgreSQL (--db postgresql)")
    return args


def main() -> None:
    args = parse_args()
    database_name = "PostgreSQL" if args.db else "SQLite"
    lb = "HAProxy, " if args.nodes >= 2 or args.haproxy else ""
    print(f"provisioning benchmark: {args.kits} kits, {args.nodes} node(s), {lb}"
          f"{database_name}, {args.procs} simulator processes, {os.cpu_count()} cores",
          flush=True)  # fmt: skip
    started = time.monotonic()
    failed = ""
    with work_dir(args.keep) as work, database(args.db) as (db, pg):
        bench = Bench(args, work, db, pg)
        try:
            asyncio.run(bench.run())
        except (RuntimeError, OSError) as exc:
            failed = str(exc)
        finally:
            bench.stop()
            report(bench, time.monotonic() - started, failed)
    if failed:
        sys.exit(1)


def report(bench: Bench, elapsed: float, failed: str) -> None:
    results = bench.results
    print(f"\nprovisioning benchmark: {bench.args.kits} kits, {len(bench.nodes)} node(s), "
          f"{'PostgreSQL' if bench.args.db else 'SQLite'}, {os.cpu_count()} cores, "
          f"{elapsed:.0f} s")  # fmt: skip
    width = max((len(k) for k in results), default=0)
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    for node in bench.nodes:
        lines = node.log_lines()
        errors = _log_errors(lines)
        print(f"  {node.name} log: {len(lines)} lines, {len(errors)} errors")
        for error in errors[:5]:
            print("   ", error)
    if failed:
        print(f"  FAILED: {failed}")
    if bench.args.json:
        bench.args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
