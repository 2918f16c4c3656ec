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
    ],
)
def test_bad_values_are_refused(data: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        config_from_dict(data)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
