"""``python -m bench`` (``make bench``): the media core's figures, checked against issue 2.

One run measures, on the synthetic sources (720p30 room camera, 1080p15 document camera, tone):
the agent with N = 1, 10, 30 WHEP viewers (aiortc receivers in other processes, not decoding),
stock aiortc (one encoder per peer behind MediaRelay) with N = 1 and 4, glass-to-glass delay
from the clock code with one decoding receiver, time from WHEP POST to first decoded frame, the
idle agent, and the browser's view (bench/browser.py: headless Chromium on the pupil page,
glass-to-glass and join link → first frame). It prints a table and writes docs/PERFORMANCE.md;
``--only browser`` runs just the browser's view and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.webrtc.ice import restrict_host_addresses

from . import browser, burst, mixed_class, mjpeg, talkback
from .network_report import section_of
from .processes import (
    ROOT,
    AgentProcess,
    CpuSample,
    ServerProcess,
    collect_receivers,
    sample_cpu,
    start_receivers,
)
from .whep_receiver import WhepReceiver

WARMUP_S = 5.0
RAMP_S = 8.0
"""A pupil's way from the middle level to the top layers, with margin (measure_delay)."""
MEASURE_S = 10.0
BROWSER_WARMUP_S = 20.0
"""Chromium's lip sync takes ~15 s to settle the room camera's delay (docs/benchmark.md)."""
BROWSER_MEASURE_S = 30.0
BROWSER_JOINS = 20


@dataclass
class LoadResult:
    label: str
    viewers: int
    cpu: CpuSample
    fps: dict[str, tuple[float, float]] = field(default_factory=dict)  # track: (min, median)
    kbps: dict[str, float] = field(default_factory=dict)


async def measure_load(label: str, pid: int, whep_url: str, count: int) -> LoadResult:
    procs = start_receivers(whep_url, count, WARMUP_S, MEASURE_S)
    await asyncio.sleep(WARMUP_S + 1.5)  # connect + warm-up, as the receivers do
    cpu = await asyncio.to_thread(sample_cpu, pid, MEASURE_S - 2.0)
    viewers = await collect_receivers(procs)
    result = LoadResult(label, count, cpu)
    for track in ("camera", "document", "microphone"):
        fps = [v[track]["fps"] if track in v else 0.0 for v in viewers]
        kbps = [v[track]["kbps"] if track in v else 0.0 for v in viewers]
        result.fps[track] = (min(fps), statistics.median(fps))
        result.kbps[track] = statistics.median(kbps)
    await asyncio.sleep(2.0)  # let the viewers leave before the next step
    return result


async def measure_delay(whep_url: str, seconds: float) -> dict[str, list[int]]:
    """Glass-to-glass of one decoding pupil on the top layers: it joins on the middle level
    and probes its way up first (~4.5 s on loopback, docs/adaptation.md)."""
    receiver = WhepReceiver(whep_url, read_clock=True)
    await receiver.connect()
    await asyncio.sleep(RAMP_S)
    for stats in receiver.tracks.values():
        stats.delays_ms.clear()
    await asyncio.sleep(seconds)
    delays = {k: list(s.delays_ms) for k, s in receiver.tracks.items() if s.kind == "video"}
    await receiver.close()
    return delays


async def measure_first_frame(whep_url: str, trials: int) -> list[float]:
    times = []
    for _ in range(trials):
        receiver = WhepReceiver(whep_url)
        await receiver.connect()
        await receiver.wait_frames("camera", 1, timeout=10)
        first = receiver.tracks["camera"].first_at
        assert first is not None and receiver.posted_at is not None
        times.append((first - receiver.posted_at) * 1000)
        await receiver.close()
        await asyncio.sleep(0.6)  # past the keyframe rate limit: each join gets its own
    return times


def pct(values: list[float] | list[int], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


async def measure_browser(agent: AgentProcess, quick: bool) -> browser.BrowserResult:
    status = await agent.status()
    join_url = str(status["session"]["join_url"])
    if quick:
        return await browser.measure_browser(join_url, 5.0, 8.0, 5)
    return await browser.measure_browser(
        join_url, BROWSER_WARMUP_S, BROWSER_MEASURE_S, BROWSER_JOINS
    )


async def run_browser_only(quick: bool) -> browser.BrowserResult:
    with AgentProcess() as agent:
        await agent.start_class()
        await asyncio.sleep(3)
        return await measure_browser(agent, quick)


async def run(quick: bool) -> dict[str, Any]:
    restrict_host_addresses(["127.0.0.1"])
    counts = (1, 4) if quick else (1, 10, 30)
    out: dict[str, Any] = {"loads": [], "stock": [], "stock_all": []}
    with AgentProcess() as agent:
        await asyncio.sleep(3)
        out["idle"] = await asyncio.to_thread(sample_cpu, agent.pid, 10.0)
        whep = await agent.start_class()
        await asyncio.sleep(3)
        out["no_viewer"] = await asyncio.to_thread(sample_cpu, agent.pid, 6.0)
        for n in counts:
            out["loads"].append(await measure_load("agent", agent.pid, whep, n))
        out["delays"] = await measure_delay(whep, 6.0 if quick else 12.0)
        out["first_frame"] = await measure_first_frame(whep, 5 if quick else 20)
        out["browser"] = await measure_browser(agent, quick)
    out["lower"] = [await measure_lower_layers(kbps) for kbps in LOWER_LAYER_UPLINKS]
    out["burst"] = await burst.measure_burst(10 if quick else burst.PUPILS)  # issue 18
    if not quick:
        out["talkback"] = await talkback.run()  # 30 pupils + one speaking (issue 17)
    for camera_only in (True, False):
        args = ["-m", "bench.stock_server"] + (["--camera-only"] if camera_only else [])
        label = "stock aiortc, room camera only" if camera_only else "stock aiortc, all sources"
        with ServerProcess(args, "ready:") as stock:
            await asyncio.sleep(2)
            for n in (1, 4):
                result = await measure_load(label, stock.pid, stock.base_url, n)
                out["stock" if camera_only else "stock_all"].append(result)
    if not quick:
        out["mixed"] = await mixed_class.measure()  # 25 H.264 + 5 VP8 pupils (issue 18)
    if not quick:
        out["mjpeg"] = await mjpeg.run()  # MJPEG cameras, 30 pupils (issue 18)
    return out


LOWER_LAYER_UPLINKS = (1000, 600)
"""``[network] uplink_kbps`` that holds one pupil on the room camera's middle layer and the
document's low one (1,000), then on both low layers (600): every lower layer, encoded."""


@dataclass
class LowerLayers:
    """One pupil held below the top layers: the agent's CPU, and the CPU of the encoder
    threads of the layers below the top (their own thread time: scaling and encoding)."""

    load: LoadResult
    encoders: list[str]
    lower_cpu_percent: float


async def measure_lower_layers(uplink_kbps: int) -> LowerLayers:
    """One pupil held below the top layers by the uplink budget (``uplink_kbps``)."""
    with AgentProcess(extra_toml=f"[network]\nuplink_kbps = {uplink_kbps}\n") as agent:
        whep = await agent.start_class()
        await asyncio.sleep(3)
        label = f"agent, 1 viewer on the lower layers (uplink {uplink_kbps} kbit/s)"
        procs = start_receivers(whep, 1, WARMUP_S, MEASURE_S)
        await asyncio.sleep(WARMUP_S + 1.5)
        before, started = (await agent.status())["encoders"], time.monotonic()
        cpu = await asyncio.to_thread(sample_cpu, agent.pid, MEASURE_S - 2.0)
        after, ended = (await agent.status())["encoders"], time.monotonic()
        viewers = await collect_receivers(procs)
    result = LoadResult(label, 1, cpu)
    for track in ("camera", "document", "microphone"):
        fps = viewers[0][track]["fps"] if track in viewers[0] else 0.0
        result.fps[track] = (fps, fps)
        result.kbps[track] = viewers[0][track]["kbps"] if track in viewers[0] else 0.0
    lower = {e["name"]: e["cpu_s"] for e in before if e.get("layer") not in (None, "high")}
    spent = sum(e["cpu_s"] - lower[e["name"]] for e in after if e.get("name") in lower)
    names = [str(e.get("name", "")) for e in after]
    return LowerLayers(result, names, round(spent / (ended - started) * 100, 1))


def lower_layer_lines(out: dict[str, Any]) -> list[str]:
    """The extra cost of the lower layers over one pupil on the top ones, against capture and
    encode (issue 14: ≤ 30 %)."""
    top = {r.viewers: r for r in out["loads"]}.get(1)
    nov: CpuSample = out["no_viewer"]
    lines = []
    for lower in out.get("lower", []):
        result = lower.load
        extra = result.cpu.cpu_percent - (top.cpu.cpu_percent if top else 0.0)
        share = lower.lower_cpu_percent / nov.cpu_percent * 100 if nov.cpu_percent else 0.0
        layers = ", ".join(e.removeprefix("encode-") for e in lower.encoders)
        lines.append(
            f"- {result.label}: the lower layers' encoder threads {lower.lower_cpu_percent} % "
            f"of a core ({share:.0f} % of capture + encode); the agent {result.cpu.cpu_percent} "
            f"% ({extra:+.1f} % over another process with one viewer on the top layers: "
            f"noisier); encoders: {layers}"
        )
    return lines


def lower_layer_check(out: dict[str, Any]) -> tuple[str, str, bool] | None:
    top = {r.viewers: r for r in out["loads"]}.get(1)
    nov: CpuSample = out["no_viewer"]
    if top is None or not out.get("lower") or not nov.cpu_percent:
        return None
    extra = max(lower.lower_cpu_percent for lower in out["lower"])
    share = extra / nov.cpu_percent
    return (
        "extra cost of the lower layers ≤ 30 % of capture + encode (issue 14)",
        f"{extra} % of a core (their encoder threads), {share * 100:.0f} % of {nov.cpu_percent} %",
        share <= 0.3,
    )


def report(out: dict[str, Any]) -> str:
    loads: list[LoadResult] = out["loads"]
    stock: list[LoadResult] = out["stock"] + out["stock_all"]
    lines = [
        "| setup | viewers | CPU (% of one core) | RSS (MB) | camera fps min / median "
        "| document fps min / median | camera kbit/s | document kbit/s | audio kbit/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in loads + stock:
        cam, doc = r.fps["camera"], r.fps["document"]
        lines.append(
            f"| {r.label} | {r.viewers} | {r.cpu.cpu_percent} | {r.cpu.rss_mb} "
            f"| {cam[0]:.1f} / {cam[1]:.1f} | {doc[0]:.1f} / {doc[1]:.1f} "
            f"| {r.kbps['camera']:.0f} | {r.kbps['document']:.0f} | {r.kbps['microphone']:.0f} |"
        )
    idle: CpuSample = out["idle"]
    nov: CpuSample = out["no_viewer"]
    cam_d, doc_d = out["delays"].get("camera", []), out["delays"].get("document", [])
    ff = out["first_frame"]
    lines += [
        "",
        f"- idle agent (no class): CPU {idle.cpu_percent} %, RSS {idle.rss_mb} MB",
        f"- live, no viewer (capture + encode only): CPU {nov.cpu_percent} %, RSS {nov.rss_mb} MB",
        f"- glass-to-glass (clock code, one decoding aiortc receiver): room camera p50 "
        f"{pct(cam_d, 50)} ms, p95 {pct(cam_d, 95)} ms ({len(cam_d)} frames); document camera "
        f"p50 {pct(doc_d, 50)} ms, p95 {pct(doc_d, 95)} ms",
        f"- WHEP POST → first decoded room-camera frame: p50 {pct(ff, 50)} ms, p95 "
        f"{pct(ff, 95)} ms ({len(ff)} joins)",
        *lower_layer_lines(out),
        *(burst.lines(out["burst"]) if "burst" in out else []),
        *(talkback.lines(out["talkback"]) if "talkback" in out else []),
        *browser.report_lines(out["browser"]),
    ]
    lines += ["", *checks(out), "", *browser_checks(out["browser"])]
    if "mjpeg" in out:
        lines += ["", *mjpeg.report_lines(out["mjpeg"]), "", *mjpeg.checks(out["mjpeg"])]
    if "mixed" in out:
        lines += ["", mixed_class.report(out["mixed"])]
    return "\n".join(lines)


def browser_checks(result: browser.BrowserResult) -> list[str]:
    rows = ["| Done when (issue 3) | measured | |", "|---|---|---|"]
    for name, value, ok in browser.check_rows(result):
        rows.append(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")
    return rows


def checks(out: dict[str, Any]) -> list[str]:
    loads = {r.viewers: r for r in out["loads"]}
    stock = {r.viewers: r for r in out["stock"]}
    rows = ["| Done when (issue 2) | measured | |", "|---|---|---|"]

    def row(name: str, value: str, ok: bool) -> None:
        rows.append(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")

    if 30 in loads:
        r30 = loads[30]
        cam, doc = r30.fps["camera"][0], r30.fps["document"][0]
        row(
            "30 viewers: every viewer ≥ 29 fps room, ≥ 14.5 fps document",
            f"min {cam:.1f} / {doc:.1f} fps",
            cam >= 29 and doc >= 14.5,
        )
        row(
            "agent CPU at 30 viewers ≤ 100 % of one core",
            f"{r30.cpu.cpu_percent} %",
            r30.cpu.cpu_percent <= 100,
        )
        ours = (r30.cpu.cpu_percent - loads[1].cpu.cpu_percent) / 29
        theirs = (stock[4].cpu.cpu_percent - stock[1].cpu.cpu_percent) / 3
        ratio = ours / theirs if theirs > 0 else float("inf")
        row(
            "cost of one more viewer ≤ 1/10 of stock aiortc's (ours: 3 tracks; stock: room "
            "camera only)",
            f"{ours:.2f} % vs {theirs:.1f} % per viewer (ratio {ratio:.3f})",
            ratio <= 0.1,
        )
    cam_d = out["delays"].get("camera", [])
    row("glass-to-glass p95 ≤ 60 ms", f"{pct(cam_d, 95)} ms", bool(cam_d) and pct(cam_d, 95) <= 60)
    ff = out["first_frame"]
    row("first frame after WHEP POST p95 ≤ 500 ms", f"{pct(ff, 95)} ms", pct(ff, 95) <= 500)
    lower = lower_layer_check(out)
    if lower is not None:
        row(*lower)
    for check in burst.check_rows(out["burst"]) if "burst" in out else []:
        row(*check)  # a class starting (issue 18)
    for check in talkback.check_rows(out["talkback"]) if "talkback" in out else []:
        row(*check)  # one pupil speaking (issue 17)
    idle: CpuSample = out["idle"]
    row(
        "idle CPU ≤ 2 %, RSS ≤ 250 MB",
        f"{idle.cpu_percent} %, {idle.rss_mb} MB",
        idle.cpu_percent <= 2 and idle.rss_mb <= 250,
    )
    return rows


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{os.cpu_count()} × {model or platform.processor()}, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small N, no PERFORMANCE.md")
    parser.add_argument(
        "--only",
        choices=["browser"],
        help="run one step and print it (no PERFORMANCE.md): browser = Chromium on the pupil page",
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    if args.only == "browser":
        result = asyncio.run(run_browser_only(args.quick))
        print("\n".join([*browser.report_lines(result), "", *browser_checks(result)]))
        return 0
    out = asyncio.run(run(args.quick))
    table = report(out)
    print(table)
    if not args.quick:
        doc = ROOT / "docs" / "PERFORMANCE.md"
        old = doc.read_text(encoding="utf-8") if doc.exists() else ""
        kept, hand = section_of(old), mjpeg.hand_written_section(old)  # kept as they are
        doc.write_text(
            "# Performance of the media core\n\n"
            f"Written by `make bench` on {started}, {machine()}. Sources: synthetic room camera "
            "1280×720 at 30 fps and document camera 1920×1080 at 15 fps, both with motion and "
            "per-frame grain, 2 Mbit/s H.264 each (libx264 ultrafast, one thread per source), "
            "Opus 48 kbit/s. Viewers are aiortc receivers in separate processes on loopback "
            "(ICE, DTLS and SRTP by aiortc; frames counted from RTP marker bits, not decoded); "
            "the Chromium rows are Debian's headless Chromium playing the pupil page. "
            "CPU is user + system time of the whole process in % of one core; this machine is "
            "shared, so compare ratios within one run. See docs/benchmark.md for the method.\n\n"
            + table
            + "\n"
            + (f"\n{hand.rstrip()}\n" if hand else "")  # "Where a real kit's CPU goes"
            + (f"\n{kept.rstrip()}\n" if kept else ""),  # make bench-network's section
            encoding="utf-8",
        )
        print(f"\nwritten to {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
