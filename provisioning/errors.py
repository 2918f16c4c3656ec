"""The provisioning server's one exception tree.

Everything the server raises on purpose derives from :class:`ProvisioningError`. The HTTP layer
maps :class:`RequestError` subclasses to status codes and sends only ``public_message``; link
protocol violations are :class:`provisioning.protocol.ProtocolError` (a close code and reason).
"""

from __future__ import annotations


class ProvisioningError(Exception):
    """Base of every error the server raises on purpose."""


class ConfigError(ProvisioningError):
    """Invalid command line or server settings."""


class DatabaseError(ProvisioningError):
    """The database cannot be opened or migrated."""


class RequestError(ProvisioningError):
    """A request that must be refused; ``status`` and ``public_message`` go to the client."""

    status = 400

    def __init__(self, public_message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        self.headers = headers or {}


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class Gone(RequestError):
    status = 410


class RequestTimeout(RequestError):
    status = 408


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class TooManyRequests(RequestError):
    status = 429


class BadGateway(RequestError):
    status = 502


class ServiceUnavailable(RequestError):
    status = 503


class GatewayTimeout(RequestError):
    status = 504


class KitRefusal(RequestError):
    """A relayed WHEP request the kit refused: its status and public message, passed on."""

    def __init__(self, status: int, public_message: str, class_state: str | None = None) -> None:
        super().__init__(public_message, {"X-Class-State": class_state} if class_state else None)
        self.status = status
