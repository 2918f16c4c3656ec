"""The kiosk tells the teacher, in their language, when the kit runs without its own
configuration or its disk is full."""

from __future__ import annotations

from typing import Any

from agent.problems import Problems
from tests.chromium import BROWSER_MARKS, open_kiosk
from tests.kiosk.test_kiosk_problems import problems as shown

pytestmark = BROWSER_MARKS


async def test_config_and_disk_problems_are_shown_and_cleared(
    kit_with_problems: tuple[str, Problems], browser: Any
) -> None:
    base, problems = kit_with_problems
    problems.report(
        "config_unreadable", "/etc/kit/agent.toml is not valid TOML", fallback="defaults"
    )
    kiosk = await open_kiosk(browser, base)
    await kiosk.wait_for_function("document.querySelectorAll('#problems .problem').length > 0")
    assert await shown(kiosk) == [
        "Le fichier de configuration est illisible : réglages par défaut utilisés."
        " Prévenez l'administrateur."
    ]
    problems.report("config_unreadable", "…", fallback="last_good")
    problems.report("disk_full", "/var/lib/kit: No space left on device")
    await kiosk.wait_for_function("document.querySelectorAll('#problems .problem').length === 2")
    await kiosk.click("#lang")
    await kiosk.wait_for_function(
        "document.querySelector('#problems .problem').textContent.includes('last good')"
    )
    assert await shown(kiosk) == [
        "The configuration file is unreadable: last good settings in use. Tell the administrator.",
        "The kit's disk is full: settings are no longer saved. The class can go on;"
        " tell the administrator.",
    ]
    problems.clear("disk_full")
    problems.clear("config_unreadable")
    await kiosk.wait_for_function(
        "document.querySelectorAll('#problems .problem').length === 0", timeout=5_000
    )
    await kiosk.context.close()
