"""The admin UI in headless Chromium: sign in, the dashboard, a kit going offline live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import async_playwright, expect

from provisioning import api
from tests.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.kiosk.test_accessibility import violations

from .conftest import ADMIN_PASSWORD, AgentMaker, LiveServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(locale="fr-FR")
            yield await context.new_page()
        finally:
            await browser.close()


async def test_login_dashboard_and_kit_going_offline_live(
    live_server: LiveServer, linked_agent: AgentMaker, page: Any
) -> None:
    await live_server.school("0751234A", "75")
    await live_server.school("0691111B", "69")
    kept = await linked_agent(school="0751234A", name="Salle 101")
    leaving = await linked_agent(school="0691111B", name="Salle 202")
    await live_server.admin("root@example.fr")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await page.goto(live_server.url + "/")
    await page.fill("#login-email", "root@example.fr")
    await page.fill("#login-password", "wrong password!")
    await page.click("#login-form button")
    await expect(page.locator("#login-error")).to_contain_text("wrong email or password")
    assert await violations(page) == []
    await page.fill("#login-password", ADMIN_PASSWORD)
    await page.click("#login-form button")

    row = page.locator(f'tr[data-kit="{leaving.kit_id}"]')
    await expect(row).to_have_class("kit online")
    await expect(page.locator(".departement h2")).to_have_text(
        ["Département 69 — 1/1 en ligne", "Département 75 — 1/1 en ligne"]
    )
    await expect(page.locator("#live-state")).to_have_text("mises à jour en direct")
    await page.evaluate("window.notReloaded = true")

    assert leaving.uplink is not None
    await leaving.uplink.close()  # the kit drops off the network
    await expect(row).to_have_class("kit offline", timeout=5000)
    await expect(row.locator("td.state")).to_contain_text("hors ligne depuis")
    await expect(page.locator(f'tr[data-kit="{kept.kit_id}"]')).to_have_class("kit online")
    assert await page.evaluate("window.notReloaded") is True

    # The kit page: health history and configuration.
    await page.click(f'tr[data-kit="{kept.kit_id}"] a')
    await expect(page.locator("#kit-title")).to_contain_text("Salle 101")
    await expect(page.locator("#history tbody tr").first).to_contain_text("idle")
    await expect(page.locator("#kit-config")).to_contain_text("appliquée")
    assert await violations(page) == []

    # Move the kit to the other school (with a confirmation), then rename it.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.select_option("#move-school", "0691111B")
    await page.click("#move-form button")
    await expect(page.locator("#kit-facts")).to_contain_text("0691111B (département 69)")
    assert live_server.server.fleet.kits[kept.kit_id].school_id == "0691111B"
    await page.fill("#rename-name", "Salle 303")
    # A live update arrives while the admin is typing (another admin moves the kit back):
    # the page shows it, and what is being typed stays.
    moved_back = {"school": "0751234A"}
    path = f"/api/v1/kits/{kept.kit_id}"
    assert (await live_server.call("root@example.fr", "PATCH", path, moved_back))[0] == 200
    await expect(page.locator("#kit-facts")).to_contain_text("0751234A (département 75)")
    await expect(page.locator("#rename-name")).to_have_value("Salle 303")
    await page.click("#rename-form button")
    await expect(page.locator("#kit-title")).to_contain_text("Salle 303")
    assert not errors, errors


async def submit(page: Any, form: str, fields: dict[str, str]) -> None:
    """Fill a form's fields (selector → text) and press its button."""
    for selector, value in fields.items():
        await page.fill(selector, value)
    await page.click(f"{form} button")


async def sign_in(
    page: Any, live_server: LiveServer, email: str, password: str = ADMIN_PASSWORD
) -> None:
    await page.goto(live_server.url + "/")
    await submit(page, "#login-form", {"#login-email": email, "#login-password": password})
    await expect(page.locator("#live-state")).to_have_text("mises à jour en direct")


async def test_a_new_school_and_its_settings_reach_its_kits(
    live_server: LiveServer, linked_agent: AgentMaker, page: Any
) -> None:
    """A national admin adds a school from the dashboard, enrolls nothing yet, sets the whole
    fleet's and a school's settings from the UI; the school's kit gets them pushed."""
    await live_server.school("0751234A", "75")
    kit = await linked_agent(school="0751234A", name="Salle 101")
    await live_server.admin("root@example.fr")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, live_server, "root@example.fr")

    await page.click("#school-panel summary")
    school = {"#school-id": "0693333C", "#school-name": "Collège des Canuts", "#school-dep": "69"}
    await submit(page, "#school-form", school)
    await expect(page.locator("#school-output")).to_have_text("École 0693333C ajoutée.")
    new = page.locator('.school[data-school="0693333C"]')
    await expect(new).to_contain_text("Collège des Canuts (0693333C)")
    await expect(new).to_contain_text("Aucun kit enrôlé.")
    await submit(page, "#school-form", {**school, "#school-name": "Doublon"})
    await expect(page.locator("#school-output")).to_contain_text("exists")
    assert await page.locator("#code-school option").count() == 2  # enrollment codes for it

    # The school's settings: a bad JSON and an unknown key are refused, a good one is pushed.
    await page.click('.school[data-school="0751234A"] a.settings')
    await expect(page.locator("#config-title")).to_have_text(
        "Réglages de l'école École 0751234A (0751234A)"
    )
    await expect(page.locator("#scope-config-json")).to_have_value("{}")
    await page.fill("#scope-config-json", "{nope")
    await page.click("#scope-config-form button")
    await expect(page.locator("#scope-config-error")).to_have_text("JSON invalide")
    assert await violations(page) == []
    await page.fill("#scope-config-json", '{"kiosk": {"colour": "red"}}')
    await page.click("#scope-config-form button")
    await expect(page.locator("#scope-config-error")).to_contain_text("colour")
    await page.fill("#scope-config-json", '{"kiosk": {"language": "en"}}')
    await page.click("#scope-config-form button")
    await expect(page.locator("#scope-config-output")).to_have_text(
        "Enregistré ; envoyé à 1 kit(s) en ligne."
    )
    fleet = live_server.server.fleet
    assert fleet.layers[("school", "0751234A")] == {"kiosk": {"language": "en"}}
    agent_kit = fleet.kits[kit.kit_id]
    await expect(page.locator("#scope-config-error")).to_have_text("")

    # The whole fleet's settings, then back to the dashboard.
    await page.goto(live_server.url + "/admin/#/")
    await page.click("#fleet-config a")
    await expect(page.locator("#config-title")).to_have_text("Réglages de tout le parc")
    await page.fill("#scope-config-json", '{"kiosk": {"language": "fr"}}')
    await page.click("#scope-config-form button")
    await expect(page.locator("#scope-config-output")).to_contain_text("Enregistré")
    assert fleet.layers[("fleet", "")] == {"kiosk": {"language": "fr"}}
    assert agent_kit.desired["kiosk"]["language"] == "en"  # the school's is more specific
    assert not errors, errors


async def test_a_school_technician_sees_no_fleet_settings_and_cannot_add_schools(
    live_server: LiveServer, page: Any
) -> None:
    await live_server.school("0751234A", "75")
    await live_server.admin("tech@example.fr", role="school", scope="0751234A")
    await sign_in(page, live_server, "tech@example.fr")
    assert await page.locator("#fleet-config").is_hidden()
    assert await page.locator("#school-panel").is_hidden()
    await page.click('.school[data-school="0751234A"] a.settings')  # read only for them
    await page.fill("#scope-config-json", '{"kiosk": {"language": "en"}}')
    await page.click("#scope-config-form button")
    await expect(page.locator("#scope-config-error")).to_contain_text("technician")


async def test_admins_are_added_and_removed_and_passwords_changed_from_the_ui(
    live_server: LiveServer, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A national admin adds a school technician, who signs in elsewhere; removing that
    account sends the technician's open page back to the sign-in form."""
    monkeypatch.setattr(api, "SESSION_RECHECK_S", 0.5)
    await live_server.school("0751234A", "75")
    await live_server.admin("root@example.fr")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await sign_in(page, live_server, "root@example.fr")
    await page.click("#account-link")
    await expect(page.locator("#admins tbody tr")).to_have_count(1)
    await expect(page.locator("#admins tbody tr")).to_contain_text("vous")

    await page.select_option("#admin-role", "school")
    tech = {"#admin-email": "Tech@Example.fr", "#admin-password": "a long first password"}
    await submit(page, "#admin-form", {**tech, "#admin-scope": "0759999Z"})  # no such school
    await expect(page.locator("#admin-error")).to_contain_text("no school")
    await submit(page, "#admin-form", {"#admin-scope": "0751234A"})
    await expect(page.locator("#admin-output")).to_have_text("Compte tech@example.fr créé.")
    row = page.locator('#admins tr[data-admin="tech@example.fr"]')
    await expect(row).to_contain_text("technicien d'école")
    await expect(row).to_contain_text("0751234A")
    await page.select_option("#admin-role", "national")
    assert await page.locator("#admin-scope-label").is_hidden()
    assert await violations(page) == []

    # The technician signs in in another browser and looks at their own journal.
    elsewhere = await page.context.browser.new_context(locale="fr-FR")
    tech_page = await elsewhere.new_page()
    await sign_in(tech_page, live_server, "tech@example.fr", "a long first password")
    await tech_page.click("#account-link")
    await expect(tech_page.locator("#audit-title")).to_have_text("Journal de mes actions")
    assert await tech_page.locator("#admins-part").is_hidden()
    await expect(tech_page.locator("#audit tbody tr").first).to_contain_text("login")
    change = {"#password-current": "not it at all", "#password-new": "an even longer password"}
    await submit(tech_page, "#password-form", change)
    await expect(tech_page.locator("#password-error")).to_contain_text("current password")
    change["#password-current"] = "a long first password"
    await submit(tech_page, "#password-form", change)
    await expect(tech_page.locator("#password-output")).to_contain_text("Mot de passe changé")
    await tech_page.click('#account-view a[href="#/"]')
    assert await violations(tech_page) == []  # the dashboard

    # Removed by the national admin: the technician's page is signed out within seconds.
    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Retirer tech@example.fr").click()
    await expect(page.locator("#admin-output")).to_have_text("Compte tech@example.fr retiré.")
    await expect(row).to_have_count(0)
    await expect(tech_page.locator("#login-view")).to_be_visible(timeout=5000)
    await expect(page.locator("#audit tbody tr").first).to_contain_text("user.remove")
    await elsewhere.close()
    assert not errors, errors
