"""The kit's link to the provisioning server (enrollment, health, configuration, relayed WHEP).

:class:`Uplink` is what ``kit-agent run``/``demo`` start when the kit is enrolled; the protocol
itself (messages, and the rules of order, timeouts and close codes) lives in :mod:`kitlink`,
which the server stands on too; :mod:`agent.link.client` is only its asyncio driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from ..config import AgentConfig
from ..session import ClassSession
from .apply import PushedConfigs
from .client import LinkClient
from .credential import Credential, LinkError, load_credential
from .health import HealthCollector

log = logging.getLogger("agent.link")

__all__ = ["Credential", "LinkClient", "LinkError", "Uplink"]


class Uplink:
    def __init__(self, config: AgentConfig, credential: Credential, state_dir: Path) -> None:
        self.config = config
        self.credential = credential
        self.state_dir = state_dir
        self.configs = PushedConfigs(config, state_dir)
        self.client: LinkClient | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> Uplink | None:
        """None unless the link is enabled and the kit is enrolled (credential in state_dir)."""
        if not config.server.enabled or not config.state_dir:
            return None
        state_dir = Path(config.state_dir)
        try:
            credential = load_credential(state_dir)
        except LinkError as exc:
            log.error("%s: the kit runs without its server link", exc)
            return None
        return cls(config, credential, state_dir) if credential else None

    def startup_config(self) -> AgentConfig:
        return self.configs.startup_config()

    @property
    def join_base_url(self) -> str | None:
        return self.credential.server if self.config.server.relay_join_links else None

    def start(self, session: ClassSession) -> LinkClient:
        self.configs.session = session
        collector = HealthCollector(session, self.state_dir)
        self.client = LinkClient(
            self.credential, session, self.configs, collector, self.config.server
        )
        self._task = asyncio.create_task(self.client.run(), name="server-link")
        return self.client

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            self.client.close()
