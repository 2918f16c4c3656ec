"""Processes the benchmark measures: the agent, the stock-aiortc server and receiver groups."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class CpuSample:
    cpu_percent: float
    rss_mb: float


def sample_cpu(pid: int, seconds: float) -> CpuSample:
    """CPU of ``pid`` (all threads, user + system) in % of one core over ``seconds``."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    start = time.monotonic()
    time.sleep(seconds)
    after = proc.cpu_times()
    elapsed = time.monotonic() - start
    used = (after.user - before.user) + (after.system - before.system)
    return CpuSample(round(used / elapsed * 100, 1), round(proc.memory_info().rss / 2**20, 1))


class ServerProcess:
    """A child HTTP server that prints ``kiosk: URL`` (the agent) or ``ready: URL`` (stock)."""

    def __init__(self, args: list[str], ready_prefix: str) -> None:
        self.args = args
        self.ready_prefix = ready_prefix
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, *self.args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.args} exited before it was ready")
            if line.startswith(self.ready_prefix):
                self.base_url = line.split(" ", 1)[1].strip().rstrip("/")
                return self
        raise RuntimeError(f"{self.args} not ready after 30 s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class AgentProcess(ServerProcess):
    """``kit-agent run`` on the synthetic sources, with its ICE kept on loopback."""

    def __init__(self, extra_toml: str = "") -> None:
        port = free_port()
        fd, self._config_path = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w") as config:
            config.write(
                f'[http]\nlisten = "127.0.0.1:{port}"\n'
                f'[webrtc]\nhost_addresses = ["127.0.0.1"]\n{extra_toml}'
            )
        super().__init__(["-m", "agent", "run", "--config", self._config_path], "kiosk:")

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        os.unlink(self._config_path)

    async def start_class(self) -> str:
        """Start the class; returns the WHEP URL."""
        async with aiohttp.ClientSession() as http:
            async with http.post(self.base_url + "/api/session/start") as response:
                response.raise_for_status()
            status = await self.status()
        return str(status["session"]["whep_url"])

    async def status(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base_url + "/api/status") as response,
        ):
            return dict(await response.json())


def start_receivers(
    whep_url: str,
    count: int,
    warmup: float,
    duration: float,
    per_process: int = 15,
    windows: int = 1,
) -> list[subprocess.Popen[str]]:
    """Receiver groups of at most ``per_process`` pupils each (see bench.receivers)."""
    procs = []
    remaining = count
    while remaining > 0:
        n = min(per_process, remaining)
        remaining -= n
        procs.append(
            start_receiver_group(["bench.receivers"], whep_url, n, warmup, duration, windows)
        )
    return procs


def start_receiver_group(
    module: list[str], whep_url: str, count: int, warmup: float, duration: float, windows: int = 1
) -> subprocess.Popen[str]:
    """``python -m <module…> --whep … --count … --warmup … --duration … --windows …``: one
    process of ``count`` receivers, its JSON on stdout (bench.receivers, bench.mixed_class's
    VP8 ones)."""
    argv = [sys.executable, "-m", *module, "--whep", whep_url, "--count", str(count)]
    argv += ["--warmup", str(warmup), "--duration", str(duration), "--windows", str(windows)]
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def collect_receivers(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Every receiver's counts in the (first) window, across the groups."""
    return (await collect_receiver_windows(procs))[0]


async def collect_receiver_windows(
    procs: list[subprocess.Popen[str]],
) -> list[list[dict[str, Any]]]:
    """Per window, every receiver's counts across the groups."""
    windows: list[list[dict[str, Any]]] = []
    for proc in procs:
        out, err = await asyncio.to_thread(proc.communicate)
        if proc.returncode != 0:
            raise RuntimeError(f"receiver group failed: {err.strip()[-500:]}")
        for index, viewers in enumerate(json.loads(out)["windows"]):
            if index == len(windows):
                windows.append([])
            windows[index].extend(viewers)
    return windows
