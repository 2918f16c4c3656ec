"""One exception tree: every package's errors derive from kitsys.errors.KitError (issue 15), the
shared refusals are one set of classes, and the kit and the relay serve one pupil-page policy."""

from __future__ import annotations

import agent.errors
import agent.http.app
import provisioning.app
import provisioning.errors
from agent.link.client import Refused
from agent.link.credential import LinkError
from agent.media.fanout import QueueClosed
from kitlink import LocalProtocolError
from kitlink import ProtocolError as LinkProtocolError
from kitsys import errors
from kitsys.http import PAGE_HEADERS


def test_agent_and_server_share_the_pupil_page_policy() -> None:
    assert (
        agent.http.app.PAGE_CSP
        == provisioning.app.PUPIL_CSP
        == PAGE_HEADERS["Content-Security-Policy"]
    )


def test_one_tree_rooted_in_kit_error() -> None:
    for error in (
        agent.errors.AgentError,
        provisioning.errors.ProvisioningError,
        errors.RequestError,
        errors.ProtocolError,
        LocalProtocolError,
    ):
        assert issubclass(error, errors.KitError), error
    for error in (QueueClosed, Refused, LinkError, agent.errors.StateFileError):
        assert issubclass(error, agent.errors.AgentError), error
    assert issubclass(LinkProtocolError, errors.ProtocolError)
    assert agent.errors.ProtocolError is errors.ProtocolError  # one, re-exported
    assert agent.errors.NotFound is provisioning.errors.NotFound is errors.NotFound
    assert issubclass(provisioning.errors.KitRefusal, errors.RequestError)


def test_a_relayed_refusal_keeps_the_kits_status_and_class_state() -> None:
    relayed = provisioning.errors.KitRefusal(409, "the class is not live", "waiting")
    assert (relayed.status, relayed.headers) == (409, {"X-Class-State": "waiting"})
