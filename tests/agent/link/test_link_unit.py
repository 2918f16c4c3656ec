"""The agent's side of the link, without a server: backoff, credential file, config apply."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.link.apply import PushedConfigs
from agent.link.client import backoff_delay
from agent.link.credential import (
    Credential,
    LinkError,
    check_server_url,
    load_credential,
    save_credential,
)
from agent.session import ClassSession, SessionState
from kitlink import PushConfig, PushedConfig, config_version
from tests.conftest import agent_config


def test_backoff_is_jittered_exponential_and_capped() -> None:
    assert backoff_delay(0, 1, 60, lambda: 1.0) == 1
    assert [backoff_delay(n, 1, 60, lambda: 1.0) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(50, 1, 60, lambda: 0.5) == 30
    assert backoff_delay(3, 1, 60, lambda: 0.0) == 0.5  # never a busy loop


def test_after_any_outage_every_kit_redials_within_the_default_cap() -> None:
    """Issue 16: all kits back ≤ 30 s after the server returns, however long it was down."""
    server = agent_config().server
    worst = max(
        backoff_delay(n, server.reconnect_min_s, server.reconnect_max_s, lambda: 1.0)
        for n in range(200)
    )
    assert worst == server.reconnect_max_s <= 20


def test_credential_file_is_private_and_round_trips(tmp_path: Path) -> None:
    credential = Credential("https://prov.example.fr", "kit-0011aabbccdd", "s" * 43)
    path = save_credential(tmp_path / "state", credential)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credential(tmp_path / "state") == credential
    assert credential.link_url == "wss://prov.example.fr/link/v1"
    assert load_credential(tmp_path / "nothing") is None
    path.write_text("{broken")
    with pytest.raises(LinkError):
        load_credential(tmp_path / "state")
    with pytest.raises(LinkError):
        check_server_url("ftp://x")


def _push(overlay: dict[str, object]) -> PushConfig:
    return PushConfig(version=config_version(overlay), config=PushedConfig.model_validate(overlay))


def test_pushed_config_validated_applied_and_remembered(tmp_path: Path) -> None:
    base = agent_config(state_dir=str(tmp_path))
    configs = PushedConfigs(base, tmp_path)
    session = ClassSession(base, "")
    configs.session = session
    good = _push({"camera": {"fps": 15}, "kiosk": {"language": "en"}})
    assert configs.offer(good).status == "applied"
    assert session.config.camera.fps == 15 and session.config.kiosk.language == "en"
    bad = _push({"camera": {"fps": 500}})
    ack = configs.offer(bad)
    assert ack.status == "refused" and "camera.fps" in ack.reason
    assert session.config.camera.fps == 15 and configs.version == good.version
    unknown_language = configs.offer(_push({"kiosk": {"language": "de"}}))
    assert unknown_language.status == "refused" and "kiosk.language" in unknown_language.reason
    # A restart starts with the last applied push, over the file's values.
    again = PushedConfigs(base, tmp_path)
    assert again.startup_config().camera.fps == 15 and again.version == good.version


def test_media_change_waits_for_the_end_of_the_class(tmp_path: Path) -> None:
    base = agent_config()
    configs = PushedConfigs(base, None)
    session = ClassSession(base, "")
    configs.session = session
    session.state = SessionState.LIVE  # as during a class
    safe = _push({"webrtc": {"ice_servers": [{"urls": ["stun:stun.example.fr:3478"]}]}})
    assert configs.offer(safe).status == "applied"
    assert session.config.webrtc.ice_servers[0].urls == ["stun:stun.example.fr:3478"]
    media = _push({"camera": {"bitrate_kbps": 900}})
    assert configs.offer(media).status == "deferred"
    assert session.config.camera.bitrate_kbps == base.camera.bitrate_kbps
    assert configs.session_changed() is None  # still live
    session.state = SessionState.IDLE
    ack = configs.session_changed()
    assert ack is not None and ack.status == "applied" and ack.version == media.version
    assert session.config.camera.bitrate_kbps == 900


def test_uplink_budget_applies_at_once_even_during_a_class() -> None:
    """It changes no capture or encoding: the class's allocation uses it from now on."""
    base = agent_config()
    configs = PushedConfigs(base, None)
    session = ClassSession(base, "")
    configs.session = session
    session.state = SessionState.LIVE
    assert configs.offer(_push({"network": {"uplink_kbps": 20000}})).status == "applied"
    assert session.config.network.uplink_kbps == 20000
    typo = configs.offer(_push({"network": {"uplink_kbps": 20}}))
    assert typo.status == "refused" and "network.uplink_kbps" in typo.reason
    assert session.config.network.uplink_kbps == 20000
