"""Fuzzing the REST API's bodies (provisioning/api.py): the enrollment body a kit sends, and
every admin body (sign-in, schools, enrollment codes, admins, passwords, kits, configuration).

First ``read_json`` alone for every model of ``BODY_MODELS`` (fast: no database), then the real
handlers of a live server (SQLite) with a signed-in national admin. Inputs are valid bodies
mutated byte by byte and value by value, deep JSON, any JSON value and raw bytes. Every request
must end in a documented status (2xx, 400, 401, 403, 404, 409, 413, 415, 429), never a 500;
an accepted body must dump back to strict JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning import store
from provisioning.api import BODY_MODELS, MAX_BODY, read_json
from provisioning.auth import hash_password
from provisioning.errors import RequestError
from tests.conftest import LOOPBACK
from tests.fuzz import bounded, examples, network_bytes, strict_json

from .conftest import ADMIN_PASSWORD, server_options, start_server, stop_server

SCHOOL = "0751234A"
VALID: dict[str, list[dict[str, Any]]] = {
    "Login": [{"email": "admin@example.fr", "password": ADMIN_PASSWORD}],
    "KitPatch": [{"name": "Salle 12", "school": SCHOOL}, {"name": "Salle 3"}],
    "School": [{"id": "0751235B", "name": "École Jaurès", "departement": "75"}],
    "EnrollmentCode": [{"school": SCHOOL, "uses": 3, "expires_s": 3600}],
    "Enroll": [{"code": "ABCD-EFGH-IJKL", "name": "Salle 4"}],
    "User": [{"email": "tech@example.fr", "password": "a long enough password",
              "role": "school", "scope": SCHOOL}],
    "Password": [{"current": ADMIN_PASSWORD, "new": "another long password"}],
    "Config": [{"camera": {"fps": 15, "width": 1280}, "webrtc": {"ice_servers": [
        {"urls": ["turn:turn.example.fr:3478"], "username": "u", "credential": "c"}]}}],
}  # fmt: skip
ALLOWED = {200, 201, 400, 401, 403, 404, 409, 413, 415, 429}


def _bodies(name: str) -> st.SearchStrategy[bytes]:
    seeds = VALID[name]
    return network_bytes([json.dumps(s).encode() for s in seeds], seeds, max_size=MAX_BODY)


class Loop:
    """An asyncio loop that Hypothesis's synchronous examples run requests in."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


# -- read_json, every model ---------------------------------------------------------------------


async def _parse(request: web.Request) -> web.Response:
    try:
        body = await read_json(request, BODY_MODELS[request.match_info["model"]])
    except RequestError as exc:
        return web.json_response({"error": exc.public_message}, status=exc.status)
    return web.Response(text=body.model_dump_json(), content_type="application/json")


@pytest.fixture(scope="module")
def parser() -> Iterator[tuple[Loop, str, aiohttp.ClientSession]]:
    loop = Loop()
    app = web.Application()
    app.router.add_post("/parse/{model}", _parse)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> tuple[str, aiohttp.ClientSession]:
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, 0).start()
        return f"http://{LOOPBACK}:{runner.addresses[0][1]}", aiohttp.ClientSession()

    url, http = loop.run(start())
    yield loop, url, http

    async def stop() -> None:
        await http.close()
        await runner.cleanup()

    loop.run(stop())
    loop.runner.close()


@pytest.mark.parametrize("name", sorted(VALID))
def test_read_json(parser: tuple[Loop, str, aiohttp.ClientSession], name: str) -> None:
    loop, url, http = parser
    assert set(VALID) == set(BODY_MODELS)

    async def post(body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        async with http.post(f"{url}/parse/{name}", data=body, headers=headers) as response:
            return response.status, await response.read()

    @settings(max_examples=examples(100))
    @given(_bodies(name))
    def bodies(body: bytes) -> None:
        with bounded(seconds=1.0, megabytes=32):
            status, answer = loop.run(post(body))
        assert status in (200, 400, 413), (status, answer[:200])
        parsed = strict_json(answer)
        if status == 400:
            assert 0 < len(parsed["error"]) <= 300

    bodies()


# -- the live server's handlers ------------------------------------------------------------------


class AnyLimit:
    """Stands in for the sign-in and enrollment limiters: the fuzzer's thousands of wrong
    bodies must reach the handlers, not a 429 (the limiters have tests of their own)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class LiveApi:
    def __init__(self, tmp_path: Path) -> None:
        self.loop = Loop()
        self.loop.run(self._start(tmp_path))

    async def _start(self, tmp_path: Path) -> None:
        self.server, self.runner, port = await start_server(server_options(tmp_path, ""))
        self.server.login_limiter = AnyLimit()  # type: ignore[assignment]
        self.server.enroll_limiter = AnyLimit()  # type: ignore[assignment]
        self.url = f"http://{LOOPBACK}:{port}"
        engine = self.server.engine
        await store.add_school(engine, SCHOOL, "École test", "75")
        await store.add_user(
            engine, "admin@example.fr", hash_password(ADMIN_PASSWORD), "national", "", "test"
        )
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        status, body = await self.call("POST", "/api/v1/login", json.dumps(VALID["Login"][0]))
        assert status == 200, body
        self.csrf = json.loads(body)["csrf"]
        code = await store.create_enrollment_code(engine, SCHOOL, 1, time.time() + 3600, "t")
        status, body = await self.call("POST", "/api/v1/enroll", json.dumps({"code": code}))
        assert status == 201, body
        self.kit_id = json.loads(body)["kit_id"]

    async def call(self, method: str, path: str, body: str | bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "X-CSRF-Token": getattr(self, "csrf", "")}
        async with self.http.request(method, self.url + path, data=body, headers=headers) as r:
            answer = await r.read()
        if path == "/api/v1/login" and r.status == 200:  # a new session: its own CSRF token
            self.csrf = json.loads(answer)["csrf"]
        return r.status, answer

    def close(self) -> None:
        async def stop() -> None:
            await self.http.close()
            await stop_server(self.server, self.runner)

        self.loop.run(stop())
        self.loop.runner.close()


ENDPOINTS = [
    ("POST", "/api/v1/enroll", "Enroll"),
    ("POST", "/api/v1/login", "Login"),
    ("POST", "/api/v1/schools", "School"),
    ("POST", "/api/v1/enrollment-codes", "EnrollmentCode"),
    ("POST", "/api/v1/users", "User"),
    ("POST", "/api/v1/me/password", "Password"),
    ("PATCH", "/api/v1/kits/{kit}", "KitPatch"),
    ("PUT", "/api/v1/config/fleet/default", "Config"),
    ("PUT", "/api/v1/config/school/" + SCHOOL, "Config"),
    ("PUT", "/api/v1/config/kit/{kit}", "Config"),
]


def _fuzz_endpoint(live: LiveApi, method: str, where: str, name: str) -> None:
    @settings(max_examples=examples(25))
    @given(_bodies(name))
    def bodies(body: bytes) -> None:
        with bounded(seconds=3.0, megabytes=64):
            status, answer = live.loop.run(live.call(method, where, body))
        assert status in ALLOWED, (method, where, status, answer[:300], body[:300])
        strict_json(answer)

    bodies()


def test_live_handlers(tmp_path: Path) -> None:
    live = LiveApi(tmp_path)
    try:
        for method, path, name in ENDPOINTS:
            _fuzz_endpoint(live, method, path.format(kit=live.kit_id), name)
        status, _ = live.loop.run(live.call("GET", "/healthz", b""))
        assert status == 200
    finally:
        live.close()


def test_an_unknown_key_is_not_echoed_whole(
    parser: tuple[Loop, str, aiohttp.ClientSession],
) -> None:
    """Found by the fuzzer: the 400 named an unknown field with the client's key, all 64 KiB
    of it (control characters included)."""
    loop, url, http = parser

    async def post() -> tuple[int, Any]:
        body = json.dumps({"name": "x", "\u0007" + "k" * 60_000: 1})
        headers = {"Content-Type": "application/json"}
        async with http.post(f"{url}/parse/KitPatch", data=body, headers=headers) as response:
            return response.status, await response.json()

    status, answer = loop.run(post())
    assert status == 400 and len(answer["error"]) < 120 and "\u0007" not in answer["error"]
