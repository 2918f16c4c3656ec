"""The admin kit list at fleet size: paginated, filtered, sorted and counted in SQL (SQLite and
PostgreSQL), scoped by role, strict about its query; at 15,000 kits a page answers quickly, no
request holds the event loop, and the dashboard's first paint in Chromium stays under 1 s."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from kitlink import HealthReport
from provisioning import api, tables
from provisioning.db import database_url, open_database
from provisioning.server import tune_gc
from tests.provisioning.test_protocol import REPORT

from .conftest import LiveServer, admin_page, server_options, serving

ROOT = "root@example.fr"


def health_text(reach: str | None, problems: bool = False) -> str:
    """A latest report as the server stores it (its own compact JSON of a validated report)."""
    report: dict[str, Any] = {**REPORT}
    if not problems:
        ok = {"state": "ok", "detail": ""}
        report["devices"] = {"camera": ok, "document": ok, "microphone": ok}
    if reach is not None:
        report["network"] = {
            "reach": reach,
            "turn_error": "",
            "probed_at": 1.0,
            "paths": {"relay/tcp": 2},
        }
    return HealthReport.model_validate(report).model_dump_json()


async def seed(
    tmp_path: Path, db_url: str, schools: Sequence[dict[str, Any]], kits: Sequence[dict[str, Any]]
) -> None:
    """Schools and kits written straight into a migrated database, before the server starts."""
    (tmp_path / "server").mkdir(parents=True, exist_ok=True)
    engine = await open_database(database_url(db_url, tmp_path / "server"))
    try:
        async with engine.begin() as conn:
            for start in range(0, len(schools), 5000):
                await conn.execute(tables.schools.insert(), list(schools[start : start + 5000]))
            for start in range(0, len(kits), 5000):
                await conn.execute(tables.kits.insert(), list(kits[start : start + 5000]))
    finally:
        await engine.dispose()


def kit_row(kit_id: str, name: str, school: str, **values: Any) -> dict[str, Any]:
    row = {
        "id": kit_id,
        "name": name,
        "school_id": school,
        "secret_hash": "0" * 64,
        "created_at": 1.0,
        "revoked_at": None,
        "last_seen": None,
        "health": None,
        "software": "",
    }
    return {**row, **values}


async def set_states(live: LiveServer, states: dict[str, dict[str, Any]]) -> None:
    """What the kits' links would have written (the server marks every kit offline at start)."""
    async with live.server.engine.begin() as conn:
        for kit_id, values in states.items():
            if not values:
                continue
            await conn.execute(tables.kits.update().where(tables.kits.c.id == kit_id), values)


# -- a small fleet, every case --------------------------------------------------------------------

SCHOOLS = [
    {"id": "0751234A", "name": "Lycée Voltaire", "departement": "75", "created_at": 1.0},
    {"id": "0759999Z", "name": "Collège Sévigné", "departement": "75", "created_at": 1.0},
    {"id": "0750000E", "name": "École vide", "departement": "75", "created_at": 1.0},
    {"id": "0691111B", "name": "Lycée du Parc", "departement": "69", "created_at": 1.0},
    {"id": "2A00001X", "name": "Collège d'Ajaccio", "departement": "2A", "created_at": 1.0},
]
KITS = [
    kit_row("kit-a1", "Salle 101", "0751234A", health=health_text("none"), software="1.2.0"),
    kit_row("kit-a2", "Salle 102", "0751234A", health=health_text("udp", True), software="1.10.0"),
    kit_row("kit-b1", "Atelier_1", "0759999Z", health=health_text(None)),
    kit_row("kit-c1", "Labo 100%", "0691111B", health=health_text("turn-tcp")),
    kit_row("kit-c2", "CDI", "0691111B", revoked_at=5.0, health=health_text("none")),
    kit_row("kit-d1", "Salle A", "2A00001X"),
]
STATES: dict[str, dict[str, Any]] = {
    "kit-a1": {"online": True, "last_seen": 1000.0},
    "kit-a2": {"online": True, "last_seen": 1001.0, "session": "live", "problems": "document"},
    "kit-b1": {"online": False, "last_seen": 500.0, "offline_since": 510.0},
    "kit-c1": {"online": True, "last_seen": 900.0, "session": "live"},
    "kit-c2": {"online": False, "last_seen": 800.0, "problems": "camera"},
    "kit-d1": {},
}
DEPARTEMENT = {s["id"]: s["departement"] for s in SCHOOLS}


def state_of(kit_id: str) -> str:
    """The reference: revoked, online (live/problem) or offline, as docs/provisioning.md says."""
    row = next(k for k in KITS if k["id"] == kit_id)
    values = STATES[kit_id]
    if row["revoked_at"] is not None:
        return "revoked"
    return "online" if values.get("online") else "offline"


def matches(kit_id: str, state: str) -> bool:
    values, current = STATES[kit_id], state_of(kit_id)
    if state in ("online", "offline", "revoked"):
        return current == state
    if state == "problem":
        return current != "revoked" and bool(values.get("problems"))
    return current == "online" and values.get("session") == "live"  # live


def rank(kit_id: str) -> int:
    values, current = STATES[kit_id], state_of(kit_id)
    if current == "revoked":
        return 4
    if current == "offline":
        return 0
    return 1 if values.get("problems") else 2 if values.get("session") == "live" else 3


def expected(sort: str, order: str, ids: Sequence[str] | None = None) -> list[str]:
    rows = {k["id"]: k for k in KITS}
    chosen = list(ids) if ids is not None else list(rows)

    def where(i: str) -> tuple[Any, ...]:
        return (DEPARTEMENT[rows[i]["school_id"]], rows[i]["school_id"], rows[i]["name"])

    keys = {
        "departement": lambda i: (*where(i), i),
        "school": lambda i: (rows[i]["school_id"], rows[i]["name"], i),
        "name": lambda i: (rows[i]["name"], i),
        "last_seen": lambda i: (STATES[i].get("last_seen") or 0.0, i),
        "state": lambda i: (rank(i), *where(i), i),
    }
    return sorted(chosen, key=keys[sort], reverse=order == "desc")


@contextlib.asynccontextmanager
async def small_fleet(tmp_path: Path, db_url: str) -> AsyncIterator[LiveServer]:
    await seed(tmp_path, db_url, SCHOOLS, KITS)
    async with serving(server_options(tmp_path, db_url)) as live:
        await set_states(live, STATES)
        await live.admin(ROOT)
        yield live


async def listed(live: LiveServer, email: str, query: str = "") -> dict[str, Any]:
    status, body = await live.call(email, "GET", "/api/v1/kits" + query)
    assert status == 200, body
    return dict(body)


async def test_sorted_paginated_and_filtered_in_the_database(tmp_path: Path, db_url: str) -> None:
    async with small_fleet(tmp_path, db_url) as live:
        body = await listed(live, ROOT)
        assert [k["id"] for k in body["kits"]] == expected("departement", "asc")
        assert (body["total"], body["limit"], body["offset"]) == (6, 100, 0)
        assert body["server_time"] > 0
        for sort in ("departement", "school", "name", "last_seen", "state"):
            for order in ("asc", "desc"):
                pages: list[str] = []
                for offset in range(0, 6, 4):  # two pages of 4
                    query = f"?sort={sort}&order={order}&limit=4&offset={offset}"
                    page = await listed(live, ROOT, query)
                    assert page["total"] == 6 and page["limit"] == 4
                    pages += [k["id"] for k in page["kits"]]
                assert pages == expected(sort, order), (sort, order)

        for state in ("online", "offline", "problem", "live", "revoked"):
            body = await listed(live, ROOT, f"?state={state}&sort=name")
            want = [i for i in expected("name", "asc") if matches(i, state)]
            assert [k["id"] for k in body["kits"]] == want, state
            assert body["total"] == len(want)
        assert (await listed(live, ROOT, "?departement=75"))["total"] == 3
        body = await listed(live, ROOT, "?departement=75&state=online&sort=last_seen&order=desc")
        assert [k["id"] for k in body["kits"]] == ["kit-a2", "kit-a1"]
        assert [k["id"] for k in (await listed(live, ROOT, "?school=0691111B"))["kits"]] == [
            "kit-c2",
            "kit-c1",
        ]
        searches = {
            "salle 10": {"kit-a1", "kit-a2"},  # any case
            "0%": {"kit-c1"},  # % is a character, not a wildcard
            "_1": {"kit-b1"},  # and _ too
            "sévigné": {"kit-b1"},  # the school's name
            "0691111": {"kit-c1", "kit-c2"},  # its code
            "KIT-D": {"kit-d1"},  # the kit's id
            "nothing like it": set(),
        }
        for text, ids in searches.items():
            body = await listed(live, ROOT, "?" + urlencode({"q": text}))
            assert {k["id"] for k in body["kits"]} == ids, text
        assert (await listed(live, ROOT, "?offset=6"))["kits"] == []

        # The summaries: the database's latest state, the network part of the latest report.
        kits = {k["id"]: k for k in (await listed(live, ROOT))["kits"]}
        a2 = kits["kit-a2"]
        assert a2["online"] and a2["session"] == "live" and a2["problems"] == ["document"]
        assert a2["network"] == {
            "reach": "udp",
            "turn_error": "",
            "probed_at": 1.0,
            "paths": {"relay/tcp": 2},
        }
        assert a2["config"]["desired"] == live.server.fleet.kits["kit-a2"].desired_version != ""
        assert kits["kit-b1"]["network"] is None and kits["kit-d1"]["last_seen"] is None
        assert kits["kit-b1"]["offline_since"] == 510.0 and kits["kit-c2"]["revoked"]
        # The kit page is unchanged: memory, history and layers.
        status, one = await live.call(ROOT, "GET", "/api/v1/kits/kit-a1?history=5")
        assert status == 200 and one["id"] == "kit-a1" and one["history"] == []
        assert one["layers"] == {"fleet": {}, "school": {}, "kit": {}}


async def test_scopes_are_where_clauses(tmp_path: Path, db_url: str) -> None:
    async with small_fleet(tmp_path, db_url) as live:
        await live.admin("dept@example.fr", "departement", "75")
        await live.admin("tech@example.fr", "school", "0691111B")
        body = await listed(live, "dept@example.fr")
        assert [k["id"] for k in body["kits"]] == ["kit-a1", "kit-a2", "kit-b1"]
        assert (await listed(live, "dept@example.fr", "?departement=69"))["total"] == 0
        assert (await listed(live, "dept@example.fr", "?q=labo"))["kits"] == []
        body = await listed(live, "tech@example.fr", "?sort=state")
        assert [k["id"] for k in body["kits"]] == ["kit-c1", "kit-c2"] and body["total"] == 2
        assert (await listed(live, "tech@example.fr", "?school=0751234A"))["total"] == 0

        status, counts = await live.call("tech@example.fr", "GET", "/api/v1/kits/counts")
        assert status == 200
        assert [s["id"] for s in counts["schools"]] == ["0691111B"]
        assert counts["total"] == {"kits": 2, "online": 1, "live": 1, "problem": 0, "revoked": 1}
        status, counts = await live.call("dept@example.fr", "GET", "/api/v1/kits/counts")
        assert [d["departement"] for d in counts["departements"]] == ["75"]
        status, schools = await live.call("dept@example.fr", "GET", "/api/v1/schools")
        assert [s["id"] for s in schools["schools"]] == ["0750000E", "0751234A", "0759999Z"]


async def test_counts_per_departement_and_school_match_the_list(
    tmp_path: Path, db_url: str
) -> None:
    async with small_fleet(tmp_path, db_url) as live:
        status, counts = await live.call(ROOT, "GET", "/api/v1/kits/counts")
        assert status == 200
        schools = {s["id"]: s for s in counts["schools"]}
        assert list(schools) == ["2A00001X", "0691111B", "0750000E", "0751234A", "0759999Z"]
        assert schools["0750000E"] == {
            "id": "0750000E",
            "name": "École vide",
            "departement": "75",
            "kits": 0,
            "online": 0,
            "live": 0,
            "problem": 0,
            "revoked": 0,
            "reach": "",
        }, "a school without a kit is listed"
        assert schools["0751234A"]["reach"] == "none", "the most restrictive of its kits"
        assert schools["0691111B"]["reach"] == "turn-tcp", "a revoked kit's report is not counted"
        assert schools["0759999Z"]["reach"] == "" and schools["2A00001X"]["reach"] == ""
        # Every count is what the list's filter finds.
        for school in counts["schools"]:
            query = f"?school={school['id']}"
            assert school["kits"] == (await listed(live, ROOT, query))["total"]
            for name, state in (("online", "online"), ("live", "live"), ("problem", "problem")):
                found = (await listed(live, ROOT, f"{query}&state={state}"))["total"]
                assert school[name] == found, (school["id"], name)
        for dep in counts["departements"]:
            body = await listed(live, ROOT, f"?departement={dep['departement']}&state=revoked")
            assert dep["revoked"] == body["total"]
            mine = [s for s in counts["schools"] if s["departement"] == dep["departement"]]
            assert dep["kits"] == sum(s["kits"] for s in mine)
        assert [d["departement"] for d in counts["departements"]] == ["2A", "69", "75"]
        assert counts["total"] == {"kits": 6, "online": 3, "live": 2, "problem": 1, "revoked": 1}
        # An admin's change shows at once (answers are kept 1 s only when nothing changed).
        moved = {"school": "0750000E"}
        assert (await live.call(ROOT, "PATCH", "/api/v1/kits/kit-b1", moved))[0] == 200
        status, counts = await live.call(ROOT, "GET", "/api/v1/kits/counts")
        schools = {s["id"]: s for s in counts["schools"]}
        assert schools["0750000E"]["kits"] == 1 and schools["0759999Z"]["kits"] == 0


BAD_QUERIES = {
    "?sort=colour": "sort must be one of",
    "?order=up": "order must be one of",
    "?state=sleeping": "state must be one of",
    "?limit=0": "limit must be an integer from 1 to 500",
    "?limit=501": "limit must be",
    "?limit=ten": "limit must be",
    "?offset=-1": "offset must be",
    "?departement=Paris": "departement is not a valid",
    "?school=a%2Fb": "school is not a valid",
    "?sort=name&sort=state": "more than once",
    "?colour=red": "unknown query parameter 'colour'",
    "?q=" + "x" * 101: "q must be printable text",
    "?q=a%00b": "q must be printable text",
}


async def test_bad_query_parameters_get_a_clear_400(tmp_path: Path, db_url: str) -> None:
    async with small_fleet(tmp_path, db_url) as live:
        for query, message in BAD_QUERIES.items():
            status, body = await live.call(ROOT, "GET", "/api/v1/kits" + query)
            assert status == 400 and message in body["error"], (query, body)
        status, body = await live.call(ROOT, "GET", "/api/v1/kits/counts?x=1")
        assert status == 400 and "no query parameter" in body["error"]
        async with live.http.get(live.url + "/api/v1/kits/counts") as response:
            assert response.status == 401, "sign in first"
        status, _ = await live.call(ROOT, "GET", "/api/v1/kits?state=&q=&departement=")
        assert status == 200, "empty filters are no filters"


# -- 15,000 kits ----------------------------------------------------------------------------------

FLEET_KITS = 15_000
FLEET_SCHOOLS = 3_000
DEPARTEMENTS = ("02", "13", "18", "2A", "33", "59", "69", "75", "87", "93", "971", "974")
"""12 départements, 250 schools of 5 kits each: the programme's shape at fleet size."""


def fleet_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    schools = [
        {
            "id": f"{DEPARTEMENTS[i % 12]}{i:05d}S",
            "name": f"Établissement {i:05d}",
            "departement": DEPARTEMENTS[i % 12],
            "created_at": 1.0,
        }
        for i in range(FLEET_SCHOOLS)
    ]
    texts = [health_text(reach, i == 1) for i, reach in enumerate(("udp", "turn-tcp", "none"))]
    kits = [
        kit_row(
            f"kit-{i:06d}",
            f"Salle {i:05d}",
            schools[i % FLEET_SCHOOLS]["id"],
            health=texts[i % 3],
            software="1.4.2",
            last_seen=1_700_000_000.0 + i,
            revoked_at=5.0 if i % 97 == 0 else None,
        )
        for i in range(FLEET_KITS)
    ]
    return schools, kits


async def fleet_states(live: LiveServer) -> None:
    """90 % online, a tenth of them in a class, some with a device problem (set in SQL)."""
    kits = tables.kits
    async with live.server.engine.begin() as conn:
        await conn.execute(
            kits.update().where(~kits.c.name.like("%7")).values(online=True, session="idle")
        )
        await conn.execute(kits.update().where(kits.c.name.like("%3")).values(session="live"))
        await conn.execute(kits.update().where(kits.c.name.like("%15")).values(problems="camera"))


@contextlib.contextmanager
def server_gc(live: LiveServer) -> Iterator[None]:
    """The garbage collector and switch interval as ``kit-provisioning serve`` sets them
    (:func:`provisioning.server.tune_gc`: with 15,000 kits in memory a default full collection
    pauses the loop ~0.2 s), restored for the other tests."""
    thresholds, interval, callbacks = gc.get_threshold(), sys.getswitchinterval(), gc.callbacks[:]
    tune_gc(live.server)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)
        gc.callbacks[:] = callbacks


@contextlib.asynccontextmanager
async def big_fleet(tmp_path: Path, db_url: str) -> AsyncIterator[LiveServer]:
    started = time.perf_counter()
    schools, kits = fleet_rows()
    await seed(tmp_path, db_url, schools, kits)
    seeded = time.perf_counter()
    async with serving(server_options(tmp_path, db_url)) as live:
        with server_gc(live):
            await fleet_states(live)
            await live.admin(ROOT)
            up = time.perf_counter() - seeded
            print(f"\n{FLEET_KITS} kits seeded in {seeded - started:.1f} s, up in {up:.1f} s")
            yield live


async def timed_get(live: LiveServer, path: str) -> tuple[float, bytes]:
    live.runner.app[api.COUNTS_KEY].forget()  # counted again each time: the full cost
    started = time.perf_counter()
    async with live.clients[ROOT].get(live.url + path) as response:
        assert response.status == 200, await response.text()
        body = await response.read()
    return time.perf_counter() - started, body


PAGES = (
    "/api/v1/kits",
    "/api/v1/kits?sort=state",
    "/api/v1/kits?sort=last_seen&order=desc&offset=14000",
    "/api/v1/kits?state=problem&departement=75",
    "/api/v1/kits?q=salle%20012&sort=name",
    "/api/v1/kits?limit=500&sort=school&order=desc",
)


@pytest.mark.slow
async def test_15000_kits_a_page_is_quick_and_the_loop_is_never_held(
    tmp_path: Path, db_url: str
) -> None:
    async with big_fleet(tmp_path, db_url) as live:
        for path in PAGES:
            await timed_get(live, path)  # warm: statement caches, pages of the database
        times: dict[str, float] = {}
        for path in (*PAGES, "/api/v1/kits/counts", "/api/v1/schools"):
            times[path] = min([(await timed_get(live, path))[0] for _ in range(3)])
            print(f"  {path}: {times[path] * 1000:.0f} ms")
        _, body = await timed_get(live, "/api/v1/kits/counts")
        assert b'"kits": 15000' in body
        assert max(times.values()) < 1.0, times

        # Each probe: how late a 5 ms sleep wakes (wall time: other processes of a shared
        # machine count too), and how much CPU the loop's thread spent meanwhile running
        # callbacks: what a request holds the loop for, whatever the machine's load.
        lags: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                started, cpu = time.perf_counter(), time.thread_time()
                await asyncio.sleep(0.005)
                lags.append((time.perf_counter() - started - 0.005, time.thread_time() - cpu))

        probing = asyncio.create_task(probe())
        await asyncio.sleep(0.05)
        try:
            for i in range(20):
                await timed_get(live, PAGES[i % len(PAGES)])
                await timed_get(live, "/api/v1/kits/counts")
        finally:
            stop.set()
            await probing
        late, held = [w for w, _ in lags], [c for _, c in lags]
        kind = db_url.split(":")[0] or "sqlite"
        print(
            f"  loop during 20 list+counts at {FLEET_KITS} kits ({kind}, "
            f"{len(lags)} probes): held max {max(held) * 1000:.1f} ms (CPU of the loop's thread), "
            f"late max {max(late) * 1000:.1f} ms, median {statistics.median(late) * 1000:.2f} ms "
            f"(wall; load average {os.getloadavg()[0]:.1f})"
        )
        assert max(held) < 0.050, "an admin request held the event loop"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_dashboard_first_paint_at_15000_kits(tmp_path: Path, db_url: str) -> None:
    from playwright.async_api import expect

    from tests.kiosk.test_accessibility import violations

    async with big_fleet(tmp_path, db_url) as live, admin_page(live.url, ROOT) as (page, errors):
        rows = page.locator("#kits tbody tr")
        await expect(rows).to_have_count(100)
        paints = []
        for _ in range(3):  # the dashboard opened again, signed in: navigation → painted
            await page.goto("about:blank")
            started = time.perf_counter()
            await page.goto(live.url + "/admin/#/")
            await expect(rows.first).to_be_visible()
            await expect(page.locator(".departement h2").first).to_be_visible()
            wall = time.perf_counter() - started
            mark = await page.evaluate(
                "performance.getEntriesByName('kit-list-painted')[0]?.startTime ?? -1"
            )
            paints.append((wall, mark / 1000))
            await expect(rows).to_have_count(100)
        print(
            "  first paint at 15,000 kits: "
            + ", ".join(f"{w * 1000:.0f} ms (page's own mark {m * 1000:.0f} ms)" for w, m in paints)
        )
        assert min(w for w, _ in paints) <= 2.0, paints
        assert await page.locator(".departement").count() == 12
        await expect(page.locator("#summary")).to_contain_text(re.compile(r"sur 15\s000"))
        await expect(page.locator("#page-info")).to_have_text(
            re.compile(r"Kits 1 à 100 sur 15\s000")
        )

        # Sort, filter and page through the fleet from the table.
        await page.click('#kits th button[data-sort="name"]')
        await expect(rows.first).to_contain_text("Salle 00000")
        await page.click('#kits th button[data-sort="name"]')
        await expect(rows.first).to_contain_text("Salle 14999")
        await page.select_option("#kit-state", "problem")
        await expect(page.locator("#page-info")).to_contain_text("sur ")
        await expect(rows.first.locator("td.problems")).to_contain_text("camera")
        await page.select_option("#kit-state", "")
        await page.click("#page-next")
        await expect(page.locator("#page-info")).to_have_text(
            re.compile(r"Kits 101 à 200 sur 15\s000")
        )
        await page.click('.departement[data-departement="75"] summary')
        school = page.locator('.departement[data-departement="75"] .school').first
        await school.get_by_role("button").click()
        await expect(page.locator("#page-info")).to_have_text("Kits 1 à 5 sur 5")
        assert await violations(page) == []
        assert not errors, errors
