"""The provisioning server's own errors, under the project's root :exc:`kitsys.errors.KitError`.

The shared part of the tree — :exc:`~kitsys.errors.KitError` and the HTTP refusals under
:exc:`~kitsys.errors.RequestError` — lives in :mod:`kitsys.errors` and is re-exported here, so
the server's modules import their errors from one place. The server's own branch:

* :exc:`ProvisioningError` — base of every error only the server raises on purpose

  * :exc:`ConfigError` — invalid command line or server settings
  * :exc:`DatabaseError` — the database cannot be opened or migrated

* :exc:`KitRefusal` (a :exc:`~kitsys.errors.RequestError`) — a relayed WHEP request the kit
  refused: the kit's status, public message and class state, passed on to the pupil

Server-link protocol violations (a close code and a reason) are ``kitlink.ProtocolError``, a
:exc:`kitsys.errors.ProtocolError`. The HTTP layer answers a
:exc:`RequestError` with its status, ``public_message`` and headers only.
"""

from __future__ import annotations

from kitsys.errors import (
    BadGateway,
    BadRequest,
    Conflict,
    Forbidden,
    GatewayTimeout,
    KitError,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = [
    "BadGateway",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DatabaseError",
    "Forbidden",
    "GatewayTimeout",
    "KitError",
    "KitRefusal",
    "NotFound",
    "PayloadTooLarge",
    "ProvisioningError",
    "RequestError",
    "RequestTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
]


class ProvisioningError(KitError):
    """Base of every error only the server raises on purpose."""


class ConfigError(ProvisioningError):
    """Invalid command line or server settings."""


class DatabaseError(ProvisioningError):
    """The database cannot be opened or migrated."""


class KitRefusal(RequestError):
    """A relayed WHEP request the kit refused: its status and public message, passed on."""

    def __init__(self, status: int, public_message: str, class_state: str | None = None) -> None:
        super().__init__(public_message, class_state)
        self.status = status
