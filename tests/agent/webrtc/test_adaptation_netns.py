"""A pupil's bandwidth estimate on the link they really have (issue 14), end to end.

The kit is the real agent process (``kit-agent run``, synthetic cameras, the room camera at
2 Mbit/s); each pupil is a real aiortc receiver (``shaped_pupil``) in a network namespace of its
own, joined to the kit's by a veth pair. One pupil's link is shaped to 800 kbit/s by ``tc tbf``
on the kit's side of its veth (kit → pupil: pictures and retransmissions), the other's is not.
The test reads both pupils' figures from ``/api/status`` every second: the shaped pupil's
estimate must settle between 300 kbit/s and 1 Mbit/s within ~15 s and stay there, its resent
bytes within the budget (15 % of its estimate), and the unshaped pupil's estimate stay high.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.webrtc import allocate
from agent.webrtc.resend import FRACTION, WINDOW_S
from tests.agentproc import ROOT, AgentProcess, lan_kit_config
from tests.netns import PupilLink, pupil_link

PUPIL_SECONDS = 24.0
SETTLE_S = 15.0


async def start_pupil(
    link: PupilLink, whep_url: str, seconds: float = PUPIL_SECONDS
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", link.namespace,
        sys.executable, "-P", "-m", "tests.agent.webrtc.shaped_pupil",
        "--whep", whep_url, "--address", link.pupil_address, "--seconds", str(seconds),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def new_viewer(kit: AgentProcess, known: set[str], timeout: float = 20.0) -> str:
    """The id of the pupil that joined after ``known`` (once connected)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for viewer in (await kit.api("GET", "/api/status"))["viewers"]:
            if viewer["id"] not in known and viewer["connected_s"] is not None:
                return str(viewer["id"])
        await asyncio.sleep(0.2)
    raise AssertionError(f"no pupil connected:\n{kit.log()[-3000:]}")


@pytest.mark.slow
async def test_a_shaped_pupils_estimate_converges_and_an_unshaped_one_stays_high(
    tmp_path: Path,
) -> None:
    with pupil_link("800kbit") as shaped, pupil_link(None) as open_link:
        config, port = lan_kit_config(tmp_path, shaped.kit_address, open_link.kit_address)
        config.write_text(config.read_text().replace("bitrate_kbps = 800", "bitrate_kbps = 2000"))
        kit = AgentProcess(config, tmp_path / "agent.log", f"http://127.0.0.1:{port}")
        await kit.start()
        pupils: list[asyncio.subprocess.Process] = []
        try:
            status = await kit.api("POST", "/api/session/start")
            path = "/whep/" + status["session"]["whep_url"].rsplit("/", 1)[1]
            pupils.append(await start_pupil(shaped, f"http://{shaped.kit_address}:{port}{path}"))
            shaped_id = await new_viewer(kit, set())
            began = time.monotonic()
            url = f"http://{open_link.kit_address}:{port}{path}"
            pupils.append(await start_pupil(open_link, url))
            open_id = await new_viewer(kit, {shaped_id})
            samples: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
            while time.monotonic() - began < PUPIL_SECONDS - 3:
                await asyncio.sleep(1.0)
                viewers = {v["id"]: v for v in (await kit.api("GET", "/api/status"))["viewers"]}
                if shaped_id in viewers and open_id in viewers:
                    at = time.monotonic() - began
                    samples.append((at, viewers[shaped_id], viewers[open_id]))
            outputs = [await p.communicate() for p in pupils]
        finally:
            for pupil in pupils:
                if pupil.returncode is None:
                    pupil.kill()
                    await pupil.wait()
            await kit.close()

    for (_, err), pupil in zip(outputs, pupils, strict=True):
        assert pupil.returncode == 0, err.decode()[-2000:]
    print()
    for at, one, other in samples:
        a, b = one["link"], other["link"]
        print(
            f"{at:5.1f} s  shaped: {a['estimate_kbps']:5} kbit/s (REMB {a['remb_kbps']}, "
            f"loss {a['loss_percent']} %, RTT {a['rtt_ms']} ms, resent {a['resent_bytes']} B, "
            f"{a['nacks_ignored']} NACKs ignored)  unshaped: {b['estimate_kbps']} kbit/s "
            f"(REMB {b['remb_kbps']}, loss {b['loss_percent']} %)"
        )
    print("pupils got:", [out.decode() for out, _ in outputs])
    assert samples and samples[-1][0] >= SETTLE_S + 3
    settled = [one["link"]["estimate_kbps"] for at, one, _ in samples if at >= SETTLE_S]
    # near the link: a probe's padding that its router's buffer (16 kB, 50 ms) let through
    # can lift it a little above 800 for a while (measured up to 1,009; the layers it allows
    # stay below it: a level is left at 90 % of the estimate and entered at 75 %)
    assert all(300 <= kbps <= 1100 for kbps in settled), settled
    last = samples[-1][1]["link"]
    assert last["loss_percent"] is not None and last["rtt_ms"] is not None
    assert last["nacks_ignored"] > 0  # the link lost enough for the budget to bite
    # resent bytes between two samples: ≤ 15 % of the estimate over that time (+ the window)
    for (t0, a, _), (t1, b, _) in itertools.pairwise(samples):
        resent = b["link"]["resent_bytes"] - a["link"]["resent_bytes"]
        estimate = max(a["link"]["estimate_kbps"], b["link"]["estimate_kbps"]) * 1000
        assert resent <= FRACTION * estimate / 8 * (t1 - t0 + WINDOW_S), (t0, t1, resent)
    unshaped = [other["link"]["estimate_kbps"] for at, _, other in samples if at >= SETTLE_S]
    assert min(unshaped) >= 1500, unshaped


TOP = {"camera": "high", "document": "high"}
RECOVERED_S = allocate.FAILED_PROBE_WAIT_S - 6
"""Back on the top level within this long after the link opened (measured 7–15 s: the
recovery probes start RECOVERY_WAIT_S after the last step down, then climb as they carry).
Without them the first probe comes FAILED_PROBE_WAIT_S after that step down, ≥ 27 s after
the link opened."""


async def layers_when(
    kit: AgentProcess, pupil_id: str, wanted: Callable[[dict[str, str]], bool], timeout: float
) -> float:
    """When the pupil's layers (``/api/status``, every 0.25 s) first satisfy ``wanted``."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        viewers = {v["id"]: v for v in (await kit.api("GET", "/api/status"))["viewers"]}
        link = viewers[pupil_id]["link"] if pupil_id in viewers else None
        if link is not None and wanted(link["layers"]):
            return time.monotonic()
        if link is not None:
            seen.append(f"{link['layers']} {link['estimate_kbps']} kbit/s {link['probing']}")
        await asyncio.sleep(0.25)
    raise AssertionError(f"the pupil's layers never got there: {seen[-12:]}\n{kit.log()[-2000:]}")


@pytest.mark.slow
async def test_a_pupil_knocked_down_by_a_moment_of_trouble_is_back_on_top_soon(
    tmp_path: Path,
) -> None:
    """A pupil holds the top level on an open link; for 3 s the link carries only 300 kbit/s
    (a moment's trouble) and the kit steps them down; once it is open again, the recovery
    probes take them back to the top level within ``RECOVERED_S``, where before the first
    probe came ``FAILED_PROBE_WAIT_S`` after the last step down."""
    with pupil_link(None) as link:
        config, port = lan_kit_config(tmp_path, link.kit_address)
        kit = AgentProcess(config, tmp_path / "agent.log", f"http://127.0.0.1:{port}")
        await kit.start()
        pupil = None
        try:
            status = await kit.api("POST", "/api/session/start")
            path = "/whep/" + status["session"]["whep_url"].rsplit("/", 1)[1]
            url = f"http://{link.kit_address}:{port}{path}"
            pupil = await start_pupil(link, url, seconds=60.0)
            pupil_id = await new_viewer(kit, set())
            on_top = await layers_when(kit, pupil_id, lambda layers: layers == TOP, 20.0)
            await asyncio.sleep(allocate.RECOVERY_HELD_S + 1.0 - (time.monotonic() - on_top))
            link.shape("300kbit")
            try:
                await layers_when(kit, pupil_id, lambda layers: layers != TOP, 10.0)
                await asyncio.sleep(3.0)
            finally:
                link.shape(None)
            opened = time.monotonic()
            back = await layers_when(kit, pupil_id, lambda layers: layers == TOP, RECOVERED_S)
        finally:
            if pupil is not None and pupil.returncode is None:
                pupil.kill()
                await pupil.wait()
            await kit.close()
    print(f"back on the top level {back - opened:.1f} s after the link opened")
