"""The root of the project's exception trees, and the HTTP refusals the kit and the server share.

Everything the project raises on purpose derives from :exc:`KitError`; each package adds only
its own classes under it (``agent/errors.py``, ``provisioning/errors.py``, ``kitlink``), so one
``except KitError`` tells "we refused this on purpose" from a bug. The tree, shared part first:

* :exc:`KitError` — root of every error raised on purpose (this module)

  * :exc:`ProtocolError` — a peer broke one of our documented protocols
  * :exc:`RequestError` — an HTTP request to refuse; ``status`` and ``public_message`` (and the
    ``headers``, e.g. ``Retry-After`` or ``X-Class-State``) go to the peer, nothing else

    * :exc:`BadRequest` 400
    * :exc:`Unauthorized` 401
    * :exc:`Forbidden` 403
    * :exc:`NotFound` 404
    * :exc:`RequestTimeout` 408
    * :exc:`Conflict` 409
    * :exc:`PayloadTooLarge` 413
    * :exc:`UnsupportedMediaType` 415
    * :exc:`TooManyRequests` 429
    * :exc:`BadGateway` 502
    * :exc:`ServiceUnavailable` 503
    * :exc:`GatewayTimeout` 504

  * ``agent.errors.AgentError`` — the kit's own (configuration, encoder, state file, packet
    queue, server-link credential and refusal)
  * ``provisioning.errors.ProvisioningError`` — the server's own (settings, database)
  * ``kitlink.ProtocolError`` (a :exc:`ProtocolError`) — the server link broken by the peer: a
    close code and a reason; ``kitlink.LocalProtocolError`` — this side tried to send what its
    state forbids (a bug)

The HTTP layer (:mod:`kitsys.http`) answers a :exc:`RequestError` with its status, its public
message and its headers, and anything else with a logged traceback and a bare 500: internal
details (paths, device names, tracebacks) never reach a peer.
"""

from __future__ import annotations

from collections.abc import Mapping


class KitError(Exception):
    """Base of every error the project raises on purpose."""


class ProtocolError(KitError):
    """A peer sent a message that breaks one of our documented protocols."""


class RequestError(KitError):
    """An HTTP request that must be refused.

    ``status`` (a class attribute of each subclass) and ``public_message`` are sent to the peer.
    ``class_state`` — for join-link refusals: ``waiting``, ``ended``, ``invalid``, ``full`` or
    ``gone`` — is sent as the ``X-Class-State`` header so a pupil page can show the right screen
    (docs/whep.md); ``retry_after_s`` as ``Retry-After`` (seconds) with 429 and 503 refusals.
    """

    status = 400

    def __init__(
        self,
        public_message: str,
        class_state: str | None = None,
        *,
        retry_after_s: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(public_message)
        self.public_message = public_message
        self.class_state = class_state
        self.retry_after_s = retry_after_s
        self.headers: dict[str, str] = dict(headers or {})
        """Every header sent with the refusal (``X-Class-State`` and ``Retry-After`` included)."""
        if class_state:
            self.headers["X-Class-State"] = class_state
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(retry_after_s)


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class RequestTimeout(RequestError):
    status = 408


class Conflict(RequestError):
    status = 409


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
