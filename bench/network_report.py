"""The rows ``make bench-network`` measures, its table, the issue-14 checks and its section of
docs/PERFORMANCE.md (which ``make bench`` keeps when it rewrites the rest of the file)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADING = "## Pupils on thin links (make bench-network)"
NO_FRAME_S = 1e9
"""Freeze of a pupil that never connected (shown as the whole window)."""


@dataclass(frozen=True)
class Row:
    label: str
    links: tuple[int | None, ...]
    """Per pupil, its link in kbit/s (None: unshaped)."""
    kit_kbps: int | None = None
    """The kit's uplink, shared by every pupil (None: unshaped)."""
    chromium: bool = False
    """The (single) pupil is headless Chromium instead of an aiortc receiver."""


FOUR_UNSHAPED = "4 unshaped (the mixed class without its thin pupil)"
"""The mixed class's baseline run: the same four pupils, with the same receivers' load on the
two cores (four aiortc processes, each decoding 720p30 + 1080p15), without the pupil at 800
kbit/s; one pupil alone carries none of that load."""

ROWS = (
    Row("unshaped", (None,)),
    Row("unshaped, Chromium", (None,), chromium=True),
    Row("3 Mbit/s", (3000,)),
    Row("1.5 Mbit/s", (1500,)),
    Row("800 kbit/s", (800,)),
    Row("800 kbit/s, Chromium", (800,), chromium=True),
    Row("5 pupils behind one 10 Mbit/s uplink", (None,) * 5, kit_kbps=10_000),
    Row(FOUR_UNSHAPED, (None,) * 4),
    Row("mixed class: 4 unshaped + 1 at 800 kbit/s", (None, None, None, None, 800)),
)


@dataclass
class Measured:
    row: Row
    pupils: list[dict[str, Any]] = field(default_factory=list)
    """Per pupil, in link order: what bench/thin_receiver.py (or the Chromium view) printed,
    or ``{"error": …}``."""
    agent_cpu: float = float("nan")
    """The agent's CPU over the row (joins and leaves included), in % of one core."""


def p95(values: list[int] | list[float]) -> float:
    return round(float(np.percentile(values, 95)), 1) if values else float("nan")


def fps(pupil: dict[str, Any], track: str) -> float:
    return float(pupil.get(track, {}).get("fps", 0.0))


def freeze(pupil: dict[str, Any]) -> float:
    return float(pupil.get("camera", {}).get("freeze_s", NO_FRAME_S))


def loss(pupil: dict[str, Any]) -> float:
    return float(pupil.get("audio_loss", 100.0))


def delay_p95(pupil: dict[str, Any]) -> float:
    return p95(pupil.get("delays_ms", []))


def span(values: list[float], unit: str = "", digits: int = 1) -> str:
    if not values:
        return "–"
    low, high = min(values), max(values)
    text = f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}–{high:.{digits}f}"
    return text + unit


def groups(result: Measured) -> list[tuple[str, list[dict[str, Any]]]]:
    """The table's lines for one row: the mixed class shows its two kinds of pupils apart."""
    row = result.row
    if row.label.startswith("mixed"):
        fast = [p for p, link in zip(result.pupils, row.links, strict=True) if link is None]
        slow = [p for p, link in zip(result.pupils, row.links, strict=True) if link is not None]
        return [
            ("mixed class: the 4 unshaped", fast),
            ("mixed class: the 1 at 800 kbit/s", slow),
        ]
    return [(row.label, result.pupils)]


def line(label: str, pupils: list[dict[str, Any]]) -> str:
    sizes = sorted({p.get("camera", {}).get("size", "") for p in pupils} - {"", "0×0"})
    cam = span([fps(p, "camera") for p in pupils], " fps")
    if sizes:
        cam += f" ({', '.join(sizes)})"
    freezes = [freeze(p) for p in pupils]
    worst = max(freezes) if freezes else NO_FRAME_S
    frozen = "never connected" if worst >= NO_FRAME_S else f"{worst:.1f} s"
    delays = [delay_p95(p) for p in pupils if p.get("delays_ms")]
    notes = []
    closed = sum(1 for p in pupils if p.get("kit_closed"))
    if closed:
        notes.append(f"the kit closed {closed} of {len(pupils)}")
    errors = [p["error"] for p in pupils if "error" in p]
    if errors:
        notes.append(f"{len(errors)} failed to join: {errors[0][:80]}")
    note = f" ({'; '.join(notes)})" if notes else ""
    return (
        f"| {label}{note} | {cam} | {span([fps(p, 'document') for p in pupils], ' fps')} "
        f"| {frozen} | {span([loss(p) for p in pupils], ' %')} "
        f"| {f'{max(delays):.0f} ms' if delays else '–'} |"
    )


def table(results: list[Measured]) -> list[str]:
    lines = [
        "| pupil's link | room camera | document | longest freeze (room camera) "
        "| audio loss | glass-to-glass p95 |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        for label, pupils in groups(result):
            lines.append(line(label, pupils))
    cpu = "; ".join(f"{r.row.label} {r.agent_cpu:.0f} %" for r in results)
    return [*lines, "", f"The agent's CPU per row (% of one core, joins included): {cpu}."]


def _find(results: list[Measured], label: str) -> list[dict[str, Any]] | None:
    for result in results:
        for name, pupils in groups(result):
            if name == label:
                return pupils
    return None


Check = tuple[str, Callable[[list[dict[str, Any]]], tuple[str, bool]]]


def _thin(room: float, doc: float, g2g: float | None = None) -> Callable[..., tuple[str, bool]]:
    def check(pupils: list[dict[str, Any]]) -> tuple[str, bool]:
        p = pupils[0]
        ok = fps(p, "camera") >= room and fps(p, "document") >= doc and freeze(p) <= 1.0
        size = p.get("camera", {}).get("size", "")
        text = (
            f"room {fps(p, 'camera'):.1f} fps{f' ({size})' if size else ''}, "
            f"document {fps(p, 'document'):.1f} fps, freeze {min(freeze(p), 999):.1f} s"
        )
        if g2g is not None:
            ok = ok and loss(p) < 2 and delay_p95(p) <= g2g
            g2g_text = f"{delay_p95(p)} ms" if p.get("delays_ms") else "no frame"
            text += f", audio loss {loss(p):.1f} %, glass-to-glass p95 {g2g_text}"
        return text, ok

    return check


def _shared(pupils: list[dict[str, Any]]) -> tuple[str, bool]:
    rooms = [fps(p, "camera") for p in pupils]
    worst = max(freeze(p) for p in pupils)
    closed = sum(1 for p in pupils if p.get("kit_closed") or "error" in p)
    ok = min(rooms) >= 25 and worst <= 1.0 and closed == 0
    text = f"room {span(rooms, ' fps')}, worst freeze {min(worst, 999):.1f} s, {closed} closed"
    return text, ok


def checks(results: list[Measured]) -> list[str]:
    rows = ["| Done when (issue 14) | measured | |", "|---|---|---|"]
    wanted: list[tuple[str, str, Callable[[list[dict[str, Any]]], tuple[str, bool]]]] = [
        (
            "800 kbit/s: room ≥ 15 fps, no freeze > 1 s, audio loss < 2 %, glass-to-glass p95 "
            "≤ 400 ms, document ≥ 1 fps",
            "800 kbit/s",
            _thin(15, 1, 400),
        ),
        ("the same, Chromium pupil", "800 kbit/s, Chromium", _thin(15, 1, 400)),
        (
            "1.5 Mbit/s: room ≥ 25 fps, no freeze > 1 s, document ≥ 2 fps",
            "1.5 Mbit/s",
            _thin(25, 2),
        ),
        (
            "3 Mbit/s: room (1280×720 or 640×360) ≥ 25 fps, document ≥ 5 fps, no freeze > 1 s",
            "3 Mbit/s",
            _thin(25, 5),
        ),
        (
            "5 pupils behind 10 Mbit/s: every room ≥ 25 fps, no freeze > 1 s, none closed",
            "5 pupils behind one 10 Mbit/s uplink",
            _shared,
        ),
    ]
    for name, label, check in wanted:
        pupils = _find(results, label)
        if pupils:
            text, ok = check(pupils)
            rows.append(f"| {name} | {text} | {'PASS' if ok else 'FAIL'} |")
    mixed = _mixed(results)
    if mixed:
        rows.append(mixed)
    return rows


def _mixed(results: list[Measured]) -> str | None:
    four, base = _find(results, "mixed class: the 4 unshaped"), _find(results, FOUR_UNSHAPED)
    if not four or not base:
        return None
    rooms, docs = [fps(p, "camera") for p in four], [fps(p, "document") for p in four]
    worst, baseline = max(delay_p95(p) for p in four), max(delay_p95(p) for p in base)
    ok = min(rooms) >= 29 and min(docs) >= 14.5 and worst <= baseline * 1.2
    text = (
        f"room {span(rooms, ' fps')}, document {span(docs, ' fps')}, glass-to-glass p95 "
        f"{worst} ms vs {baseline} ms for the four without the thin pupil"
    )
    name = (
        "mixed class: the 4 unshaped ≥ 29 fps room / ≥ 14.5 fps document, glass-to-glass p95 "
        "within 20 % of the baseline"
    )
    return f"| {name} | {text} | {'PASS' if ok else 'FAIL'} |"


def put_section(text: str, section: str) -> str:
    """``text`` (docs/PERFORMANCE.md) with our section (``HEADING`` + ``section``) replacing
    the previous one, or appended."""
    before, _, after = text.partition(HEADING)
    if not _:
        return (text.rstrip("\n") + "\n\n" if text else "") + f"{HEADING}\n\n{section}"
    rest = after.split("\n## ", 1)
    tail = "\n## " + rest[1] if len(rest) == 2 else ""
    return f"{before}{HEADING}\n\n{section}{tail}"


def section_of(text: str) -> str:
    """Our section of ``text`` with its heading ('' if absent), for ``make bench`` to keep."""
    _, found, after = text.partition(HEADING)
    if not found:
        return ""
    return HEADING + after.split("\n## ", 1)[0]
