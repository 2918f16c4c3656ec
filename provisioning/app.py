"""The server's HTTP application: REST API, admin UI, kits' link, pupil page and WHEP relay.

Routes
  GET  /                       → /admin/
  GET  /admin/                 admin web UI (static, no CDN); assets under /admin/static/
  /api/v1/…                    REST API (see provisioning/api.py, /api/v1/openapi.json)
  GET  /link/v1                the kits' WebSocket (docs/protocol.md)
  GET  /join/{token}           the pupil page: the agent's own files (agent.http static)
  GET  /static/{name}          the pupil page's assets, from the agent package
  POST /whep/{token}           WHEP through the kit's link (docs/whep.md), DELETE/PATCH/OPTIONS
  GET  /metrics                Prometheus text (loopback only)
  GET  /healthz                liveness
  GET  /readyz                 readiness (cluster: heartbeat written)
"""

from __future__ import annotations

import contextlib
import logging

from aiohttp import web

from kitlink import (
    CLOSE_GOING_AWAY,
    LINK_PATH,
    MAX_SDP,
    token_digest,
)
from kitsys import http

from . import api
from .cluster import Cluster, ForwardAuth, resource_node
from .errors import NotFound, ServiceUnavailable, TooManyRequests, UnsupportedMediaType
from .forwarded import rate_key
from .openapi import openapi_document
from .server import Server
from .writer import LATENCY_BUCKETS_MS, LatencyHistogram

log = logging.getLogger("provisioning.http")

PUPIL_CSP = http.PAGE_CSP
"""The agent's policy (kitsys.http): the relay serves the agent's very page."""
STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".json": "application/json",
}


errors_middleware = http.make_errors_middleware(
    log, [(("/admin", "/api/"), http.ADMIN_HEADERS), (("/join/", "/static/"), http.PAGE_HEADERS)]
)
"""Refusals become clean answers; anything unexpected is logged and hidden (kitsys.http). The
admin UI and API carry ADMIN_HEADERS, the pupil page and its files the agent's PAGE_HEADERS."""


# -- pages -------------------------------------------------------------------------------------


async def join_page(request: web.Request) -> web.Response:
    """The very page the agent serves on the LAN: same file, same relative WHEP URL."""
    return web.Response(
        body=http.package_file("agent.http", "join.html"),
        content_type="text/html",
        charset="utf-8",
        headers={"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"},
    )


async def pupil_static(request: web.Request) -> web.Response:
    return http.static_response("agent.http", request.match_info["name"], STATIC_TYPES)


async def admin_page(request: web.Request) -> web.Response:
    return web.Response(
        body=http.package_file("provisioning", "admin.html"),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


async def admin_static(request: web.Request) -> web.Response:
    return http.static_response("provisioning", request.match_info["name"], STATIC_TYPES)


async def to_admin(request: web.Request) -> web.Response:
    raise web.HTTPFound("/admin/")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def healthz(request: web.Request) -> web.Response:
    """Liveness (the systemd watchdog): the HTTP server and the event loop answer."""
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """Readiness (the load balancer's check): live, and, in a cluster, still writing its
    heartbeat to PostgreSQL. Not the watchdog's probe: a database outage must not get every
    node restarted."""
    cluster = request.app[api.SERVER_KEY].cluster
    problem = cluster.ready() if cluster is not None else None
    if problem is not None:
        return web.json_response({"ok": False, "problem": problem}, status=503)
    return web.json_response({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    if not http.is_loopback(api.client_of(request)):  # not a client behind a trusted local proxy
        raise web.HTTPForbidden(text="metrics are only served on loopback\n")
    server = request.app[api.SERVER_KEY]
    fleet, writer = server.fleet, server.writer
    online = sum(1 for k in fleet.kits.values() if k.online)
    lines = [
        f"provisioning_kits {len(fleet.kits)}",
        f"provisioning_kits_online {online}",
        f"provisioning_links_opened_total {fleet.links_opened}",
        f"provisioning_links_rejected_total {server.links.rejected}",
        f"provisioning_reports_received_total {fleet.reports_received}",
        f"provisioning_reports_backlog_total {fleet.backlog_received}",
        f"provisioning_reports_dropped_by_kits_total {fleet.backlog_dropped}",
        f"provisioning_reports_stored_total {writer.reports_stored}",
        f"provisioning_write_batches_total {writer.batches}",
        f"provisioning_write_errors_total {writer.errors}",
        f"provisioning_write_queue {writer.queued}",
        f"provisioning_write_seconds_max {writer.write_seconds_max:.4f}",
        f"provisioning_write_seconds_total {writer.write_seconds_total:.3f}",
        f"provisioning_loop_lag_seconds_max {server.loop_lag_max:.4f}",
        f"provisioning_gc_pause_seconds_max {server.gc_pause_max:.4f}",
        f"provisioning_gc_full_collections_total {server.gc_full_collections}",
        f"provisioning_relay_offers_total {server.relay.offers}",
        f"provisioning_turn_kit_sets_total {server.ice.kit_sets}",
        f"provisioning_turn_pupil_sets_total {server.ice.pupil_sets}",
        f"provisioning_relay_offers_limited_total {server.relay.offer_limit.refused}",
    ]
    if server.cluster is not None:
        lines += _cluster_metrics(server.cluster)
    lines.append(f"provisioning_forwarded_refused_total {server.forward_auth.refused}")
    lines += _histogram("provisioning_report_stored_ms", writer.latency)
    lines += _histogram("provisioning_report_received_stored_ms", writer.server_latency)
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def _cluster_metrics(cluster: Cluster) -> list[str]:
    return [
        f"provisioning_cluster_nodes {len(cluster.nodes)}",
        f"provisioning_cluster_listening {int(cluster.listening.is_set())}",
        f"provisioning_cluster_events_sent_total {cluster.sent}",
        f"provisioning_cluster_events_received_total {cluster.received}",
        f"provisioning_cluster_events_dropped_total {cluster.dropped}",
        f"provisioning_cluster_forwarded_total {cluster.forwarded}",
        f"provisioning_cluster_forward_failed_total {cluster.unreachable}",
        f"provisioning_cluster_takeovers_total {len(cluster.taken_over)}",
    ]


def _histogram(name: str, histogram: LatencyHistogram) -> list[str]:
    lines = []
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS_MS, histogram.counts, strict=False):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {histogram.total}')
    lines.append(f"{name}_count {histogram.total}")
    lines.append(f"{name}_sum {histogram.sum_ms:.1f}")
    return lines


# -- WHEP relay --------------------------------------------------------------------------------


def pupil_of(request: web.Request) -> tuple[str, bool]:
    """The pupil's address, and whether another node of the cluster forwarded the request (it
    then carries the address, signed: rate limits stay per pupil). Forwarding headers that are
    not a node's signature: 403."""
    server = request.app[api.SERVER_KEY]
    if ForwardAuth.is_forwarded(request.headers):
        return server.forward_auth.check(request.method, request.path, request.headers), True
    return api.client_of(request), False


async def post_whep(request: web.Request) -> web.Response:
    server = request.app[api.SERVER_KEY]
    relay, cluster = server.relay, server.cluster
    pupil, forwarded = pupil_of(request)
    relay.admit(rate_key(pupil))  # 429 beyond a burst per pupil address
    token = request.match_info["token"]
    if cluster is not None:
        await cluster.learn_token(token_digest(token))
    # Unknown or expired link: the same answer as the agent's, at once. In a cluster, a kit
    # linked to another node is asked through that node (a forwarded request is not sent on).
    kit = relay.find_kit(token, linked_here=cluster is None or forwarded)
    if request.content_type != "application/sdp":
        raise UnsupportedMediaType("Content-Type must be application/sdp")
    body = await http.read_body(request, MAX_SDP)
    if kit.link is None and cluster is not None:
        return await cluster.forward(await cluster.route(kit.id), request, body, pupil)
    try:
        sdp = body.decode("utf-8")
    except UnicodeDecodeError:
        return web.Response(status=400, text="the offer is not UTF-8 text\n")
    location, answer = await relay.offer(token, sdp, request.headers.get("X-Pupil-Key"))
    response = web.Response(
        status=201,
        body=answer.encode(),
        content_type="application/sdp",
        headers={"Location": location},
    )
    _add_ice_links(response, server.ice.pupil_links(kit.class_started_at))
    return response


async def delete_whep(request: web.Request) -> web.Response:
    forwarded = await _to_minting_node(request)
    if forwarded is not None:
        return forwarded
    await request.app[api.SERVER_KEY].relay.delete(request.match_info["resource"])
    return web.Response(status=200)


async def patch_whep(request: web.Request) -> web.Response:
    forwarded = await _to_minting_node(request)
    if forwarded is not None:
        return forwarded
    return web.Response(status=405, headers={"Allow": "DELETE"}, text="trickle ICE not supported\n")


async def _to_minting_node(request: web.Request) -> web.Response | None:
    """A resource another node minted (its id names it): that node's answer."""
    server = request.app[api.SERVER_KEY]
    pupil, forwarded = pupil_of(request)
    node = resource_node(request.match_info["resource"])
    cluster = server.cluster
    if cluster is None or forwarded or node is None or node == cluster.node_id:
        return None
    url = await cluster.node_url(node)
    if url is None:  # that node is gone, and its resources with it
        raise NotFound("unknown WHEP session")
    body = await http.read_body(request, MAX_SDP) if request.can_read_body else b""
    return await cluster.forward(url, request, body, pupil)


async def options_whep(request: web.Request) -> web.Response:
    """``204`` for any token (a CORS preflight must pass for the POST's refusal to be read).
    For a live class's token, and unless this is a browser's CORS preflight (whose headers no
    script can read), the pupil's ICE servers in ``Link`` headers: browsers need them before
    they make the offer (docs/whep.md)."""
    response = web.Response(status=204, headers={"Accept-Post": "application/sdp"})
    token = request.match_info.get("token")
    if token is not None and "Access-Control-Request-Method" not in request.headers:
        server = request.app[api.SERVER_KEY]
        pupil, forwarded = pupil_of(request)
        kit = server.fleet.by_token.get(token_digest(token))
        cluster = server.cluster
        if kit is not None and kit.link is None and cluster is not None and not forwarded:
            with contextlib.suppress(ServiceUnavailable):  # no node has it: no ICE servers
                if server.ice.enabled:
                    return await cluster.forward(await cluster.route(kit.id), request, b"", pupil)
            return response
        if kit is not None and not kit.revoked and server.ice.enabled:
            try:  # one client asking over and over gets no fresh usernames (coturn quotas)
                server.ice_options_limit.take(rate_key(pupil))
            except TooManyRequests:
                return response
            _add_ice_links(response, server.ice.pupil_links(kit.class_started_at))
    return response


def _add_ice_links(response: web.Response, links: list[str]) -> None:
    """One ``Link`` header per ICE server (RFC 9725 §4.6); none without TURN."""
    for link in links:
        response.headers.add("Link", link)


# -- the application -----------------------------------------------------------------------------


def make_app(server: Server) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=MAX_SDP * 2)
    app[api.SERVER_KEY] = server
    r = app.router
    r.add_get("/", to_admin)
    r.add_get("/admin", to_admin)
    r.add_get("/admin/", admin_page)
    r.add_get("/admin/static/{name}", admin_static)
    r.add_get("/api/v1/openapi.json", openapi)
    api.add_routes(app)
    r.add_get(LINK_PATH, server.links.handle)
    r.add_get("/join/{token}", join_page)
    r.add_get("/static/{name}", pupil_static)
    r.add_post("/whep/{token}", post_whep)
    r.add_route("OPTIONS", "/whep/{token}", options_whep)
    r.add_delete("/whep/resource/{resource}", delete_whep)
    r.add_patch("/whep/resource/{resource}", patch_whep)
    r.add_route("OPTIONS", "/whep/resource/{resource}", options_whep)
    r.add_get("/metrics", metrics)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    app.on_shutdown.append(_shutdown)
    return app


async def _shutdown(app: web.Application) -> None:
    """Tell every kit we are going away (they reconnect with backoff) and end event streams."""
    server = app[api.SERVER_KEY]
    for kit in server.fleet.kits.values():
        if kit.link is not None:
            kit.link.close_soon(CLOSE_GOING_AWAY, "server restarting")
    server.fleet.close_subscribers()
