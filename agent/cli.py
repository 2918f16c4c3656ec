"""``kit-agent``: run the classroom agent.

kit-agent demo [--http HOST:PORT] [--start] [--config FILE]
    the agent on synthetic sources (or the devices of --config), no server needed
kit-agent run --config FILE     the agent with a TOML config (see agent/example-config.toml)
kit-agent devices               cameras and microphones this machine has
kit-agent enroll SERVER_URL CODE [--config FILE | --state-dir DIR] [--name NAME]
    exchange an enrollment code for this kit's identity on the provisioning server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from .config import AgentConfig, config_from_dict, load_config, parse_host_port
from .errors import ConfigError
from .http.app import make_app
from .link import Uplink
from .resume import SessionPersistence
from .session import ClassSession
from .webrtc.ice import restrict_host_addresses

log = logging.getLogger("agent")


def _lan_address() -> str:
    """The address other machines reach us on (no packet is sent: UDP connect only routes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a route lookup, nothing is sent
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def base_url(config: AgentConfig, port: int) -> str:
    if config.http.public_url:
        return config.http.public_url
    host, _ = parse_host_port(config.http.listen)
    if host in ("0.0.0.0", "::", ""):
        host = _lan_address()
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


async def serve(config: AgentConfig, start_now: bool) -> None:
    """Run the HTTP server until SIGINT/SIGTERM; always end the class and release devices."""
    restrict_host_addresses(config.webrtc.host_addresses)
    host, port = parse_host_port(config.http.listen)
    uplink = Uplink.from_config(config)  # None unless enrolled (kit-agent enroll)
    app_session = ClassSession(
        uplink.startup_config() if uplink else config,
        "",
        on_live=lambda s: print(f"join: {s.join_url}", flush=True),
    )
    persistence = SessionPersistence.attach(app_session, config.state_dir)
    saved = persistence.load()  # the class a crash interrupted, if any (docs/recovery.md)
    runner = web.AppRunner(make_app(app_session), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1] if runner.addresses else port
    app_session.base_url = base_url(config, bound_port)
    if uplink is not None:
        app_session.base_url = uplink.join_base_url or app_session.base_url
        uplink.start(app_session)
        print(f"server: {uplink.credential.server} (kit {uplink.credential.kit_id})", flush=True)
    kiosk_host = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1", "") else host
    print(f"kiosk: http://{kiosk_host}:{bound_port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await persistence.resume(saved) and start_now:
            await app_session.start()
        persistence.start_heartbeat()
        await stop.wait()
    finally:
        if uplink is not None:
            await uplink.close()
        await persistence.close()
        await app_session.stop()
        await runner.cleanup()


def _devices() -> int:
    from .sources.devices import list_cameras, list_microphones

    print(json.dumps({"cameras": list_cameras(), "microphones": list_microphones()}, indent=2))
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
    run.add_argument("--start", action="store_true", help="start the class at once")
    sub.add_parser("devices", help="list cameras and microphones")
    enroll = sub.add_parser("enroll", help="enroll this kit on a provisioning server")
    enroll.add_argument("server_url", help="e.g. https://provisioning.example.fr")
    enroll.add_argument("code", help="the enrollment code an admin created")
    enroll.add_argument("--config", type=Path, help="the kit's config (its state_dir is used)")
    enroll.add_argument("--state-dir", type=Path, help="where to store the credential")
    enroll.add_argument("--name", default="", help="a name for this kit (default: its id)")
    return parser


def _enroll(args: argparse.Namespace) -> int:
    from .link.credential import LinkError, enroll, save_credential

    try:
        config = load_config(args.config) if args.config else None
    except ConfigError as exc:
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 2
    state_dir = args.state_dir or (Path(config.state_dir) if config and config.state_dir else None)
    if state_dir is None:
        print("kit-agent: give --state-dir or a --config with state_dir", file=sys.stderr)
        return 2
    try:
        credential = asyncio.run(enroll(args.server_url, args.code, args.name))
        path = save_credential(state_dir, credential)
    except (LinkError, OSError) as exc:
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled as {credential.kit_id}; credential in {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "devices":
        return _devices()
    if args.command == "enroll":
        return _enroll(args)
    try:
        config = load_config(args.config) if args.config else config_from_dict({})
        if args.command == "demo" and args.http:
            config = config.model_copy(
                update={"http": config_from_dict({"http": {"listen": args.http}}).http}
            )
    except ConfigError as exc:
        print(f"kit-agent: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, args.start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
