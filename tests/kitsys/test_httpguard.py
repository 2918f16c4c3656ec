"""The connection guard (kitsys/httpguard.py): its state machine with the time injected, then the
asyncio glue against a real aiohttp server on loopback with short limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web

from kitsys.httpguard import (
    ACCEPT_ERROR,
    ConnectionGuard,
    GuardCore,
    GuardedSite,
    Limits,
    Phase,
    body_timeout_s,
    quiet_accept_errors,
    runner_options,
)
from kitsys.limits import raise_open_files_limit

LIMITS = Limits(header_timeout_s=10, body_timeout_s=30, idle_timeout_s=15, max_per_peer=2)

# -- the state machine, time injected ------------------------------------------------------------


def test_a_slowloris_is_due_header_timeout_after_connecting_whatever_it_sends() -> None:
    core = GuardCore(LIMITS)
    conn = core.admit("192.0.2.7", now=100.0)
    assert conn is not None and conn.phase is Phase.IDLE
    assert core.deadline(conn) == 115.0  # nothing sent yet: the idle timeout
    assert core.data(conn)  # the first byte of a request: the header clock applies
    assert core.deadline(conn) == 110.0
    for second in range(101, 110):  # one byte a second changes nothing
        assert not core.data(conn)
        assert not core.expired(conn, float(second))
    assert core.expired(conn, 110.0)
    assert core.timed_out_total == 1


def test_after_a_response_the_clocks_restart_and_a_handler_has_none() -> None:
    core = GuardCore(LIMITS)
    conn = core.admit("192.0.2.7", now=0.0)
    assert conn is not None
    core.data(conn)
    core.request_started(conn)
    assert core.deadline(conn) is None  # a WebSocket may live for hours
    assert not core.expired(conn, 10_000.0)
    core.request_finished(conn, now=10_000.0)
    assert conn.phase is Phase.IDLE and core.deadline(conn) == 10_015.0  # keep-alive idle
    core.data(conn)
    assert core.deadline(conn) == 10_010.0  # next headers: 10 s from the previous response


def test_a_peer_that_reads_nothing_is_due_after_the_body_timeout() -> None:
    core = GuardCore(LIMITS)
    conn = core.admit("192.0.2.7", now=0.0)
    assert conn is not None
    core.request_started(conn)
    core.writing_paused(conn, now=5.0)
    assert core.deadline(conn) == 35.0
    core.writing_resumed(conn)
    assert core.deadline(conn) is None


def test_caps_per_address_and_in_all() -> None:
    core = GuardCore(replace(LIMITS, max_connections=3))
    first = [core.admit("192.0.2.7", 0.0) for _ in range(3)]
    assert first[2] is None and core.refused_total == 1  # two per address
    other = core.admit("192.0.2.8", 0.0)
    assert other is not None and core.admit("192.0.2.9", 0.0) is None  # three in all
    for _ in range(100):  # the kit itself (watchdog, kiosk) is never counted nor refused
        assert core.admit("127.0.0.1", 0.0) is not None
        assert core.admit("::1", 0.0) is not None
    assert core.counted == 3
    core.release(other)
    assert core.admit("192.0.2.9", 0.0) is not None
    held = first[0]
    assert held is not None
    core.release(held)
    assert core.per_peer["192.0.2.7"] == 1


def test_an_ipv6_slash_64_is_one_address_and_mapped_ipv4_is_ipv4() -> None:
    core = GuardCore(LIMITS)
    assert core.peer_key("2001:db8:1:2::1") == core.peer_key("2001:db8:1:2:ffff::9")
    assert core.peer_key("2001:db8:1:3::1") != core.peer_key("2001:db8:1:2::1")
    assert core.peer_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert core.peer_key("::ffff:127.0.0.1") == ""  # loopback, trusted
    assert core.peer_key("fe80::1%eth0") == "fe80::/64"
    assert core.admit("2001:db8::1", 0.0) and core.admit("2001:db8::2", 0.0)
    assert core.admit("2001:db8::3", 0.0) is None


def test_a_summary_line_at_most_once_per_interval() -> None:
    core = GuardCore(replace(LIMITS, max_per_peer=1, log_interval_s=60))
    assert core.summary(0.0) is None  # nothing happened
    lines = []
    for second in range(180):
        core.admit("192.0.2.7", float(second))  # the first is admitted, the rest refused
        line = core.summary(float(second))
        if line is not None:
            lines.append(line)
    assert len(lines) == 3, lines
    assert lines[0].startswith("refused 1 connections over the caps (most from 192.0.2.7: 1)")
    assert "refused 60 connections" in lines[1] and "in the last 60 s" in lines[1]
    assert core.refused_total == 179


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="header_timeout_s"):
        Limits(header_timeout_s=0)
    with pytest.raises(ValueError, match="at least 1"):
        Limits(max_per_peer=0)
    with pytest.raises(ValueError):
        Limits(trusted=("not a network",))


def test_raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the glue, against a real server ------------------------------------------------------------

FAST = Limits(
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    idle_timeout_s=0.7,
    max_connections=6,
    max_per_peer=3,
    trusted=(),  # the test's clients are on loopback: count them
    log_interval_s=60,
)


async def echo(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(body_timeout_s(request)):
            body = await request.read()
    except TimeoutError:
        return web.Response(status=408, text="too slow")
    return web.Response(body=body)


@contextlib.asynccontextmanager
async def guarded(limits: Limits = FAST) -> AsyncIterator[tuple[ConnectionGuard, int]]:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/echo", echo)
    guard = ConnectionGuard(limits)
    guard.install(app)
    runner = web.AppRunner(app, access_log=None, **runner_options(limits))
    await runner.setup()
    await GuardedSite(runner, guard, "127.0.0.1", 0).start()
    try:
        yield guard, runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long until the server closes (EOF or reset); fails after ``seconds``."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionResetError):
            while await reader.read(4096):
                pass
    return time.monotonic() - started


async def test_a_trickled_header_is_cut_at_the_header_timeout() -> None:
    async with guarded() as (guard, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(100):  # bounded: 10 s
                    await asyncio.sleep(0.1)
                    writer.write(b"X")

        dripping = asyncio.create_task(trickle())
        try:
            took = await closed_within(reader, 3.0)
        finally:
            dripping.cancel()
            writer.close()
        assert 0.4 < took < 1.5, took
        assert guard.core.timed_out_total == 1
        await asyncio.sleep(0.05)
        assert guard.core.open == 0


async def test_requests_keep_alive_and_an_idle_connection_is_closed() -> None:
    async with guarded() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(3):  # each request well within the header timeout of the previous
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert await reader.readexactly(2) == b"ok"
                await asyncio.sleep(0.3)
            took = await closed_within(reader, 3.0)
        finally:
            writer.close()
        assert 0.2 < took < 1.2, took  # idle 0.7 s from the last response (0.3 s ago)


async def test_a_trickled_body_is_answered_408_at_the_body_timeout() -> None:
    async with guarded() as (guard, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            started = time.monotonic()
            async with asyncio.timeout(3.0):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), head
            assert 0.4 < time.monotonic() - started < 1.5
        finally:
            writer.close()
        await asyncio.sleep(0.1)
        assert guard.core.open == 0


async def test_over_the_cap_a_connection_is_reset_at_once() -> None:
    async with guarded() as (guard, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            took = await closed_within(reader, 0.3)  # well before any timeout
            writer.close()
            assert took < 0.3 and guard.core.refused_total == 1
            for r, w in held[:1]:  # a slot freed is a slot to take
                w.close()
                await closed_within(r, 1.0)
            await asyncio.sleep(0.05)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert (await reader.read()).endswith(b"ok")
            writer.close()
        finally:
            for _, w in held:
                w.close()


async def test_accept_errors_are_counted_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    passed: list[str] = []
    loop.set_exception_handler(lambda _, context: passed.append(context["message"]))
    try:
        guard = ConnectionGuard(FAST, clock=lambda: 1000.0)
        quiet_accept_errors(loop, guard)
        with caplog.at_level(logging.WARNING, "kitsys.httpguard"):
            for _ in range(5000):
                error = OSError(24, "Too many open files")
                loop.call_exception_handler({"message": ACCEPT_ERROR, "exception": error})
            loop.call_exception_handler({"message": "something else"})
        lines = [r for r in caplog.records if r.name == "kitsys.httpguard"]
        assert len(lines) == 1 and lines[0].exc_info is None
        assert "accept() failed 1 times ([Errno 24] Too many open files)" in lines[0].message
        assert guard.core.tally.accept_errors == 4999  # for the next line, a minute on
        assert passed == ["something else"]
    finally:
        loop.set_exception_handler(None)


async def test_real_emfile_is_one_line_not_a_traceback_per_accept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The process out of descriptors: asyncio retries accept() every second; the log gets
    one line, not one traceback per failure."""
    loop = asyncio.get_running_loop()
    limits = replace(FAST, trusted=("127.0.0.0/8",), header_timeout_s=5, idle_timeout_s=5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients: list[socket.socket] = []
    async with guarded(limits) as (guard, port):
        quiet_accept_errors(loop, guard)
        in_use = len(os.listdir("/proc/self/fd"))
        try:
            with caplog.at_level(logging.WARNING):
                resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 12, hard))
                for _ in range(20):  # bounded; some socket() calls fail with EMFILE themselves
                    with contextlib.suppress(OSError):
                        client = socket.socket()
                        clients.append(client)
                        client.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            client.connect(("127.0.0.1", port))
                await asyncio.sleep(2.5)  # asyncio retries accept() once a second
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            for client in clients:
                client.close()
            loop.set_exception_handler(None)
    assert guard.core.accept_errors_total >= 2
    tracebacks = [r for r in caplog.records if r.exc_info]
    ours = [r for r in caplog.records if r.name == "kitsys.httpguard"]
    assert not tracebacks and len(ours) == 1, caplog.text
    assert "Too many open files" in ours[0].message
