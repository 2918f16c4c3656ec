"""Configuration pushed by the server: validated against the agent's own schema, applied
without disturbing a class, remembered across restarts.

The pushed overlay is laid over the kit's file configuration (never over a previous push, so a
setting removed on the server returns to the file's value) and validated by
:func:`agent.config.config_from_dict`; an invalid one is refused with that reason and the kit
keeps its last good configuration. While a class is live, changes to capture and encoding wait
for the class to end; ICE servers, viewer limits and the kiosk language apply at once (they only
concern viewers who join next), and so does the school's uplink budget (``network``: it changes
no capture or encoding, only how the class's layers are allotted).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from kitlink import ConfigAck, PushConfig, merge_layers

from ..config import AgentConfig, config_from_dict
from ..errors import ConfigError
from ..session import ClassSession, SessionState

log = logging.getLogger("agent.link.config")

PUSHED_FILE = "pushed-config.json"
MEDIA_SECTIONS = ("camera", "document", "microphone", "encoder")


def _effective(base: AgentConfig, overlay: dict[str, Any]) -> AgentConfig:
    return config_from_dict(merge_layers(base.model_dump(mode="json"), overlay), "pushed config")


class PushedConfigs:
    def __init__(self, base: AgentConfig, state_dir: Path | None) -> None:
        self.base = base
        self.state_dir = state_dir
        self.version: str | None = None
        self.session: ClassSession | None = None
        self._deferred: tuple[str, AgentConfig] | None = None

    def startup_config(self) -> AgentConfig:
        """The configuration to start with: the last pushed one that was applied, if any."""
        if self.state_dir is None:
            return self.base
        path = self.state_dir / PUSHED_FILE
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            config = _effective(self.base, saved["overlay"])
            self.version = str(saved["version"])
            return config
        except FileNotFoundError:
            return self.base
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
            log.warning("ignoring %s (%s): starting with the file configuration", path, exc)
            return self.base

    def offer(self, push: PushConfig) -> ConfigAck:
        assert self.session is not None
        overlay = push.config.overlay()
        try:
            config = _effective(self.base, overlay)
        except ConfigError as exc:
            log.warning("refusing pushed config %s: %s", push.version, exc)
            return ConfigAck(version=push.version, status="refused", reason=str(exc)[:500])
        live = self.session.state != SessionState.IDLE
        if live and any(
            getattr(config, s) != getattr(self.session.config, s) for s in MEDIA_SECTIONS
        ):
            self._deferred = (push.version, config)
            self._save(push.version, overlay)
            return ConfigAck(
                version=push.version, status="deferred", reason="applies when the class ends"
            )
        self._deferred = None
        self._apply(push.version, config, overlay)
        return ConfigAck(version=push.version, status="applied")

    def session_changed(self) -> ConfigAck | None:
        """After Stop: apply what was deferred; returns the ack to send."""
        if self._deferred is None or self.session is None:
            return None
        if self.session.state != SessionState.IDLE:
            return None
        version, config = self._deferred
        self._deferred = None
        self.session.reconfigure(config)
        self.version = version
        log.info("applied deferred config %s", version)
        return ConfigAck(version=version, status="applied")

    def _apply(self, version: str, config: AgentConfig, overlay: dict[str, Any]) -> None:
        assert self.session is not None
        self.session.reconfigure(config)
        self.version = version
        self._save(version, overlay)
        log.info("applied config %s", version)

    def _save(self, version: str, overlay: dict[str, Any]) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".pushed-config.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"version": version, "overlay": overlay}, out)
        os.replace(tmp, self.state_dir / PUSHED_FILE)
