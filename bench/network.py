"""``python -m bench.network`` (``make bench-network``): pupils on thin links (issue 14).

The agent (``kit-agent run`` on the synthetic sources, live class) in its own network namespace;
pupils in theirs, their links shaped by ``tc tbf`` (bench/netns.py): one pupil unshaped (the
baseline), at 3 Mbit/s, 1.5 Mbit/s and 800 kbit/s (an aiortc pupil, then headless Chromium),
five pupils sharing the kit's 10 Mbit/s uplink, and a mixed class (four unshaped, one at
800 kbit/s). Each aiortc pupil is its own process (bench/thin_receiver.py) and counts only the
frames it decoded whole; Chromium counts ``framesDecoded``. It prints the table and the issue's
"Done when" rows, and writes its own section of docs/PERFORMANCE.md (``make bench`` keeps it).
See docs/benchmark.md ("Pupils on thin links").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from . import browser
from .netns import KIT_ADDRESS, NamespaceError, Node, ThinNet, thin_net
from .network_report import ROWS, Measured, Row, checks, put_section, table
from .processes import ROOT

PORT = 8080
WARMUP_S = 5.0
"""Freezes and rates count from 5 s after the answer (the issue's "after the first 5 s")."""
MEASURE_S = 20.0
CONTROL = """
import json, sys, urllib.request
request = urllib.request.Request("http://127.0.0.1:{port}" + sys.argv[2], method=sys.argv[1])
with urllib.request.urlopen(request, timeout=10) as response:
    print(response.read().decode())
"""
"""Run inside the kit's namespace: control answers only to the kit itself (loopback)."""

STATS_JS = """
async () => {
  const out = {at: Date.now()};
  if (typeof session === "undefined" || !session) return out;
  out.state = session.pc.connectionState;
  (await session.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") {
      out[s.kind === "audio" ? "audio" : s.mid] = {decoded: s.framesDecoded || 0,
        lost: s.packetsLost || 0, received: s.packetsReceived || 0,
        width: s.frameWidth || 0, height: s.frameHeight || 0};
    }
  });
  return out;
}
"""


class KitAgent:
    """The agent in the kit's namespace, on the synthetic sources."""

    def __init__(self, net: ThinNet, tree: Path = ROOT) -> None:
        self.net = net
        base = f"http://{KIT_ADDRESS}:{PORT}"
        self.config = net.workdir / "agent.toml"
        self.config.write_text(
            f'[http]\nlisten = "0.0.0.0:{PORT}"\npublic_url = "{base}"\n'
            f'[webrtc]\nhost_addresses = ["{KIT_ADDRESS}"]\n'
        )
        self.log = net.workdir / "agent.log"
        with self.log.open("wb") as sink:
            self.process = net.spawn(
                net.kit,
                [sys.executable, "-m", "agent", "run", "--config", str(self.config)],
                cwd=tree,  # python -m: the agent package of ``tree`` comes first on the path
                stdout=sink,
                stderr=sink,
            )

    def cpu_seconds(self) -> float:
        """User + system time of the agent so far (``ip netns exec`` execs it: same pid)."""
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def control(self, method: str, path: str) -> dict[str, Any]:
        script = CONTROL.format(port=PORT)
        out = self.net.run(self.net.kit, sys.executable, "-c", script, method, path)
        return dict(json.loads(out.stdout))

    async def start_class(self, timeout: float = 30.0) -> tuple[str, str]:
        """Waits for the agent, starts the class: (WHEP URL, join URL)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited:\n{self.log.read_text()[-2000:]}")
            try:
                self.control("POST", "/api/session/start")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        session = self.control("GET", "/api/status")["session"]
        return str(session["whep_url"]), str(session["join_url"])


async def aiortc_pupil(
    net: ThinNet, pupil: Node, whep_url: str, warmup: float, seconds: float
) -> dict[str, Any]:
    process = net.spawn(
        pupil,
        [
            sys.executable, "-m", "bench.thin_receiver", "--whep", whep_url,
            "--address", pupil.address, "--warmup", str(warmup), "--duration", str(seconds),
        ],
        cwd=ROOT, stdout=-1, stderr=-1, text=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.to_thread(process.communicate, timeout=warmup + seconds + 60)
    except Exception as exc:  # a hung receiver is a result too, not the end of the run
        return {"error": f"receiver: {exc}"}
    if process.returncode != 0 or not out.strip():
        return {"error": f"receiver exited {process.returncode}: {err.strip()[-300:]}"}
    result: dict[str, Any] = json.loads(out)
    return result


def _video(samples: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> Any:
    window = (after["at"] - before["at"]) / 1000
    out: dict[str, Any] = {}
    for mid, name in (("0", "camera"), ("1", "document")):
        decoded = after.get(mid, {}).get("decoded", 0) - before.get(mid, {}).get("decoded", 0)
        frames = [f[0] for f in samples.get(name, {}).get("frames", [])]
        points = [before["at"], *sorted(frames), after["at"]]
        gap = max(b - a for a, b in itertools.pairwise(points)) / 1000
        size = after.get(mid, {})
        out[name] = {
            "fps": round(decoded / window, 2),
            "freeze_s": round(gap, 2),
            "size": f"{size['width']}×{size['height']}" if decoded and size.get("width") else "",
        }
    return out


async def chromium_pupil(
    net: ThinNet, pupil: Node, join_url: str, warmup: float, seconds: float
) -> dict[str, Any]:
    """Headless Chromium, started inside ``pupil``'s namespace, on the pupil page."""
    try:
        return await _chromium_pupil(net, pupil, join_url, warmup, seconds)
    except Exception as exc:  # a browser that fails is a result too, not the end of the run
        return {"error": f"Chromium: {str(exc)[:200]}"}


async def _chromium_pupil(
    net: ThinNet, pupil: Node, join_url: str, warmup: float, seconds: float
) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    script = browser.CLOCK_JS.replace('"127.0.0.1"', f'"{pupil.address}"')
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=str(net.wrapper(pupil, browser.CHROMIUM)), args=browser.CHROMIUM_ARGS
        )
        try:
            context = await chromium.new_context(
                locale="fr-FR", viewport={"width": 1280, "height": 800}
            )
            await context.add_init_script(script)
            page = await context.new_page()
            await page.goto(join_url)
            await asyncio.sleep(warmup)
            await page.evaluate("window.benchClock.take()")
            before = await page.evaluate(STATS_JS)
            await asyncio.sleep(seconds)
            samples = await page.evaluate("window.benchClock.take()")
            after = await page.evaluate(STATS_JS)
            await page.goto("about:blank")  # pagehide: the page DELETEs its WHEP session
        finally:
            await chromium.close()
    out: dict[str, Any] = {"seconds": round((after["at"] - before["at"]) / 1000, 1)}
    out.update(_video(samples, before, after))
    audio_b, audio_a = before.get("audio", {}), after.get("audio", {})
    lost = audio_a.get("lost", 0) - audio_b.get("lost", 0)
    got = audio_a.get("received", 0) - audio_b.get("received", 0)
    out["audio_loss"] = round(100 * lost / (lost + got), 1) if lost + got > 0 else 100.0
    camera = samples.get("camera")
    out["delays_ms"] = browser.video_view(camera, {}, {}).delays_ms if camera else []
    out["kit_closed"] = after.get("state") in ("failed", "closed")
    return out


async def measure_row(
    net: ThinNet, row: Row, urls: tuple[str, str], warmup: float, seconds: float
) -> Measured:
    net.unshape()
    net.shape_kit(row.kit_kbps)
    for index, kbps in enumerate(row.links):
        net.shape_pupil(index, kbps)
    whep_url, join_url = urls
    if row.chromium:
        jobs = [chromium_pupil(net, net.pupils[0], join_url, warmup, seconds)]
    else:
        jobs = [
            aiortc_pupil(net, net.pupils[i], whep_url, warmup, seconds)
            for i in range(len(row.links))
        ]
    measured = Measured(row, list(await asyncio.gather(*jobs)))
    net.unshape()
    await asyncio.sleep(2.0)  # the pupils leave before the next row
    return measured


async def measure(
    workdir: Path,
    rows: tuple[Row, ...] = ROWS,
    warmup: float = WARMUP_S,
    seconds: float = MEASURE_S,
    progress: bool = False,
    agent_tree: Path = ROOT,
) -> list[Measured]:
    """Every row of ``rows`` against one agent (the ``agent`` package of ``agent_tree``), in one
    topology (torn down on return)."""
    pupils = max(len(row.links) for row in rows)
    results = []
    with thin_net(workdir, pupils) as net:
        agent = KitAgent(net, agent_tree)
        urls = await agent.start_class()
        await asyncio.sleep(2.0)
        for row in rows:
            if progress:
                print(f"… {row.label}", file=sys.stderr, flush=True)
            cpu, started = agent.cpu_seconds(), time.monotonic()
            measured = await measure_row(net, row, urls, warmup, seconds)
            measured.agent_cpu = round(
                (agent.cpu_seconds() - cpu) / (time.monotonic() - started) * 100
            )
            results.append(measured)
        if agent.process.poll() is not None:
            raise RuntimeError(f"the agent died during the run:\n{agent.log.read_text()[-2000:]}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network")
    parser.add_argument("--seconds", type=float, default=MEASURE_S, help="measured per row")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--agent-tree",
        type=Path,
        default=ROOT,
        help="run the agent of another checkout (e.g. `git worktree`/`git archive` of a commit)",
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory(prefix="bench-network-") as workdir:
        try:
            results = asyncio.run(
                measure(
                    Path(workdir), seconds=args.seconds, progress=True, agent_tree=args.agent_tree
                )
            )
        except NamespaceError as exc:
            print(f"make bench-network: {exc} (run it as root)", file=sys.stderr)
            return 2
    body = "\n".join([*table(results), "", *checks(results)])
    print(body)
    if not args.no_write:
        doc = ROOT / "docs" / "PERFORMANCE.md"
        text = doc.read_text(encoding="utf-8") if doc.exists() else ""
        intro = (
            f"Written by `make bench-network` on {started}, {machine()}: the agent "
            f"({which_agent(args.agent_tree)}) on the "
            "synthetic sources, each pupil in its own network namespace, links shaped by "
            f"`tc tbf` both ways; {WARMUP_S:.0f} s after joining, then {args.seconds:.0f} s "
            "measured per row. aiortc pupils count only the frames they decoded whole (after "
            "their references); Chromium counts `framesDecoded`. Longest freeze: the room "
            "camera's longest time without a decoded frame in the window. See docs/benchmark.md "
            '("Pupils on thin links").'
        )
        doc.write_text(put_section(text, f"{intro}\n\n{body}\n"), encoding="utf-8")
        print(f"\nwritten to {doc.relative_to(ROOT)}")
    return 0


def which_agent(tree: Path) -> str:
    """The agent's code: a commit, and whether its working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "agent"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"from {tree}"
    return f"commit {commit}" + (" with uncommitted changes in agent/" if changed else "")


def machine() -> str:
    from .__main__ import machine as describe

    return describe()


if __name__ == "__main__":
    sys.exit(main())
