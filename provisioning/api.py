"""The REST API (``/api/v1``, described by ``/api/v1/openapi.json``).

Admins authenticate with ``POST /api/v1/login``: an HttpOnly, SameSite=Strict session cookie
plus a CSRF token that every state-changing request repeats in ``X-CSRF-Token``. Bodies are
JSON (``Content-Type: application/json``, at most 64 KiB), validated by the models below; a bad
body is a 400 naming the field. Every admin action is written to the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kitlink import PushedConfig
from kitsys.http import read_body

from . import kitlist, store
from .auth import (
    DEPARTEMENT,
    Admin,
    check_new_user,
    check_password,
    hash_password,
    verify_password_off_loop,
)
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from .fleet import LEVELS, Kit
from .forwarded import rate_key
from .server import Server

SERVER_KEY = web.AppKey("server", Server)
COOKIE = "kp_session"
ANONYMOUS = "anonymous"
"""The audit actor of what nobody signed in did (failed sign-ins: the e-mail is in detail)."""
MAX_BODY = 64 * 1024
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
M = TypeVar("M", bound=BaseModel)

SchoolId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginBody(_Body):
    email: Annotated[str, Field(max_length=200)]
    password: Annotated[str, Field(max_length=1000)]


class KitPatch(_Body):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    school: SchoolId | None = None


class SchoolBody(_Body):
    id: SchoolId
    name: Annotated[str, Field(min_length=1, max_length=200)]
    departement: Annotated[str, Field(pattern=DEPARTEMENT.pattern)]


class CodeBody(_Body):
    school: SchoolId
    uses: Annotated[int, Field(ge=1, le=10_000)] = 1
    expires_s: Annotated[int, Field(ge=60, le=90 * 86400)] = 7 * 86400


class EnrollBody(_Body):
    code: Annotated[str, Field(min_length=4, max_length=64)]
    name: Annotated[str, Field(max_length=200)] = ""


class UserBody(_Body):
    email: Annotated[str, Field(max_length=200)]
    password: Annotated[str, Field(max_length=1000)]
    role: str
    scope: Annotated[str, Field(max_length=32)] = ""


class PasswordBody(_Body):
    current: Annotated[str, Field(max_length=1000)]
    new: Annotated[str, Field(max_length=1000)]


BODY_MODELS: dict[str, type[BaseModel]] = {
    "Login": LoginBody,
    "KitPatch": KitPatch,
    "School": SchoolBody,
    "EnrollmentCode": CodeBody,
    "Enroll": EnrollBody,
    "User": UserBody,
    "Password": PasswordBody,
    "Config": PushedConfig,
}


# -- request helpers -------------------------------------------------------------------------------


async def read_json(request: web.Request, model: type[M]) -> M:
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    body = await read_body(request, MAX_BODY)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        # The path may hold a key the client sent (an unknown field): printable, 60 at most.
        where = "".join(c if c.isprintable() else "?" for c in where[:60])
        if first["type"] == "json_invalid":
            raise BadRequest("the body is not valid JSON") from None
        raise BadRequest(f"{where}: {first['msg']}") from None


def server_of(request: web.Request) -> Server:
    return request.app[SERVER_KEY]


def client_of(request: web.Request) -> str:
    """The address this request comes from: the connecting one, or behind a trusted proxy
    (``--trusted-proxy``) the client's it forwarded. Everything keyed on an address uses this."""
    addresses = server_of(request).addresses
    return addresses.of(request.remote, request.headers.getall(addresses.header, []))


async def admin_of(request: web.Request) -> Admin:
    """The signed-in admin; state-changing requests must also carry the CSRF token."""
    token = request.cookies.get(COOKIE, "")
    row = await store.session_user(server_of(request).engine, token, time.time()) if token else None
    if row is None:
        raise Unauthorized("sign in first")
    admin = Admin.from_row(row)
    if request.method in UNSAFE:
        sent = request.headers.get("X-CSRF-Token", "")
        if not sent or not hmac.compare_digest(sent, admin.csrf):
            raise Forbidden("missing or wrong CSRF token")
    return admin


def kit_in_scope(request: web.Request, admin: Admin) -> Kit:
    kit = server_of(request).fleet.kits.get(request.match_info["kit_id"])
    if kit is None or not admin.sees_kit(kit):
        raise NotFound("no such kit")
    return kit


# -- admin sessions --------------------------------------------------------------------------------


async def _account_if_password(
    request: web.Request, email: str, password: str
) -> dict[str, Any] | None:
    """The admin account ``email`` if ``password`` is its password, else None; growing
    delays per account and per client address (429 while one runs), for sign-in and password
    changes alike (provisioning/limits.py)."""
    server = server_of(request)
    address = rate_key(client_of(request))
    server.login_limiter.check(email, address)
    user = await store.user_by_email(server.engine, email)
    ok = await verify_password_off_loop(user["password_hash"] if user else None, password)
    if not ok or user is None:
        server.login_limiter.failed(email, address)
        return None
    server.login_limiter.succeeded(email)
    return user


async def login(request: web.Request) -> web.Response:
    server = server_of(request)
    body = await read_json(request, LoginBody)
    email = body.email.strip().lower()
    user = await _account_if_password(request, email, body.password)
    client = client_of(request)
    if user is None:
        # An attempt, not an action: the e-mail was typed by whoever tried, so it is no actor.
        detail = {"email": email, "ip": client}
        await store.audit(server.engine, ANONYMOUS, "login.failed", "", detail)
        raise Unauthorized("wrong email or password")
    now = time.time()
    token, csrf = await store.create_session(
        server.engine, user["id"], server.options.session_lifetime_s, now
    )
    await store.audit(server.engine, user["email"], "login", "", {"ip": client})
    admin = Admin.from_row({**user, "csrf": csrf})
    response = web.json_response({**admin.public(), "csrf": csrf})
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=server.options.public_url.startswith("https://"),
        path="/",
        max_age=int(server.options.session_lifetime_s),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    await store.delete_session(server_of(request).engine, request.cookies.get(COOKIE, ""))
    await store.audit(server_of(request).engine, admin.email, "logout", "", {})
    response = web.json_response({"ok": True})
    response.del_cookie(COOKIE, path="/")
    return response


async def me(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    return web.json_response({**admin.public(), "csrf": admin.csrf})


# -- kits ------------------------------------------------------------------------------------------


LIST_PARAMS = frozenset({"limit", "offset", "sort", "order", "departement", "school", "state", "q"})
MAX_PAGE = 500
MAX_OFFSET = 10_000_000
MAX_SEARCH = 100
SCHOOL_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return raw


def _matching(request: web.Request, name: str, pattern: re.Pattern[str]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not pattern.match(raw):
        raise BadRequest(f"{name} is not a valid {name} code")
    return raw


def kit_query(request: web.Request, admin: Admin) -> kitlist.KitQuery:
    """The list's query parameters, checked strictly (a 400 names the first bad one)."""
    unknown = sorted(set(request.query) - LIST_PARAMS)
    if unknown:
        shown = "".join(c if c.isprintable() else "?" for c in unknown[0][:40])
        raise BadRequest(f"unknown query parameter {shown!r}")
    for name in LIST_PARAMS:
        if len(request.query.getall(name, [])) > 1:
            raise BadRequest(f"{name} is given more than once")
    search = request.query.get("q", "").strip()
    if len(search) > MAX_SEARCH or not search.isprintable():
        raise BadRequest(f"q must be printable text of at most {MAX_SEARCH} characters")
    return kitlist.KitQuery(
        role=admin.role,
        scope=admin.scope,
        limit=_int_query(request, "limit", 100, 1, MAX_PAGE),
        offset=_int_query(request, "offset", 0, 0, MAX_OFFSET),
        sort=_choice(request, "sort", kitlist.KIT_SORTS) or "departement",
        order=_choice(request, "order", ("asc", "desc")) or "asc",
        departement=_matching(request, "departement", DEPARTEMENT),
        school=_matching(request, "school", SCHOOL_ID),
        state=_choice(request, "state", kitlist.KIT_STATES),
        q=search or None,
    )


NETWORK_KEY = '"network":{'
_decoder = json.JSONDecoder()


def network_part(health: str | None) -> dict[str, Any] | None:
    """The network part of a stored latest report, decoded alone (the rest of the report is
    not parsed: the list shows only this). The text is the server's compact JSON of a
    validated report; anything unreadable is shown as no network."""
    start = health.find(NETWORK_KEY) if health else -1
    if health is None or start < 0:
        return None
    try:
        value, _end = _decoder.raw_decode(health, start + len(NETWORK_KEY) - 1)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def row_summary(row: Any, desired_version: str) -> dict[str, Any]:
    """A kit's summary (as :meth:`Kit.summary`) from its row of :func:`kitlist.kit_page`."""
    return {
        "id": row.id,
        "name": row.name,
        "school": row.school_id,
        "departement": row.departement,
        "revoked": row.revoked_at is not None,
        "online": bool(row.online),
        "last_seen": row.last_seen,
        "offline_since": row.offline_since,
        "software": row.software,
        "problems": row.problems.split(),
        "session": row.session,
        "network": network_part(row.health),
        "config": {
            "desired": desired_version,
            "applied": row.applied_config,
            "status": row.config_status,
            "reason": row.config_reason,
        },
    }


JSON_CHUNK = 200
"""Items encoded per ``json.dumps`` call off the loop: the C encoder keeps the GIL for a whole
call, so one call over 3,000 items would stall the event loop ~8 ms; 200 take ~0.5 ms."""


def chunked_json(listed: str, items: Sequence[Any], others: dict[str, Any]) -> str:
    """``{listed: items, **others}`` as JSON text, encoded a chunk of items at a time."""
    parts = [json.dumps(items[i : i + JSON_CHUNK])[1:-1] for i in range(0, len(items), JSON_CHUNK)]
    rest = json.dumps(others)
    tail = ", " + rest[1:] if others else "}"
    return f'{{"{listed}": [{", ".join(p for p in parts if p)}]{tail}'


async def json_off_loop(
    build: Callable[[], tuple[str, Sequence[Any], dict[str, Any]]],
) -> web.Response:
    """A large answer built and encoded in a worker thread: the event loop only waits.

    Pure Python there still takes the GIL, but gives it back every switch interval (0.5 ms in
    ``kit-provisioning serve``), so links keep being served; measured at 15,000 kits in
    docs/provisioning.md ("Admin list")."""
    text = await asyncio.to_thread(lambda: chunked_json(*build()))
    return web.Response(text=text, content_type="application/json")


async def list_kits(request: web.Request) -> web.Response:
    """One page of the kits in scope, filtered, sorted and counted by the database
    (docs/provisioning.md, "Admin list")."""
    admin = await admin_of(request)
    query = kit_query(request, admin)
    server = server_of(request)
    rows, total = await kitlist.kit_page(server.engine, query)
    fleet = server.fleet.kits
    desired = [kit.desired_version if (kit := fleet.get(row.id)) else "" for row in rows]
    others = {"total": total, "limit": query.limit, "offset": query.offset}

    def build() -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        kits = [row_summary(row, version) for row, version in zip(rows, desired, strict=True)]
        return "kits", kits, {**others, "server_time": time.time()}

    return await json_off_loop(build)


def _summed(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {**extra, **{name: sum(r[name] for r in rows) for name in kitlist.COUNT_NAMES}}


COUNTS_FRESH_S = 1.0
"""Counts answered again from memory within this time, per scope: every open dashboard asks
after live changes (at most every 2 s each); reading the kits' reports for each school's
network is most of a count's ~100 ms at 15,000 kits, done once for all of them."""


@dataclass
class CountsCache:
    answers: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    def forget(self) -> None:
        """After an admin's change (a school added, a kit moved or revoked, one enrolled)."""
        self.answers.clear()


COUNTS_KEY = web.AppKey("kit_counts", CountsCache)


async def kit_counts(request: web.Request) -> web.Response:
    """Kits, online, live, problem and revoked per département and per school in scope, with
    each school's network class: one GROUP BY, no kit loaded."""
    admin = await admin_of(request)
    if request.query:
        raise BadRequest("this endpoint takes no query parameter")
    cache = request.app[COUNTS_KEY].answers
    key = (admin.role, admin.scope if admin.role != "national" else "")
    cached = cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < COUNTS_FRESH_S:
        return web.Response(text=cached[1], content_type="application/json")
    asked = time.monotonic()
    rows = await kitlist.kit_counts(server_of(request).engine, admin.role, admin.scope)

    def build() -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        schools = kitlist.count_dicts(rows)
        by_departement: dict[str, list[dict[str, Any]]] = {}
        for school in schools:
            by_departement.setdefault(school["departement"], []).append(school)
        departements = [_summed(rows, departement=d) for d, rows in by_departement.items()]
        others = {"total": _summed(schools), "departements": departements}
        return "schools", schools, {**others, "server_time": time.time()}

    response = await json_off_loop(build)
    assert response.text is not None
    if len(cache) > 1000:
        cache.clear()
    cache[key] = (asked, response.text)
    return response


async def get_kit(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    server = server_of(request)
    kit = kit_in_scope(request, admin)
    limit = _int_query(request, "history", 60, 1, 2000)
    history = await kitlist.health_history_json(server.engine, kit.id, limit)
    body = {
        **kit.summary(),
        "desired_config": kit.desired,
        "layers": {
            "fleet": server.fleet.layers.get(("fleet", ""), {}),
            "school": server.fleet.layers.get(("school", kit.school_id), {}),
            "kit": server.fleet.layers.get(("kit", kit.id), {}),
        },
    }
    # The stored texts are the server's own validated JSON: spliced in, not parsed again.
    health = kit.health or "null"
    text = f'{json.dumps(body)[:-1]}, "health": {health}, "history": {history}}}'
    return web.Response(text=text, content_type="application/json")


async def patch_kit(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    server = server_of(request)
    kit = kit_in_scope(request, admin)
    body = await read_json(request, KitPatch)
    school = None
    if body.school is not None:
        school = admin.require_school(await store.get_school(server.engine, body.school))
    before = {"name": kit.name, "school": kit.school_id}
    await server.fleet.change(kit, body.name, school)
    detail = {"before": before, "after": {"name": kit.name, "school": kit.school_id}}
    await store.audit(server.engine, admin.email, "kit.update", kit.id, detail)
    request.app[COUNTS_KEY].forget()
    return web.json_response(kit.summary())


async def revoke_kit(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    server = server_of(request)
    kit = kit_in_scope(request, admin)
    if not kit.revoked:
        await server.fleet.revoke(kit)
        await store.audit(server.engine, admin.email, "kit.revoke", kit.id, {"name": kit.name})
        request.app[COUNTS_KEY].forget()
    return web.json_response(kit.summary())


async def turn_settings(request: web.Request) -> web.Response:
    """The fleet's TURN settings as configured at start-up: URLs, derived STUN URLs, credential
    lifetimes and whether a secret is set (never the secret)."""
    await admin_of(request)
    return web.json_response(server_of(request).ice.public())


# -- schools, enrollment ---------------------------------------------------------------------------


async def list_schools(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    rows = await kitlist.schools_in_scope(server_of(request).engine, admin.role, admin.scope)
    return await json_off_loop(lambda: ("schools", [dict(r._mapping) for r in rows], {}))


async def add_school(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    server = server_of(request)
    body = await read_json(request, SchoolBody)
    if admin.role == "school" or not admin.sees_school(body.model_dump()):
        raise Forbidden("that school is not in your scope")
    if await store.get_school(server.engine, body.id) is not None:
        raise Conflict("a school with this id exists")
    await store.add_school(server.engine, body.id, body.name, body.departement)
    await store.audit(server.engine, admin.email, "school.add", body.id, body.model_dump())
    request.app[COUNTS_KEY].forget()
    return web.json_response(body.model_dump(), status=201)


async def create_code(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    server = server_of(request)
    body = await read_json(request, CodeBody)
    admin.require_school(await store.get_school(server.engine, body.school))
    expires_at = time.time() + body.expires_s
    code = await store.create_enrollment_code(
        server.engine, body.school, body.uses, expires_at, admin.email
    )
    return web.json_response(
        {"code": code, "school": body.school, "uses": body.uses, "expires_at": expires_at},
        status=201,
    )


async def enroll(request: web.Request) -> web.Response:
    """A kit exchanges an enrollment code for its identity (no admin session)."""
    server = server_of(request)
    key = rate_key(client_of(request))
    server.enroll_limiter.check(key)
    body = await read_json(request, EnrollBody)
    result = await store.enroll(server.engine, body.code, body.name.strip(), time.time())
    if result is None:
        server.enroll_limiter.failed(key)
        raise Forbidden("this enrollment code is unknown, expired or used up")
    row, secret = result
    kit = server.fleet.add(row)
    request.app[COUNTS_KEY].forget()
    return web.json_response(
        {"kit_id": kit.id, "secret": secret, "name": kit.name, "school": kit.school_id},
        status=201,
    )


# -- configuration ---------------------------------------------------------------------------------


async def _config_scope(request: web.Request, admin: Admin) -> tuple[str, str]:
    level, scope_id = request.match_info["level"], request.match_info["scope_id"]
    server = server_of(request)
    if level not in LEVELS:
        raise NotFound("level must be fleet, school or kit")
    if level == "fleet":
        if scope_id != "default":
            raise NotFound("the fleet level has one scope: default")
        if request.method != "GET":
            admin.require_national()
        return level, ""
    if level == "school":
        school = admin.require_school(await store.get_school(server.engine, scope_id))
        if request.method != "GET" and admin.role == "school":
            raise Forbidden("a school technician sets the configuration of kits, not schools")
        return level, school["id"]
    kit = server.fleet.kits.get(scope_id)
    if kit is None or not admin.sees_kit(kit):
        raise NotFound("no such kit")
    return level, kit.id


async def get_config(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    level, scope_id = await _config_scope(request, admin)
    return web.json_response(server_of(request).fleet.layers.get((level, scope_id), {}))


async def put_config(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    level, scope_id = await _config_scope(request, admin)
    body = await read_json(request, PushedConfig)
    pushed = await server_of(request).fleet.set_layer(level, scope_id, body.overlay(), admin.email)
    return web.json_response({"config": body.overlay(), "pushed_to": pushed})


# -- admins, audit, events -------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    (await admin_of(request)).require_national()
    return web.json_response({"users": await store.list_users(server_of(request).engine)})


async def add_user(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    admin.require_national()
    server = server_of(request)
    body = await read_json(request, UserBody)
    email = body.email.strip().lower()
    check_new_user(email, body.role, body.scope, body.password)
    if body.role == "school" and await store.get_school(server.engine, body.scope) is None:
        raise BadRequest("no school with this id: add the school first")
    if await store.user_by_email(server.engine, email) is not None:
        raise Conflict("an admin with this email exists")
    password_hash = await asyncio.to_thread(hash_password, body.password)
    user_id = await store.add_user(
        server.engine, email, password_hash, body.role, body.scope, admin.email
    )
    return web.json_response(
        {"id": user_id, "email": email, "role": body.role, "scope": body.scope}, status=201
    )


async def remove_user(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    admin.require_national()
    raw = request.match_info["user_id"]
    if not raw.isdigit() or len(raw) > 9:
        raise NotFound("no such admin")
    if int(raw) == admin.id:
        raise Conflict("an admin cannot remove their own account")
    if await store.remove_user(server_of(request).engine, int(raw), admin.email) is None:
        raise NotFound("no such admin")
    return web.json_response({"ok": True})


async def change_password(request: web.Request) -> web.Response:
    """The signed-in admin's own password; the current one is asked again, rate limited like a
    sign-in, and every other admin session of theirs ends."""
    admin = await admin_of(request)
    server = server_of(request)
    body = await read_json(request, PasswordBody)
    user = await _account_if_password(request, admin.email, body.current)
    if user is None:
        await store.audit(server.engine, admin.email, "user.password.failed", admin.email, {})
        raise Forbidden("the current password is wrong")
    check_password(body.new)
    password_hash = await asyncio.to_thread(hash_password, body.new)
    kept = request.cookies.get(COOKIE, "")
    await store.set_password(server.engine, user, password_hash, kept, admin.email)
    return web.json_response({"ok": True})


async def list_audit(request: web.Request) -> web.Response:
    admin = await admin_of(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    actor = None if admin.role == "national" else admin.email
    rows = await store.audit_rows(server_of(request).engine, limit, actor)
    return await json_off_loop(lambda: ("entries", store.audit_dicts(rows), {}))


SESSION_RECHECK_S = 15.0


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``kit`` event per change of a kit in scope (online, offline,
    problems, session, config); ``resync`` when this client fell behind; ``signedout`` (and the
    end of the stream) within ``SESSION_RECHECK_S`` of the session ending: signed out
    elsewhere, expired, password changed or account removed."""
    admin = await admin_of(request)
    server = server_of(request)
    token = request.cookies.get(COOKIE, "")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    queue = server.fleet.subscribe(admin.sees_kit)
    recheck_at = time.monotonic() + SESSION_RECHECK_S
    try:
        await response.write(b"retry: 2000\n\n")
        while True:
            event: dict[str, object] | bool | None = False  # False: nothing came
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, recheck_at - time.monotonic())):
                    event = await queue.get()
            if time.monotonic() >= recheck_at:
                if await store.session_user(server.engine, token, time.time()) is None:
                    await response.write(b"event: signedout\ndata: {}\n\n")
                    break
                recheck_at = time.monotonic() + SESSION_RECHECK_S
            if event is False:
                await response.write(b": keep-alive\n\n")
            elif event is None:
                await response.write(b"event: resync\ndata: {}\n\n")
            elif isinstance(event, dict) and event.get("_close"):
                break
            else:
                await response.write(b"event: kit\ndata: " + json.dumps(event).encode() + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        server.fleet.unsubscribe(queue)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def add_routes(app: web.Application) -> None:
    app[COUNTS_KEY] = CountsCache()
    r = app.router
    r.add_post("/api/v1/login", login)
    r.add_post("/api/v1/logout", logout)
    r.add_get("/api/v1/me", me)
    r.add_post("/api/v1/me/password", change_password)
    r.add_get("/api/v1/kits", list_kits)
    r.add_get("/api/v1/kits/counts", kit_counts)
    r.add_get("/api/v1/kits/{kit_id}", get_kit)
    r.add_patch("/api/v1/kits/{kit_id}", patch_kit)
    r.add_post("/api/v1/kits/{kit_id}/revoke", revoke_kit)
    r.add_get("/api/v1/turn", turn_settings)
    r.add_get("/api/v1/schools", list_schools)
    r.add_post("/api/v1/schools", add_school)
    r.add_post("/api/v1/enrollment-codes", create_code)
    r.add_post("/api/v1/enroll", enroll)
    r.add_get("/api/v1/config/{level}/{scope_id}", get_config)
    r.add_put("/api/v1/config/{level}/{scope_id}", put_config)
    r.add_get("/api/v1/users", list_users)
    r.add_post("/api/v1/users", add_user)
    r.add_delete("/api/v1/users/{user_id}", remove_user)
    r.add_get("/api/v1/audit", list_audit)
    r.add_get("/api/v1/events", events)
