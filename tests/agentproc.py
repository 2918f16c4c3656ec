"""The agent as a real process (``python -m agent run``), as systemd runs it: for the tests that
kill it, restart it or put it on another network namespace's path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]

SMALL_CONFIG = """
state_dir = "{state_dir}"

[http]
listen = "{listen}"
public_url = "{public_url}"

[webrtc]
host_addresses = [{addresses}]

[camera]
device = "{camera}"
width = 800
height = 450
fps = 30
bitrate_kbps = 800

[document]
device = "{document}"
width = 800
height = 600
fps = 15
bitrate_kbps = 500

[server]
reconnect_min_s = 0.2
reconnect_max_s = 1.0
"""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def write_config(
    path: Path,
    state_dir: Path,
    listen: str,
    addresses: list[str] | None = None,
    camera: str = "synthetic",
    public_url: str = "",
    document: str = "synthetic",
) -> Path:
    """A small config (sources as in tests.conftest); ``document=""`` disables that camera."""
    quoted = ", ".join(f'"{a}"' for a in (addresses or ["127.0.0.1"]))
    text = SMALL_CONFIG.format(
        state_dir=state_dir,
        listen=listen,
        public_url=public_url,
        addresses=quoted,
        camera=camera,
        document=document,
    )
    path.write_text(text)
    return path


def lan_kit_config(tmp_path: Path, *addresses: str) -> tuple[Path, int]:
    """A config for a kit listening on all interfaces (a free port) and gathering on
    ``addresses`` (its side of pupils' links, tests/netns.py), its join link on the first:
    (the config file, the port). Changes to the text go in before the process starts."""
    port = free_port()
    config = write_config(
        tmp_path / "agent.toml",
        tmp_path / "state",
        f"0.0.0.0:{port}",
        addresses=list(addresses),
        public_url=f"http://{addresses[0]}:{port}",
    )
    return config, port


class AgentProcess:
    """``kit-agent run --config FILE`` in a child process; stderr goes to ``log_path``."""

    def __init__(self, config: Path, log_path: Path, base_url: str) -> None:
        self.config = config
        self.log_path = log_path
        self.base_url = base_url
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def on_loopback(cls, directory: Path) -> AgentProcess:
        """The small config on 127.0.0.1 (a free port), state in ``directory/state``."""
        port = free_port()
        config = write_config(directory / "agent.toml", directory / "state", f"127.0.0.1:{port}")
        return cls(config, directory / "agent.log", f"http://127.0.0.1:{port}")

    async def start(
        self, timeout: float = 20.0, env: dict[str, str] | None = None, nofile: int | None = None
    ) -> float:
        """Launch it and wait for its kiosk line; returns the monotonic launch time.

        ``env``: more environment (a notify socket); ``nofile``: the soft open-files limit it
        starts with (systemd's default is 1,024)."""
        launched = time.monotonic()

        def limit_files() -> None:
            if nofile is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agent",
                "run",
                "--config",
                str(self.config),
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                preexec_fn=limit_files if nofile is not None else None,
            )
        self.lines = []
        self._reader = asyncio.create_task(self._read())
        deadline = time.monotonic() + timeout
        while not any(line.startswith("kiosk:") for line in self.lines):
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"the agent did not start:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.02)
        return launched

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").strip())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 20)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        return code

    async def api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base_url + path, **kwargs) as response,
        ):
            assert response.status == 200, await response.text()
            return dict(await response.json())

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.kill(signal.SIGTERM)
