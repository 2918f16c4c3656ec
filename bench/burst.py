"""A class starting: ``python -m bench.burst`` (a ``make bench`` row too).

The teacher presses Start, then 30 pupils join at random times within the next 5 s (issue 18).
Pupils are aiortc WHEP receivers counting frames (not decoding), in a few child processes
started and warmed up before Start, like ``bench.receivers``. For each pupil it measures, from
its WHEP POST: the answer, the connection (ICE + DTLS), the first room-camera RTP packet and the
first complete room-camera **keyframe** (its first decodable picture); and from the agent, the
keyframes each encoder was forced to make over the burst (a keyframe storm shows there).

The pupils' own processes share this machine's two cores with the agent, which a real class's
pupils do not: connection times here are an upper bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.webrtc.ice import restrict_host_addresses

from .processes import ROOT, AgentProcess
from .whep_receiver import WhepReceiver, use_counting_decoder

PUPILS = 30
JOIN_WINDOW_S = 5.0
PER_PROCESS = 10
FIRST_FRAME_TIMEOUT_S = 10.0
SETTLE_S = 3.0
"""After the last pupil's first picture: layer switches (probing up) still force keyframes."""
FIRST_FRAME_P95_MS = 500.0


# --- the pupils' side (child processes) ---------------------------------------------------


def _is_keyframe_payload(codec: str, payload: bytes) -> bool:
    """Whether this RTP payload carries (the start of) a keyframe: an H.264 IDR slice or SPS
    (single NAL, STAP-A or the first fragment of an FU-A), or a VP8 key frame start."""
    if not payload:
        return False
    if codec == "video/vp8":
        x, start, pid = payload[0] & 0x80, payload[0] & 0x10, payload[0] & 0x07
        offset = 1
        if x:
            ext = payload[1]
            offset = 2 + bool(ext & 0x80) * (2 if len(payload) > 2 and payload[2] & 0x80 else 1)
            offset += bool(ext & 0x40) + bool(ext & 0x30)
        return bool(start) and pid == 0 and len(payload) > offset and not payload[offset] & 1
    nal = payload[0] & 0x1F
    if nal == 24:  # STAP-A: the first aggregated NAL unit
        return len(payload) > 3 and payload[3] & 0x1F in (5, 7)
    if nal == 28:  # FU-A: only its first fragment names the NAL type
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return nal in (5, 7)


_counting_handler: Any = None


async def _timed_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
    """The counting handler, plus per receiver: the first packet's arrival and the first
    complete keyframe's (no sequence gap from its first packet to its marker bit)."""
    now = time.monotonic()
    marks = self.__dict__.setdefault("_burst", {"first_packet": None, "first_key": None})
    if marks["first_packet"] is None:
        marks["first_packet"] = now
    codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)
    if codec is not None and self._track.kind == "video" and marks["first_key"] is None:
        frame = marks.setdefault(
            "frame", {"key": False, "expected": None, "gap": False, "bytes": 0}
        )
        if frame["expected"] is not None and packet.sequence_number != frame["expected"]:
            frame["gap"] = True
        frame["expected"] = (packet.sequence_number + 1) & 0xFFFF
        frame["key"] = frame["key"] or _is_keyframe_payload(codec.mimeType.lower(), packet.payload)
        frame["bytes"] += len(packet.payload)
        if packet.marker:
            if frame["key"] and not frame["gap"]:
                marks["first_key"], marks["key_bytes"] = now, frame["bytes"]
            frame["key"] = frame["gap"] = False
            frame["bytes"] = 0
    await _counting_handler(self, packet, arrival_time_ms)


async def _pupil(whep_url: str, start: float, offset: float) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
    receiver = WhepReceiver(whep_url)
    connected: list[float] = []
    receiver.pc.on(
        "connectionstatechange",
        lambda: (
            connected.append(time.monotonic())
            if receiver.pc.connectionState == "connected"
            else None
        ),
    )
    out: dict[str, Any] = {"join_s": round(offset, 3)}
    try:
        await receiver.connect()
        out["answer_ms"] = _ms(receiver.posted_at, time.monotonic())
        camera = receiver.pc.getTransceivers()[0].receiver
        deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
        while time.monotonic() < deadline:
            if camera.__dict__.get("_burst", {}).get("first_key") is not None:
                break
            await asyncio.sleep(0.01)
        marks = camera.__dict__.get("_burst", {})
        out["connected_ms"] = _ms(receiver.posted_at, connected[0] if connected else None)
        out["first_packet_ms"] = _ms(receiver.posted_at, marks.get("first_packet"))
        out["first_frame_ms"] = _ms(receiver.posted_at, marks.get("first_key"))
        out["keyframe_bytes"] = marks.get("key_bytes")
        if out["connected_ms"] is not None and out["first_frame_ms"] is not None:
            out["after_connected_ms"] = round(out["first_frame_ms"] - out["connected_ms"], 1)
        out["receiver"] = receiver
    except Exception as exc:  # a pupil that failed is reported, not a crash of the group
        out["error"] = f"{type(exc).__name__}: {exc}"[:200]
        await receiver.close()
    return out


def _ms(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 1)


async def _child(offsets: list[float], hold_s: float) -> list[dict[str, Any]]:
    print("ready", flush=True)
    whep_url, start_text = (await asyncio.to_thread(sys.stdin.readline)).split()
    start = float(start_text)  # time.monotonic(): one clock for every process
    pupils = await asyncio.gather(*(_pupil(whep_url, start, o) for o in offsets))
    await asyncio.sleep(max(0.0, start + hold_s - time.monotonic()))
    for pupil in pupils:
        receiver = pupil.pop("receiver", None)
        if receiver is not None:
            await receiver.close()
    return pupils


def child_main(offsets: list[float], hold_s: float) -> int:
    global _counting_handler
    restrict_host_addresses(["127.0.0.1"])
    use_counting_decoder()
    import aiortc.rtcrtpreceiver as rtcrtpreceiver

    _counting_handler = rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet
    rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet = _timed_rtp_packet  # type: ignore[method-assign]
    result = asyncio.run(_child(offsets, hold_s))
    json.dump(result, sys.stdout)
    return 0


# --- the measurement (parent) -------------------------------------------------------------


@dataclass
class BurstResult:
    pupils: list[dict[str, Any]]
    forced: dict[str, int] = field(default_factory=dict)
    """Keyframes forced over the burst, per encoder (``camera/h264/mid``...)."""
    keyframes: dict[str, int] = field(default_factory=dict)
    """All keyframes over the burst (forced and periodic), per encoder."""
    seconds: float = 0.0

    def values(self, key: str) -> list[float]:
        return [float(p[key]) for p in self.pupils if p.get(key) is not None]

    @property
    def failed(self) -> int:
        return sum(1 for p in self.pupils if p.get("first_frame_ms") is None)


def _encoder_counts(status: dict[str, Any]) -> dict[str, tuple[int, int]]:
    out = {}
    for e in status.get("encoders", []):
        if "layer" in e:
            key = f"{e['source']}/{e['codec']}/{e['layer']}"
            out[key] = (int(e.get("forced_keyframes", 0)), int(e.get("keyframes", 0)))
    return out


async def measure_burst(
    pupils: int = PUPILS,
    window_s: float = JOIN_WINDOW_S,
    seed: int | None = None,
    join_interval: float | None = None,
) -> BurstResult:
    """Start a class on a fresh agent, then ``pupils`` join at random times within
    ``window_s`` seconds of Start (``join_interval``: the agent's
    ``keyframe_join_interval_s``, else its default; 0.5 = joins wait like repairs, as before
    issue 18)."""
    rng = random.Random(seed)
    offsets = sorted(rng.uniform(0.0, window_s) for _ in range(pupils))
    hold_s = window_s + FIRST_FRAME_TIMEOUT_S / 2 + SETTLE_S
    extra = (
        "" if join_interval is None else f"[encoder]\nkeyframe_join_interval_s = {join_interval}\n"
    )
    with AgentProcess(extra_toml=extra) as agent:
        count = -(-pupils // PER_PROCESS)
        procs = [_spawn(offsets[i::count], hold_s) for i in range(count) if offsets[i::count]]
        try:
            for proc in procs:  # imports done, aiortc warm: none of that lands in the burst
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                if line.strip() != "ready":
                    raise RuntimeError("a pupil group did not start")
            whep = await agent.start_class()
            started = time.monotonic()
            before = _encoder_counts(await agent.status())
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"{whep} {started}\n")
                proc.stdin.flush()
            await asyncio.sleep(max(0.0, started + hold_s - 1.0 - time.monotonic()))
            after = _encoder_counts(await agent.status())  # pupils still there: all layers run
            seconds = time.monotonic() - started
            results: list[dict[str, Any]] = []
            for proc in procs:
                out, err = await asyncio.to_thread(proc.communicate, timeout=30)
                if proc.returncode != 0:
                    raise RuntimeError(f"pupil group failed: {err.strip()[-500:]}")
                results.extend(json.loads(out))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    result = BurstResult(results, seconds=round(seconds, 1))
    for key, (forced, keys) in after.items():
        forced0, keys0 = before.get(key, (0, 0))
        result.forced[key] = forced - forced0
        result.keyframes[key] = keys - keys0
    return result


def _spawn(offsets: list[float], hold_s: float) -> subprocess.Popen[str]:
    args = ["--child", "--hold", str(hold_s), "--offsets", json.dumps(offsets)]
    return subprocess.Popen(
        [sys.executable, "-m", "bench.burst", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def lines(result: BurstResult) -> list[str]:
    """Bullets for docs/PERFORMANCE.md."""
    ff = result.values("first_frame_ms")
    out = [
        f"- a class starting: {len(result.pupils)} pupils joining within {JOIN_WINDOW_S:.0f} s "
        f"of Start, WHEP POST → first complete room-camera keyframe: p50 {pct(ff, 50)} ms, "
        f"p95 {pct(ff, 95)} ms, max {max(ff, default=float('nan'))} ms"
        + (f", {result.failed} without a picture" if result.failed else ""),
        "  - of which: answer p50 "
        f"{pct(result.values('answer_ms'), 50)} ms, connected (ICE + DTLS) p50 "
        f"{pct(result.values('connected_ms'), 50)} / p95 {pct(result.values('connected_ms'), 95)}"
        f" ms, first RTP packet p50 {pct(result.values('first_packet_ms'), 50)} / p95 "
        f"{pct(result.values('first_packet_ms'), 95)} ms; connected → first keyframe (what the "
        f"kit adds) p50 {pct(result.values('after_connected_ms'), 50)} / p95 "
        f"{pct(result.values('after_connected_ms'), 95)} ms",
        f"  - keyframes forced over the {result.seconds} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(result.forced.items()))
        + " (all keyframes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(result.keyframes.items()))
        + ")",
    ]
    return out


def check_rows(result: BurstResult) -> list[tuple[str, str, bool]]:
    ff = result.values("first_frame_ms")
    p95 = pct(ff, 95)
    return [
        (
            f"{len(result.pupils)} pupils joining within {JOIN_WINDOW_S:.0f} s of Start: first "
            f"frame p95 ≤ {FIRST_FRAME_P95_MS:.0f} ms (issue 18)",
            f"p95 {p95} ms, max {max(ff, default=float('nan'))} ms, "
            f"{result.failed} without a picture",
            bool(ff) and p95 <= FIRST_FRAME_P95_MS and result.failed == 0,
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst")
    parser.add_argument("--pupils", type=int, default=PUPILS)
    parser.add_argument("--window", type=float, default=JOIN_WINDOW_S)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print every pupil's figures")
    parser.add_argument(
        "--join-interval",
        type=float,
        default=None,
        help="the agent's keyframe_join_interval_s (0.5: joins wait like repairs)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--offsets", help=argparse.SUPPRESS)
    parser.add_argument("--hold", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_main(json.loads(args.offsets), args.hold)
    restrict_host_addresses(["127.0.0.1"])
    result = asyncio.run(measure_burst(args.pupils, args.window, args.seed, args.join_interval))
    if args.json:
        print(json.dumps(result.pupils, indent=1))
    print("\n".join(lines(result)))
    for name, value, ok in check_rows(result):
        print(f"| {name} | {value} | {'PASS' if ok else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
