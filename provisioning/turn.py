"""TURN credentials the coturn way (``use-auth-secret``), TURN URLs and the shared secret file.

coturn's "TURN REST API" (draft-uberti-behave-turn-rest, coturn's ``use-auth-secret``): the
server and coturn share one secret; a credential is the username ``"<expiry>:<subject>"`` (expiry
in Unix seconds) and the password ``base64(HMAC-SHA1(secret, username))``. coturn recomputes the
password from the username alone and refuses it (401) once the expiry has passed, so nothing is
stored per class or per pupil, and a credential is worthless after its expiry.

Everything here is pure except :func:`read_secret_file`, which reads one small file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from provisioning.errors import ConfigError

SUBJECT_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
"""A class or pupil id: no ``:`` (coturn splits the username at the first one), short enough
that the username stays well under STUN's 513-byte USERNAME limit."""

SECRET_MIN_LENGTH = 16
SECRET_MAX_BYTES = 4096
SECRET_PATTERN = re.compile(rb"[\x21-\x7e]+")
"""Printable ASCII without spaces: the secret is also written on a ``static-auth-secret=`` line of
coturn's configuration, and must be the same bytes on both sides."""

_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+")
_TURN_URL = re.compile(r"(?P<scheme>[a-z]+):(?P<host>\[[^\]]*\]|[^:?\[\]]+):(?P<port>[0-9]{1,5})"
                       r"\?transport=(?P<transport>[a-z]+)")  # fmt: skip


@dataclass(frozen=True)
class TurnCredential:
    """What a TURN client sends: ``username`` and ``password`` (WebRTC's ``credential``)."""

    username: str
    password: str
    expires_at: int


@dataclass(frozen=True)
class TurnUrl:
    """One validated TURN URL (RFC 7065), always with an explicit port and transport."""

    scheme: Literal["turn", "turns"]
    host: str
    port: int
    transport: Literal["udp", "tcp"]

    @property
    def kind(self) -> Literal["turn-udp", "turn-tcp", "turn-tls"]:
        """The path it offers, as the kit's health report names it."""
        if self.scheme == "turns":
            return "turn-tls"
        return "turn-udp" if self.transport == "udp" else "turn-tcp"

    def __str__(self) -> str:
        return f"{self.scheme}:{self.host}:{self.port}?transport={self.transport}"


def mint(secret: bytes, subject: str, expires_at: int) -> TurnCredential:
    """A credential for ``subject`` (a class or pupil id) that coturn accepts until
    ``expires_at`` (Unix seconds)."""
    if not secret:
        raise ConfigError("the TURN secret is empty")
    if not SUBJECT_PATTERN.fullmatch(subject):
        raise ConfigError(
            f"TURN credential subject {subject!r}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )
    if isinstance(expires_at, bool) or not isinstance(expires_at, int) or expires_at <= 0:
        raise ConfigError(f"TURN credential expiry must be positive Unix seconds: {expires_at!r}")
    username = f"{expires_at}:{subject}"
    digest = hmac.new(secret, username.encode("ascii"), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


def parse_turn_url(text: str) -> TurnUrl:
    """``turn:HOST:PORT?transport=udp|tcp`` or ``turns:HOST:PORT?transport=tcp``; anything else
    (no port, no transport, user info, other parameters, TURN over DTLS) is refused."""
    match = _TURN_URL.fullmatch(text)
    if match is None:
        raise ConfigError(
            f"TURN URL {text!r}: expected turn:HOST:PORT?transport=udp, "
            "turn:HOST:PORT?transport=tcp or turns:HOST:PORT?transport=tcp"
        )
    scheme, host, transport = match["scheme"], match["host"], match["transport"]
    port = int(match["port"])
    if scheme not in ("turn", "turns"):
        raise ConfigError(f"TURN URL {text!r}: the scheme must be turn or turns")
    if transport not in ("udp", "tcp"):
        raise ConfigError(f"TURN URL {text!r}: the transport must be udp or tcp")
    if scheme == "turns" and transport == "udp":
        raise ConfigError(f"TURN URL {text!r}: turns (TLS) needs transport=tcp")
    if not 1 <= port <= 65535:
        raise ConfigError(f"TURN URL {text!r}: port {port} is not between 1 and 65535")
    _check_host(text, host)
    return TurnUrl(scheme, host, port, transport)  # type: ignore[arg-type]


def _check_host(text: str, host: str) -> None:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"TURN URL {text!r}: {host} is not an IPv6 address") from None
        return
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"TURN URL {text!r}: {host} is not an IPv4 address") from None
        return
    if not _HOSTNAME.fullmatch(host):
        raise ConfigError(f"TURN URL {text!r}: {host!r} is not a host name")


def read_secret_file(path: Path, what: str = "TURN secret file") -> bytes:
    """The shared secret in ``path``: printable ASCII, one line, at least 16 characters, in a
    regular file no one but its owner can read or write (``chmod 600``). ``what`` names it in
    errors (the cluster secret is read the same way)."""
    try:  # O_NONBLOCK: a FIFO put in its place must not hang the start-up
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        raise ConfigError(f"{what} {path}: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if status.st_mode & 0o077:
            raise ConfigError(
                f"{what} {path} is open to its group or others "
                f"(mode {stat.S_IMODE(status.st_mode):04o}): chmod 600 {path}"
            )
        data = os.read(descriptor, SECRET_MAX_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(data) > SECRET_MAX_BYTES:
        raise ConfigError(f"{what} {path} is larger than {SECRET_MAX_BYTES} bytes")
    secret = data.removesuffix(b"\n")
    if not secret:
        raise ConfigError(f"{what} {path} is empty")
    if not SECRET_PATTERN.fullmatch(secret):
        raise ConfigError(f"{what} {path}: one line of printable ASCII without spaces expected")
    if len(secret) < SECRET_MIN_LENGTH:
        raise ConfigError(f"{what} {path}: at least {SECRET_MIN_LENGTH} characters expected")
    return secret
