"""Who came into the class, counted, in the kits' health reports (issue 17; docs/protocol.md,
"Classroom"): the admin UI's kit page shows the counts, live, in real headless Chromium, and
nothing when a report has none."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import until
from tests.kiosk.test_accessibility import violations
from tests.provisioning.test_protocol import REPORT
from tests.provisioning.test_pupils_report import reporting_kit

from .conftest import LiveServer, admin_page

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.browser]

CLASSROOM: dict[str, Any] = {
    "waiting_room": True,
    "locked": True,
    "waiting": 2,
    "knocked": 5,
    "joined": 1,
    "admitted": 3,
    "removed": 1,
    "refused": 2,
    "asked": 7,
    "spoke": 4,
    "speaking": 1,
}


async def test_the_classroom_counts_are_shown(live_server: LiveServer) -> None:
    current: dict[str, Any] = {"report": {**REPORT, "classroom": CLASSROOM}}
    async with reporting_kit(live_server, current) as kit_id:
        kit = live_server.server.fleet.kits[kit_id]
        await until(lambda: '"classroom"' in (kit.health or ""), 5, "the report arrived")
        async with admin_page(live_server.url) as (page, errors):
            await page.click(f'tr[data-kit="{kit_id}"] a')
            facts = page.locator("#kit-facts")
            for line in (
                "Salle d'attenteoui, 2 en attente",
                "Classe verrouilléeoui",
                "Entrées dans le cours1 directes, 5 par la salle d'attente, 3 admises",
                "Retirés / refusés1 retirés, 2 refusés",
                "Questions écrites7",
                "Prises de parole4, 1 en cours",
            ):
                await expect(facts).to_contain_text(line)
            assert await violations(page) == []
            # Live: the next report changes the page; a report without it shows nothing.
            current["report"] = {
                **REPORT,
                "classroom": {**CLASSROOM, "waiting_room": False, "speaking": 0},
            }
            await expect(facts).to_contain_text("Salle d'attentenon")
            await expect(facts).to_contain_text("Prises de parole4")
            await expect(facts).not_to_contain_text("en cours")
            current["report"] = REPORT
            await expect(facts).not_to_contain_text("Prises de parole")
            assert errors == []
