"""Control requests answer only to the kit itself, on a loopback host name: a page of another
site that points its own name at 127.0.0.1 (DNS rebinding) sends ``Host: evil.test`` and, on a
POST, ``Origin: http://evil.test``; before, that matching pair was trusted and the page could
read the class's status (with its join link) and press Stop."""

from __future__ import annotations

import pytest

from agent.http.app import is_loopback_host
from tests.conftest import LiveAgent

CONTROL = [
    ("GET", "/api/status"),
    ("GET", "/"),
    ("POST", "/api/session/start"),
    ("POST", "/api/session/mute"),
]


async def call(agent: LiveAgent, method: str, path: str, headers: dict[str, str]) -> int:
    async with agent.http.request(method, agent.base_url + path, headers=headers) as response:
        await response.read()
        return response.status


async def test_dns_rebinding_is_refused(agent: LiveAgent) -> None:
    port = agent.base_url.rsplit(":", 1)[1]
    rebound = [
        {"Host": f"evil.test:{port}", "Origin": f"http://evil.test:{port}"},
        {"Host": f"evil.test:{port}"},
        {"Host": "evil.test"},
        {"Host": f"127.0.0.1.evil.test:{port}", "Origin": f"http://127.0.0.1.evil.test:{port}"},
        {"Host": f"localhost.evil.test:{port}"},
        {"Host": ""},
    ]
    for headers in rebound:
        for method, path in CONTROL:
            assert await call(agent, method, path, headers) == 403, (method, path, headers)
    assert agent.session.state.value == "idle"


async def test_loopback_names_are_accepted(agent: LiveAgent) -> None:
    port = agent.base_url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        assert await call(agent, "GET", "/api/status", {"Host": host}) == 200, host
        headers = {"Host": host, "Origin": f"http://{host}"}
        assert await call(agent, "GET", "/api/status", headers) == 200, host
    mismatch = {"Host": f"127.0.0.1:{port}", "Origin": f"http://localhost:{port}"}
    assert await call(agent, "POST", "/api/session/start", mismatch) == 403
    assert await call(agent, "GET", "/healthz", {"Host": "evil.test"}) == 200  # the probe


@pytest.mark.parametrize(
    ("authority", "local"),
    [
        ("127.0.0.1:8080", True),
        ("127.3.2.1", True),
        ("[::1]:8080", True),
        ("LOCALHOST:80", True),
        ("[::ffff:127.0.0.1]:80", True),
        ("evil.test:8080", False),
        ("127.0.0.1.nip.io", False),
        ("0.0.0.0:8080", False),
        ("192.168.1.20:8080", False),
        ("::1", False),
        ("127.0.0.1:99999", False),
        ("127.0.0.1:80/x", False),
        ("user@127.0.0.1", False),
        ("127.0.0.1:80#x", False),
        ("", False),
    ],
)
def test_loopback_host_names(authority: str, local: bool) -> None:
    assert is_loopback_host(authority) is local
