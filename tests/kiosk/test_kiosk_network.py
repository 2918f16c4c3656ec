"""The kiosk says, in plain words, when pupils outside the school cannot reach the class (the
kit's probes found no way out: reach ``none``), and shows each pupil's path discreetly."""

from __future__ import annotations

from typing import Any

from agent.config import IceServerConfig
from agent.webrtc.reach import probes
from tests.chromium import BROWSER_MARKS, open_kiosk, open_pupil_page, stats_until
from tests.conftest import LiveAgent
from tests.kiosk.test_kiosk_problems import problems as shown

pytestmark = BROWSER_MARKS

FR = (
    "Les élèves à la maison ne peuvent pas rejoindre le cours : le réseau de l'établissement"
    " bloque la connexion. Les élèves dans l'établissement le peuvent. Prévenez l'administrateur."
)
EN = (
    "Pupils at home cannot join the class: the school's network blocks the connection."
    " Pupils in the school can. Tell the administrator."
)


def probed(agent: LiveAgent, outcome: str) -> None:
    """As if the kit's probes of the fleet's TURN server had all ended with ``outcome``."""
    network = agent.session.network
    turn = IceServerConfig(
        urls=["turn:turn.example.fr:3478?transport=udp", "turns:turn.example.fr:443"],
        username="9:kit",
        credential="c",
    )
    network.set_given([turn], 600)
    points = network.endpoints()
    network.record(network.generation, {p.key: outcome for p in probes(points)})


async def test_no_way_out_is_said_and_pupil_paths_are_shown(agent: LiveAgent, browser: Any) -> None:
    probed(agent, "timeout")
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_function("document.querySelectorAll('#problems .problem').length > 0")
    assert await shown(kiosk) == [FR]
    status = await agent.status()
    assert status["network"]["reach"] == "none"
    assert status["network"]["turn_error"] == "udp: timeout; tls: timeout"
    await kiosk.click("#lang")
    await kiosk.wait_for_function(
        "document.querySelector('#problems .problem').textContent.startsWith('Pupils')"
    )
    assert await shown(kiosk) == [EN]

    probed(agent, "")  # it works again (e.g. the firewall was opened)
    await kiosk.wait_for_function("document.querySelectorAll('#problems .problem').length === 0")

    await agent.start()
    pupil = await open_pupil_page(browser, agent.session.join_url or "")
    await stats_until(pupil, lambda s: s["state"] == "connected")
    await kiosk.wait_for_selector("#pupils li .path")
    label = await kiosk.eval_on_selector(
        "#pupils li .path", "(e) => [e.textContent, e.dataset.path]"
    )
    assert label == ["direct", "host/udp"]
    status = await agent.status()
    assert status["pupils"][0]["path"] == "host/udp"
    assert status["network"]["paths"] == {"host/udp": 1}
    await pupil.context.close()
    await kiosk.context.close()
