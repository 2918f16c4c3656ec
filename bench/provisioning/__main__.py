"""``make bench-provisioning``: N simulated kits against one server process on this machine.

Phases: (1) every kit connects (connect rate); (2) sustained health traffic at a 10 s interval
(reports/s stored, p99 report-sent → stored, server CPU and RSS); (3) some kits fall silent
without closing (time until the server drops them); (4) the server restarts and every kit
reconnects at once (time until all are back, p99 while they do).

python -m bench.provisioning [--kits 15000] [--procs 3] [--duration 60] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from provisioning.db import database_url, open_database
from provisioning.tables import kits, schools

from .sim import kit_credential

HOST = "127.0.0.1"


@dataclass
class Metrics:
    values: dict[str, float]
    buckets: list[tuple[float, float]]
    """Report sent (kit clock) → stored."""
    server_buckets: list[tuple[float, float]]
    """Report received → stored: the server's own share."""

    def __getitem__(self, key: str) -> float:
        return self.values.get(key, 0.0)


def parse_metrics(text: str) -> Metrics:
    values: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    server_buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if "_ms_bucket" in name:
            bound = name.split('le="')[1].rstrip('"}')
            target = buckets if name.startswith("provisioning_report_stored_ms") else server_buckets
            target.append((float("inf") if bound == "+Inf" else float(bound), float(value)))
        else:
            values[name] = float(value)
    return Metrics(values, buckets, server_buckets)


def p99_between(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> float:
    """The bucket bound under which 99 % of the reports stored in the window fall."""
    counts = [(b, a - c) for (b, a), (_, c) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return float("nan")
    for bound, cumulative in counts:
        if cumulative >= 0.99 * total:
            return bound
    return float("inf")


async def seed(url: str, count: int) -> None:
    engine = await open_database(url)
    now = time.time()
    async with engine.begin() as conn:
        await conn.execute(
            schools.insert().values(id="BENCH", name="Bench", departement="75", created_at=now)
        )
        rows = []
        for index in range(count):
            kit_id, secret = kit_credential(index)
            secret_hash = hashlib.sha256(secret.encode()).hexdigest()
            rows.append({"id": kit_id, "name": kit_id, "school_id": "BENCH",
                         "secret_hash": secret_hash, "created_at": now})  # fmt: skip
        await conn.execute(kits.insert(), rows)
    await engine.dispose()


@dataclass
class Bench:
    args: argparse.Namespace
    data_dir: Path
    port: int = 18443
    server: subprocess.Popen[bytes] | None = None
    sims: list[subprocess.Popen[str]] = field(default_factory=list)
    sim_status: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start_server(self) -> None:
        command = [sys.executable, "-m", "provisioning.cli", "serve", "--http",
                   f"{HOST}:{self.port}", "--data-dir", str(self.data_dir)]  # fmt: skip
        if self.args.db:
            command += ["--db", self.args.db]
        with open(self.data_dir / "server.log", "ab") as log:
            self.server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

    async def metrics(self, http: aiohttp.ClientSession) -> Metrics | None:
        try:
            async with http.get(self.url + "/metrics") as response:
                return parse_metrics(await response.text())
        except (aiohttp.ClientError, OSError):
            return None

    async def wait_online(self, http: aiohttp.ClientSession, count: int, limit: float) -> float:
        start = time.monotonic()
        while time.monotonic() - start < limit:
            m = await self.metrics(http)
            if m is not None and m["provisioning_kits_online"] >= count:
                return time.monotonic() - start
            await asyncio.sleep(0.25)
        raise RuntimeError(f"not all {count} kits online after {limit} s")

    def start_sims(self) -> None:
        per = -(-self.args.kits // self.args.procs)
        for i in range(self.args.procs):
            first, count = i * per, min(per, self.args.kits - i * per)
            sim = subprocess.Popen(
                [sys.executable, "-m", "bench.provisioning.sim", self.url, f"127.0.0.{11 + i}",
                 str(first), str(count)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            )  # fmt: skip
            self.sims.append(sim)
            self.sim_status.append({})
            asyncio.get_running_loop().add_reader(sim.stdout.fileno(), self._read_sim, i)  # type: ignore[union-attr]

    def _read_sim(self, index: int) -> None:
        line = self.sims[index].stdout.readline()  # type: ignore[union-attr]
        if line:
            self.sim_status[index] = json.loads(line)
        else:
            asyncio.get_running_loop().remove_reader(self.sims[index].stdout.fileno())  # type: ignore[union-attr]

    def tell(self, command: str) -> None:
        for sim in self.sims:
            assert sim.stdin is not None
            sim.stdin.write(command + "\n")
            sim.stdin.flush()

    async def sustained(self, http: aiohttp.ClientSession, seconds: float, label: str) -> None:
        """Measure a window of ``seconds``."""
        deadline = time.monotonic() + seconds
        await self.window(http, label, lambda m: time.monotonic() >= deadline)

    async def window(
        self, http: aiohttp.ClientSession, label: str, done: Callable[[Metrics], bool]
    ) -> None:
        """Reports/s, p99, CPU and RSS of the server from now until ``done(metrics)``."""
        assert self.server is not None
        process = psutil.Process(self.server.pid)
        before, cpu0, t0 = await self.metrics(http), process.cpu_times(), time.monotonic()
        assert before is not None
        rss_max, after = 0, before
        while not done(after):
            rss_max = max(rss_max, process.memory_info().rss)
            await asyncio.sleep(0.5)
            after = await self.metrics(http) or after
        cpu1, elapsed = process.cpu_times(), time.monotonic() - t0
        stored = "provisioning_reports_stored_total"
        rate = (after[stored] - before[stored]) / elapsed
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed * 100
        p99 = p99_between(before.buckets, after.buckets)
        p99_server = p99_between(before.server_buckets, after.server_buckets)
        results = {
            "window (s)": f"{elapsed:.0f}",
            "reports stored/s": f"{rate:.0f}",
            "p99 report→stored (ms, bucket bound)": f"≤ {p99:.0f}",
            "p99 received→stored, server only (ms)": f"≤ {p99_server:.0f}",
            "server CPU (% of one core)": f"{cpu:.0f}",
            "server RSS max (MiB)": f"{rss_max / 2**20:.0f}",
            "kits online": f"{after['provisioning_kits_online']:.0f}",
        }
        for key, value in results.items():
            self.results[f"{label}: {key}"] = value

    async def offline(self, count_per_sim: int) -> None:
        expected = count_per_sim * len(self.sims)
        self.tell(f"silence {count_per_sim}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            detections = [d for s in self.sim_status for d in s.get("detections", [])]
            if len(detections) >= expected:
                break
            await asyncio.sleep(0.5)
        self.results["silent kits dropped"] = f"{len(detections)} of {expected}"
        if detections:
            self.results["offline detection after last report (s): median"] = (
                f"{statistics.median(detections):.1f}"
            )
            self.results["offline detection after last report (s): max"] = f"{max(detections):.1f}"

    async def restart(self, http: aiohttp.ClientSession) -> None:
        """SIGTERM, start again at once; every kit reconnects with its own backoff."""
        assert self.server is not None
        started = time.monotonic()
        self.server.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.server.wait, 60)
        stopped = time.monotonic()
        self.start_server()
        await self.wait_online(http, 0, 60)  # the new server answers
        answering = time.monotonic()
        kits = self.args.kits
        await self.window(http, "reconnect", lambda m: m["provisioning_kits_online"] >= kits)
        back = time.monotonic()
        self.results["restart: server stop (s)"] = f"{stopped - started:.1f}"
        self.results["restart: new server answering (s)"] = f"{answering - stopped:.1f}"
        self.results["restart: all kits back after SIGTERM (s)"] = f"{back - started:.1f}"
        self.results["restart: reconnect rate (kits/s)"] = (
            f"{kits / max(back - answering, 1e-3):.0f}"
        )

    async def run(self) -> None:
        data_url = database_url(self.args.db, self.data_dir)
        await seed(data_url, self.args.kits)
        self.start_server()
        async with aiohttp.ClientSession() as http:
            await self.wait_online(http, 0, 60)  # the server answers
            self.start_sims()
            took = await self.wait_online(http, self.args.kits, 300)
            self.results["connect: all kits online (s)"] = f"{took:.1f}"
            self.results["connect: rate (kits/s)"] = f"{self.args.kits / took:.0f}"
            await asyncio.sleep(12)  # one full health interval: every kit is reporting
            await self.sustained(http, self.args.duration, "steady")
            await self.offline(self.args.silent)
            await self.restart(http)
            await asyncio.sleep(12)
            await self.sustained(http, 30, "after restart")

    def stop(self) -> None:
        for sim in self.sims:
            if sim.poll() is None:
                self.tell("quit") if sim.stdin and not sim.stdin.closed else None
        for sim in self.sims:
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.provisioning")
    parser.add_argument("--kits", type=int, default=15000)
    parser.add_argument("--procs", type=int, default=3, help="simulator processes")
    parser.add_argument("--duration", type=float, default=60.0, help="steady window (s)")
    parser.add_argument("--silent", type=int, default=30, help="kits silenced per simulator")
    parser.add_argument("--db", default="", help="postgresql://… (default SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-prov-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            asyncio.run(bench.run())
        finally:
            bench.stop()
            report(args, bench.results, Path(tmp) / "server.log")


def report(args: argparse.Namespace, results: dict[str, str], log: Path) -> None:
    database = "PostgreSQL" if args.db else "SQLite"
    print(f"\nprovisioning benchmark: {args.kits} kits, {args.procs} simulator processes, "
          f"{os.cpu_count()} cores, {database}")  # fmt: skip
    width = max((len(k) for k in results), default=0)
    for key, value in results.items():
        print(f"  {key:<{width}}  {value}")
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        if (
            "provisioning: stopping" in line
            or "links closed" in line
            or "INFO provisioning: stopped" in line
        ):
            print("    server:", line)
    errors = [line for line in lines if " ERROR " in line]
    print(f"  server log errors: {len(errors)}")
    for line in errors[:5]:
        print("   ", line)


if __name__ == "__main__":
    main()
