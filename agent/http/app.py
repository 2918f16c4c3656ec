"""The agent's HTTP server: session control (localhost only), WHEP egress, kiosk and pupil pages.

Routes
  GET  /                      kiosk (teacher UI), localhost only; its assets under /kiosk/
  GET  /api/status            session, sources, encoders, viewers, pupils, the kit's problems
                              (JSON), localhost only
  GET  /healthz               liveness: 200 while the server answers (systemd watchdog probe)
  POST /api/session/start     go live, localhost only
  POST /api/session/stop      end the class, localhost only
  POST /api/session/mute      {"muted": true|false}: pupils get silence, localhost only
  POST /api/pupils/{id}/lower-hand, POST /api/hands/lower-all       localhost only
  POST /api/pupils/{id}/admit, POST /api/pupils/admit-all, POST /api/pupils/{id}/remove
  POST /api/pupils/{id}/floor {"floor": bool}  give or take back the floor (docs/talkback.md)
  POST /api/class/lock {"locked": bool}, POST /api/class/waiting-room {"enabled": bool}
  POST /api/questions/{id} {"state": "answered"|"dismissed"}
  POST /api/questions/show {"id": "q3"|null}   the waiting room, removal, lock and written
                              questions (docs/kiosk.md), localhost only
  GET  /api/audit             the live class's audit (names: the kiosk only), localhost only
  GET  /api/preview/{source}  small JPEG of what pupils see of a camera, localhost only
  GET  /api/qr.svg            QR code of the join link, localhost only
  GET  /join/{token}          the pupil page
  POST /whep/{token}          WHEP: SDP offer in, 201 + Location + SDP answer out
  DELETE /whep/resource/{id}  WHEP: end that viewer
  PATCH  /whep/resource/{id}  405: no trickle ICE (every candidate is in the answer)

Refusals are :class:`~kitsys.errors.RequestError` subclasses; only their public message is sent
(:func:`kitsys.http.make_errors_middleware`, shared with the server). The pupil page and its files
carry :data:`kitsys.http.PAGE_HEADERS` (the relay serves the same page with the same headers).
Control requests must come from the kit itself (loopback), name a loopback host (``Host``:
127.0.0.0/8, ::1 or localhost, any port) and, when a browser says where it comes from
(``Origin``), come from a page of this server on such a host: another site open in the kiosk's
browser cannot press Stop, even by pointing its own name at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import qrcode
import qrcode.image.svg
from aiohttp import web
from multidict import CIMultiDict

from kitsys.http import (
    PAGE_CSP,
    PAGE_HEADERS,
    is_loopback,
    make_errors_middleware,
    package_file,
    read_body,
    static_response,
)
from kitsys.ratelimit import TokenBuckets, retry_after

from .. import __version__, boundedjson
from ..errors import (
    BadRequest,
    Forbidden,
    NotFound,
    RequestError,
    TooManyRequests,
    UnsupportedMediaType,
)
from ..problems import Problems, speaker_problems
from ..session import ClassSession
from ..webrtc.ice import link_headers
from ..webrtc.sdp import MAX_OFFER_BYTES
from .ratelimit import peer_key

log = logging.getLogger("agent.http")

PUPIL_KEY_HEADER = "X-Pupil-Key"
"""The page's rejoin key (agent/classroom.py): refused for the class once the pupil is removed."""
SESSION_KEY = web.AppKey("session", ClassSession)
PROBLEMS_KEY = web.AppKey("problems", Problems)
LIMITER_KEY = web.AppKey("whep_limiter", TokenBuckets)
errors_middleware = make_errors_middleware(log, [(("/join/", "/static/"), PAGE_HEADERS)])
"""Refusals become clean answers; anything unexpected is logged and hidden (kitsys.http)."""


def is_loopback_host(authority: str) -> bool:
    """Whether a ``Host`` header (or an origin's host and port) names this machine's loopback:
    ``127.x.x.x``, ``[::1]`` or ``localhost``, with or without a port. A name that merely
    resolves to 127.0.0.1 is refused: that is what a DNS-rebinding page looks like."""
    try:
        parts = urlsplit("//" + authority)
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number in range)
    except ValueError:
        return False
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None or parts.netloc != authority:
        return False
    return host == "localhost" or is_loopback(host)


def require_local(request: web.Request) -> None:
    """A control request: from loopback, to a loopback host, and from the kiosk's own origin if
    a browser names one (:func:`is_loopback_host`)."""
    if not is_loopback(request.remote):
        raise Forbidden("control is only accepted from the kit itself")
    host = request.headers.get("Host")  # absent: an HTTP/1.0 tool; a browser always sends it
    if host is not None and not is_loopback_host(host):
        raise Forbidden("control is only accepted on a loopback address")
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{host}":
        raise Forbidden("control is only accepted from the kiosk page")


# -- session control -------------------------------------------------------------------------


def _status(request: web.Request) -> web.Response:
    """The session's status and the kit's own problems (config, disk), for the kiosk."""
    session = request.app[SESSION_KEY]
    status = session.status()
    status["problems"] = request.app[PROBLEMS_KEY].as_list() + speaker_problems(session.pipeline)
    status["software"] = __version__  # the kiosk page reloads itself when this changes
    return web.json_response(status)


async def get_status(request: web.Request) -> web.Response:
    require_local(request)
    return _status(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})


async def post_start(request: web.Request) -> web.Response:
    require_local(request)
    session = request.app[SESSION_KEY]
    await session.start()
    return _status(request)


async def post_stop(request: web.Request) -> web.Response:
    require_local(request)
    session = request.app[SESSION_KEY]
    await session.stop()
    return _status(request)


async def post_mute(request: web.Request) -> web.Response:
    require_local(request)
    body = await _json_body(request)
    muted = body.get("muted")
    if not isinstance(muted, bool):
        raise BadRequest('expected {"muted": true} or {"muted": false}')
    session = request.app[SESSION_KEY]
    session.set_muted(muted)
    await session.save_state()
    return _status(request)


async def post_lower_hand(request: web.Request) -> web.Response:
    require_local(request)
    session = request.app[SESSION_KEY]
    session.lower_hand(request.match_info["viewer_id"])
    return _status(request)


async def post_lower_all(request: web.Request) -> web.Response:
    require_local(request)
    session = request.app[SESSION_KEY]
    session.lower_all_hands()
    return _status(request)


async def post_admit(request: web.Request) -> web.Response:
    require_local(request)
    request.app[SESSION_KEY].admit(request.match_info["viewer_id"])
    return _status(request)


async def post_admit_all(request: web.Request) -> web.Response:
    require_local(request)
    request.app[SESSION_KEY].admit_all()
    return _status(request)


async def post_remove(request: web.Request) -> web.Response:
    require_local(request)
    await request.app[SESSION_KEY].remove_pupil(request.match_info["viewer_id"])
    return _status(request)


async def post_floor(request: web.Request) -> web.Response:
    require_local(request)
    session = request.app[SESSION_KEY]
    viewer_id = request.match_info["viewer_id"]
    if await _flag(request, "floor"):
        session.give_floor(viewer_id)
    else:
        session.take_floor(viewer_id)
    return _status(request)


async def _flag(request: web.Request, name: str) -> bool:
    value = (await _json_body(request)).get(name)
    if not isinstance(value, bool):
        raise BadRequest(f'expected {{"{name}": true}} or {{"{name}": false}}')
    return value


async def post_lock(request: web.Request) -> web.Response:
    require_local(request)
    request.app[SESSION_KEY].set_locked(await _flag(request, "locked"))
    return _status(request)


async def post_waiting_room(request: web.Request) -> web.Response:
    require_local(request)
    request.app[SESSION_KEY].set_waiting_room(await _flag(request, "enabled"))
    return _status(request)


async def post_question(request: web.Request) -> web.Response:
    require_local(request)
    state = (await _json_body(request)).get("state")
    if not isinstance(state, str):
        raise BadRequest('expected {"state": "answered"} or {"state": "dismissed"}')
    request.app[SESSION_KEY].mark_question(request.match_info["question_id"], state)
    return _status(request)


async def post_show_question(request: web.Request) -> web.Response:
    require_local(request)
    question_id = (await _json_body(request)).get("id")
    if question_id is not None and not isinstance(question_id, str):
        raise BadRequest('expected {"id": "q1"} or {"id": null}')
    request.app[SESSION_KEY].show_question(question_id)
    return _status(request)


async def get_audit(request: web.Request) -> web.Response:
    require_local(request)
    return web.json_response(
        {"events": request.app[SESSION_KEY].audit()}, headers={"Cache-Control": "no-store"}
    )


async def get_preview(request: web.Request) -> web.Response:
    require_local(request)
    data = await request.app[SESSION_KEY].preview_jpeg(request.match_info["source"])
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def get_qr(request: web.Request) -> web.Response:
    require_local(request)
    session = request.app[SESSION_KEY]
    url = session.join_url if session.status()["session"]["state"] == "live" else None
    if url is None:
        raise NotFound("the class is not live")
    image = qrcode.make(
        url,
        image_factory=qrcode.image.svg.SvgPathImage,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        border=2,
    )
    return web.Response(
        body=image.to_string(), content_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )


MAX_JSON_BODY = 4096
MAX_JSON_DEPTH = 8
"""Kiosk bodies are flat (``{"muted": true}``); the bound keeps the parser's recursion away."""


async def _json_body(request: web.Request) -> dict[str, object]:
    raw = await read_body(request, MAX_JSON_BODY)
    try:
        body = boundedjson.loads(raw or b"{}", MAX_JSON_DEPTH)
    except boundedjson.JsonError:
        raise BadRequest("the body is not JSON (or is nested too deep)") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


# -- WHEP -------------------------------------------------------------------------------------


def _limit_joins(request: web.Request) -> str | None:
    """Take one join attempt for the request's LAN address (docs/whep.md, "Limits"); returns
    that address (None: the kit itself) or raises 429 with ``Retry-After``."""
    peer = peer_key(request.remote)
    if peer is None:
        return None
    webrtc = request.app[SESSION_KEY].config.webrtc
    now = asyncio.get_running_loop().time()
    rate = webrtc.whep_per_minute / 60.0
    wait_s = request.app[LIMITER_KEY].take(peer, now, webrtc.whep_burst, rate)
    if wait_s:
        wait = retry_after(wait_s)
        raise TooManyRequests(
            f"too many join attempts from this address; try again in {wait} s",
            retry_after_s=wait,
        )
    return peer


async def post_whep(request: web.Request) -> web.Response:
    session = request.app[SESSION_KEY]
    token = request.match_info["token"]
    peer = _limit_joins(request)
    await session.wait_started()  # resuming after a restart: the pupil waits, not refused
    session.check_token(token)
    if request.content_type != "application/sdp":
        raise UnsupportedMediaType("Content-Type must be application/sdp")
    key = request.headers.get(PUPIL_KEY_HEADER)
    session.check_join(key)  # a removed tab, or a locked class: refused before the body
    body = await read_body(request, MAX_OFFER_BYTES)
    viewer, answer = await session.add_viewer(token, body, peer, key=key)
    headers = CIMultiDict({"Location": f"/whep/resource/{viewer.id}"})
    for link in link_headers(session.config.webrtc.pupil_ice_servers):
        headers.add("Link", link)
    return web.Response(
        status=201, body=answer.encode(), content_type="application/sdp", headers=headers
    )


async def delete_whep(request: web.Request) -> web.Response:
    await request.app[SESSION_KEY].remove_viewer(request.match_info["viewer_id"])
    return web.Response(status=200)


async def get_whep_resource(request: web.Request) -> web.Response:
    """Whether this kit still knows the pupil's session: a page whose connection went quiet asks,
    and reconnects at once if the kit has restarted (404, ``X-Class-State: gone``)."""
    viewer = request.app[SESSION_KEY].viewers.get(request.match_info["viewer_id"])
    if viewer is None:
        raise NotFound("unknown WHEP session", "gone")
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def patch_whep(request: web.Request) -> web.Response:
    return web.Response(
        status=405, headers={"Allow": "GET, DELETE"}, text="trickle ICE not supported\n"
    )


async def options_whep(request: web.Request) -> web.Response:
    """The pupil page asks first, for its ICE servers (``Link``, docs/whep.md): given for a
    live class's own link only (a LAN-only kit's ``webrtc.pupil_ice_servers``)."""
    headers = CIMultiDict({"Accept-Post": "application/sdp", "Cache-Control": "no-store"})
    session = request.app[SESSION_KEY]
    token = request.match_info.get("token")
    if token is not None:
        try:
            session.check_token(token)
        except RequestError:
            pass
        else:
            for link in link_headers(session.config.webrtc.pupil_ice_servers):
                headers.add("Link", link)
    return web.Response(status=204, headers=headers)


# -- pages ------------------------------------------------------------------------------------


STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


async def kiosk_page(request: web.Request) -> web.Response:
    require_local(request)
    return web.Response(
        body=package_file("kiosk", "kiosk.html"),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": PAGE_CSP},
    )


async def kiosk_file(request: web.Request) -> web.Response:
    require_local(request)
    return static_response("kiosk", request.match_info["name"], STATIC_TYPES, "utf-8")


async def join_page(request: web.Request) -> web.Response:
    return web.Response(
        body=package_file("agent.http", "join.html"),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
            "Content-Security-Policy": PAGE_CSP,
        },
    )


async def static_file(request: web.Request) -> web.Response:
    return static_response("agent.http", request.match_info["name"], STATIC_TYPES, "utf-8")


def make_app(session: ClassSession, problems: Problems | None = None) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_OFFER_BYTES * 2)
    app[SESSION_KEY] = session
    app[PROBLEMS_KEY] = problems if problems is not None else Problems()
    app[LIMITER_KEY] = TokenBuckets()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", kiosk_page)
    app.router.add_get("/kiosk/{name}", kiosk_file)
    app.router.add_get("/api/status", get_status)
    app.router.add_post("/api/session/start", post_start)
    app.router.add_post("/api/session/stop", post_stop)
    app.router.add_post("/api/session/mute", post_mute)
    app.router.add_post("/api/pupils/{viewer_id}/lower-hand", post_lower_hand)
    app.router.add_post("/api/hands/lower-all", post_lower_all)
    app.router.add_post("/api/pupils/admit-all", post_admit_all)
    app.router.add_post("/api/pupils/{viewer_id}/admit", post_admit)
    app.router.add_post("/api/pupils/{viewer_id}/remove", post_remove)
    app.router.add_post("/api/pupils/{viewer_id}/floor", post_floor)
    app.router.add_post("/api/class/lock", post_lock)
    app.router.add_post("/api/class/waiting-room", post_waiting_room)
    app.router.add_post("/api/questions/show", post_show_question)
    app.router.add_post("/api/questions/{question_id}", post_question)
    app.router.add_get("/api/audit", get_audit)
    app.router.add_get("/api/preview/{source}", get_preview)
    app.router.add_get("/api/qr.svg", get_qr)
    app.router.add_get("/join/{token}", join_page)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_post("/whep/{token}", post_whep)
    app.router.add_route("OPTIONS", "/whep/{token}", options_whep)
    app.router.add_delete("/whep/resource/{viewer_id}", delete_whep)
    app.router.add_get("/whep/resource/{viewer_id}", get_whep_resource)
    app.router.add_patch("/whep/resource/{viewer_id}", patch_whep)
    app.router.add_route("OPTIONS", "/whep/resource/{viewer_id}", options_whep)
    app.on_shutdown.append(_shutdown)
    return app


async def _shutdown(app: web.Application) -> None:
    await app[SESSION_KEY].stop()
