"""``make demo``: the provisioning server on SQLite and one enrolled demo kit, on this machine.

Creates ``var/demo`` afresh (an admin with a random password, a school, an enrollment code),
starts ``kit-provisioning serve``, enrolls a kit with ``kit-agent enroll`` and runs it on
synthetic sources. Prints the admin URL and login, the kiosk URL and, once the class is live,
the pupil link through the server. Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from kitsys.net import lan_address

BIN = Path(sys.executable).parent


def _run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo: {' '.join(command[:3])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=1).close()
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: {url} did not answer")


def _relay(process: subprocess.Popen[str], prefix: str) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        print(f"{prefix}{line.rstrip()}", flush=True)


def _prepare(directory: Path) -> tuple[str, str, str]:
    """A fresh data directory with an admin, a school and an enrollment code."""
    shutil.rmtree(directory, ignore_errors=True)
    common = ("--data-dir", str(directory / "server"))
    tool = str(BIN / "kit-provisioning")
    email, password = "admin@demo.invalid", secrets.token_urlsafe(12)
    _run(tool, "user", "add", email, "--role", "national", *common, stdin=password + "\n")
    _run(tool, "school", "add", "0750001A", "--name", "Collège de démonstration",
         "--departement", "75", *common)  # fmt: skip
    code = _run(tool, "enrollment-code", "create", "--school", "0750001A", *common)
    return email, password, code


def _start_kit(args: argparse.Namespace, server_url: str, code: str) -> subprocess.Popen[str]:
    kit_state = args.dir / "kit"
    _run(str(BIN / "kit-agent"), "enroll", server_url, code, "--state-dir", str(kit_state),
         "--name", "Salle de démonstration")  # fmt: skip
    config = args.dir / "kit.toml"
    config.write_text(
        f'state_dir = "{kit_state.resolve()}"\n\n[http]\nlisten = "0.0.0.0:{args.kit_port}"\n',
        encoding="utf-8",
    )
    return subprocess.Popen(
        [str(BIN / "kit-agent"), "run", "--config", str(config), "--print-join-url",
         *(["--start"] if args.start else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="provisioning.demo")
    parser.add_argument("--dir", type=Path, default=Path("var/demo"))
    parser.add_argument("--server-port", type=int, default=8443)
    parser.add_argument("--kit-port", type=int, default=8080)
    parser.add_argument("--start", action="store_true", help="start the class at once")
    args = parser.parse_args()
    email, password, code = _prepare(args.dir)
    server_url = f"http://{lan_address()}:{args.server_port}"
    server = subprocess.Popen(
        [str(BIN / "kit-provisioning"), "serve", "--http", f"0.0.0.0:{args.server_port}",
         "--public-url", server_url, "--data-dir", str(args.dir / "server")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    processes = [server]
    try:
        _wait_http(f"http://127.0.0.1:{args.server_port}/healthz")
        kit = _start_kit(args, server_url, code)
        processes.append(kit)
        print(f"\nadmin:  {server_url}/admin/\n        login {email} / password {password}")
        print(f"kiosk:  http://127.0.0.1:{args.kit_port}/  (press Start: the pupil link, "
              "printed as 'join:', goes through the server)\n", flush=True)  # fmt: skip
        for process, prefix in ((server, "[server] "), (kit, "[kit]    ")):
            threading.Thread(target=_relay, args=(process, prefix), daemon=True).start()
        with contextlib.suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
    finally:
        _stop(processes)
    return 0


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    sys.exit(main())
