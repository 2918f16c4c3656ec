"""One version number: pyproject.toml's, which install-kit.sh compares and the kiosk watches."""

from __future__ import annotations

import tomllib
from pathlib import Path

import agent
import provisioning

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_agent_reports_the_installed_version() -> None:
    with PYPROJECT.open("rb") as file:
        version = tomllib.load(file)["project"]["version"]
    assert agent.__version__ == version
    assert not hasattr(provisioning, "__version__") or provisioning.__version__ == version
