"""The journal handler, bytes in and bytes out on a unix datagram socket bound by the test."""

from __future__ import annotations

import array
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from kitsys.journal import (
    JournalHandler,
    encode_field,
    journal_wanted,
    set_context,
    setup_logging,
)


def parse(entry: bytes) -> dict[str, str]:
    """The native protocol, read back the way journald reads it."""
    fields: dict[str, str] = {}
    rest = entry
    while rest:
        line, sep, after = rest.partition(b"\n")
        assert sep, f"unterminated field {rest!r}"
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
    return fields


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[socket.socket, logging.Logger]]:
    path = str(tmp_path / "journal.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2)
        handler = JournalHandler("kit-agent", path)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger("tests.kitsys.journal")
        logger.propagate = False
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        try:
            yield sock, logger
        finally:
            logger.removeHandler(handler)
            handler.close()
            set_context(kit_id=None, session=None)


def test_fields_and_extras(journal: tuple[socket.socket, logging.Logger]) -> None:
    sock, logger = journal
    set_context(kit_id="kit-42")
    logger.warning("camera %s unplugged", "room", extra={"device": "/dev/video0"})
    fields = parse(sock.recv(65536))
    assert fields["MESSAGE"] == "camera room unplugged"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "kit-agent"
    assert fields["DEVICE"] == "/dev/video0"
    assert fields["KIT_ID"] == "kit-42"
    assert fields["LOGGER"] == "tests.kitsys.journal"
    assert fields["CODE_FUNC"] == "test_fields_and_extras"


def test_multiline_message_uses_the_binary_form(
    journal: tuple[socket.socket, logging.Logger],
) -> None:
    sock, logger = journal
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")
    data = sock.recv(65536)
    assert b"MESSAGE\n" in data
    fields = parse(data)
    assert fields["MESSAGE"].startswith("it failed\nTraceback")
    assert "ValueError: boom" in fields["MESSAGE"]
    assert fields["PRIORITY"] == "3"


def test_entry_too_big_for_a_datagram_goes_in_a_memfd(
    journal: tuple[socket.socket, logging.Logger],
) -> None:
    sock, logger = journal
    big = "x" * 300_000  # above the unix datagram limit (net.core.wmem_default)
    logger.info(big)
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(fds.itemsize))
    assert msg == b""
    level, kind, payload = ancdata[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fd = struct.unpack("i", payload[: fds.itemsize])[0]
    try:
        data = os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)
    assert parse(data)["MESSAGE"] == big


def test_field_encoding() -> None:
    assert encode_field("KIT_ID", "k1") == b"KIT_ID=k1\n"
    assert encode_field("MESSAGE", "a\nb") == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_journal_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as out:
        st = os.fstat(out.fileno())
        assert journal_wanted({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, out.fileno())
        assert not journal_wanted({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, out.fileno())
        assert not journal_wanted({}, out.fileno())


@contextlib.contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without pytest's capture handlers, restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    root.handlers[:] = []
    try:
        yield root
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_setup_logging_falls_back_to_stderr() -> None:
    with bare_root() as root:
        handler = setup_logging("kit-agent", environ={})
        assert type(handler) is logging.StreamHandler
        assert root.handlers == [handler]


def test_setup_logging_picks_the_journal_under_systemd(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, bare_root():
        sock.bind(path)
        sock.settimeout(2)
        st = os.fstat(2)
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        handler = setup_logging("kit-agent", environ=env, socket_path=path)
        assert isinstance(handler, JournalHandler)
        logging.getLogger("agent.test").info("hello", extra={"device": "/dev/video0"})
        fields = parse(sock.recv(65536))
        assert (fields["MESSAGE"], fields["DEVICE"]) == ("agent.test: hello", "/dev/video0")


def test_setup_logging_leaves_configured_logging_alone() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    assert before, "pytest's capture handlers are expected here"
    assert setup_logging("kit-agent", environ={}) is before[0]
    assert root.handlers == before
