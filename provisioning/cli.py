"""``kit-provisioning``: the fleet server and its admin commands.

kit-provisioning serve [--http HOST:PORT] [--db URL] [--data-dir DIR] [--public-url URL]
                       [--trusted-proxy ADDRESS[/BITS] ...] [--forwarded-header NAME]
                       [--turn-url URL ... --turn-secret-file PATH]
                       [--turn-class-length 2h] [--turn-margin 30m]
                       [--node-url URL --cluster-secret-file PATH [--node-id ID]]
kit-provisioning user add EMAIL --role ROLE [--scope SCOPE]        (password on stdin)
kit-provisioning user password EMAIL                               (new password on stdin)
kit-provisioning school add ID --name NAME --departement CODE
kit-provisioning enrollment-code create --school SCHOOL [--uses N] [--expires DURATION]
kit-provisioning kits [--json]

Every command takes ``--db`` and ``--data-dir``; the default database is SQLite in the data
directory (``$KIT_PROVISIONING_DATA`` or ``./var/provisioning``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from kitsys.httpguard import (
    ConnectionGuard,
    GuardedSite,
    Limits,
    quiet_accept_errors,
    runner_options,
)
from kitsys.journal import setup_logging
from kitsys.limits import raise_open_files_limit
from kitsys.notify import Notifier
from kitsys.watchdog import http_probe, start_watchdog

from . import store
from .auth import check_new_user, check_password, hash_password
from .cluster import DEAD_AFTER_S, check_node_id
from .db import database_url, open_database
from .errors import ConfigError, ProvisioningError, RequestError
from .fleet import Settings
from .forwarded import HEADERS, parse_networks
from .ice import DEFAULT_CLASS_S, DEFAULT_MARGIN_S
from .server import Server, ServerOptions, check_node_url, default_node_id, tune_gc
from .turn import parse_turn_url

log = logging.getLogger("provisioning")
DEFAULT_DATA = os.environ.get("KIT_PROVISIONING_DATA", "var/provisioning")
ONLINE_WITHIN_S = 40.0


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``12h``, ``7d`` → seconds."""
    match = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30m, 12h or 7d")
    factor = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(int(match.group(1)) * factor)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_proxies(text: str) -> tuple[str, ...]:
    """``127.0.0.1``, ``10.0.0.0/8,::1``: addresses or networks, comma-separated."""
    try:
        return tuple(str(network) for network in parse_networks([text]))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


TURN_URLS_ENV = "KIT_PROVISIONING_TURN_URLS"
TURN_SECRET_FILE_ENV = "KIT_PROVISIONING_TURN_SECRET_FILE"


def parse_turn_arg(text: str) -> str:
    """A ``--turn-url``, refused at once with the reason (provisioning/turn.py)."""
    try:
        return str(parse_turn_url(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def turn_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--turn-url`` and ``--turn-secret-file``, or else ``$KIT_PROVISIONING_TURN_URLS``
    (URLs separated by spaces or commas) and ``$KIT_PROVISIONING_TURN_SECRET_FILE`` from the
    environment (the server's env file, docs/provisioning.md): the command line wins."""
    urls: list[str] = args.turn_url or []
    if not urls and os.environ.get(TURN_URLS_ENV, "").strip():
        try:
            urls = [str(parse_turn_url(u)) for u in re.split(r"[\s,]+", os.environ[TURN_URLS_ENV])
                    if u]  # fmt: skip
        except ConfigError as exc:
            raise ConfigError(f"${TURN_URLS_ENV}: {exc}") from None
    secret_file = args.turn_secret_file
    if secret_file is None and os.environ.get(TURN_SECRET_FILE_ENV, "").strip():
        secret_file = Path(os.environ[TURN_SECRET_FILE_ENV].strip())
    return {
        "turn_urls": tuple(urls),
        "turn_secret_file": secret_file,
        "turn_class_s": args.turn_class_length,
        "turn_margin_s": args.turn_margin,
    }


NODE_ID_ENV = "KIT_PROVISIONING_NODE_ID"
NODE_URL_ENV = "KIT_PROVISIONING_NODE_URL"
CLUSTER_SECRET_FILE_ENV = "KIT_PROVISIONING_CLUSTER_SECRET_FILE"


def parse_node_id(text: str) -> str:
    try:
        return check_node_id(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_node_url(text: str) -> str:
    try:
        return check_node_url(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cluster_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--node-id``, ``--node-url``, ``--cluster-secret-file``, or else
    ``$KIT_PROVISIONING_NODE_ID``, ``$KIT_PROVISIONING_NODE_URL`` and
    ``$KIT_PROVISIONING_CLUSTER_SECRET_FILE`` (the env file): the command line wins. Checked
    when the server opens (:func:`provisioning.server.load_cluster`)."""
    node_url = args.node_url or os.environ.get(NODE_URL_ENV, "").strip()
    node_id = args.node_id or os.environ.get(NODE_ID_ENV, "").strip()
    secret_file = args.cluster_secret_file
    if secret_file is None and os.environ.get(CLUSTER_SECRET_FILE_ENV, "").strip():
        secret_file = Path(os.environ[CLUSTER_SECRET_FILE_ENV].strip())
    port = args.http[1]
    if node_url and not node_id and port:  # <hostname>-<the port this node listens on>
        node_id = default_node_id(f"http://host:{port}")
    return {
        "node_id": node_id,
        "node_url": node_url,
        "cluster_secret_file": secret_file,
        "node_dead_after_s": args.node_dead_after,
    }


def raise_file_limit() -> int:
    """Each kit holds one socket: lift the soft open-files limit to the hard one."""
    return raise_open_files_limit()


def http_limits(args: argparse.Namespace) -> Limits:
    """The connection guard's limits (kitsys/httpguard.py); trusted proxies are not capped."""
    proxies = tuple(p for group in getattr(args, "trusted_proxy", []) for p in group)
    try:
        return Limits(
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
            idle_timeout_s=args.idle_timeout,
            max_connections=args.max_connections,
            max_per_peer=args.max_connections_per_address,
            trusted=(*Limits().trusted, *proxies),
        )
    except ValueError as exc:
        raise ConfigError(f"connection limits: {exc}") from None


async def listen(app: web.Application, host: str, port: int, limits: Limits) -> web.AppRunner:
    """Serve ``app`` behind the connection guard: slow or too many connections (a slowloris)
    cannot exhaust the server's descriptors nor starve its loop (docs/provisioning.md)."""
    guard = ConnectionGuard(limits)
    guard.install(app)
    quiet_accept_errors(asyncio.get_running_loop(), guard)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=5.0, **runner_options(limits)
    )
    await runner.setup()
    await GuardedSite(runner, guard, host, port, backlog=4096).start()
    return runner


# -- serve ---------------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    limits = http_limits(args)
    limit = raise_file_limit()
    options = ServerOptions(
        data_dir=args.data_dir,
        db=args.db or "",
        public_url=(args.public_url or "").rstrip("/"),
        trusted_proxies=tuple(p for group in args.trusted_proxy for p in group),
        forwarded_header=args.forwarded_header,
        **turn_options(args),
        **cluster_options(args),
        fleet=Settings(
            health_interval_s=args.health_interval,
            offline_after_s=args.offline_after,
            history_every_s=args.history_every,
            history_keep_s=args.history_keep,
        ),
    )
    server = await Server.open(options)  # a bad TURN setting is a ConfigError here
    turn = server.ice.public()
    if turn["configured"]:
        log.info(
            "TURN: %s (STUN %s); credentials for classes of %s s + %s s, secret set",
            " ".join(turn["urls"]),
            " ".join(turn["stun_urls"]) or "none",
            f"{turn['class_s']:.0f}",
            f"{turn['margin_s']:.0f}",
        )
    tune_gc(server)  # process-wide: only in the server's own process, not where it is embedded
    server.start()
    from .app import make_app

    host, port = args.http
    runner = await listen(make_app(server), host, port, limits)
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    node = f", node {server.cluster.node_id}" if server.cluster is not None else ""
    print(
        f"provisioning: http://{shown}:{bound}/admin/ ({len(server.fleet.kits)} kits, "
        f"open-files limit {limit}{node})",
        flush=True,
    )
    notifier = Notifier()  # under systemd: READY=1 now, WATCHDOG=1 while /healthz answers
    watchdog = start_watchdog(notifier, http_probe(host, bound))
    notifier.ready(f"{len(server.fleet.kits)} kits, port {bound}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        if watchdog is not None:
            watchdog.cancel()
        log.info(
            "stopping: closing %d server links",
            sum(1 for k in server.fleet.kits.values() if k.link),
        )
        await runner.cleanup()
        log.info("server links closed; writing what is queued")
        await server.close()
        log.info("stopped")


# -- admin commands --------------------------------------------------------------------------------


async def _with_engine(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    engine = await open_database(database_url(args.db, args.data_dir))
    try:
        return await work(engine)
    finally:
        await engine.dispose()


async def user_add(args: argparse.Namespace) -> int:
    email = args.email.strip().lower()
    password = sys.stdin.readline().rstrip("\n")
    check_new_user(email, args.role, args.scope, password)

    async def work(engine: Any) -> int:
        if await store.user_by_email(engine, email) is not None:
            print(f"kit-provisioning: {email} exists", file=sys.stderr)
            return 1
        await store.add_user(engine, email, hash_password(password), args.role, args.scope, "cli")
        print(f"added {email} ({args.role}{' ' + args.scope if args.scope else ''})")
        return 0

    return await _with_engine(args, work)


async def user_password(args: argparse.Namespace) -> int:
    """A forgotten password: set a new one (from stdin) and end every admin session of theirs."""
    email = args.email.strip().lower()
    password = sys.stdin.readline().rstrip("\n")
    check_password(password)

    async def work(engine: Any) -> int:
        user = await store.user_by_email(engine, email)
        if user is None:
            print(f"kit-provisioning: no admin {email}", file=sys.stderr)
            return 1
        await store.set_password(engine, user, hash_password(password), "", "cli")
        print(f"new password for {email}; their sessions are closed")
        return 0

    return await _with_engine(args, work)


async def user_command(args: argparse.Namespace) -> int:
    return await (user_add(args) if args.action == "add" else user_password(args))


async def school_add(args: argparse.Namespace) -> int:
    async def work(engine: Any) -> int:
        if await store.get_school(engine, args.id) is not None:
            print(f"kit-provisioning: school {args.id} exists", file=sys.stderr)
            return 1
        await store.add_school(engine, args.id, args.name, args.departement)
        await store.audit(engine, "cli", "school.add", args.id, {"name": args.name})
        print(f"added school {args.id}")
        return 0

    return await _with_engine(args, work)


async def code_create(args: argparse.Namespace) -> int:
    async def work(engine: Any) -> int:
        if await store.get_school(engine, args.school) is None:
            print(f"kit-provisioning: no school {args.school}", file=sys.stderr)
            return 1
        expires_at = time.time() + args.expires
        code = await store.create_enrollment_code(engine, args.school, args.uses, expires_at, "cli")
        print(code)
        return 0

    return await _with_engine(args, work)


def kit_rows(rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        seen = row["last_seen"]
        online = bool(row["online"]) and seen is not None and now - seen < ONLINE_WITHIN_S
        out.append(
            {
                "id": row["id"],
                "name": row["name"],
                "school": row["school_id"],
                "departement": row["departement"],
                "revoked": row["revoked_at"] is not None,
                "online": online,
                "last_seen": seen,
                "health": json.loads(row["health"]) if row["health"] else None,
            }
        )
    return sorted(out, key=lambda r: (r["departement"], r["school"], r["name"]))


async def kits(args: argparse.Namespace) -> int:
    async def work(engine: Any) -> int:
        rows = kit_rows(await store.load_kits(engine), time.time())
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'ID':<18} {'NAME':<24} {'SCHOOL':<10} {'STATE':<8} LAST SEEN")
        for r in rows:
            state = "revoked" if r["revoked"] else "online" if r["online"] else "offline"
            seen = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_seen"]))
                if r["last_seen"]
                else "never"
            )
            print(f"{r['id']:<18} {r['name'][:24]:<24} {r['school']:<10} {state:<8} {seen}")
        return 0

    return await _with_engine(args, work)


# -- arguments -------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="postgresql://… or sqlite:///…; default SQLite in DATA_DIR")
    parser.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA))


def _guard_arguments(srv: argparse.ArgumentParser) -> None:
    """Slow and too many connections (docs/provisioning.md): the defaults hold 15,000 kits."""
    srv.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds for a request's headers"
    )
    srv.add_argument("--body-timeout", type=float, default=30.0, help="seconds for its body")
    srv.add_argument(
        "--idle-timeout", type=float, default=15.0, help="seconds a keep-alive connection idles"
    )
    srv.add_argument("--max-connections", type=int, default=40_000, help="open connections in all")
    srv.add_argument(
        "--max-connections-per-address",
        type=int,
        default=1_000,
        help="open connections from one address or IPv6 /64 (raise it if more kits than this "
        "share one NAT address); loopback and --trusted-proxy are not counted",
    )


def _turn_arguments(srv: argparse.ArgumentParser) -> None:
    """The fleet's coturn (docs/provisioning.md, "TURN"); also from the env file."""
    srv.add_argument(
        "--turn-url",
        type=parse_turn_arg,
        action="append",
        default=None,
        metavar="URL",
        help="a TURN URL of the fleet's coturn, repeatable, in the order to try: "
        "turn:HOST:3478?transport=udp, turn:HOST:443?transport=tcp, "
        f"turns:HOST:443?transport=tcp (default ${TURN_URLS_ENV}, space-separated)",
    )
    srv.add_argument(
        "--turn-secret-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"coturn's static-auth-secret, one line, mode 0600 (default ${TURN_SECRET_FILE_ENV})",
    )
    srv.add_argument(
        "--turn-class-length",
        type=parse_duration,
        default=DEFAULT_CLASS_S,
        metavar="DURATION",
        help="the longest class expected: TURN credentials outlast it (default 2h)",
    )
    srv.add_argument(
        "--turn-margin",
        type=parse_duration,
        default=DEFAULT_MARGIN_S,
        metavar="DURATION",
        help="slack after a class's expected end; kits' credentials are renewed this often "
        "(default 30m)",
    )


def _cluster_arguments(srv: argparse.ArgumentParser) -> None:
    """Several nodes on one PostgreSQL (docs/cluster.md); also from the env file."""
    srv.add_argument(
        "--node-url",
        type=parse_node_url,
        default=None,
        metavar="URL",
        help="how the other nodes reach this node's listener directly, e.g. "
        f"http://10.0.0.2:8443: turns cluster mode on (PostgreSQL only; default ${NODE_URL_ENV})",
    )
    srv.add_argument(
        "--node-id",
        type=parse_node_id,
        default=None,
        metavar="ID",
        help=f"this node's name (default ${NODE_ID_ENV}, or HOSTNAME-PORT)",
    )
    srv.add_argument(
        "--cluster-secret-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="the nodes' shared secret, one line, mode 0600, required with --node-url "
        f"(default ${CLUSTER_SECRET_FILE_ENV})",
    )
    srv.add_argument(
        "--node-dead-after",
        type=float,
        default=DEAD_AFTER_S,
        metavar="SECONDS",
        help=f"a node silent this long is taken over by another (default {DEAD_AFTER_S:.0f}, "
        "at least 3 heartbeats)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit-provisioning", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="run the server")
    _common(srv)
    srv.add_argument("--http", type=parse_listen, default=("0.0.0.0", 8443), metavar="HOST:PORT")
    srv.add_argument("--public-url", help="base URL pupils and kits use (for join links)")
    srv.add_argument(
        "--trusted-proxy",
        type=parse_proxies,
        action="append",
        default=[],
        metavar="ADDRESS[/BITS]",
        help="a reverse proxy whose forwarded header gives the client address (repeatable or "
        "comma-separated, e.g. 127.0.0.1,::1); default none: the connecting address is used",
    )
    srv.add_argument(
        "--forwarded-header",
        choices=HEADERS,
        default="x-forwarded-for",
        help="the header trusted proxies set (default x-forwarded-for; or RFC 7239 forwarded)",
    )
    _guard_arguments(srv)
    _turn_arguments(srv)
    _cluster_arguments(srv)
    srv.add_argument("--health-interval", type=float, default=10.0, help="seconds (default 10)")
    srv.add_argument("--offline-after", type=float, default=30.0, help="seconds of silence")
    srv.add_argument(
        "--history-every", type=float, default=60.0, help="seconds between kept reports"
    )
    srv.add_argument("--history-keep", type=parse_duration, default=6 * 3600.0, help="e.g. 6h")
    user = sub.add_parser("user", help="admin accounts").add_subparsers(
        dest="action", required=True
    )
    add = user.add_parser("add", help="add an admin (password read from stdin)")
    _common(add)
    add.add_argument("email")
    add.add_argument("--role", required=True, choices=["national", "departement", "school"])
    add.add_argument("--scope", default="", help="département code or school id")
    reset = user.add_parser("password", help="set a new password (read from stdin)")
    _common(reset)
    reset.add_argument("email")
    school = sub.add_parser("school", help="schools").add_subparsers(dest="action", required=True)
    sadd = school.add_parser("add", help="add a school")
    _common(sadd)
    sadd.add_argument("id", help="school id, e.g. its UAI (0751234A)")
    sadd.add_argument("--name", required=True)
    sadd.add_argument("--departement", required=True)
    code = sub.add_parser("enrollment-code", help="enrollment codes").add_subparsers(
        dest="action", required=True
    )
    create = code.add_parser("create", help="create a code and print it")
    _common(create)
    create.add_argument("--school", required=True)
    create.add_argument(
        "--uses", type=int, default=1, help="how many kits may enroll with it: 1 to 10000 (1)"
    )
    create.add_argument("--expires", type=parse_duration, default=7 * 86400.0, help="e.g. 7d")
    ks = sub.add_parser("kits", help="list kits")
    _common(ks)
    ks.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("kit-provisioning", verbose=args.verbose)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    commands: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "user": user_command,
        "school": school_add,
        "enrollment-code": code_create,
        "kits": kits,
    }
    try:
        if args.command == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(serve(args))
            return 0
        if args.command == "enrollment-code" and not 1 <= args.uses <= 10_000:
            raise RequestError("--uses must be from 1 to 10000")
        return asyncio.run(commands[args.command](args))
    except RequestError as exc:
        print(f"kit-provisioning: {exc.public_message}", file=sys.stderr)
        return 2
    except ProvisioningError as exc:
        print(f"kit-provisioning: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
