"""HTTP plumbing the kit agent and the provisioning server share (aiohttp).

Both serve the pupil page and WHEP to browsers they do not trust, so both need the same three
things, written once here (neither imports the other; both import this):

- **bounded body reading** — :func:`read_body` reads a request's body up to a limit the route
  chooses (an SDP offer, a JSON body), refuses the rest with 413 without reading it, and gives up
  with 408 after the connection guard's body timeout (:func:`kitsys.httpguard.body_timeout_s`):
  the guard cannot tell a slow body from a WebSocket, so the reader enforces it;
- **the error middleware** — :func:`make_errors_middleware`: a :exc:`kitsys.errors.RequestError`
  becomes a clean answer with its status, its public message and its headers; anything
  unexpected is logged with its traceback and answered ``500 internal error``, so no internal
  detail reaches a peer. WHEP routes answer in ``text/plain`` (a WHEP client shows the text),
  every other route in JSON (``{"error": …}``);
- **the security headers** — :data:`PAGE_HEADERS` for the pupil page and its files (one policy:
  the relay serves the agent's very page), :data:`ADMIN_HEADERS` for the admin UI and API, and
  :data:`WHEP_CORS` so a third-party WHEP player may read the answers, refusals included.

And :func:`static_response`, the pages' assets from a package's ``static/`` folder (both serve
the pupil page's files from ``agent.http``), and :func:`is_loopback` for peer addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .errors import PayloadTooLarge, RequestError, RequestTimeout
from .httpguard import body_timeout_s

WHEP_PREFIX = "/whep/"

WHEP_CORS: Mapping[str, str] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match, X-Pupil-Key",
    "Access-Control-Expose-Headers": (
        "Location, Link, ETag, Accept-Patch, X-Class-State, Retry-After"
    ),
    "Access-Control-Max-Age": "600",
}
"""On every WHEP answer: a WHEP player on another origin may post and read the refusals."""

PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""Pages load nothing from anywhere else (no CDN, no tracker) and cannot be framed (clickjacking
the hand button, say)."""

ADMIN_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"

_NO_SNIFF_NO_FRAME = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_PERMISSIONS = "camera=(), microphone=(self), geolocation=(), display-capture=()"
"""The pupil page never uses a camera or the screen: the browser itself refuses them, whatever
a script asks. The microphone stays possible (talk-back, only when the teacher gives the floor:
docs/talkback.md)."""
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": PAGE_CSP,
    "Permissions-Policy": PAGE_PERMISSIONS,
    **_NO_SNIFF_NO_FRAME,
}
"""On the pupil page and its files (``/join/``, ``/static/``), on the kit and on the relay."""
ADMIN_HEADERS: Mapping[str, str] = {"Content-Security-Policy": ADMIN_CSP, **_NO_SNIFF_NO_FRAME}
"""On the server's admin UI and API."""

RouteHeaders = Sequence[tuple[tuple[str, ...], Mapping[str, str]]]
"""(path prefixes, headers): the first entry whose prefix starts the path adds its headers to
the answer (those the handler set itself are kept)."""


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body: 413 beyond ``limit`` bytes (without reading further), 408 if it takes
    longer than the connection guard's body timeout (a peer trickling a body must not hold a
    handler forever). One ``content.read(n)`` returns what has arrived so far, so it loops: a
    body sent in several segments is not cut."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(body_timeout_s(request)):
            while len(body) <= limit:
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise RequestTimeout("the body took too long to arrive") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(body)


def error_response(status: int, message: str, json: bool) -> web.Response:
    """``{"error": message}`` in JSON, or the message as one line of text."""
    if json:
        return web.json_response({"error": message}, status=status)
    return web.Response(status=status, text=message + "\n", content_type="text/plain")


def make_errors_middleware(log: logging.Logger, route_headers: RouteHeaders = ()) -> Middleware:
    """The middleware of an app: refusals become clean answers, anything unexpected is logged to
    ``log`` and hidden; WHEP answers carry :data:`WHEP_CORS`, others the first matching
    ``route_headers``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        whep = request.path.startswith(WHEP_PREFIX)
        try:
            response = await handler(request)
        except RequestError as exc:
            response = error_response(exc.status, exc.public_message, json=not whep)
            response.headers.update(exc.headers)
        except web.HTTPException:
            raise
        except ConnectionResetError:  # the client went away (mid-handshake, mid-answer)
            log.info("%s %s: the client went away", request.method, request.path)
            return web.Response(status=400, text="gone\n")  # nobody to read it
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.path)
            response = error_response(500, "internal error", json=not whep)
        if whep:
            response.headers.update(WHEP_CORS)
            return response
        for prefixes, headers in route_headers:
            if request.path.startswith(prefixes):
                for key, value in headers.items():
                    response.headers.setdefault(key, value)
                break
        return response

    return middleware


def package_file(package: str, name: str) -> bytes:
    """A file of ``package``'s ``static/`` folder (FileNotFoundError if there is none)."""
    return resources.files(package).joinpath("static", name).read_bytes()


def static_response(
    package: str, name: str, types: Mapping[str, str], charset: str | None = None
) -> web.Response:
    """A page's asset from ``package``'s ``static/`` folder: 404 for a name that leaves the
    folder (a ``/`` or ``\\``, a leading dot), for a suffix not in ``types`` (suffix → content
    type) and for a file that does not exist."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in types:
        raise web.HTTPNotFound()
    try:
        body = package_file(package, name)
    except (FileNotFoundError, IsADirectoryError):
        raise web.HTTPNotFound() from None
    return web.Response(body=body, content_type=types[suffix], charset=charset)


def is_loopback(remote: str | None) -> bool:
    """Whether a peer address (``request.remote``) is this machine's loopback; an IPv4 address
    mapped into IPv6 (``::ffff:127.0.0.1``, listening dual-stack on ``[::]``) counts."""
    try:
        address = ipaddress.ip_address((remote or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
