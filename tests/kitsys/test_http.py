"""The HTTP plumbing the agent and the server share (kitsys/http.py), over a real HTTP server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from kitsys import errors
from kitsys.http import (
    ADMIN_HEADERS,
    PAGE_HEADERS,
    WHEP_CORS,
    is_loopback,
    make_errors_middleware,
    package_file,
    read_body,
    static_response,
)

LOG = logging.getLogger("tests.kitsys.http")


async def _refuse(request: web.Request) -> web.Response:
    raise errors.NotFound("unknown link", "ended", retry_after_s=7)


async def _crash(request: web.Request) -> web.Response:
    raise RuntimeError("/secret/path device hw:2")


async def _echo(request: web.Request) -> web.Response:
    body = await read_body(request, 8)
    return web.Response(body=body, headers={"X-Frame-Options": "SAMEORIGIN"})


@pytest.fixture
async def server() -> AsyncIterator[tuple[ClientSession, str]]:
    middleware = make_errors_middleware(
        LOG, [(("/admin",), ADMIN_HEADERS), (("/join/", "/static/"), PAGE_HEADERS)]
    )
    app = web.Application(middlewares=[middleware])
    for prefix in ("/whep/", "/api/", "/join/"):
        app.router.add_get(prefix + "refuse", _refuse)
        app.router.add_get(prefix + "crash", _crash)
    app.router.add_post("/join/echo", _echo)
    async with TestServer(app) as test_server, ClientSession() as http:
        yield http, str(test_server.make_url(""))


async def test_a_refusal_sends_its_status_message_and_headers_only(
    server: tuple[ClientSession, str],
) -> None:
    http, base = server
    async with http.get(base + "/api/refuse") as response:
        assert response.status == 404
        assert await response.json() == {"error": "unknown link"}
        assert response.headers["X-Class-State"] == "ended"
        assert response.headers["Retry-After"] == "7"
        assert "Access-Control-Allow-Origin" not in response.headers
    async with http.get(base + "/whep/refuse") as response:  # WHEP: text, and CORS
        assert response.status == 404
        assert response.content_type == "text/plain"
        assert await response.text() == "unknown link\n"
        assert response.headers["X-Class-State"] == "ended"
        for key, value in WHEP_CORS.items():
            assert response.headers[key] == value


async def test_the_unexpected_is_logged_and_hidden(
    server: tuple[ClientSession, str], caplog: pytest.LogCaptureFixture
) -> None:
    http, base = server
    with caplog.at_level(logging.ERROR, "tests.kitsys.http"):
        async with http.get(base + "/whep/crash") as response:
            assert response.status == 500
            assert await response.text() == "internal error\n"
        async with http.get(base + "/api/crash") as response:
            assert response.status == 500
            assert await response.json() == {"error": "internal error"}
    logged = [r for r in caplog.records if r.name == "tests.kitsys.http"]
    assert len(logged) == 2 and all(r.exc_info for r in logged)
    assert "unexpected error on GET /whep/crash" in logged[0].getMessage()


async def test_route_headers_are_added_without_overriding_the_handler(
    server: tuple[ClientSession, str],
) -> None:
    http, base = server
    async with http.get(base + "/join/refuse") as response:  # refusals carry them too
        assert response.status == 404
        for key, value in PAGE_HEADERS.items():
            assert response.headers[key] == value
    async with http.post(base + "/join/echo", data=b"12345678") as response:
        assert response.status == 200 and await response.read() == b"12345678"
        assert response.headers["X-Frame-Options"] == "SAMEORIGIN"  # the handler's own
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(base + "/api/refuse") as response:  # no entry for /api/ here
        assert "Content-Security-Policy" not in response.headers


async def test_a_body_over_the_route_limit_is_refused_413(
    server: tuple[ClientSession, str],
) -> None:
    http, base = server
    async with http.post(base + "/join/echo", data=b"123456789") as response:
        assert response.status == 413
        assert await response.json() == {"error": "body larger than 8 bytes"}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"1234"

    async with http.post(base + "/join/echo", data=chunks()) as response:
        assert response.status == 413


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("fe80::1%eth0", False),
        ("192.0.2.1", False),
        ("", False),
        (None, False),
        ("not an address", False),
    ],
)
def test_is_loopback(remote: str | None, local: bool) -> None:
    assert is_loopback(remote) is local


def test_a_refusal_carries_its_headers() -> None:
    refusal = errors.TooManyRequests("slow down", retry_after_s=3, headers={"X-A": "b"})
    assert (refusal.status, refusal.public_message) == (429, "slow down")
    assert refusal.headers == {"X-A": "b", "Retry-After": "3"}
    assert errors.NotFound("gone", "gone").headers == {"X-Class-State": "gone"}


@pytest.mark.parametrize(
    "name", ["../__init__.py", "..\\x.js", ".hidden.js", "join.css", "nothing.js", "join"]
)
def test_a_static_name_outside_the_folder_or_the_types_is_404(name: str) -> None:
    with pytest.raises(web.HTTPNotFound):
        static_response("agent.http", name, {".js": "text/javascript", ".py": "text/plain"})


def test_a_static_file_is_served_with_its_type() -> None:
    response = static_response("agent.http", "join.js", {".js": "text/javascript"}, "utf-8")
    assert response.content_type == "text/javascript" and response.charset == "utf-8"
    assert response.body == package_file("agent.http", "join.js")
