"""The install scripts are POSIX sh that ShellCheck finds nothing to say about."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "systemd").glob("*.sh"))


def test_shellcheck_is_silent() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run `make setup` as root (Debian package)"
    assert [p.name for p in SCRIPTS] == ["install-common.sh", "install-kit.sh", "install-server.sh"]
    result = subprocess.run(
        [shellcheck, "--shell=sh", *map(str, SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
