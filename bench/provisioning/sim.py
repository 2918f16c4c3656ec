"""Simulated kits: one process holds many links, each speaking the real protocol.

``python -m bench.provisioning.sim URL SOURCE_IP FIRST COUNT`` runs kits FIRST…FIRST+COUNT-1
(credentials derived from their index, see :func:`kit_credential`). Each kit dials with the
agent's own backoff (:func:`agent.link.client.backoff_delay`), sends ``hello``, acknowledges
pushed configs and sends a health report every ``health_interval_s`` from the welcome, exactly as
the agent does. Commands on stdin: ``silence N`` (N kits stop sending without closing; each
reports how long the server took to drop it), ``quit``. One JSON line of counters per second on
stdout.
"""

from __future__ import annotations

import asyncio
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

from agent.link.client import backoff_delay
from kitlink import (
    CLOSE_TIMEOUT,
    LINK_PATH,
    MAX_MESSAGE_BYTES,
    VERSION,
    ConfigAck,
    Health,
    HealthReport,
    Hello,
    ProtocolError,
    PushConfig,
    Welcome,
    encode,
    parse_server_message,
)

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
    silenced_at: float = 0.0
    last_sent: float = 0.0


@dataclass
class Counters:
    connected: int = 0
    connects: int = 0
    reports: int = 0
    failures: int = 0
    detections: list[float] = field(default_factory=list)


class Simulation:
    def __init__(self, url: str, source_ip: str, first: int, count: int) -> None:
        self.url = url.replace("http://", "ws://") + LINK_PATH
        self.source_ip = source_ip
        self.kits = [SimKit(*kit_credential(i)) for i in range(first, first + count)]
        self.counters = Counters()
        self.stopping = False

    async def run_kit(self, kit: SimKit, gate: asyncio.Semaphore) -> None:
        attempt = 0
        while not self.stopping:
            try:
                async with gate:
                    ws = await connect(
                        self.url,
                        local_addr=(self.source_ip, 0),
                        max_size=MAX_MESSAGE_BYTES,
                        open_timeout=60,
                        ping_interval=30,
                        ping_timeout=30,
                        close_timeout=5,
                        compression=None,
                    )
                async with ws:
                    attempt = 0
                    await self.session(ws, kit)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError):
                self.counters.failures += 1
            await asyncio.sleep(backoff_delay(attempt, 1.0, 60.0, random.random))
            attempt += 1

    async def session(self, ws: ClientConnection, kit: SimKit) -> None:
        hello = Hello(v=VERSION, kit_id=kit.kit_id, secret=kit.secret, software="0.1.0",
                      config_version=kit.config_version)  # fmt: skip
        await ws.send(encode(hello))
        welcome = parse_server_message(await ws.recv())
        assert isinstance(welcome, Welcome)
        self.counters.connected += 1
        self.counters.connects += 1
        reporter = asyncio.create_task(self.report(ws, kit, welcome.health_interval_s))
        try:
            async for frame in ws:
                message = parse_server_message(frame)
                if isinstance(message, PushConfig):
                    kit.config_version = message.version
                    await ws.send(encode(ConfigAck(version=message.version, status="applied")))
        except ConnectionClosed:
            pass
        finally:
            reporter.cancel()
            self.counters.connected -= 1
            if kit.silent and ws.close_code == CLOSE_TIMEOUT:
                self.counters.detections.append(time.time() - kit.last_sent)
                kit.silent = False

    async def report(self, ws: ClientConnection, kit: SimKit, interval: float) -> None:
        seq = 0
        next_at = time.monotonic()
        while True:
            if not kit.silent:
                kit.last_sent = time.time()
                await ws.send(encode(Health(seq=seq, sent_at=kit.last_sent, report=REPORT)))
                self.counters.reports += 1
                seq += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def silence(self, count: int) -> None:
        candidates = [k for k in self.kits if not k.silent]
        for kit in random.sample(candidates, min(count, len(candidates))):
            kit.silent = True
            kit.silenced_at = time.time()

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().split():
            if line[0] == "silence":
                self.silence(int(line[1]))
            elif line[0] == "quit":
                break
        self.stopping = True

    async def status(self) -> None:
        while not self.stopping:
            c = self.counters
            print(json.dumps({"connected": c.connected, "connects": c.connects,
                              "reports": c.reports, "failures": c.failures,
                              "detections": c.detections}), flush=True)  # fmt: skip
            await asyncio.sleep(1.0)

    async def main(self, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)
        tasks = [asyncio.create_task(self.run_kit(k, gate)) for k in self.kits]
        status = asyncio.create_task(self.status())
        await self.commands()
        for task in [*tasks, status]:
            task.cancel()
        await asyncio.gather(*tasks, status, return_exceptions=True)


def main() -> None:
    gc.set_threshold(50_000, 20, 100)  # as the server: short-lived objects die young
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    url, source_ip, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    concurrency = int(sys.argv[5]) if len(sys.argv) > 5 else 200
    asyncio.run(Simulation(url, source_ip, first, count).main(concurrency))


if __name__ == "__main__":
    main()
