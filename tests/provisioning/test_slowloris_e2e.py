"""Slowloris from one host against a real ``kit-provisioning serve`` process (issue 13, High 2):
``/healthz`` keeps answering, the slow connections are closed, and two kits linked from another
address stay linked (no reconnection) throughout."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.agentproc import free_port
from tests.provisioning.conftest import run_linked_agent
from tests.slowloris import attacker_namespace, finish

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def cli(data: Path, *argv: str) -> str:
    command = [sys.executable, "-m", "provisioning.cli", *argv, "--data-dir", str(data)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_server(data: Path, port: int, log: Path) -> subprocess.Popen[str]:
    argv = ["serve", "--http", f"0.0.0.0:{port}", "--header-timeout", "3"]
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "provisioning.cli", *argv, "--data-dir", str(data)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(base + "/metrics") as response:
        text = await response.text()
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name)))


async def test_slowloris_against_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "school", "add", "0751234A", "--name", "École", "--departement", "75")
    codes = [cli(data, "enrollment-code", "create", "--school", "0751234A") for _ in range(2)]
    port = free_port()
    server = start_server(data, port, tmp_path / "server.log")
    local = f"http://127.0.0.1:{port}"
    try:
        assert server.stdout is not None
        assert "provisioning:" in await asyncio.to_thread(server.stdout.readline)
        with attacker_namespace() as space, contextlib.ExitStack():
            lan = f"http://{space.host_address}:{port}"  # the kits come from a LAN address
            async with contextlib.AsyncExitStack() as stack:
                kits = []
                for number, code in enumerate(codes):
                    generator = run_linked_agent(lan, code, tmp_path / f"kit{number}")
                    kits.append(await generator.__anext__())
                    stack.push_async_callback(_finish, generator)
                for kit in kits:
                    async with asyncio.timeout(10):
                        await kit.link.wait_connected()
                async with aiohttp.ClientSession() as http:
                    opened = await metric(http, local, "provisioning_links_opened_total")
                    log_before = (tmp_path / "server.log").stat().st_size
                    attack = space.slowloris(port, 1100, interval=1.0, seconds=20)
                    healthz = []
                    started = time.monotonic()
                    while attack.poll() is None and time.monotonic() - started < 60:
                        begun = time.monotonic()
                        async with http.get(lan + "/healthz", timeout=aiohttp.ClientTimeout(10)):
                            healthz.append(time.monotonic() - begun)
                        await asyncio.sleep(0.5)
                    report = await asyncio.to_thread(finish, attack)
                    online = await metric(http, local, "provisioning_kits_online")
                    reopened = await metric(http, local, "provisioning_links_opened_total")
                growth = (tmp_path / "server.log").stat().st_size - log_before
                print({**report, "healthz_max_s": max(healthz), "log_growth": growth})
                assert max(healthz) < 3.0
                assert report["closed"] and report["closed_after_max_s"] <= 3.0 + 1.5  # type: ignore[operator]
                assert report["refused"], report  # over 1,000 from one address
                assert online == 2 and reopened == opened  # no kit lost its link
                assert all(kit.link.connects == 1 for kit in kits)
                assert growth < 5_000_000
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


async def _finish(generator: object) -> None:
    with contextlib.suppress(StopAsyncIteration):
        await generator.__anext__()  # type: ignore[attr-defined]
