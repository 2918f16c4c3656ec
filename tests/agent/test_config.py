"""Configuration: the shipped example is valid, mistakes are refused with a readable reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import AgentConfig, config_from_dict, load_config
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_matches_defaults() -> None:
    assert load_config(ROOT / "agent" / "example-config.toml") == AgentConfig()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"camera": {"widht": 1280}}, "camera.widht"),
        ({"camera": {"width": 1281}}, "even"),
        ({"webrtc": {"ice_servers": [{"urls": ["http://x"]}]}}, "stun:"),
        ({"webrtc": {"host_addresses": ["not-an-ip"]}}, "host_addresses"),
        ({"http": {"listen": "nope"}}, "HOST:PORT"),
        ({"encoder": {"keyframe_interval_s": 5}}, "keyframe_interval_s"),
        ({"network": {"uplink_kbps": -1}}, "network.uplink_kbps"),
        ({"network": {"uplink_kbps": 20}}, "20 Mbit/s is 20000"),  # megabits typed
        ({"network": {"uplink_kbps": 10_000_001}}, "network.uplink_kbps"),
        ({"network": {"uplink_kbps": "20000"}}, "valid integer"),
        ({"network": {"uplink_kbps": 20000.0}}, "valid integer"),
        ({"network": {"uplink_kbps": True}}, "valid integer"),
        ({"network": {"uplink": 20000}}, "network.uplink"),
    ],
)
def test_bad_values_are_refused(data: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        config_from_dict(data)


def test_uplink_budget() -> None:
    assert AgentConfig().network.uplink_kbps == 0  # no budget unless the school sets one
    for kbps in (0, 256, 20_000, 10_000_000):
        assert config_from_dict({"network": {"uplink_kbps": kbps}}).network.uplink_kbps == kbps


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
