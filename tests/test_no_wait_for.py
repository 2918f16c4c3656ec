"""``asyncio.wait_for`` loses cancellations on Python 3.11 (docs/architecture.md): our packages
use ``asyncio.timeout`` instead."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "kiosk", "provisioning", "kitsys")


def test_no_wait_for_in_our_packages() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "wait_for(" in line and not line.lstrip().startswith("#")
    ]
    assert not offenders, offenders
