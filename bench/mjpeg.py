"""``python -m bench.mjpeg``: the agent on MJPEG cameras, as a USB (UVC) camera hands them.

A UVC camera gives 720p30 and 1080p30 only as MJPEG, so a real kit decodes every picture before
it encodes it; ``make bench``'s synthetic cards skip that. Here both cameras are MJPEG files of
realistic frame size (room 1280×720 at 30 fps, ~60 KB a picture; document 1920×1080 at 15 fps,
~140 KB), played by the agent's own camera path (agent/sources/camera.py: OpenCV's FFmpeg
backend, paced at the camera's rate). Their pictures are the synthetic test cards softened like
a lens (Gaussian σ 0.7 px) with sensor noise (σ 1.5 levels), encoded 4:2:2 as UVC cameras do,
at the JPEG quality that gives the target size (found by bisection).

What it measures, in one run of about 65 s (more when the machine is loaded):

* per picture, the median process CPU of each decode path on these files: OpenCV's (decode to
  BGR, then ``cvtColor`` to I420), libjpeg-turbo straight to I420 (the agent's), and
  libjpeg-turbo at 1/2 scale (what a lower layer would cost if decoded on its own);
* the agent with no pupil, then with 30 unshaped pupils (aiortc receivers in other processes),
  its CPU split by thread: capture + decode (the two camera threads, ``cpu_s`` in the source
  status), each encoder (``cpu_s`` of each encoder thread) and the rest, which is sending (the
  event loop: SRTP, sockets, RTCP, fan-out), the microphone and HTTP;
* the same 30 pupils on an agent whose PyTurboJPEG import fails: OpenCV decodes (the path
  before libjpeg-turbo, and the fallback).

Unlike a camera, a file is read from the page cache and its JPEG packets come out of FFmpeg's
demuxer (``CAP_PROP_FORMAT`` -1) rather than V4L2 buffers (``CAP_PROP_CONVERT_RGB`` off); the
decode after that is the same function. A real camera's USB transfer costs the kernel a little
more, and a camera's own frame clock replaces the file's pacing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from agent.sources.camera import to_i420
from agent.sources.synthetic import SyntheticCamera, SyntheticDocument
from agent.webrtc.ice import restrict_host_addresses

from .processes import AgentProcess, CpuSample, collect_receivers, sample_cpu, start_receivers

HEADING = "## Where a real kit's CPU goes"
"""The hand-written section of docs/PERFORMANCE.md that ``make bench`` keeps."""
PUPILS = 30
WARMUP_S = 8.0
MEASURE_S = 6.0
LENS_SIGMA = 0.7
NOISE_SIGMA = 1.5
BUDGET_PERCENT = 90.0
"""Issue 18: 30 unshaped pupils on MJPEG cameras within 90 % of one core."""


@dataclass(frozen=True)
class Camera:
    source_id: str
    width: int
    height: int
    fps: int
    target_bytes: int
    frames: int


CAMERAS = (
    Camera("camera", 1280, 720, 30, 60_000, 60),
    Camera("document", 1920, 1080, 15, 140_000, 30),
)


@dataclass
class MjpegFile:
    camera: Camera
    path: Path
    quality: int
    median_bytes: int


def camera_pictures(camera: Camera, count: int) -> Iterator[np.ndarray]:
    """BGR pictures of the synthetic card through a soft lens, with sensor noise."""
    card_type = SyntheticDocument if camera.source_id == "document" else SyntheticCamera
    card = card_type(camera.source_id, camera.width, camera.height, camera.fps)
    rng = np.random.default_rng(18)
    shape = (camera.height, camera.width, 3)
    noises = [np.asarray(rng.normal(0, NOISE_SIGMA, shape)).astype(np.int16) for _ in range(3)]
    for n in range(count):
        bgr = cv2.cvtColor(card.render(n, n * 1000 // camera.fps), cv2.COLOR_YUV2BGR_I420)
        bgr = cv2.GaussianBlur(bgr, (0, 0), LENS_SIGMA)
        yield cv2.add(bgr, noises[n % len(noises)], dtype=cv2.CV_8U)


def encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR]
    ok, data = cv2.imencode(".jpg", bgr, [*params, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def quality_for(pictures: list[np.ndarray], target_bytes: int) -> int:
    """The JPEG quality whose median picture is nearest ``target_bytes`` (bisection)."""
    low, high = 20, 98
    while high - low > 1:
        middle = (low + high) // 2
        size = statistics.median(len(encode_jpeg(p, middle)) for p in pictures)
        low, high = (middle, high) if size < target_bytes else (low, middle)
    return low


def make_file(camera: Camera, folder: Path) -> MjpegFile:
    """An AVI of ``camera.frames`` JPEGs muxed untouched, as a UVC camera's stream would be."""
    pictures = list(camera_pictures(camera, camera.frames))
    quality = quality_for(pictures[:: max(1, len(pictures) // 4)], camera.target_bytes)
    path = folder / f"{camera.source_id}.avi"
    sizes = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=camera.fps)
        stream.width, stream.height, stream.pix_fmt = camera.width, camera.height, "yuvj422p"
        for n, picture in enumerate(pictures):
            data = encode_jpeg(picture, quality)
            sizes.append(len(data))
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, n, n
            packet.time_base = Fraction(1, camera.fps)
            out.mux(packet)
    return MjpegFile(camera, path, quality, int(statistics.median(sizes)))


# -- per-picture decode cost -------------------------------------------------------------------


def median_ms(steps: dict[str, Callable[[], object]], rounds: int = 60) -> dict[str, float]:
    """Median process CPU (every thread: OpenCV's and FFmpeg's too) of each step, in ms; the
    steps take turns, so that another process's load falls on each of them alike."""
    spent: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.process_time()
            step()
            spent[name].append(time.process_time() - started)
    return {name: round(statistics.median(v) * 1000, 2) for name, v in spent.items()}


def looping_read(capture: cv2.VideoCapture) -> np.ndarray:
    ok, picture = capture.read()
    if not ok:
        capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, picture = capture.read()
    return np.asarray(picture)


def decode_costs(file: MjpegFile) -> dict[str, float]:
    """Per picture: OpenCV → BGR → I420 and JPEG bytes → libjpeg-turbo → I420, read from the
    file included; libjpeg-turbo's decode alone, at full and 1/2 scale (bytes in memory)."""
    from agent.sources import mjpeg

    cam = file.camera
    bgr = cv2.VideoCapture(str(file.path), cv2.CAP_FFMPEG)
    steps: dict[str, Callable[[], object]] = {
        "opencv": lambda: to_i420(looping_read(bgr), cam.width, cam.height)
    }
    turbo = mjpeg.turbojpeg()
    raw = cv2.VideoCapture(str(file.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    if turbo is not None:
        decoder = mjpeg.MjpegDecoder(turbo, cam.width, cam.height)
        one = looping_read(raw)
        steps["turbo"] = lambda: decoder.decode(looping_read(raw))
        steps["turbo_alone"] = lambda: turbo.decode_to_yuv(one, pad=1)
        steps["turbo_half"] = lambda: turbo.decode_to_yuv(one, scaling_factor=(1, 2), pad=1)
    try:
        return median_ms(steps)
    finally:
        bgr.release()
        raw.release()


# -- the agent on these files ------------------------------------------------------------------


@dataclass
class Load:
    label: str
    pupils: int
    cpu: CpuSample
    capture_percent: float
    encode_percent: dict[str, float] = field(default_factory=dict)
    fps: dict[str, tuple[float, float]] = field(default_factory=dict)
    decoders: list[str] = field(default_factory=list)
    top_layers: int = 0
    """Pupils on both cameras' top layers at the end of the window (the others were held
    lower by their bandwidth estimate: on a loaded machine, failed probes wait 4 then 30 s)."""

    @property
    def rest_percent(self) -> float:
        return round(self.cpu.cpu_percent - self.capture_percent - self.encode_total, 1)

    @property
    def encode_total(self) -> float:
        return round(sum(self.encode_percent.values()), 1)


def mjpeg_toml(files: list[MjpegFile]) -> str:
    return "".join(
        f'[{f.camera.source_id}]\ndevice = "{f.path}"\nwidth = {f.camera.width}\n'
        f"height = {f.camera.height}\nfps = {f.camera.fps}\n"
        for f in files
    )


NO_TURBOJPEG = (
    "import runpy, sys; sys.modules['turbojpeg'] = None; "  # its import fails: the fallback
    "sys.argv = ['kit-agent', *sys.argv[1:]]; runpy.run_module('agent', run_name='__main__')"
)


def agent(files: list[MjpegFile], opencv: bool) -> AgentProcess:
    process = AgentProcess(extra_toml=mjpeg_toml(files))
    if opencv:
        process.args = ["-c", NO_TURBOJPEG, *process.args[2:]]  # after "-m agent"
    return process


def _thread_cpu(status: dict[str, Any]) -> tuple[float, dict[str, float], list[str]]:
    sources = [s for s in status.get("sources", []) if "cpu_s" in s]
    capture = sum(float(s["cpu_s"]) for s in sources)
    encoders = {str(e["name"]): float(e["cpu_s"]) for e in status.get("encoders", [])}
    decoders = [f"{s['id']} {s.get('decoder', '?')}" for s in sources]
    return capture, encoders, decoders


async def measure(process: AgentProcess, label: str, whep: str, pupils: int) -> Load:
    """The agent's CPU over ``MEASURE_S`` with ``pupils`` connected, split by thread."""
    procs = start_receivers(whep, pupils, WARMUP_S, MEASURE_S + 1.0) if pupils else []
    if pupils:
        await asyncio.sleep(WARMUP_S + 1.5)
    before, started = await process.status(), time.monotonic()
    cpu = await asyncio.to_thread(sample_cpu, process.pid, MEASURE_S)
    after, elapsed = await process.status(), time.monotonic() - started
    viewers = await collect_receivers(procs) if procs else []
    (cap0, enc0, _), (cap1, enc1, decoders) = _thread_cpu(before), _thread_cpu(after)
    load = Load(label, pupils, cpu, round((cap1 - cap0) / elapsed * 100, 1), decoders=decoders)
    load.top_layers = sum(
        1
        for v in after.get("viewers", [])
        if v.get("link", {}).get("layers") == {"camera": "high", "document": "high"}
    )
    for name, spent in enc1.items():
        if name in enc0 and not name.endswith("opus"):  # Opus keeps no CPU figure
            load.encode_percent[name.removeprefix("encode-")] = round(
                (spent - enc0[name]) / elapsed * 100, 1
            )
    for track in ("camera", "document"):
        fps = [v[track]["fps"] if track in v else 0.0 for v in viewers] or [0.0]
        load.fps[track] = (min(fps), statistics.median(fps))
    if pupils:
        await asyncio.sleep(2.0)  # the pupils leave
    return load


async def run_agent(files: list[MjpegFile], opencv: bool, idle_too: bool) -> list[Load]:
    name = "OpenCV decode (no PyTurboJPEG)" if opencv else "libjpeg-turbo → I420"
    loads = []
    with agent(files, opencv) as process:
        whep = await process.start_class()
        await asyncio.sleep(2)
        if idle_too:
            loads.append(await measure(process, f"MJPEG cameras, {name}", whep, 0))
        loads.append(await measure(process, f"MJPEG cameras, {name}", whep, PUPILS))
    return loads


async def run(quick: bool = False) -> dict[str, Any]:
    """Everything above; ``quick`` skips the OpenCV agent."""
    restrict_host_addresses(["127.0.0.1"])
    with tempfile.TemporaryDirectory(prefix="bench-mjpeg-") as folder:
        files = [make_file(camera, Path(folder)) for camera in CAMERAS]
        costs = {f.camera.source_id: decode_costs(f) for f in files}
        loads = await run_agent(files, opencv=False, idle_too=True)
        if not quick:
            loads += await run_agent(files, opencv=True, idle_too=False)
    return {"files": files, "costs": costs, "loads": loads}


# -- report ------------------------------------------------------------------------------------


def report_lines(out: dict[str, Any]) -> list[str]:
    lines = [
        "MJPEG cameras (`bench/mjpeg.py`, issue 18): the agent plays MJPEG files of realistic "
        "frame size through its camera path, as a USB camera's MJPEG would come; aiortc pupils "
        'as above; CPU split by thread from `/api/status` (docs/benchmark.md, "MJPEG '
        'cameras").',
        "",
        "| setup | pupils (on the top layers) | agent CPU (% of one core) | capture + decode "
        "| encode | send and the rest | room fps min / median | document fps min / median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load in out["loads"]:
        cam, doc = load.fps["camera"], load.fps["document"]
        lines.append(
            f"| {load.label} | {load.pupils} ({load.top_layers}) | {load.cpu.cpu_percent} "
            f"| {load.capture_percent} "
            f"| {load.encode_total} | {load.rest_percent} | {cam[0]:.1f} / {cam[1]:.1f} "
            f"| {doc[0]:.1f} / {doc[1]:.1f} |"
        )
    lines.append("")
    for file in out["files"]:
        cam, cost = file.camera, out["costs"][file.camera.source_id]
        lines.append(
            f"- {cam.source_id} MJPEG: {cam.width}×{cam.height} at {cam.fps} fps, 4:2:2, JPEG "
            f"quality {file.quality}, median picture {file.median_bytes / 1000:.0f} KB; per "
            f"picture (median process CPU, read included): OpenCV decode + cvtColor "
            f"{cost.get('opencv', float('nan'))} ms, libjpeg-turbo → I420 "
            f"{cost.get('turbo', float('nan'))} ms (of which the decode alone "
            f"{cost.get('turbo_alone', float('nan'))} ms; at 1/2 scale "
            f"{cost.get('turbo_half', float('nan'))} ms)"
        )
    for load in out["loads"]:
        encoders = ", ".join(f"{k} {v} %" for k, v in sorted(load.encode_percent.items()))
        lines.append(
            f"- {load.label}, {load.pupils} pupils: encoder threads {encoders or 'none'}; "
            f"decoders {', '.join(load.decoders)}"
        )
    idle = [x for x in out["loads"] if x.pupils == 0][:1]
    full = [x for x in out["loads"] if idle and x.pupils == PUPILS and x.label == idle[0].label]
    if idle and full:
        per_pupil = (full[0].cpu.cpu_percent - idle[0].cpu.cpu_percent) / PUPILS
        lines.append(
            f"- one more pupil (send: SRTP, sockets, RTCP, fan-out) on MJPEG cameras: "
            f"{per_pupil:.2f} % of a core"
        )
    return lines


def check_rows(out: dict[str, Any]) -> list[tuple[str, str, bool]]:
    turbo = [x for x in out["loads"] if x.pupils == PUPILS and "turbo" in x.label]
    if not turbo:
        return []
    load = turbo[0]
    cam, doc = load.fps["camera"][0], load.fps["document"][0]
    return [
        (
            f"{PUPILS} unshaped pupils on MJPEG cameras of realistic frame size: agent ≤ "
            f"{BUDGET_PERCENT:.0f} % of one core, every pupil ≥ 29 fps room, ≥ 14.5 fps document "
            "(issue 18)",
            f"{load.cpu.cpu_percent} % (capture + decode {load.capture_percent}, encode "
            f"{load.encode_total}, send and the rest {load.rest_percent}); min {cam:.1f} / "
            f"{doc:.1f} fps; {load.top_layers} of {PUPILS} on the top layers",
            load.cpu.cpu_percent <= BUDGET_PERCENT and cam >= 29 and doc >= 14.5,
        )
    ]


def checks(out: dict[str, Any]) -> list[str]:
    rows = ["| Done when (issue 18, MJPEG cameras) | measured | |", "|---|---|---|"]
    for name, value, ok in check_rows(out):
        rows.append(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")
    return rows


def hand_written_section(text: str) -> str:
    """The hand-written section of ``text`` with its heading ('' if absent), for ``make
    bench`` to keep when it rewrites docs/PERFORMANCE.md."""
    _, found, after = text.partition(HEADING)
    if not found:
        return ""
    return HEADING + after.split("\n## ", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mjpeg")
    parser.add_argument("--quick", action="store_true", help="without the OpenCV agent")
    parser.add_argument(
        "--decode", action="store_true", help="only the per-picture decode costs (~10 s)"
    )
    args = parser.parse_args()
    if args.decode:
        with tempfile.TemporaryDirectory(prefix="bench-mjpeg-") as folder:
            files = [make_file(camera, Path(folder)) for camera in CAMERAS]
            out = {"files": files, "costs": {f.camera.source_id: decode_costs(f) for f in files}}
        print("\n".join(line for line in report_lines({**out, "loads": []}) if line[:1] == "-"))
        return 0
    started = time.monotonic()
    out = asyncio.run(run(args.quick))
    print("\n".join([*report_lines(out), "", *checks(out)]))
    print(f"\n({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
