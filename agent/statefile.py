"""Writing the agent's state files so that a full disk never stops the agent.

:func:`write_atomic` writes to a temporary file in the same directory, syncs it and renames it
over the old one: a crash or power cut leaves the old file or the new one, never half of each.
A failure is logged and returned as False, never raised; "no space left" also becomes the
``disk_full`` problem the kiosk shows, cleared by the next write that succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .problems import Problems

log = logging.getLogger("agent.state")

DISK_FULL = "disk_full"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
MIN_FREE_BYTES = 1 << 20
"""Below this much free space in the state directory the kiosk warns before a write fails."""


def write_atomic(path: Path, data: bytes, problems: Problems, mode: int = 0o600) -> bool:
    """Replace ``path`` with ``data`` atomically; False (logged, reported) if it failed."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(path.parent)  # the rename itself survives a power cut
    except OSError as exc:
        _failed(path, exc, problems)
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    problems.clear(DISK_FULL)
    return True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _failed(path: Path, exc: OSError, problems: Problems) -> None:
    if exc.errno in DISK_FULL_ERRNOS:
        log.error(
            "disk full: could not save %s (%s); the agent keeps running, this state is not saved",
            path,
            exc.strerror,
            extra={"path": str(path), "errno": exc.errno},
        )
        problems.report(DISK_FULL, f"{path}: {exc.strerror}")
    else:
        log.error("could not save %s: %s", path, exc, extra={"path": str(path)})


def check_free_space(directory: Path, problems: Problems, minimum: int = MIN_FREE_BYTES) -> bool:
    """Report ``disk_full`` when ``directory``'s file system is (nearly) full; True if fine."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return True  # not there yet: nothing to warn about
    if free < minimum:
        if DISK_FULL not in problems:
            log.error("disk nearly full: %d bytes free in %s", free, directory)
        problems.report(DISK_FULL, f"{directory}: {free} bytes free")
        return False
    problems.clear(DISK_FULL)
    return True
