"""ICE servers handed to a WHEP client in ``Link`` headers (RFC 8288 syntax, RFC 9725 §4.6
parameters): written by the kit's own WHEP endpoint (a LAN-only kit's ``pupil_ice_servers``) and
by the server's relay (credentials minted per pupil), read by the pupil page (whep.js) and any
third-party WHEP player."""

from __future__ import annotations


def quoted(value: str) -> str:
    """An RFC 9110 quoted-string: backslash before ``"`` and ``\\``; control characters,
    which no quoted-string may hold, are refused."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("control character in a Link parameter")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_header(url: str, username: str = "", credential: str = "") -> str:
    """One ``Link`` value: ``<url>; rel="ice-server"`` plus, for TURN, ``username``,
    ``credential`` and ``credential-type="password"``, in RFC 9725's order (some WHEP players
    match that exact sequence with a regular expression)."""
    if any(c in url for c in "<>\"' \t\r\n"):
        raise ValueError("character not allowed in an ICE server URL")
    value = f'<{url}>; rel="ice-server"'
    if username or credential:
        value += (
            f"; username={quoted(username)}; credential={quoted(credential)}"
            '; credential-type="password"'
        )
    return value
