"""Simulated kits: one process holds many links, each speaking the real protocol.

``python -m bench.provisioning.sim URL SOURCE_IP FIRST COUNT [CONCURRENCY]`` runs kits
FIRST…FIRST+COUNT-1 (credentials derived from their index, see :func:`kit_credential`). Each kit
behaves as the agent (agent/link/client.py) does where the server can tell:

- it dials with the agent's backoff function and its default policy (full jitter from
  ``reconnect_min_s`` doubling up to ``reconnect_max_s``, the agent's config defaults);
- it sends ``hello`` listing ``stored_ack``, acknowledges pushed configs, and makes a health
  report every ``health_interval_s`` from its first welcome, at once after each welcome;
- its reports go through the agent's own bookkeeping (:class:`agent.link.reports.Reports`):
  made while the link is down → backlog; sent → unacknowledged until the server's ``stored``;
  after a reconnect the backlog and the unacknowledged are sent again, marked ``queued``.

Commands on stdin: ``silence N`` (N kits stop sending without closing; each reports how long the
server took to drop it), ``drain`` (no new reports: what is pending gets sent and acknowledged),
``quit``. One JSON line of counters per second on stdout, with the dials and welcomes of each
wall-clock second since the last line (the parent sums them into connection rates) and how late
the simulator's own event loop ran.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import hashlib
import json
import random
import resource
import sys
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from agent.config import ServerLinkConfig
from agent.link.client import backoff_delay
from agent.link.reports import Reports
from kitlink import (
    CLOSE_TIMEOUT,
    FEATURE_STORED_ACK,
    LINK_PATH,
    MAX_MESSAGE_BYTES,
    VERSION,
    ConfigAck,
    Health,
    HealthReport,
    Hello,
    ProtocolError,
    PushConfig,
    Stored,
    Welcome,
    encode,
    parse_server_message,
)

LINK_DEFAULTS = ServerLinkConfig()
"""The agent's redial policy as shipped (``reconnect_min_s``, ``reconnect_max_s``)."""

REPORT = HealthReport.model_validate(
    {
        "software": "0.1.0",
        "uptime_s": 3600.0,
        "cpu_percent": 42.5,
        "load": [0.9, 0.8, 0.7],
        "memory": {"total_mb": 3900, "available_mb": 2300},
        "disk_free_mb": 48000,
        "cpu_temp_c": 51.0,
        "devices": {
            "camera": {"state": "ok", "detail": ""},
            "document": {"state": "ok", "detail": ""},
            "microphone": {"state": "ok", "detail": ""},
        },
        "session": {"state": "live", "viewers": 24, "elapsed_s": 1500.0},
        "streams": [
            {"source": "camera", "codec": "h264", "fps": 30.0, "bitrate_kbps": 1900.0,
             "loss_percent": 0.1},
            {"source": "document", "codec": "h264", "fps": 15.0, "bitrate_kbps": 1400.0,
             "loss_percent": 0.0},
            {"source": "microphone", "codec": "opus", "fps": 50.0, "bitrate_kbps": 48.0,
             "loss_percent": 0.0},
        ],
    }
)  # fmt: skip


def kit_credential(index: int) -> tuple[str, str]:
    digest = hashlib.sha256(f"bench-kit-{index}".encode()).hexdigest()
    return f"kit-b{index:05d}", "bench-" + digest[:40]


@dataclass(slots=True, eq=False)
class SimKit:
    kit_id: str
    secret: str
    config_version: str | None = None
    silent: bool = False
    last_sent: float = 0.0
    ws: ClientConnection | None = None
    """The link, once welcomed (None while it is down)."""
    reports: Reports = field(default_factory=Reports)
    report_now: asyncio.Event = field(default_factory=asyncio.Event)
    reporter: asyncio.Task[None] | None = None
    seq: int = 0


@dataclass
class Counters:
    connected: int = 0
    connects: int = 0
    reports: int = 0
    failures: int = 0
    acked: int = 0
    detections: list[float] = field(default_factory=list)
    dials: collections.Counter[int] = field(default_factory=collections.Counter)
    """Dials started per wall-clock second (since the last status line)."""
    welcomes: collections.Counter[int] = field(default_factory=collections.Counter)


class Simulation:
    def __init__(self, url: str, source_ip: str, first: int, count: int) -> None:
        self.url = url.replace("http://", "ws://") + LINK_PATH
        self.source_ip = source_ip
        self.kits = [SimKit(*kit_credential(i)) for i in range(first, first + count)]
        self.counters = Counters()
        self.stopping = False
        self.draining = False
        self.interval = 10.0

    async def run_kit(self, kit: SimKit, gate: asyncio.Semaphore) -> None:
        attempt = 0
        while not self.stopping:
            try:
                async with gate:
                    self.counters.dials[int(time.time())] += 1
                    ws = await connect(
                        self.url,
                        local_addr=(self.source_ip, 0),
                        max_size=MAX_MESSAGE_BYTES,
                        open_timeout=20,
                        ping_interval=LINK_DEFAULTS.keepalive_s,
                        ping_timeout=LINK_DEFAULTS.keepalive_s,
                        close_timeout=5,
                        compression=None,
                    )
                async with ws:
                    attempt = 0
                    await self.session(ws, kit)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError):
                self.counters.failures += 1
            delay = backoff_delay(
                attempt, LINK_DEFAULTS.reconnect_min_s, LINK_DEFAULTS.reconnect_max_s, random.random
            )
            await asyncio.sleep(delay)
            attempt += 1

    async def session(self, ws: ClientConnection, kit: SimKit) -> None:
        hello = Hello(v=VERSION, kit_id=kit.kit_id, secret=kit.secret, software="0.1.0",
                      config_version=kit.config_version, features=[FEATURE_STORED_ACK])  # fmt: skip
        await ws.send(encode(hello))
        welcome = parse_server_message(await ws.recv())
        assert isinstance(welcome, Welcome)
        self.interval = welcome.health_interval_s
        self.counters.connected += 1
        self.counters.connects += 1
        self.counters.welcomes[int(time.time())] += 1
        try:
            for health in kit.reports.to_send():  # the agent's backlog, then live reports
                await ws.send(encode(health))
            kit.ws = ws
            kit.report_now.set()
            if kit.reporter is None:
                kit.reporter = asyncio.create_task(self.report(kit))
            async for frame in ws:
                message = parse_server_message(frame)
                if isinstance(message, Stored):
                    self.counters.acked += kit.reports.stored(message.upto)
                elif isinstance(message, PushConfig):
                    kit.config_version = message.version
                    await ws.send(encode(ConfigAck(version=message.version, status="applied")))
        except ConnectionClosed:
            pass
        finally:
            kit.ws = None
            kit.reports.link_lost()
            self.counters.connected -= 1
            if kit.silent and ws.close_code == CLOSE_TIMEOUT:
                self.counters.detections.append(time.time() - kit.last_sent)
                kit.silent = False

    async def report(self, kit: SimKit) -> None:
        """As the agent's ``_report_forever``: made every interval, linked or not."""
        while not self.draining:
            if not kit.silent:
                kit.last_sent = time.time()
                health = Health(seq=kit.seq, sent_at=kit.last_sent, report=REPORT)
                kit.seq += 1
                ws = kit.ws
                try:
                    if ws is None:
                        raise ConnectionError("link down")
                    await ws.send(encode(health))
                    kit.reports.sent(health)
                    self.counters.reports += 1
                except (ConnectionError, ConnectionClosed):
                    kit.reports.made_offline(health)
            kit.report_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await kit.report_now.wait()

    def silence(self, count: int) -> None:
        candidates = [k for k in self.kits if not k.silent]
        for kit in random.sample(candidates, min(count, len(candidates))):
            kit.silent = True

    def pending(self) -> dict[str, int]:
        """Reports made and not (yet) acknowledged: on a live link, in a backlog, dropped."""
        unacked = sum(len(k.reports.unacknowledged) for k in self.kits)
        backlog = sum(len(k.reports.backlog) for k in self.kits)
        dropped = sum(k.reports.dropped for k in self.kits)
        acks = sum(1 for k in self.kits if k.reports.server_acknowledges)
        sent_again = sum(k.reports.sent_again for k in self.kits)
        return {"unacked": unacked, "backlog": backlog, "dropped": dropped,
                "kits_acked": acks, "sent_again": sent_again}  # fmt: skip

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            if line[0] == "silence":
                self.silence(int(line[1]))
            elif line[0] == "drain":
                self.draining = True
                for kit in self.kits:
                    kit.report_now.set()
            elif line[0] == "quit":
                break
        self.stopping = True

    async def status(self) -> None:
        """Every second, the counters and ``lag``: how late this very tick ran (a simulator
        short of CPU answers late too; its figures are then the load generator's)."""
        lag = 0.0
        while not self.stopping:
            c = self.counters
            now = int(time.time())
            dials = {s: n for s, n in c.dials.items() if s < now}
            welcomes = {s: n for s, n in c.welcomes.items() if s < now}
            for s in dials:
                del c.dials[s]
            for s in welcomes:
                del c.welcomes[s]
            line = {"connected": c.connected, "connects": c.connects, "reports": c.reports,
                    "failures": c.failures, "acked": c.acked, "detections": c.detections,
                    "dials": dials, "welcomes": welcomes, "lag": round(lag, 3),
                    **self.pending()}  # fmt: skip
            print(json.dumps(line), flush=True)
            due = time.monotonic() + 1.0
            await asyncio.sleep(1.0)
            lag = time.monotonic() - due

    async def main(self, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)
        tasks = [asyncio.create_task(self.run_kit(k, gate)) for k in self.kits]
        status = asyncio.create_task(self.status())
        await self.commands()
        reporters = [k.reporter for k in self.kits if k.reporter is not None]
        for task in [*tasks, *reporters, status]:
            task.cancel()
        await asyncio.gather(*tasks, *reporters, status, return_exceptions=True)


def main() -> None:
    gc.set_threshold(50_000, 20, 100)  # as the server: short-lived objects die young
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    url, source_ip, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    asyncio.run(Simulation(url, source_ip, first, count).main(concurrency))


if __name__ == "__main__":
    main()
