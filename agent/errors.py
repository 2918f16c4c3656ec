"""The kit agent's own errors, under the project's root :exc:`kitsys.errors.KitError`.

The shared part of the tree — :exc:`~kitsys.errors.KitError`, :exc:`~kitsys.errors.ProtocolError`
and the HTTP refusals under :exc:`~kitsys.errors.RequestError` — lives in :mod:`kitsys.errors`
and is re-exported here, so the agent's modules import their errors from one place. The agent's
own branch:

* :exc:`AgentError` — base of every error only the agent raises on purpose

  * :exc:`ConfigError` — the configuration file is missing, unreadable or invalid
  * :exc:`EncoderError` — an encoder could not be created or failed on a frame
  * :exc:`StateFileError` — ``session.json`` exists but is not a state this agent wrote
  * ``agent.media.fanout.QueueClosed`` — a pupil's packet queue ended (the fan-out or the
    pupil went away)
  * ``agent.media.echo.EchoCancellerUnavailable`` — the echo canceller's binding cannot be
    loaded (talk-back)
  * ``agent.sources.mjpeg.MjpegDecodeError`` — a camera's picture is not a decodable JPEG
    (left out and counted)
  * ``agent.link.credential.LinkError`` — the kit's server-link credential is unusable
  * ``agent.link.client.Refused`` — the server closed the server link with a refusal code

Refusals of HTTP requests (``BadRequest`` … ``ServiceUnavailable``) are answered by the HTTP
layer with their status and ``public_message`` only; a pupil's data-channel message that breaks
docs/whep.md raises :exc:`ProtocolError`. Internal details never reach a peer.
"""

from __future__ import annotations

from kitsys.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    KitError,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMediaType,
)

__all__ = [
    "AgentError",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "EncoderError",
    "Forbidden",
    "KitError",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "RequestError",
    "RequestTimeout",
    "ServiceUnavailable",
    "StateFileError",
    "TooManyRequests",
    "UnsupportedMediaType",
]


class AgentError(KitError):
    """Base of every error only the agent raises on purpose."""


class ConfigError(AgentError):
    """The configuration file is missing, unreadable or invalid."""


class EncoderError(AgentError):
    """An encoder could not be created or failed on a frame."""


class StateFileError(AgentError):
    """``session.json`` exists but is not a state this agent wrote."""
