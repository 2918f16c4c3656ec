"""The kit's identity on the provisioning server: enrollment and the 0600 credential file.

``kit-agent enroll SERVER_URL CODE`` exchanges a one-time enrollment code for a kit id and a
256-bit secret (the server keeps only its SHA-256) and writes them, with the server's URL, to
``STATE_DIR/server-link.json``: owner read/write only, written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from kitlink import ENROLL_PATH, LINK_PATH

from ..errors import AgentError

CREDENTIAL_FILE = "server-link.json"


class LinkError(AgentError):
    """Enrollment failed, or the credential file is missing or unreadable."""


@dataclass(frozen=True, slots=True)
class Credential:
    server: str
    kit_id: str
    secret: str

    @property
    def link_url(self) -> str:
        scheme = "wss" if self.server.startswith("https://") else "ws"
        return f"{scheme}://{self.server.split('://', 1)[1]}{LINK_PATH}"


def check_server_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LinkError("the server URL must look like https://provisioning.example.fr")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def load_credential(state_dir: Path) -> Credential | None:
    path = state_dir / CREDENTIAL_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credential(str(data["server"]), str(data["kit_id"]), str(data["secret"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LinkError(f"cannot read {path}: {exc}") from exc


def save_credential(state_dir: Path, credential: Credential) -> Path:
    """Write atomically with mode 0600 (the directory is created 0700)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / CREDENTIAL_FILE
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=".server-link.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(credential), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


async def enroll(
    server_url: str, code: str, name: str = "", timeout_s: float = 20.0, proxy: str = ""
) -> Credential:
    """Exchange ``code`` for this kit's identity; through ``proxy`` (``server.proxy``) if set."""
    server = check_server_url(server_url)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(
                server + ENROLL_PATH, json={"code": code, "name": name}, proxy=proxy or None
            ) as response,
        ):
            if response.status != 201:
                raise LinkError(f"the server refused: {await _reason(response)}")
            data = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise LinkError(f"cannot reach {server}: {exc or type(exc).__name__}") from exc
    try:
        return Credential(server, str(data["kit_id"]), str(data["secret"]))
    except (KeyError, TypeError) as exc:
        raise LinkError("the server's answer has no kit id or secret") from exc


async def _reason(response: aiohttp.ClientResponse) -> str:
    try:
        body = await response.json(content_type=None)
        return f"{body['error']} ({response.status})"
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return f"HTTP {response.status}"
