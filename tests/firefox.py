"""A real Firefox pupil for the tests: Debian's ``firefox-esr``, headless, on the pupil page.

Firefox is driven over WebDriver BiDi by puppeteer-core (``tests/firefox/pupil.mjs``, installed
by ``make setup`` with ``npm ci`` into ``tests/firefox/node_modules``; no browser download). The
node script opens the page and prints the page's figures every ``interval`` seconds as JSON
lines (``RTCPeerConnection.getStats()``: per received track ``framesDecoded``,
``framesPerSecond``, ``frameWidth``/``frameHeight``, ``packetsLost``, the codec's ``mimeType``;
and the page's status text); :class:`FirefoxPupil` reads them.

Kept on one address like Chromium (tests/chromium.py): Firefox gathers candidates on every
interface (``media.peerconnection.ice.force_interface`` is not honoured: the socket process that
gathers never reads it), so the WHEP offer is filtered on its way out of the page to the
candidates on ``address`` (127.0.0.1 by default), and in-process agents leave checks from other
addresses unanswered (``loopback_checks_only``). Without a camera or microphone permission
Firefox gathers only its default route's address (never 127.0.0.1, whatever
``media.peerconnection.ice.loopback`` says): ``permissions.default.camera`` /
``.microphone`` = allow grant it to every page, as Chromium's tests grant theirs. No permission
prompt, and media plays without a user gesture (the pupil page starts the sound itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

FIREFOX = "/usr/bin/firefox-esr"
DRIVER_DIR = Path(__file__).parent / "firefox"
DRIVER = DRIVER_DIR / "pupil.mjs"
PUPPETEER = DRIVER_DIR / "node_modules" / "puppeteer-core"

FIREFOX_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.access(FIREFOX, os.X_OK), reason=f"{FIREFOX} is not installed"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(not PUPPETEER.is_dir(), reason="puppeteer-core: run make setup (npm ci)"),
]


def firefox_prefs(loopback: bool = True) -> dict[str, Any]:
    """Firefox's preferences for a test pupil (``loopback``: may gather 127.0.0.1)."""
    return {
        "media.peerconnection.ice.loopback": loopback,
        "media.peerconnection.ice.obfuscate_host_addresses": False,  # no mDNS names
        "permissions.default.camera": 1,  # allowed: every interface, not the default route only
        "permissions.default.microphone": 1,
        "media.navigator.permission.disabled": True,
        "media.autoplay.default": 0,  # allowed, sound too
        "media.autoplay.blocking_policy": 0,
        "intl.accept_languages": "fr-FR, fr",
        "app.update.enabled": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "toolkit.telemetry.enabled": False,
    }


class FirefoxPupil:
    """One Firefox on one pupil page; ``latest`` is the page's newest figures."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.latest: dict[str, Any] | None = None
        self.user_agent = ""
        self.errors: list[str] = []
        self.left = asyncio.Event()
        self._ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self._stderr = bytearray()
        self._stderr_reader = asyncio.create_task(self._drain())
        self._results: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._requests = 0

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue  # not ours (a library's chatter)
            event = message.get("event")
            if event == "stats":
                self.latest = message["stats"]
            elif event == "ready":
                self.user_agent = str(message.get("userAgent", ""))
                self._ready.set()
            elif event == "left":
                self.left.set()
            elif event == "error":
                self.errors.append(str(message.get("error")))
            elif event == "result":
                future = self._results.pop(message.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(message)
        self._ready.set()  # the driver ended: whoever waits finds out

    async def _drain(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self._stderr += raw
            del self._stderr[:-20_000]

    def log(self) -> str:
        return f"errors: {self.errors}\nstderr: {self._stderr.decode(errors='replace')[-3000:]}"

    async def ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            await self._ready.wait()
        if not self.user_agent:
            raise AssertionError(f"Firefox did not open the page:\n{self.log()}")

    async def stats_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The page's first figures (from now on) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.latest
            if last and last.get("session") and predicate(last):
                return dict(last)
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"Firefox never got there: {self.latest}\n{self.log()}")

    async def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()

    async def evaluate(self, script: str, timeout: float = 10.0) -> Any:
        """The value of ``script`` (a JavaScript expression, awaited) in the page."""
        self._requests += 1
        request = self._requests
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[request] = future
        await self.send("eval " + json.dumps({"id": request, "script": script}))
        async with asyncio.timeout(timeout):
            answer = await future
        if "error" in answer:
            raise AssertionError(f"Firefox could not evaluate {script!r}: {answer['error']}")
        return answer.get("value")

    async def leave(self, timeout: float = 10.0) -> None:
        """Leave the page (about:blank): it ends its WHEP session itself."""
        await self.send("leave")
        async with asyncio.timeout(timeout):
            await self.left.wait()

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self.send("quit")
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        for task in (self._reader, self._stderr_reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def firefox_pupil(
    url: str,
    address: str = "127.0.0.1",
    prefix: Sequence[str] = (),
    interval: float = 0.25,
    home: Path | None = None,
    prefs: dict[str, Any] | None = None,
) -> AsyncIterator[FirefoxPupil]:
    """Firefox on ``url`` (a pupil's join page) until the block ends, its offer's candidates
    on ``address`` only. ``prefix`` runs the driver under another command (``ip netns exec
    NS``); ``home``: a writable HOME; ``prefs``: more preferences (a fake microphone, say)."""
    options = {
        "url": url,
        "interval": interval,
        "prefs": {**firefox_prefs(loopback=address == "127.0.0.1"), **(prefs or {})},
        "address": address,
    }
    env = {**os.environ, "MOZ_HEADLESS": "1"}
    if home is not None:
        env["HOME"] = str(home)
    process = await asyncio.create_subprocess_exec(
        *prefix,
        "node",
        str(DRIVER),
        json.dumps(options),
        cwd=DRIVER_DIR,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    pupil = FirefoxPupil(process)
    try:
        await pupil.ready()
        yield pupil
    finally:
        await pupil.close()
