"""The cluster's rules without processes (provisioning/cluster.py, docs/cluster.md): the events
between nodes, the signature of forwarded requests, resource ids, the take-over's effect on a
fleet, the options, reading a forwarded answer. End to end with real processes:
test_cluster.py.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from kitlink import CLOSE_REPLACED
from provisioning import cluster
from provisioning.cluster import (
    MAX_PAYLOAD,
    DeadEvent,
    ForwardAuth,
    KitEvent,
    LayerEvent,
    LinkEvent,
    TokenEvent,
    decode,
    read_bounded,
    resource_node,
    stale_before,
)
from provisioning.errors import ConfigError, Forbidden
from provisioning.fleet import Fleet, Settings
from provisioning.server import ServerOptions, load_cluster
from provisioning.writer import Writer

REPO = Path(__file__).resolve().parents[2]
SECRET = "cluster-secret-for-tests-0123456789"
TURN_URL = "turn:192.0.2.10:3478?transport=udp"  # never contacted: OPTIONS only names it


# -- message level ------------------------------------------------------------------------------


def test_events_round_trip_and_garbage_is_refused() -> None:
    digest = "ab" * 32
    events = [
        KitEvent(node="a", summary={"id": "kit-1", "online": True}, link_node="a"),
        TokenEvent(node="a", kit="kit-1", digest=digest, live=True, at=12.5),
        LayerEvent(node="b", level="school", scope="0751234A"),
        LinkEvent(node="b", kit="kit-1", at=3.5),
        DeadEvent(node="b", dead="a"),
    ]
    for event in events:
        payload = cluster.encode(event)
        assert payload is not None and decode(payload) == event
    for garbage in (
        "",
        "not json",
        "[]",
        '{"kind": "kit", "node": "a"}',  # no summary
        '{"kind": "kit", "node": "a", "summary": {"online": true}}',  # no kit id
        '{"kind": "nope", "node": "a"}',
        '{"kind": "token", "node": "a", "kit": "k", "digest": "zz", "live": true, "at": 1}',
        '{"kind": "layer", "node": "a", "level": "planet", "scope": ""}',
        '{"kind": "dead", "node": "a", "dead": "b", "extra": 1}',
        json.dumps({"kind": "link", "node": "a", "kit": "k" * 9000}),
    ):
        assert decode(garbage) is None, garbage


def test_a_kit_event_too_large_loses_its_network_part_then_is_dropped() -> None:
    network = {"reach": "direct", "paths": {f"p{i}": i for i in range(900)}}
    event = KitEvent(node="a", summary={"id": "kit-1", "network": network})
    payload = cluster.encode(event)
    assert payload is not None and len(payload.encode()) <= MAX_PAYLOAD
    decoded = decode(payload)
    assert isinstance(decoded, KitEvent) and decoded.summary == {"id": "kit-1", "network": None}
    huge = KitEvent(node="a", summary={"id": "kit-1", "name": "x" * MAX_PAYLOAD})
    assert cluster.encode(huge) is None


def test_forwarded_requests_are_signed_and_checked(caplog: pytest.LogCaptureFixture) -> None:
    now = [1_000_000.0]
    auth = ForwardAuth(SECRET.encode(), lambda: now[0])
    headers = auth.sign("POST", "/whep/TOKEN", "198.51.100.7", "a")
    assert ForwardAuth.is_forwarded(headers)
    assert auth.check("POST", "/whep/TOKEN", headers) == "198.51.100.7"
    now[0] += 29
    assert auth.check("post", "/whep/TOKEN", headers) == "198.51.100.7"
    refused = [
        ("DELETE", "/whep/TOKEN", headers),  # another method
        ("POST", "/whep/OTHER", headers),  # another path
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_PUPIL: "203.0.113.9"}),  # another pupil
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_NODE: "b"}),
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_AUTH: "0" * 64}),
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_TIME: "soon"}),
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_TIME: "9" * 5000}),
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_TIME: "١٢٣"}),
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_AUTH: "é" * 64}),
        ("POST", "/whep/TOKEN", {**headers, cluster.HEADER_PUPIL: "\udcff"}),
        ("POST", "/whep/TOKEN", {cluster.HEADER_PUPIL: "203.0.113.9"}),  # unsigned
    ]
    caplog.set_level(logging.WARNING, "provisioning.cluster")
    for method, path, sent in refused:
        with pytest.raises(Forbidden):
            auth.check(method, path, sent)
    now[0] += 2  # 31 s after signing: stale
    with pytest.raises(Forbidden):
        auth.check("POST", "/whep/TOKEN", headers)
    other = ForwardAuth(b"another-cluster-secret-0123456789", lambda: now[0])
    with pytest.raises(Forbidden):
        other.check("POST", "/whep/TOKEN", auth.sign("POST", "/whep/TOKEN", "192.0.2.1", "a"))
    with pytest.raises(Forbidden):  # a single node refuses every forwarded request
        ForwardAuth(None).check("POST", "/whep/TOKEN", headers)
    assert auth.refused == len(refused) + 1
    warned = [r for r in caplog.records if "forwarded request" in r.getMessage()]
    assert len(warned) == 3  # once per node (three here)


def test_resource_ids_name_their_node_and_stale_is_thirty_seconds() -> None:
    assert resource_node("AbC-d_e.node-a") == "node-a"
    assert resource_node("AbC-d_e.srv1.example.fr-8443") == "srv1.example.fr-8443"
    assert resource_node("AbC-d_e") is None  # a single node's
    assert resource_node("AbC.") is None and resource_node("AbC.-x") is None
    assert stale_before(100.0) == 70.0
    assert stale_before(100.0, dead_after_s=10.0) == 90.0


@dataclass
class FakeLink:
    closed: list[tuple[int, str]] = field(default_factory=list)

    async def send(self, message: Any) -> None:
        pass

    def close_soon(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


async def _fleet(tmp_path: Path) -> Fleet:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'fleet.sqlite3'}")
    fleet = Fleet(engine, Settings(), Writer(engine))
    for number in range(4):
        row = {
            "id": f"kit-{number}",
            "name": f"Kit {number}",
            "school_id": "0751234A",
            "departement": "75",
            "secret_hash": "0" * 64,
        }
        fleet.add(row)
    return fleet


async def test_a_dead_node_s_kits_go_offline_once_and_a_link_here_is_kept(tmp_path: Path) -> None:
    fleet = await _fleet(tmp_path)
    kits = [fleet.kits[f"kit-{n}"] for n in range(4)]
    for kit in kits[:3]:
        await fleet.apply_summary(kit, {**kit.summary(), "online": True, "last_seen": 50.0}, "a")
    mine = FakeLink()
    kits[2].link, kits[2].link_node = mine, "b"  # linked here since (its event not yet seen)
    queue = fleet.subscribe(lambda kit: True)
    gone = fleet.node_dead("a")
    assert gone == kits[:2]
    assert [k.online for k in kits] == [False, False, True, False]
    assert kits[0].offline_since == 50.0 and kits[0].link_node is None
    assert kits[2].link is mine and kits[2].link_node == "b" and not mine.closed
    assert [queue.get_nowait()["id"] for _ in range(queue.qsize())] == ["kit-0", "kit-1"]
    assert fleet.node_dead("a") == []  # once


async def test_another_node_s_events_never_touch_a_link_here(tmp_path: Path) -> None:
    fleet = await _fleet(tmp_path)
    kit = fleet.kits["kit-0"]
    link = FakeLink()
    kit.link, kit.link_node, kit.online = link, "b", True
    await fleet.apply_summary(kit, {**kit.summary(), "online": False, "name": "Renamed"}, None)
    assert kit.link is link and kit.online and kit.name == "Renamed"
    fleet.apply_token(kit, "cd" * 32, True, 1.0)  # a stale claim from elsewhere: ignored
    assert kit.token is None
    kit.linked_at = 100.0
    fleet.moved_away(kit, "a", 99.0)  # an older move (the kit came back here since): ignored
    assert kit.link is link and kit.link_node == "b" and not link.closed
    fleet.moved_away(kit, "a", 101.0)  # the kit linked to node a: this link is stale
    assert kit.link is None and kit.link_node == "a" and link.closed[0][0] == CLOSE_REPLACED
    other = fleet.kits["kit-1"]
    fleet.apply_token(other, "cd" * 32, True, 5.0)
    assert fleet.by_token["cd" * 32] is other and other.class_started_at == 5.0
    fleet.apply_token(other, "cd" * 32, False, 0.0)
    assert other.token is None and fleet.owner("cd" * 32) == "kit-1"


def test_cluster_options_are_checked(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    pg = "postgresql://postgres@127.0.0.1:5/x"

    def options(**changes: Any) -> ServerOptions:
        return ServerOptions(data_dir=tmp_path, **changes)

    assert load_cluster(options()) is None
    settings = load_cluster(
        options(db=pg, node_url="http://10.0.0.2:8443/", cluster_secret_file=secret, node_id="a")
    )
    assert settings is not None and settings.url == "http://10.0.0.2:8443"
    assert settings.node_id == "a" and settings.secret == SECRET.encode()
    default = load_cluster(
        options(db=pg, node_url="http://10.0.0.2:8443", cluster_secret_file=secret)
    )
    assert default is not None and default.node_id.endswith("-8443")
    refusals = {
        "PostgreSQL": options(node_url="http://10.0.0.2:8443", cluster_secret_file=secret),
        "needs --cluster-secret-file": options(db=pg, node_url="http://10.0.0.2:8443"),
        "give --node-url too": options(db=pg, cluster_secret_file=secret),
        "HOST[:PORT] expected": options(db=pg, node_url="http://10.0.0.2:8443/x",
                                        cluster_secret_file=secret),
        "Port out of range": options(db=pg, node_url="http://10.0.0.2:99999",
                                     cluster_secret_file=secret),
        "node id": options(db=pg, node_url="http://h:1", cluster_secret_file=secret,
                           node_id="no spaces"),
    }  # fmt: skip
    for expected, bad in refusals.items():
        with pytest.raises(ConfigError, match=re.escape(expected)):
            load_cluster(bad)
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"cluster secret file .* open to its group"):
        load_cluster(options(db=pg, node_url="http://h:1", cluster_secret_file=secret))


class Trickle:
    """An answer body that arrives 7 bytes at a time (a stream's ``read(n)`` gives what has
    arrived, not ``n`` bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int) -> bytes:
        chunk, self.data = self.data[: min(n, 7)], self.data[min(n, 7) :]
        return chunk


async def test_a_forwarded_answer_in_pieces_is_read_whole_and_bounded() -> None:
    sdp = b"v=0\r\n" + b"a=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n" * 40
    assert await read_bounded(cast(aiohttp.StreamReader, Trickle(sdp)), 64 * 1024) == sdp
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_bounded(cast(aiohttp.StreamReader, Trickle(b"x" * 101)), 100)
    assert await read_bounded(cast(aiohttp.StreamReader, Trickle(b"x" * 100)), 100) == b"x" * 100
