"""The kit's WHEP endpoint hands pupils their ICE servers (``webrtc.pupil_ice_servers``) in
``Link: rel="ice-server"`` headers (RFC 9725 section 4.6) on OPTIONS and on the 201 answer;
never the kit's own (server-given) TURN credentials; only for a live class's own link."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, IceServerConfig, config_from_dict
from agent.webrtc.ice import link_headers
from tests.conftest import AgentFactory, chrome_offer_on_loopback

PUPILS = [
    {
        "urls": ["turn:turn.lycee.fr:3478?transport=udp", "turns:turn.lycee.fr:443?transport=tcp"],
        "username": "eleves",
        "credential": 'a"b\\c',
    },
    {"urls": ["stun:turn.lycee.fr:3478"]},
]
EXPECTED = [
    '<turn:turn.lycee.fr:3478?transport=udp>; rel="ice-server"; username="eleves";'
    ' credential="a\\"b\\\\c"; credential-type="password"',
    '<turns:turn.lycee.fr:443?transport=tcp>; rel="ice-server"; username="eleves";'
    ' credential="a\\"b\\\\c"; credential-type="password"',
    '<stun:turn.lycee.fr:3478>; rel="ice-server"',
]


def test_link_header_form() -> None:
    servers = [IceServerConfig.model_validate(s) for s in PUPILS]
    assert link_headers(servers) == EXPECTED


@pytest.mark.parametrize(
    "server",
    [
        {"urls": ["turn:x>y"]},
        {"urls": ["turn:x y"]},
        {"urls": ["turn:x"], "username": "a\r\nLink: <stun:evil>"},
        {"urls": ["turn:x"], "credential": "x" * 201},
    ],
)
def test_what_cannot_go_in_a_header_is_refused_in_the_config(server: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="pupil_ice_servers"):
        config_from_dict({"webrtc": {"pupil_ice_servers": [server]}})


async def test_options_and_answer_carry_the_pupils_servers_only(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(webrtc={"pupil_ice_servers": PUPILS})
    kit_turn = IceServerConfig(
        urls=["turn:fleet.example.fr:3478?transport=udp"], username="9:kit", credential="KITSECRET"
    )
    agent.session.network.set_given([kit_turn], 600)  # the kit's own, from its server
    whep = await agent.start()
    async with agent.http.options(whep) as response:
        assert response.status == 204
        assert response.headers.getall("Link") == EXPECTED
        assert "Link" in response.headers["Access-Control-Expose-Headers"]
    offer = chrome_offer_on_loopback()
    headers = {"Content-Type": "application/sdp"}
    async with agent.http.post(whep, data=offer, headers=headers) as response:
        assert response.status == 201, await response.text()
        assert response.headers.getall("Link") == EXPECTED
        everything = str(response.headers) + await response.text()
    assert "KITSECRET" not in everything and "fleet.example.fr" not in everything
    # Another class's link, or none: no servers handed out.
    async with agent.http.options(whep[:-4] + "AAAA") as response:
        assert response.status == 204 and "Link" not in response.headers


async def test_no_pupil_servers_no_link(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    whep = await agent.start()
    async with agent.http.options(whep) as response:
        assert response.status == 204 and "Link" not in response.headers
