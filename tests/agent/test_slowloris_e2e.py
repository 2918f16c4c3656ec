"""Slowloris from a LAN host against a real kit (issue 13, High 2).

Before the connection guard, 1,100 connections from one host, each sending a partial header then
a byte every 10 s, were never closed: the kit (soft open-files limit 1,024, systemd's default)
ran out of descriptors, ``/healthz`` timed out, the watchdog went 71 s without a ping and the log
grew 97 MB in 90 s. Here the kit is a real ``kit-agent run`` process started with that 1,024
limit, under a notify socket with a 3 s watchdog; the attacker is another host (a network
namespace); a real pupil (aiortc, WHEP) watches from a third address.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.whep_receiver import WhepReceiver
from tests.agentproc import AgentProcess, free_port, write_config
from tests.slowloris import Namespace, attacker_namespace, finish

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def notify_socket(directory: Path) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(directory / "notify"))
        sock.setblocking(False)
        yield sock


def watchdog_pings(sock: socket.socket, pings: list[float]) -> None:
    """Drain the notify socket: the times WATCHDOG=1 arrived."""
    with contextlib.suppress(BlockingIOError):
        while True:
            if b"WATCHDOG=1" in sock.recv(4096):
                pings.append(time.monotonic())


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def healthz_seconds(http: aiohttp.ClientSession, url: str) -> float:
    """How long ``GET /healthz`` takes (10 s if it does not answer, 20 s if it fails)."""
    started = time.monotonic()
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            await response.read()
            return time.monotonic() - started if response.status == 200 else 20.0
    except TimeoutError:
        return 10.0
    except aiohttp.ClientError:
        return 20.0


async def start_kit(tmp_path: Path, space: Namespace, http_extra: str) -> tuple[AgentProcess, int]:
    port = free_port()
    config = write_config(
        tmp_path / "agent.toml",
        tmp_path / "state",
        f"0.0.0.0:{port}",
        addresses=[space.host_address],
        public_url=f"http://{space.host_address}:{port}",
    )
    text = config.read_text().replace('public_url = "', http_extra + '\npublic_url = "', 1)
    config.write_text(text)
    kit = AgentProcess(config, tmp_path / "agent.log", f"http://127.0.0.1:{port}")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "3000000"}
    await kit.start(env=env, nofile=1024)
    return kit, port


async def run_attack(
    tmp_path: Path, http_extra: str, interval: float, seconds: float
) -> dict[str, Any]:
    """The attack on a live class; returns what was measured."""
    with attacker_namespace() as space, notify_socket(tmp_path) as sock:
        kit, port = await start_kit(tmp_path, space, http_extra)
        pupil: WhepReceiver | None = None
        try:
            status = await kit.api("POST", "/api/session/start")
            join_url = status["session"]["join_url"]
            pupil = WhepReceiver(join_url.replace("/join/", "/whep/"))
            await pupil.connect()
            await pupil.wait_frames("camera", 30, timeout=20)
            log_before = kit.log_path.stat().st_size
            assert kit.proc is not None
            fds_before = open_files(kit.proc.pid)
            fds: list[int] = []
            attack = space.slowloris(port, 1100, interval, seconds)
            pings: list[float] = []
            healthz: list[float] = []
            lan_healthz: list[float] = []
            held: list[int] = []
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                while attack.poll() is None and time.monotonic() - started < seconds + 40:
                    watchdog_pings(sock, pings)
                    healthz.append(await healthz_seconds(http, kit.base_url + "/healthz"))
                    lan = f"http://{space.host_address}:{port}/healthz"  # from a LAN address
                    lan_healthz.append(await healthz_seconds(http, lan))
                    held.append(await asyncio.to_thread(space.established, port))
                    fds.append(open_files(kit.proc.pid))
                    await asyncio.sleep(0.5)
            ended = time.monotonic()
            watchdog_pings(sock, pings)
            report = await asyncio.to_thread(finish, attack)
            camera = pupil.tracks["camera"]
            return {
                **report,
                "held_max": max(held),
                "fds_before": fds_before,
                "fds_max": max(fds),
                "healthz_max_s": max(healthz),
                "lan_healthz_max_s": max(lan_healthz),
                "probes": len(healthz),
                "ping_gap_max_s": max(b - a for a, b in itertools.pairwise(pings)),
                "pings": len(pings),
                "fps": camera.fps(started + 1, ended - 1),
                "log_growth_bytes": kit.log_path.stat().st_size - log_before,
                "alive": kit.proc is not None and kit.proc.returncode is None,
                "log_tail": kit.log()[-1500:],
            }
        finally:
            if pupil is not None:
                await pupil.close()
            await kit.close()


def check(measured: dict[str, Any], header_timeout: float) -> None:
    print({k: v for k, v in measured.items() if k != "log_tail"})  # the numbers, with -s
    assert measured["alive"], measured["log_tail"]
    assert measured["healthz_max_s"] < 3.0, measured
    assert measured["lan_healthz_max_s"] < 3.0, measured
    assert measured["pings"] >= measured["probes"] // 2 and measured["ping_gap_max_s"] < 3.0
    assert measured["fps"] >= 20, measured
    assert measured["log_growth_bytes"] < 5_000_000, measured
    # The kit closed the slow connections, each within its header timeout (+ scheduling slack),
    # and refused what was over the per-address cap at once.
    assert measured["closed"] >= 32, measured
    assert measured["closed_after_max_s"] <= header_timeout + 1.5, measured
    # The descriptors the kit holds: 32 for the attacker (the per-address cap), refused ones
    # not yet closed (a refused socket is closed two loop iterations after its accept(), and
    # one iteration accepts at most a backlog, 128: measured up to ~300 with ~1,000 refusals a
    # second), a few for the probes. (held_max, the attacker's view, also counts connections
    # waiting in the kit's listen backlog.)
    assert measured["fds_max"] - measured["fds_before"] <= 32 + 3 * 128 + 32, measured
    assert measured["refused"] > 1000, measured


async def test_slowloris_scaled_down(tmp_path: Path) -> None:
    """1,100 connections, a byte every second against a 3 s header timeout, for 25 s."""
    measured = await run_attack(tmp_path, "header_timeout_s = 3.0", interval=1.0, seconds=25)
    check(measured, header_timeout=3.0)


async def test_slowloris_against_the_defaults(tmp_path: Path) -> None:
    """The attack as reported: a byte every 10 s, against the default 10 s header timeout."""
    measured = await run_attack(tmp_path, "", interval=10.0, seconds=32)
    check(measured, header_timeout=10.0)
