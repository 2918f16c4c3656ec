"""Helpers for the unit-file tests: a scratch root ``systemd-analyze --root`` can resolve."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNITS_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = sorted(p.name for p in UNITS_DIR.glob("*.service"))
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+) (\w+)")
GOOD_RATINGS = ("PERFECT", "SAFE", "OK")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: run `make setup` as root (Debian package systemd)"
    return found


def exec_paths(unit_text: str) -> list[str]:
    """The programs a unit runs (``ExecStart=`` and friends, prefixes like ``-`` removed)."""
    paths = []
    for match in re.finditer(r"^Exec\w+=([-@:+!]*)(\S+)", unit_text, re.MULTILINE):
        paths.append(match.group(2))
    return paths


def scratch_root(root: Path, units: dict[str, str]) -> Path:
    """``root`` with the distribution's units, ours in /etc/systemd/system, and an executable
    stand-in for every program our units run (the real ones are not installed here: the agent
    venv in /opt, cage). ``--root`` makes systemd-analyze resolve every path inside it."""
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for name, text in units.items():
        (target / name).write_text(text, encoding="utf-8")
        for program in exec_paths(text):
            stand_in = root / program.lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
            stand_in.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def exposure(root: Path, unit: str) -> tuple[float, str]:
    """``systemd-analyze security --offline=true``'s overall exposure and its rating."""
    result = analyze("security", "--offline=true", f"--root={root}", "--no-pager", unit)
    match = EXPOSURE.search(result.stdout)
    assert match, result.stdout + result.stderr
    assert match.group(1) == unit
    return float(match.group(2)), match.group(3)
