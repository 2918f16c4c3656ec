"""What the benchmark reads: the nodes' /metrics (histograms summed across nodes), processes'
CPU and RSS, and an admin's dashboard (the kit list and counts fetched every 10 s, the event
stream open throughout)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
import psutil

REPORT_HISTOGRAM = "provisioning_report_stored_ms"
SERVER_HISTOGRAM = "provisioning_report_received_stored_ms"


@dataclass
class Metrics:
    values: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """name → cumulative (bound, count) buckets, ``inf`` last."""

    def __getitem__(self, key: str) -> float:
        return self.values.get(key, 0.0)

    def __add__(self, other: Metrics) -> Metrics:
        """Two nodes' metrics as one (counters and gauges summed, histograms bucket-wise)."""
        values = {k: self[k] + other[k] for k in {*self.values, *other.values}}
        histograms = {}
        for name in {*self.histograms, *other.histograms}:
            mine, theirs = self.histograms.get(name), other.histograms.get(name)
            if mine is None or theirs is None:
                histograms[name] = list(mine or theirs or [])
            else:
                histograms[name] = [(b, c + d) for (b, c), (_, d) in zip(mine, theirs, strict=True)]
        return Metrics(values, histograms)


def parse_metrics(text: str) -> Metrics:
    metrics = Metrics()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if "_bucket{" in name:
            base, bound = name.split("_bucket{", 1)
            limit = bound.split('le="')[1].rstrip('"}')
            metrics.histograms.setdefault(base, []).append(
                (float("inf") if limit == "+Inf" else float(limit), float(value))
            )
        elif name:
            metrics.values[name] = float(value)
    return metrics


def total(metrics: Iterable[Metrics]) -> Metrics:
    result = Metrics()
    for m in metrics:
        result = result + m
    return result


def quantile_bound(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The bucket bound under which a fraction ``q`` of what was observed between the two
    readings falls (the true quantile is at most that). NaN if nothing was observed."""
    if not after:
        return float("nan")
    if not before:
        before = [(b, 0.0) for b, _ in after]
    counts = [(b, a - c) for (b, a), (_, c) in zip(after, before, strict=True)]
    observed = counts[-1][1]
    if observed <= 0:
        return float("nan")
    for bound, cumulative in counts:
        if cumulative >= q * observed:
            return bound
    return float("inf")


def bound_text(value: float) -> str:
    return "n/a" if value != value else f"≤ {value:.0f}"  # NaN: nothing observed


async def fetch_metrics(http: aiohttp.ClientSession, url: str) -> Metrics | None:
    try:
        async with asyncio.timeout(10):
            async with http.get(url + "/metrics") as response:
                if response.status != 200:
                    return None
                return parse_metrics(await response.text())
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


def cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """User + system CPU of these processes (those gone since are left out)."""
    used = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            used += times.user + times.system
    return used


def rss(processes: Iterable[psutil.Process]) -> int:
    used = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            used += process.memory_info().rss
    return used


def pss(processes: Iterable[psutil.Process]) -> int:
    """Proportional set size: memory shared by a group (PostgreSQL's shared buffers, mapped
    in every backend) counted once, not once per process as a sum of RSS would."""
    used = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            used += process.memory_full_info().pss
    return used


def with_children(pid: int) -> list[psutil.Process]:
    """A process and its children (PostgreSQL: the postmaster and its backends)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return []


def summary(times: list[float]) -> str:
    if not times:
        return "n/a"
    return f"p50 {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"


@dataclass
class Dashboard:
    """An admin with the dashboard open: signed in, its event stream kept open, and the list's
    first page with the counts fetched every ``every`` seconds while :meth:`poll` runs."""

    url: str
    email: str
    password: str
    http: aiohttp.ClientSession = field(init=False)
    list_times: list[float] = field(default_factory=list)
    counts_times: list[float] = field(default_factory=list)
    page_times: list[float] = field(default_factory=list)
    """List and counts fetched together (the dashboard's first paint)."""
    errors: list[str] = field(default_factory=list)
    events: int = 0
    stream_opens: int = 0
    kits_total: int = -1
    _stream: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dashboard:
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.cancel()
            await asyncio.gather(self._stream, return_exceptions=True)
        await self.http.close()

    async def login(self) -> None:
        body = {"email": self.email, "password": self.password}
        async with self.http.post(self.url + "/api/v1/login", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"admin sign-in: {response.status} {await response.text()}")
        self._stream = asyncio.create_task(self._keep_stream())

    async def _keep_stream(self) -> None:
        """The SSE stream, opened again a second after it ends (a node restarted)."""
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
                async with self.http.get(self.url + "/api/v1/events", timeout=timeout) as resp:
                    if resp.status == 200:
                        self.stream_opens += 1
                        async for line in resp.content:
                            if line.startswith(b"event:"):
                                self.events += 1
            await asyncio.sleep(1.0)

    async def _timed_get(self, path: str, times: list[float]) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(30):
                async with self.http.get(self.url + path) as response:
                    body = await response.read()
                    if response.status != 200:
                        self.errors.append(f"GET {path}: {response.status} {body[:100]!r}")
                        return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.errors.append(f"GET {path}: {exc!r}")
            return
        times.append(time.perf_counter() - started)
        if path.startswith("/api/v1/kits?"):
            with contextlib.suppress(ValueError, AttributeError):
                self.kits_total = int(json.loads(body).get("total", -1))

    async def fetch_page(self) -> None:
        started = time.perf_counter()
        await asyncio.gather(
            self._timed_get("/api/v1/kits?limit=100", self.list_times),
            self._timed_get("/api/v1/kits/counts", self.counts_times),
        )
        self.page_times.append(time.perf_counter() - started)

    async def poll(self, seconds: float, every: float = 10.0) -> None:
        """Fetch the page at once and every ``every`` s for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            next_at = time.monotonic() + every
            await self.fetch_page()
            await asyncio.sleep(max(0.0, min(next_at, deadline) - time.monotonic()))
