"""The configuration the agent starts with, whatever state its file is in.

A kit in a classroom must come up even when its configuration file is missing or broken (a
bad edit, a half-copied file, a dying SD card): the teacher still needs the kiosk. So:

* the file loads → it is used, and a copy is saved as ``last-good-config.toml`` in the state
  directory (atomically; a full disk is reported, not fatal);
* it does not → the error goes to the journal, the kiosk shows a ``config_unreadable`` or
  ``config_missing`` problem, and the agent runs on the last good copy if there is one, else on
  the defaults (keeping the state directory, so an enrolled kit still reaches its server).

The state directory for the copy comes from the configuration itself, or else from the
fallback (``--state-dir`` or systemd's ``$STATE_DIRECTORY``), which is also where the copy is
looked for when the file cannot be used.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import AgentConfig, config_from_dict, load_config, parse_config
from .errors import ConfigError
from .problems import Problems
from .statefile import write_atomic

log = logging.getLogger("agent.config")

LAST_GOOD_FILE = "last-good-config.toml"


def startup_config(path: Path, problems: Problems, fallback_state_dir: str = "") -> AgentConfig:
    """Load ``path``, or the last good copy, or the defaults; never raises."""
    try:
        text = path.read_bytes().decode("utf-8")
        config = parse_config(text, str(path))
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        return _fallback(path, exc, problems, fallback_state_dir)
    if not config.state_dir and fallback_state_dir:
        # Under systemd, StateDirectory= is the state dir unless the file names another.
        config = config.model_copy(update={"state_dir": fallback_state_dir})
    if config.state_dir:
        write_atomic(Path(config.state_dir) / LAST_GOOD_FILE, text.encode("utf-8"), problems)
    return config


def _fallback(path: Path, exc: Exception, problems: Problems, state_dir: str) -> AgentConfig:
    missing = isinstance(exc, FileNotFoundError)
    reason = f"{path} does not exist" if missing else _reason(path, exc)
    config = _last_good(Path(state_dir)) if state_dir else None
    fallback = "last_good" if config is not None else "defaults"
    if config is None:
        config = config_from_dict({"state_dir": state_dir})
    log.error(
        "configuration unusable: %s; running on the %s",
        reason,
        "last good configuration" if fallback == "last_good" else "defaults",
        extra={"config_file": str(path), "fallback": fallback},
    )
    problems.report("config_missing" if missing else "config_unreadable", reason, fallback=fallback)
    return config


def _reason(path: Path, exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"cannot read {path}: {exc.strerror}"
    if isinstance(exc, UnicodeDecodeError):
        return f"{path} is not UTF-8 text"
    return str(exc)


def _last_good(state_dir: Path) -> AgentConfig | None:
    copy = state_dir / LAST_GOOD_FILE
    try:
        return load_config(copy)
    except ConfigError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            log.error("the last good configuration is unusable too: %s", exc)
        return None
