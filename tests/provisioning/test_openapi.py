"""The OpenAPI description matches the REST routes the app really has."""

from __future__ import annotations

from aiohttp import web

from provisioning import api
from provisioning.openapi import openapi_document


def test_openapi_describes_every_api_route() -> None:
    document = openapi_document()
    described = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method != "parameters"
    }
    app = web.Application()
    api.add_routes(app)
    routes = {("GET", "/api/v1/openapi.json")}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        routes.add((route.method, str(info.get("path") or info.get("formatter"))))
    assert routes - {("HEAD", p) for _, p in routes} == described
    for name in ("Login", "Config", "PushedVideo", "Enroll", "Error"):
        assert name in document["components"]["schemas"]
    assert document["openapi"].startswith("3.1")
