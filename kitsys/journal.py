"""Logs to the systemd journal with structured fields, or plain stderr outside systemd.

:class:`JournalHandler` speaks the journal's native protocol (``systemd.journal-fields(7)``,
"Native Journal Protocol"): one datagram per entry to ``/run/systemd/journal/socket``, each
field ``NAME=value\\n``, or ``NAME\\n`` + 64-bit little-endian length + value + ``\\n`` when the
value holds a newline (tracebacks). An entry too big for a datagram goes in a sealed memfd
passed with ``SCM_RIGHTS``.

Extra fields come from ``logger.info(..., extra={"device": "/dev/video0"})`` (sent as
``DEVICE=``) and from :func:`set_context` (e.g. ``KIT_ID`` and ``SESSION`` on every entry):
``journalctl -u kit-agent KIT_ID=…`` or ``-o verbose`` shows them.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping

JOURNAL_SOCKET = "/run/systemd/journal/socket"

_context: dict[str, str] = {}
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_FIELD_OK = re.compile(r"[A-Z0-9][A-Z0-9_]*")
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def set_context(**fields: str | None) -> None:
    """Fields added to every later entry (``None`` removes one): ``set_context(kit_id=…)``."""
    for name, value in fields.items():
        if value is None:
            _context.pop(name, None)
        else:
            _context[name] = value


def field_name(name: str) -> str | None:
    """``device`` → ``DEVICE``; None for what the journal would refuse."""
    upper = name.upper()
    if not _FIELD_OK.fullmatch(upper) or upper.startswith("_") or len(upper) > 64:
        return None
    return upper


def encode_field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", "replace")
    if b"\n" not in data:
        return name.encode() + b"=" + data + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"


def priority(levelno: int) -> int:
    for level, prio in sorted(_PRIORITY.items(), reverse=True):
        if levelno >= level:
            return prio
    return 7


class JournalHandler(logging.Handler):
    def __init__(self, identifier: str, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.identifier = identifier
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def entry(self, record: logging.LogRecord) -> bytes:
        message = self.format(record)
        fields: dict[str, str] = {
            "MESSAGE": message,
            "PRIORITY": str(priority(record.levelno)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": str(record.lineno),
        }
        if record.funcName:  # None for records not made by a logger call
            fields["CODE_FUNC"] = record.funcName
        extras: Mapping[str, object] = {
            **_context,
            **{k: v for k, v in vars(record).items() if k not in _RESERVED},
        }
        for key, value in extras.items():
            name = field_name(key)
            if name is not None and name not in fields and value is not None:
                fields[name] = str(value)
        return b"".join(encode_field(k, v) for k, v in fields.items())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.entry(record)
            try:
                self.sock.sendto(data, self.path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(data)
        except Exception:
            self.handleError(record)

    def _send_memfd(self, data: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd]).tobytes()
            # not socket.send_fds: it ignores its address argument (CPython < 3.13)
            self.sock.sendmsg([b""], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()


def journal_wanted(environ: Mapping[str, str], stream_fd: int = 2) -> bool:
    """True when our stderr is the journal stream systemd gave us (``$JOURNAL_STREAM`` names
    its device and inode), as ``sd_journal_stream_fd`` users check."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream_fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def setup_logging(
    identifier: str,
    verbose: bool = False,
    environ: Mapping[str, str] | None = None,
    socket_path: str = JOURNAL_SOCKET,
) -> logging.Handler:
    """The root logger to the journal under systemd (when its socket exists), else stderr.

    Like :func:`logging.basicConfig`, it leaves a root logger that already has handlers alone
    (a program embedding ours, pytest's log capture) and returns the first of them."""
    root = logging.getLogger()
    if root.handlers:
        return root.handlers[0]
    env = os.environ if environ is None else environ
    handler: logging.Handler
    if journal_wanted(env) and os.path.exists(socket_path):
        handler = JournalHandler(identifier, socket_path)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler
