"""ICE set-up: which servers the kit may contact and which local addresses it offers.

aiortc falls back to a public STUN server when ``iceServers`` is left unset; the kit must contact
no server it was not configured with (pupils are minors, schools filter the web), so the
configuration is always explicit, possibly empty.

aioice offers every non-loopback interface as a host candidate. A kit with several interfaces
(or a test that must stay on loopback) restricts them with ``webrtc.host_addresses``; aioice has
no option for that, so :func:`restrict_host_addresses` replaces its address lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from kitsys.icelinks import link_header

from ..config import IceServerConfig

_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None
"""aioice's own lookup, kept at the first restriction (not at import: a changed aioice must
reach the start-up check, agent/webrtc/contract.py, not fail this import)."""


def rtc_configuration(servers: Sequence[IceServerConfig]) -> RTCConfiguration:
    """An explicit aiortc configuration: exactly the configured servers, maybe none."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(
                urls=list(server.urls),
                username=server.username or None,
                credential=server.credential or None,
            )
            for server in servers
        ]
    )


def link_headers(servers: Sequence[IceServerConfig]) -> list[str]:
    """``Link`` header values that hand ``servers`` to a WHEP client: one per URL
    (:func:`kitsys.icelinks.link_header`)."""
    return [
        link_header(url, server.username, server.credential)
        for server in servers
        for url in server.urls
    ]


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Offer only ``addresses`` as ICE host candidates (empty: every interface, aioice's way)."""
    global _original_get_host_addresses
    if _original_get_host_addresses is None:
        _original_get_host_addresses = aioice.ice.get_host_addresses
    if not addresses:
        aioice.ice.get_host_addresses = _original_get_host_addresses  # type: ignore[assignment]
        return
    chosen = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
