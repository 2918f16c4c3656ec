"""The agent starts whatever state its configuration file is in, and says so."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from agent.problems import Problems
from agent.startup import LAST_GOOD_FILE, startup_config

GOOD = """
state_dir = "{state}"
[kiosk]
language = "en"
[camera]
width = 640
height = 360
"""


def write_good(path: Path, state: Path) -> str:
    text = GOOD.format(state=state)
    path.write_text(text, encoding="utf-8")
    return text


def test_a_good_file_is_used_and_kept_as_the_last_good(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config_file = tmp_path / "agent.toml"
    text = write_good(config_file, state)
    problems = Problems()
    config = startup_config(config_file, problems)
    assert (config.kiosk.language, config.camera.width) == ("en", 640)
    assert (state / LAST_GOOD_FILE).read_text(encoding="utf-8") == text
    assert (state / LAST_GOOD_FILE).stat().st_mode & 0o777 == 0o600
    assert problems.as_list() == []
    assert [p.name for p in state.iterdir()] == [LAST_GOOD_FILE]  # no temporary file left


@pytest.mark.parametrize(
    "damage",
    [
        b'state_dir = "/var/lib/kit"\n[kiosk\n',  # not TOML
        b"[camera]\nwidth = 641\n",  # invalid value
        b"[camera]\nwidht = 640\n",  # unknown key
        b"\xff\xfe\x00garbage",  # not UTF-8
    ],
)
def test_a_corrupt_file_falls_back_to_the_last_good(
    tmp_path: Path, damage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    config_file = tmp_path / "agent.toml"
    write_good(config_file, state)
    startup_config(config_file, Problems())
    config_file.write_bytes(damage)
    problems = Problems()
    with caplog.at_level(logging.ERROR, "agent.config"):
        config = startup_config(config_file, problems, str(state))
    assert (config.kiosk.language, config.camera.width) == ("en", 640)
    [problem] = problems.as_list()
    assert problem["code"] == "config_unreadable"
    assert problem["fallback"] == "last_good"
    assert str(config_file) in problem["detail"]
    assert "configuration unusable" in caplog.text
    assert caplog.records[0].fallback == "last_good"  # a journal field: FALLBACK=
    # The broken file never replaces the good copy.
    assert "language" in (state / LAST_GOOD_FILE).read_text(encoding="utf-8")


def test_a_missing_file_without_a_copy_runs_on_the_defaults(tmp_path: Path) -> None:
    state = tmp_path / "state"
    problems = Problems()
    config = startup_config(tmp_path / "absent.toml", problems, str(state))
    assert config.kiosk.language == "fr"
    assert config.state_dir == str(state)  # an enrolled kit still finds its credential
    [problem] = problems.as_list()
    assert (problem["code"], problem["fallback"]) == ("config_missing", "defaults")


def test_an_unusable_copy_means_the_defaults(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / LAST_GOOD_FILE).write_text("[[[", encoding="utf-8")
    (tmp_path / "agent.toml").write_text("[camera]\nfps = 0\n", encoding="utf-8")
    problems = Problems()
    config = startup_config(tmp_path / "agent.toml", problems, str(state))
    assert config.camera.fps == 30
    assert problems.as_list()[0]["fallback"] == "defaults"


def test_disk_full_when_saving_the_copy_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    config_file = tmp_path / "agent.toml"
    write_good(config_file, state)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    problems = Problems()
    config = startup_config(config_file, problems)
    assert config.kiosk.language == "en"
    assert [p["code"] for p in problems.as_list()] == ["disk_full"]
    assert not state.exists() or list(state.iterdir()) == []


def test_systemd_state_directory_is_the_state_dir_unless_the_file_names_one(
    tmp_path: Path,
) -> None:
    unit_state = tmp_path / "unit-state"
    plain = tmp_path / "plain.toml"
    plain.write_text('[kiosk]\nlanguage = "en"\n')
    config = startup_config(plain, Problems(), str(unit_state))
    assert config.state_dir == str(unit_state) and config.kiosk.language == "en"
    assert (unit_state / LAST_GOOD_FILE).read_text() == plain.read_text()
    named = tmp_path / "named.toml"
    named.write_text(f'state_dir = "{tmp_path / "own"}"\n')
    assert startup_config(named, Problems(), str(unit_state)).state_dir == str(tmp_path / "own")
