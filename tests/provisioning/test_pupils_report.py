"""The class's distribution in the kits' health reports (issue 14, item 5; docs/protocol.md,
"Pupils"): the server keeps it with the rest of the report, serves it on the kit's API, and the
admin UI's kit page shows it, live, in real headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import expect
from websockets.asyncio.client import connect

from kitlink import Health, encode
from provisioning import store
from tests.conftest import until
from tests.kiosk.test_accessibility import violations
from tests.provisioning.test_ice_link import enroll_raw, frames_until, ws_url
from tests.provisioning.test_protocol import REPORT
from tests.provisioning.wire import hello_for

from .conftest import LiveServer, admin_page

pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

PUPILS: dict[str, Any] = {
    "layers": {
        "camera": {"high": 20, "mid": 3, "low": 1, "paused": 1},
        "document": {"high": 19, "low": 4, "paused": 2},
    },
    "quality": {"full": 19, "reduced": 5, "audio-only": 1},
    "worst_loss_percent": 12.5,
}


@pytest.mark.browser
async def test_the_distribution_is_kept_served_and_shown(live_server: LiveServer) -> None:
    current: dict[str, Any] = {"report": {**REPORT, "pupils": PUPILS}}
    async with reporting_kit(live_server, current) as kit_id:
        kit = live_server.server.fleet.kits[kit_id]
        await until(lambda: kit.pupils_view is not None, 5, "the report arrived")
        await until(lambda: live_server.server.writer.queued == 0, 5, "written")
        status, body = await live_server.call(
            "root@example.fr", "GET", f"/api/v1/kits/{kit_id}?history=5"
        )
        assert status == 200
        assert body["health"]["pupils"] == PUPILS
        assert body["history"][0]["report"]["pupils"] == PUPILS
        await show_in_the_admin_ui(live_server, kit_id, current)
    # Stored with the rest of the latest report: what the server reloads at start-up.
    await until(lambda: live_server.server.writer.queued == 0, 5, "written")
    (row,) = [r for r in await store.load_kits(live_server.server.engine) if r["id"] == kit_id]
    assert "pupils" not in json.loads(row["health"])  # the last report had none


@contextlib.asynccontextmanager
async def reporting_kit(live_server: LiveServer, current: dict[str, Any]) -> AsyncIterator[str]:
    """A kit enrolled and linked (an admin signed in), sending ``current["report"]`` every
    0.3 s (the server drops a kit silent for 3 s) until the block ends: its id."""
    kit_id, secret = await enroll_raw(live_server)
    await live_server.admin("root@example.fr")
    async with connect(ws_url(live_server), ping_interval=None) as ws:
        await ws.send(hello_for(kit_id, secret))
        await frames_until(ws, "welcome")

        async def keep_reporting() -> None:
            for seq in range(10_000):
                await ws.send(encode(Health(seq=seq, sent_at=time.time(), **current)))
                await asyncio.sleep(0.3)

        reporting = asyncio.create_task(keep_reporting())
        try:
            yield kit_id
        finally:
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)


async def show_in_the_admin_ui(
    live_server: LiveServer, kit_id: str, current: dict[str, Any]
) -> None:
    async with admin_page(live_server.url) as (page, errors):
        await page.click(f'tr[data-kit="{kit_id}"] a')
        facts = page.locator("#kit-facts")
        await expect(facts).to_contain_text(
            "Qualité des élèves19 pleine qualité, 5 qualité réduite, 1 son seulement"
        )
        await expect(facts).to_contain_text(
            "Caméra de la salle (élèves par couche)20 haute, 3 moyenne, 1 basse, 1 en pause"
        )
        await expect(facts).to_contain_text(
            "Caméra document (élèves par couche)19 haute, 4 basse, 2 en pause"
        )
        await expect(facts).to_contain_text("Perte la plus forte (un élève)12,5 %")
        assert await violations(page) == []

        # Live: the class recovers, the kit's next report says so and the page follows.
        recovered = {
            "layers": {"camera": {"high": 25}, "document": {"high": 25}},
            "quality": {"full": 25},
            "worst_loss_percent": None,
        }
        current["report"] = {**REPORT, "pupils": recovered}
        await expect(facts).to_contain_text("Qualité des élèves25 pleine qualité")
        await expect(facts).to_contain_text("Perte la plus forte (un élève)—")
        await expect(facts).to_contain_text("Caméra document (élèves par couche)25 haute")

        # A report without it (a kit before this feature, or no pupil): nothing made up.
        current["report"] = REPORT
        await expect(facts).not_to_contain_text("Qualité des élèves")
        assert errors == []
