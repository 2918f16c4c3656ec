"""The agent's one exception tree.

Everything the agent raises on purpose derives from :class:`AgentError`. The HTTP layer maps
:class:`RequestError` subclasses to status codes and sends only their ``public_message``:
internal details (paths, device names, tracebacks) never reach a peer.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration file is missing, unreadable or invalid."""


class DeviceError(AgentError):
    """A capture device could not be opened or stopped delivering."""


class EncoderError(AgentError):
    """An encoder could not be created or failed on a frame."""


class SessionError(AgentError):
    """A class session operation is not possible in the current state."""


class ProtocolError(AgentError):
    """A peer sent a message that breaks one of our documented protocols."""


class RequestError(AgentError):
    """An HTTP request that must be refused; ``status`` and ``public_message`` go to the peer."""

    status = 400

    def __init__(
        self,
        public_message: str,
        class_state: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        self.class_state = class_state
        """For join-link refusals: ``waiting``, ``ended``, ``invalid`` or ``full``, sent as the
        ``X-Class-State`` header so a page can show the right screen (docs/whep.md)."""
        self.retry_after_s = retry_after_s
        """Sent as ``Retry-After`` (seconds) with 429 and 503 refusals."""


class BadRequest(RequestError):
    status = 400


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class RequestTimeout(RequestError):
    status = 408


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class TooManyRequests(RequestError):
    status = 429


class ServiceUnavailable(RequestError):
    status = 503
