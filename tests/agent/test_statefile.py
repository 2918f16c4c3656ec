"""State files: atomic replacement, and a full disk reported rather than fatal."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from agent.problems import Problems
from agent.statefile import DISK_FULL, check_free_space, write_atomic


def no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_write_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    problems = Problems()
    assert write_atomic(target, b"one", problems)
    assert write_atomic(target, b"two", problems)
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["state.json"]


def test_disk_full_keeps_the_old_file_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "state.json"
    problems = Problems()
    assert write_atomic(target, b"old", problems)
    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, "agent.state"):
        patch.setattr(os, "fsync", no_space)
        assert not write_atomic(target, b"new", problems)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]  # the temporary file is gone
    assert [p["code"] for p in problems.as_list()] == [DISK_FULL]
    assert "disk full" in caplog.text
    # Space is back: the next write clears the problem.
    assert write_atomic(target, b"new", problems)
    assert problems.as_list() == []


def test_other_errors_are_logged_not_reported_as_disk_full(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    problems = Problems()
    assert not write_atomic(blocker / "below" / "state.json", b"x", problems)
    assert problems.as_list() == []


def test_free_space_check(tmp_path: Path) -> None:
    problems = Problems()
    assert not check_free_space(tmp_path, problems, minimum=1 << 62)
    assert problems.as_list()[0]["code"] == DISK_FULL
    assert check_free_space(tmp_path, problems, minimum=0)
    assert problems.as_list() == []
    assert check_free_space(tmp_path / "absent", problems)
