"""``kit-agent``: run the classroom agent.

kit-agent demo [--http HOST:PORT] [--start] [--config FILE]
    the agent on synthetic sources (or the devices of --config), no server needed
kit-agent run --config FILE [--state-dir DIR] [--print-join-url]
    the agent with a TOML config (see agent/example-config.toml); if the file is missing or
    invalid it runs on the last good copy in the state directory, or the defaults (the kiosk
    says so). Its output goes to the journal, so a class going live is printed as the digest of
    its token; the join link itself (a secret: whoever has it joins the class) only with
    --print-join-url (``make demo``) or in ``demo``
kit-agent devices               cameras, microphones and speakers this machine has
kit-agent enroll SERVER_URL CODE [--config FILE | --state-dir DIR] [--name NAME] [--proxy URL]
    exchange an enrollment code for this kit's identity on the provisioning server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from kitsys.httpguard import ConnectionGuard, GuardedSite, quiet_accept_errors, runner_options
from kitsys.journal import set_context, setup_logging
from kitsys.limits import raise_open_files_limit
from kitsys.net import lan_address
from kitsys.notify import Notifier
from kitsys.watchdog import http_probe, start_watchdog

from .config import AgentConfig, config_from_dict, load_config, parse_host_port
from .errors import ConfigError
from .http.app import make_app
from .link import Uplink
from .problems import Problems
from .resume import SessionPersistence
from .session import ClassSession, SessionState
from .startup import startup_config
from .statefile import check_free_space
from .webrtc import contract
from .webrtc.ice import restrict_host_addresses
from .webrtc.reach import NetworkMonitor

log = logging.getLogger("agent")

DISK_CHECK_INTERVAL_S = 30.0


def base_url(config: AgentConfig, port: int) -> str:
    if config.http.public_url:
        return config.http.public_url
    host, _ = parse_host_port(config.http.listen)
    if host in ("0.0.0.0", "::", ""):
        host = lan_address()
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


async def serve(
    config: AgentConfig,
    start_now: bool,
    problems: Problems | None = None,
    print_join_url: bool = False,
) -> None:
    """Run the HTTP server until SIGINT/SIGTERM; always end the class and release devices.

    Under systemd: ``READY=1`` once the HTTP server listens, ``WATCHDOG=1`` while it answers.
    ``print_join_url``: print the join link when a class goes live (else only its digest:
    stdout is the journal, readable by more people than the class)."""
    problems = problems if problems is not None else Problems()
    notifier = Notifier()
    restrict_host_addresses(config.webrtc.host_addresses)
    host, port = parse_host_port(config.http.listen)
    uplink = Uplink.from_config(config)  # None unless enrolled (kit-agent enroll)
    app_session = ClassSession(
        uplink.startup_config() if uplink else config,
        "",
        on_live=lambda s: print(live_line(s, print_join_url), flush=True),
    )
    app_session.listeners.append(_journal_session)
    persistence = SessionPersistence.attach(app_session, config.state_dir, problems=problems)
    saved = persistence.load()  # the class a crash interrupted, if any (docs/recovery.md)
    stop = asyncio.Event()  # the signals are ours before anyone can reach us
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, RestartWhenIdle(app_session, stop).ask)
    runner = await _listen(config, make_app(app_session, problems), host, port)
    bound_port = runner.addresses[0][1] if runner.addresses else port
    app_session.base_url = base_url(config, bound_port)
    if uplink is not None:
        app_session.base_url = uplink.join_base_url or app_session.base_url
        uplink.start(app_session)
        set_context(kit_id=uplink.credential.kit_id)
        print(f"server: {uplink.credential.server} (kit {uplink.credential.kit_id})", flush=True)
    kiosk_host = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1", "") else host
    print(f"kiosk: http://{kiosk_host}:{bound_port}/", flush=True)
    tasks = _service_tasks(notifier, host, bound_port, config, problems)
    webrtc = app_session.config.webrtc
    monitor = NetworkMonitor(app_session.network, webrtc.probe_interval_s, webrtc.probe_timeout_s)
    tasks.append(asyncio.create_task(monitor.run(), name="network-probe"))
    notifier.ready(f"serving on port {bound_port}")
    try:
        if not await persistence.resume(saved) and start_now:
            await app_session.start()
        persistence.start_heartbeat()
        await stop.wait()
    finally:
        notifier.stopping()
        for task in tasks:
            task.cancel()
        if uplink is not None:
            await uplink.close()
        await persistence.close()
        await app_session.stop()
        await runner.cleanup()


async def _listen(config: AgentConfig, app: web.Application, host: str, port: int) -> web.AppRunner:
    """The HTTP server behind the connection guard (kitsys/httpguard.py: header, body and idle
    timeouts, caps per address and in all, accept errors logged once a minute)."""
    limits = config.http.limits()
    files = raise_open_files_limit()
    if limits.max_connections + 256 > files:
        log.warning(
            "open-files limit %d is low for max_connections %d", files, limits.max_connections
        )
    guard = ConnectionGuard(limits)
    guard.install(app)
    quiet_accept_errors(asyncio.get_running_loop(), guard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options(limits))
    await runner.setup()
    try:
        await GuardedSite(runner, guard, host, port).start()
    except OSError as exc:  # address in use, or not an address of this machine
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.http.listen}: {exc.strerror}") from None
    return runner


class RestartWhenIdle:
    """SIGHUP (``systemctl reload kit-agent``, which install-kit.sh sends after an upgrade and an
    admin after editing the config): end the process so that systemd starts it again on the new
    version and config, at once if no class is live, else as soon as it ends. An upgrade never
    cuts a class short (docs/systemd.md)."""

    def __init__(self, session: ClassSession, stop: asyncio.Event) -> None:
        self.session = session
        self.stop = stop
        self.asked = False
        session.listeners.append(self._changed)

    def ask(self) -> None:
        if self.session.state == SessionState.IDLE:
            log.info("reload asked: restarting now (no class)")
            self.stop.set()
        elif not self.asked:
            log.info("reload asked during a class: restarting when it ends")
        self.asked = True

    def _changed(self, session: ClassSession) -> None:
        if self.asked and session.state == SessionState.IDLE:
            log.info("the class has ended: restarting as asked")
            self.stop.set()


def token_digest(token: str) -> str:
    """The short digest a class is known by in the journal (``SESSION=``, the ``live`` line)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def live_line(session: ClassSession, with_url: bool) -> str:
    """What is printed when a class goes live: the join link is a secret (anyone who has it
    joins the class), so under systemd, where stdout is the journal, only its digest."""
    if with_url:
        return f"join: {session.join_url}"
    return f"live: class {token_digest(session.token or '')} (join link on the kiosk)"


def _journal_session(session: ClassSession) -> None:
    """Every log entry of a class carries ``SESSION=`` (a digest: the token itself is secret)."""
    token = session.token
    set_context(session=token_digest(token) if token else None)


def _service_tasks(
    notifier: Notifier, host: str, port: int, config: AgentConfig, problems: Problems
) -> list[asyncio.Task[None]]:
    tasks = []
    watchdog = start_watchdog(notifier, http_probe(host, port))
    if watchdog is not None:
        tasks.append(watchdog)
    if config.state_dir:
        tasks.append(asyncio.create_task(_watch_disk(Path(config.state_dir), problems)))
    return tasks


async def _watch_disk(state_dir: Path, problems: Problems) -> None:
    while True:
        await asyncio.to_thread(check_free_space, state_dir, problems)
        await asyncio.sleep(DISK_CHECK_INTERVAL_S)


def _devices() -> int:
    from .sources.devices import list_cameras, list_microphones, list_speakers

    found = {"cameras": list_cameras(), "microphones": list_microphones()}
    print(json.dumps({**found, "speakers": list_speakers()}, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kit-agent", description="Hybrid classroom kit agent")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run on synthetic sources, no server needed")
    demo.add_argument("--http", metavar="HOST:PORT", help="listen address (default 0.0.0.0:8080)")
    demo.add_argument("--start", action="store_true", help="start the class at once")
    demo.add_argument("--config", type=Path, help="a TOML config (default: synthetic sources)")
    run = sub.add_parser("run", help="run with a TOML config")
    run.add_argument("--config", type=Path, required=True)
    run.add_argument(
        "--state-dir",
        default=os.environ.get("STATE_DIRECTORY", "").split(":")[0],
        help="where the last good config is kept if the config has no state_dir "
        "(default: $STATE_DIRECTORY, set by systemd)",
    )
    run.add_argument("--start", action="store_true", help="start the class at once")
    run.add_argument(
        "--print-join-url",
        action="store_true",
        help="print the join link when a class goes live (default: its digest only, since "
        "stdout goes to the journal)",
    )
    sub.add_parser("devices", help="list cameras, microphones and speakers")
    enroll = sub.add_parser("enroll", help="enroll this kit on a provisioning server")
    enroll.add_argument("server_url", help="e.g. https://provisioning.example.fr")
    enroll.add_argument("code", help="the enrollment code an admin created")
    enroll.add_argument("--config", type=Path, help="the kit's config (its state_dir is used)")
    enroll.add_argument("--state-dir", type=Path, help="where to store the credential")
    enroll.add_argument("--name", default="", help="a name for this kit (default: its id)")
    enroll.add_argument(
        "--proxy", help="an HTTP proxy, http://HOST:PORT (default: the config's server.proxy)"
    )
    return parser


def _enroll_proxy(given: str | None, config: AgentConfig | None) -> str:
    """``--proxy`` (checked as ``server.proxy`` is), else the config's."""
    if given is None:
        return config.server.proxy if config else ""
    return config_from_dict({"server": {"proxy": given}}, "--proxy").server.proxy


def _enroll(args: argparse.Namespace) -> int:
    from .link.credential import LinkError, enroll, save_credential

    try:
        config = load_config(args.config) if args.config else None
        proxy = _enroll_proxy(args.proxy, config)
    except ConfigError as exc:
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or (Path(config.state_dir) if config and config.state_dir else None)
    if state_dir is None:
        print("kit-agent: give --state-dir or a --config with state_dir", file=sys.stderr)
        return 2
    try:
        credential = asyncio.run(enroll(args.server_url, args.code, args.name, proxy=proxy))
        path = save_credential(state_dir, credential)
    except (LinkError, OSError) as exc:
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled as {credential.kit_id}; credential in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging("kit-agent", verbose=args.verbose)
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "devices":
        return _devices()
    if args.command == "enroll":
        return _enroll(args)
    refused = contract.refusal()  # before any class: aiortc/aioice internals we rely on
    if refused is not None:
        log.critical("%s", refused)
        print(f"kit-agent: {refused}", file=sys.stderr)
        return 3
    problems = Problems()
    try:
        config = _run_config(args, problems)
    except ConfigError as exc:
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            show = args.command == "demo" or args.print_join_url
            asyncio.run(serve(config, args.start, problems, print_join_url=show))
    except ConfigError as exc:
        log.error("%s", exc)
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_config(args: argparse.Namespace, problems: Problems) -> AgentConfig:
    if args.command == "run":
        return startup_config(args.config, problems, args.state_dir)
    config = load_config(args.config) if args.config else config_from_dict({})
    if args.http:
        config = config.model_copy(
            update={"http": config_from_dict({"http": {"listen": args.http}}).http}
        )
    return config


if __name__ == "__main__":
    sys.exit(main())
