"""ICE servers for kits and pupils (provisioning/ice.py): Link headers, credential lifetimes and
renewal with an injected clock, one live set per kit, and the server's TURN options."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest

from kitlink import IceServers, parse_server_message
from kitsys.icelinks import link_header
from provisioning.cli import _parser, turn_options
from provisioning.errors import ConfigError
from provisioning.ice import (
    ICE_FEATURE,
    MINT_BURST,
    IceIssuer,
    KitIce,
    TurnSettings,
    kit_subject,
    load_turn,
)
from provisioning.server import ServerOptions, load_ice
from provisioning.turn import parse_turn_url

SECRET = b"north-wind-secret-0123"
URLS = (
    "turn:turn.example.fr:3478?transport=udp",
    "turn:turn.example.fr:443?transport=tcp",
    "turns:turn.example.fr:443?transport=tcp",
)
HOUR = 3600.0
T0 = 1_700_000_000.0
DIGEST = "ab" * 32


# -- a small RFC 8288 parser, written apart from the code under test ------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_links(field: str) -> list[tuple[str, dict[str, str]]]:
    """``Link`` field values (several may be joined with commas) → [(target, {param: value})],
    by RFC 8288 §3: ``<URI-Reference> *( OWS ";" OWS token BWS [ "=" BWS (token /
    quoted-string) ] )``; parameter names are case-insensitive."""
    links: list[tuple[str, dict[str, str]]] = []
    i = 0

    def skip_ws() -> None:
        nonlocal i
        while i < len(field) and field[i] in " \t":
            i += 1

    while True:
        skip_ws()
        assert field[i] == "<", f"expected '<' at {i}: {field!r}"
        end = field.index(">", i)
        target, i = field[i + 1 : end], end + 1
        params: dict[str, str] = {}
        while True:
            skip_ws()
            if i >= len(field) or field[i] == ",":
                break
            assert field[i] == ";", f"expected ';' at {i}: {field!r}"
            i += 1
            skip_ws()
            name_match = _TOKEN.match(field, i)
            assert name_match, f"expected a parameter name at {i}"
            name, i = name_match.group().lower(), name_match.end()
            skip_ws()
            value = ""
            if i < len(field) and field[i] == "=":
                i += 1
                skip_ws()
                if field[i] == '"':
                    i += 1
                    chars = []
                    while field[i] != '"':
                        if field[i] == "\\":
                            i += 1
                        chars.append(field[i])
                        i += 1
                    value, i = "".join(chars), i + 1
                else:
                    token_match = _TOKEN.match(field, i)
                    assert token_match
                    value, i = token_match.group(), token_match.end()
            assert name not in params, f"parameter {name} twice"
            params[name] = value
        links.append((target, params))
        if i >= len(field):
            return links
        i += 1  # the comma between two link-values


def coturn_accepts(username: str, password: str, secret: bytes, now: float) -> bool:
    """What coturn's use-auth-secret checks: the HMAC of the username, and its expiry."""
    expected = base64.b64encode(hmac.new(secret, username.encode(), hashlib.sha1).digest())
    return hmac.compare_digest(expected.decode(), password) and int(username.split(":")[0]) > now


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(urls: tuple[str, ...] = URLS, class_s: float = 2 * HOUR) -> TurnSettings:
    return TurnSettings(tuple(parse_turn_url(u) for u in urls), SECRET, class_s, 0.5 * HOUR)


# -- Link headers ---------------------------------------------------------------------------------


def test_link_header_has_rfc_9725_form_and_parses_back() -> None:
    value = link_header(URLS[0], "1700007200:pupil-0a1b", "UTaVxrMUso4ELqWhElBtyAGXmXE=")
    assert value == (
        '<turn:turn.example.fr:3478?transport=udp>; rel="ice-server"; '
        'username="1700007200:pupil-0a1b"; credential="UTaVxrMUso4ELqWhElBtyAGXmXE="; '
        'credential-type="password"'
    )
    assert parse_links(value) == [
        (
            URLS[0],
            {
                "rel": "ice-server",
                "username": "1700007200:pupil-0a1b",
                "credential": "UTaVxrMUso4ELqWhElBtyAGXmXE=",
                "credential-type": "password",
            },
        )
    ]
    assert link_header("stun:turn.example.fr:3478") == (
        '<stun:turn.example.fr:3478>; rel="ice-server"'
    )


def test_link_parameters_are_escaped_and_round_trip() -> None:
    odd = 'a"b\\c'
    ((target, params),) = parse_links(
        link_header("turn:[2001:db8::1]:3478?transport=udp", odd, odd)
    )
    assert target == "turn:[2001:db8::1]:3478?transport=udp"
    assert params["username"] == odd and params["credential"] == odd
    with pytest.raises(ValueError, match="control character"):
        link_header(URLS[0], "user\r\nSet-Cookie: x=1", "c")
    with pytest.raises(ValueError, match="not allowed"):
        link_header("turn:x>; rel=evil", "u", "c")


def test_pupil_links_stun_first_then_every_turn_url_with_one_fresh_credential() -> None:
    clock = Clock()
    issuer = IceIssuer(settings(), clock)
    started = T0 - 0.5 * HOUR  # the class started half an hour ago
    links = parse_links(", ".join(issuer.pupil_links(started)))  # as a browser joins them
    assert [target for target, _ in links] == ["stun:turn.example.fr:3478", *URLS]
    assert links[0][1] == {"rel": "ice-server"}  # STUN needs no credential
    turn = [params for _, params in links[1:]]
    assert len({(p["username"], p["credential"]) for p in turn}) == 1
    username, password = turn[0]["username"], turn[0]["credential"]
    assert re.fullmatch(r"\d+:pupil-[0-9a-f]{16}", username)
    # Expected end of the class (start + 2 h) + 30 min margin.
    assert int(username.split(":")[0]) == int(started + 2.5 * HOUR)
    assert coturn_accepts(username, password, SECRET, clock.now)
    assert not coturn_accepts(username, password, SECRET + b"x", clock.now)
    assert not coturn_accepts(username, password, SECRET, started + 2.5 * HOUR)
    second = parse_links(issuer.pupil_links(started)[1])[0][1]["username"]
    assert second != username, "every pupil request gets its own username"
    assert issuer.pupil_sets == 2


def test_a_pupil_of_an_overrunning_class_gets_the_margin_from_now() -> None:
    clock = Clock()
    issuer = IceIssuer(settings(), clock)
    assert issuer.pupil_expiry(T0 - 5 * HOUR) == int(T0 + 0.5 * HOUR)
    assert issuer.pupil_expiry(None) == int(T0 + 2.5 * HOUR)
    assert issuer.pupil_expiry(T0 + 60) == int(T0 + 2.5 * HOUR)  # a clock ahead: not later


def test_no_turn_means_no_links_and_no_stun() -> None:
    issuer = IceIssuer(None)
    assert not issuer.enabled and issuer.pupil_links(T0) == []
    assert issuer.public()["configured"] is False


def test_stun_urls_are_derived_only_from_udp_turn_urls() -> None:
    assert settings().stun_urls == ("stun:turn.example.fr:3478",)
    assert settings(URLS[1:]).stun_urls == ()
    two = ("turn:a.example.fr:3478?transport=udp", "turn:[2001:db8::1]:3478?transport=udp")
    assert settings(two).stun_urls == ("stun:a.example.fr:3478", "stun:[2001:db8::1]:3478")


# -- kits: one live set, renewed before expiry ----------------------------------------------


def test_kit_set_lasts_a_class_plus_margin_and_is_renewed_every_margin() -> None:
    clock = Clock()
    issuer = IceIssuer(settings(), clock)
    state = KitIce()
    first = issuer.kit_credential(state, "kit-0a1b2c", None)
    assert first.subject == "kit-0a1b2c" and first.expires_at == int(T0 + 2.5 * HOUR)
    assert issuer.renew_at(first) == T0 + 0.5 * HOUR
    clock.now = T0 + 0.5 * HOUR - 1
    assert issuer.kit_credential(state, "kit-0a1b2c", None) is first  # still > 2 h left
    clock.now = T0 + 0.5 * HOUR
    second = issuer.kit_credential(state, "kit-0a1b2c", None)
    assert second.expires_at == int(clock.now + 2.5 * HOUR)  # ≥ a whole class for any use
    assert state.minted == 2 and issuer.kit_sets == 2


def test_kit_message_carries_minted_credentials_coturn_accepts() -> None:
    clock = Clock()
    issuer = IceIssuer(settings(), clock)
    credential = issuer.kit_credential(KitIce(), "kit-0a1b2c", DIGEST)
    assert credential.subject == "class-" + DIGEST[:16]
    message = parse_server_message(issuer.kit_message(credential).model_dump_json())
    assert isinstance(message, IceServers)
    servers = message.ice_servers
    assert [s.urls for s in servers] == [["stun:turn.example.fr:3478"], *[[u] for u in URLS]]
    assert servers[0].username == "" and servers[0].credential == ""
    for server in servers[1:]:
        assert server.username == f"{credential.expires_at}:class-{DIGEST[:16]}"
        assert coturn_accepts(server.username, server.credential, SECRET, clock.now)
    assert message.expires_at == credential.expires_at


def test_class_start_gets_a_class_set_within_a_budget_then_reuses_the_current_one() -> None:
    clock = Clock()
    issuer = IceIssuer(settings(), clock)
    state = KitIce(budget_at=T0)
    welcome = issuer.kit_credential(state, "kit-1", None)
    subjects = []
    for n in range(int(MINT_BURST) + 3):  # a stolen credential flipping classes fast
        clock.now += 1
        digest = f"{n:02x}" * 32
        subjects.append(issuer.kit_credential(state, "kit-1", digest).subject)
    burst = int(MINT_BURST)
    assert subjects[:burst] == ["class-" + f"{n:02x}" * 8 for n in range(burst)]
    assert subjects[burst:] == [subjects[burst - 1]] * 3, "beyond the budget: the current set"
    assert state.minted == 1 + burst and welcome.subject == "kit-1"
    # Re-sending on a reconnect: the same set, not a new one.
    same = issuer.kit_credential(state, "kit-1", f"{burst - 1:02x}" * 32)
    assert same == state.credential and state.minted == 1 + burst
    # The budget refills (one every 10 minutes): a later class gets its own set again.
    clock.now += 600
    assert issuer.kit_credential(state, "kit-1", "ff" * 32).subject == "class-" + "f" * 16


def test_an_expiring_set_is_renewed_even_with_the_budget_spent() -> None:
    clock = Clock()
    issuer = IceIssuer(settings(), clock)
    state = KitIce(budget=0.0, budget_at=T0)
    first = issuer.kit_credential(state, "kit-1", None)
    clock.now = issuer.renew_at(first)
    renewed = issuer.kit_credential(state, "kit-1", DIGEST)
    assert renewed.subject == "class-" + DIGEST[:16] and renewed.expires_at > first.expires_at


def test_kit_subject_is_always_a_valid_coturn_subject() -> None:
    assert kit_subject("kit-0a1b2c", None) == "kit-0a1b2c"
    assert kit_subject("legacy:kit/1", None) == "kit-legacy_kit_1"
    assert len(kit_subject("x" * 80, None)) == 64
    assert kit_subject("kit-1", DIGEST) == "class-abababababababab"


# -- options ---------------------------------------------------------------------------------------


def secret_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "turn-secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(mode)
    return path


def test_load_turn_reads_and_validates(tmp_path: Path) -> None:
    assert load_turn((), None) is None
    loaded = load_turn(URLS, secret_file(tmp_path), 3 * HOUR, 600)
    assert loaded is not None and loaded.secret == SECRET and loaded.ttl_s == 3 * HOUR + 600
    shown = loaded.public()
    assert shown["urls"] == list(URLS) and shown["secret_set"] is True
    assert SECRET.decode() not in repr(loaded) + repr(shown)


@pytest.mark.parametrize(
    ("urls", "has_secret", "class_s", "margin_s", "reason"),
    [
        (URLS, False, 7200, 1800, "needs --turn-secret-file"),
        ((), True, 7200, 1800, "no --turn-url"),
        ((URLS[0], URLS[0]), True, 7200, 1800, "given twice"),
        (("turn:host?transport=udp",), True, 7200, 1800, "expected turn:HOST:PORT"),
        (URLS, True, 30, 1800, "class length.*from 60 s"),
        (URLS, True, 7200, 2 * 86400, "margin.*to 24 h"),
        (URLS, True, float("nan"), 1800, "number of seconds"),
        (
            tuple(f"turn:h{n}.example.fr:3478?transport=udp" for n in range(5)),
            True,
            7200,
            1800,
            "too many TURN URLs",
        ),
    ],
)
def test_bad_turn_options_are_refused_with_the_reason(
    tmp_path: Path,
    urls: tuple[str, ...],
    has_secret: bool,
    class_s: float,
    margin_s: float,
    reason: str,
) -> None:
    path = secret_file(tmp_path) if has_secret else None
    with pytest.raises(ConfigError, match=reason):
        load_turn(urls, path, class_s, margin_s)


def test_server_refuses_a_secret_file_open_to_others(tmp_path: Path) -> None:
    options = ServerOptions(
        data_dir=tmp_path, turn_urls=URLS, turn_secret_file=secret_file(tmp_path, 0o644)
    )
    with pytest.raises(ConfigError, match="chmod 600"):
        load_ice(options)


def serve_args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["serve", *argv])


def test_cli_flags_env_file_and_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KIT_PROVISIONING_TURN_URLS", raising=False)
    monkeypatch.delenv("KIT_PROVISIONING_TURN_SECRET_FILE", raising=False)
    assert turn_options(serve_args())["turn_urls"] == ()
    path = secret_file(tmp_path)
    flags = ["--turn-url", URLS[0], "--turn-url", URLS[2], "--turn-secret-file", str(path)]
    options = turn_options(serve_args(*flags, "--turn-class-length", "3h", "--turn-margin", "15m"))
    assert options == {
        "turn_urls": (URLS[0], URLS[2]),
        "turn_secret_file": path,
        "turn_class_s": 3 * HOUR,
        "turn_margin_s": 900.0,
    }
    # The env file: URLs separated by spaces or commas; the command line wins.
    monkeypatch.setenv("KIT_PROVISIONING_TURN_URLS", f"{URLS[0]}, {URLS[1]}  {URLS[2]}")
    monkeypatch.setenv("KIT_PROVISIONING_TURN_SECRET_FILE", str(path))
    from_env = turn_options(serve_args())
    assert from_env["turn_urls"] == URLS and from_env["turn_secret_file"] == path
    assert turn_options(serve_args("--turn-url", URLS[1]))["turn_urls"] == (URLS[1],)
    monkeypatch.setenv("KIT_PROVISIONING_TURN_URLS", "turn:host:3478")
    with pytest.raises(ConfigError, match=r"KIT_PROVISIONING_TURN_URLS.*expected turn:HOST"):
        turn_options(serve_args())
    with pytest.raises(SystemExit):
        serve_args("--turn-url", "stun:host:3478?transport=udp")
    assert "must be turn or turns" in capsys.readouterr().err


def test_the_feature_name_is_the_protocols() -> None:
    assert ICE_FEATURE == "ice_servers"
