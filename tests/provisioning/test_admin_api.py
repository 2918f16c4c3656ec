"""Admin accounts, sessions, CSRF, rate limiting, scopes, audit and the OpenAPI description."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from provisioning import api

from .conftest import ADMIN_PASSWORD, AgentMaker, LiveServer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


async def test_scopes_school_technician_and_departement(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    await live_server.school("0751234A", "75")
    await live_server.school("0759999Z", "75")
    await live_server.school("0691111B", "69")
    a = await linked_agent(school="0751234A", name="A")
    b = await linked_agent(school="0759999Z", name="B")
    c = await linked_agent(school="0691111B", name="C")
    await live_server.admin("tech@example.fr", "school", "0751234A")
    await live_server.admin("dept@example.fr", "departement", "75")
    await live_server.admin("root@example.fr")

    async def visible(email: str) -> set[str]:
        status, body = await live_server.call(email, "GET", "/api/v1/kits")
        assert status == 200
        return {k["id"] for k in body["kits"]}

    assert await visible("tech@example.fr") == {a.kit_id}
    assert await visible("dept@example.fr") == {a.kit_id, b.kit_id}
    assert await visible("root@example.fr") == {a.kit_id, b.kit_id, c.kit_id}
    tech = "tech@example.fr"
    assert (await live_server.call(tech, "GET", f"/api/v1/kits/{b.kit_id}"))[0] == 404
    assert (await live_server.call(tech, "POST", f"/api/v1/kits/{b.kit_id}/revoke"))[0] == 404
    assert (
        await live_server.call(tech, "PATCH", f"/api/v1/kits/{a.kit_id}", {"school": "0759999Z"})
    )[0] == 403
    code_for_other = {"school": "0691111B"}
    assert (
        await live_server.call(
            "dept@example.fr", "POST", "/api/v1/enrollment-codes", code_for_other
        )
    )[0] == 403
    assert (await live_server.call(tech, "PUT", "/api/v1/config/fleet/default", {}))[0] == 403
    assert (await live_server.call(tech, "GET", "/api/v1/users"))[0] == 403
    status, body = await live_server.call(
        tech, "POST", "/api/v1/enrollment-codes", {"school": "0751234A", "uses": 3}
    )
    assert status == 201 and len(body["code"]) == 19
    # Rename and move within scope.
    status, body = await live_server.call(
        "dept@example.fr",
        "PATCH",
        f"/api/v1/kits/{a.kit_id}",
        {"name": "Salle 3", "school": "0759999Z"},
    )
    assert status == 200 and body["name"] == "Salle 3" and body["school"] == "0759999Z"
    assert await visible(tech) == set()
    status, kit = await live_server.call(
        "root@example.fr", "GET", f"/api/v1/kits/{b.kit_id}?history=5"
    )
    assert status == 200 and kit["online"] and kit["health"]["devices"]["camera"]["state"] == "ok"
    assert 1 <= len(kit["history"]) <= 5
    entries = (await live_server.call("root@example.fr", "GET", "/api/v1/audit"))[1]["entries"]
    actions = [(e["actor"], e["action"]) for e in entries]
    assert ("dept@example.fr", "kit.update") in actions
    assert ("tech@example.fr", "enrollment_code.create") in actions
    assert ("tech@example.fr", "login") in actions
    own = (await live_server.call(tech, "GET", "/api/v1/audit"))[1]["entries"]
    assert own and {e["actor"] for e in own} == {tech}


async def test_csrf_sessions_and_login_rate_limit(live_server: LiveServer) -> None:
    root = "root@example.fr"
    await live_server.admin(root)
    await live_server.school("0751234A")
    body = {"school": "0751234A"}
    status, error = await live_server.call(
        root, "POST", "/api/v1/enrollment-codes", body, csrf=False
    )
    assert status == 403 and "CSRF" in error["error"]
    assert (await live_server.call(root, "GET", "/api/v1/me"))[0] == 200  # reads need no token
    async with live_server.http.get(live_server.url + "/api/v1/kits") as response:
        assert response.status == 401  # no session cookie
    login = live_server.url + "/api/v1/login"
    statuses = []
    for _ in range(6):
        async with live_server.http.post(
            login, json={"email": root, "password": "wrong password"}
        ) as r:
            statuses.append(r.status)
            retry = r.headers.get("Retry-After")
    assert statuses == [401] * 5 + [429] and retry is not None
    async with live_server.http.post(login, json={"email": root, "password": ADMIN_PASSWORD}) as r:
        assert r.status == 429, "the right password is refused too while limited"
    assert (await live_server.call(root, "POST", "/api/v1/logout"))[0] == 200
    assert (await live_server.call(root, "GET", "/api/v1/me"))[0] == 401


async def test_add_admin_and_school_through_the_api(live_server: LiveServer) -> None:
    root = "root@example.fr"
    await live_server.admin(root)
    new = {"email": "Tech@Example.fr", "password": "short", "role": "school", "scope": "0751234A"}
    status, error = await live_server.call(root, "POST", "/api/v1/users", new)
    assert status == 400 and "password" in error["error"]
    new["password"] = "long enough password"
    status, error = await live_server.call(root, "POST", "/api/v1/users", new)
    assert status == 400 and "no school" in error["error"], "a typo would make a blind account"
    school = {"id": "0751234A", "name": "Lycée Test", "departement": "75"}
    assert (await live_server.call(root, "POST", "/api/v1/schools", school))[0] == 201
    assert (await live_server.call(root, "POST", "/api/v1/schools", school))[0] == 409
    bad = {**school, "id": "x/../y"}
    assert (await live_server.call(root, "POST", "/api/v1/schools", bad))[0] == 400
    assert (await live_server.call(root, "POST", "/api/v1/users", new))[0] == 201
    assert (await live_server.call(root, "POST", "/api/v1/users", new))[0] == 409
    dept = {**new, "email": "dept@example.fr", "role": "departement", "scope": "Paris"}
    status, error = await live_server.call(root, "POST", "/api/v1/users", dept)
    assert status == 400 and "département" in error["error"]
    assert (await live_server.call(root, "POST", "/api/v1/users", {**dept, "scope": "2A"}))[
        0
    ] == 201


async def test_removing_an_admin_ends_its_sessions_at_once(live_server: LiveServer) -> None:
    root, dept = "root@example.fr", "dept@example.fr"
    await live_server.admin(root)
    await live_server.admin(dept, "departement", "75")
    users = (await live_server.call(root, "GET", "/api/v1/users"))[1]["users"]
    ids = {u["email"]: u["id"] for u in users}
    assert (await live_server.call(dept, "DELETE", f"/api/v1/users/{ids[root]}"))[0] == 403
    status, error = await live_server.call(root, "DELETE", f"/api/v1/users/{ids[root]}")
    assert status == 409 and "own account" in error["error"]
    for bad in ("999999", "abc", "-1", "1" * 40):
        assert (await live_server.call(root, "DELETE", f"/api/v1/users/{bad}"))[0] == 404
    status, _ = await live_server.call(root, "DELETE", f"/api/v1/users/{ids[dept]}", csrf=False)
    assert status == 403, "CSRF applies"
    assert (await live_server.call(root, "DELETE", f"/api/v1/users/{ids[dept]}"))[0] == 200
    assert (await live_server.call(dept, "GET", "/api/v1/kits"))[0] == 401, "session ended"
    assert (await live_server.call(root, "DELETE", f"/api/v1/users/{ids[dept]}"))[0] == 404
    async with live_server.http.post(
        live_server.url + "/api/v1/login", json={"email": dept, "password": ADMIN_PASSWORD}
    ) as response:
        assert response.status == 401
    entries = (await live_server.call(root, "GET", "/api/v1/audit"))[1]["entries"]
    assert (root, "user.remove", dept) in [(e["actor"], e["action"], e["target"]) for e in entries]


async def test_changing_ones_password_ends_the_other_sessions(live_server: LiveServer) -> None:
    me = "tech@example.fr"
    await live_server.school("0751234A")
    await live_server.admin(me, "school", "0751234A")
    other = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # another browser
    try:
        login = live_server.url + "/api/v1/login"
        async with other.post(login, json={"email": me, "password": ADMIN_PASSWORD}) as r:
            assert r.status == 200
        path = "/api/v1/me/password"
        wrong = {"current": "not my password", "new": "a brand new password"}
        status, error = await live_server.call(me, "POST", path, wrong)
        assert status == 403 and "current password" in error["error"]
        short = {"current": ADMIN_PASSWORD, "new": "short"}
        assert (await live_server.call(me, "POST", path, short))[0] == 400
        assert (await live_server.call(me, "POST", path, {"current": ADMIN_PASSWORD}))[0] == 400
        good = {"current": ADMIN_PASSWORD, "new": "a brand new password"}
        assert (await live_server.call(me, "POST", path, good, csrf=False))[0] == 403
        assert (await live_server.call(me, "POST", path, good))[0] == 200
        assert (await live_server.call(me, "GET", "/api/v1/kits"))[0] == 200, "this one stays"
        async with other.get(live_server.url + "/api/v1/me") as r:
            assert r.status == 401, "the other session ended"
        async with other.post(login, json={"email": me, "password": ADMIN_PASSWORD}) as r:
            assert r.status == 401
        async with other.post(login, json={"email": me, "password": good["new"]}) as r:
            assert r.status == 200
    finally:
        await other.close()
    actions = [
        e["action"] for e in (await live_server.call(me, "GET", "/api/v1/audit"))[1]["entries"]
    ]
    assert "user.password" in actions and "user.password.failed" in actions


async def test_guessing_the_current_password_is_rate_limited(live_server: LiveServer) -> None:
    me = "root@example.fr"
    await live_server.admin(me)
    wrong = {"current": "not my password", "new": "a brand new password"}
    statuses = [
        (await live_server.call(me, "POST", "/api/v1/me/password", wrong))[0] for _ in range(6)
    ]
    assert statuses == [403] * 5 + [429]


async def test_the_live_stream_ends_with_the_session(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "SESSION_RECHECK_S", 0.2)
    root, dept = "root@example.fr", "dept@example.fr"
    await live_server.admin(root)
    await live_server.admin(dept, "departement", "75")
    async with live_server.clients[dept].get(live_server.url + "/api/v1/events") as stream:
        assert stream.status == 200
        assert await stream.content.readline() == b"retry: 2000\n"
        await asyncio.sleep(0.5)  # rechecked at least once: still signed in, still open
        assert not stream.content.at_eof()
        users = (await live_server.call(root, "GET", "/api/v1/users"))[1]["users"]
        [dept_id] = [u["id"] for u in users if u["email"] == dept]
        assert (await live_server.call(root, "DELETE", f"/api/v1/users/{dept_id}"))[0] == 200
        async with asyncio.timeout(5):
            rest = await stream.content.read()  # to the end of the stream
    assert b"event: signedout\n" in rest
