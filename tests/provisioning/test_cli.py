"""``kit-provisioning`` admin commands and ``kit-agent enroll``, as an operator runs them."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import sys
import time
from pathlib import Path

import pytest

from agent.cli import main as agent_main
from agent.link.credential import CREDENTIAL_FILE, load_credential
from provisioning import store
from provisioning.auth import verify_password
from provisioning.cli import main, parse_duration
from provisioning.db import database_url, open_database

from .conftest import LiveServer


def run(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str = "") -> tuple[int, str]:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(argv)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out + err


def test_admin_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    code, out = run(
        ["user", "add", "a@b.fr", "--role", "national", *data], capsys, "long password!\n"
    )
    assert code == 0 and "added a@b.fr" in out
    code, out = run(
        ["user", "add", "a@b.fr", "--role", "national", *data], capsys, "long password!\n"
    )
    assert code == 1 and "exists" in out
    code, out = run(
        ["user", "add", "t@b.fr", "--role", "school", *data], capsys, "long password!\n"
    )
    assert code == 2 and "needs a scope" in out
    code, out = run(
        ["user", "add", "s@b.fr", "--role", "school", "--scope", "X1", *data], capsys, "short\n"
    )
    assert code == 2 and "at least 10" in out
    code, out = run(
        ["user", "add", "d@b.fr", "--role", "departement", "--scope", "Paris", *data],
        capsys,
        "long password!\n",
    )
    assert code == 2 and "département" in out  # the same rule as the API's
    code, out = run(["enrollment-code", "create", "--school", "NOPE", *data], capsys)
    assert code == 1 and "no school" in out
    assert (
        run(["school", "add", "0751234A", "--name", "C", "--departement", "75", *data], capsys)[0]
        == 0
    )
    code, out = run(
        [
            "enrollment-code",
            "create",
            "--school",
            "0751234A",
            "--uses",
            "3",
            "--expires",
            "2h",
            *data,
        ],
        capsys,
    )
    assert code == 0 and len(out.strip().splitlines()[-1]) == 19
    code, out = run(["kits", "--json", *data], capsys)
    assert code == 0 and json.loads(out) == []
    with pytest.raises(SystemExit):
        main(["enrollment-code", "create", "--school", "x", "--expires", "soon"])
    assert parse_duration("90") == 90 and parse_duration("7d") == 7 * 86400


async def test_agent_enroll_command_and_kits_listing(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await live_server.school("0751234A")
    code = await live_server.code("0751234A")
    state = tmp_path / "kit"
    argv = ["enroll", live_server.url, code, "--state-dir", str(state), "--name", "Salle 7"]
    assert await asyncio.to_thread(agent_main, argv) == 0
    assert "enrolled as kit-" in capsys.readouterr().out
    assert stat.S_IMODE((state / CREDENTIAL_FILE).stat().st_mode) == 0o600
    credential = load_credential(state)
    assert credential is not None and credential.kit_id in live_server.server.fleet.kits
    # Replayed: refused with the server's reason, the credential file untouched.
    assert (
        await asyncio.to_thread(agent_main, [*argv[:3], "--state-dir", str(tmp_path / "k2")]) == 1
    )
    assert "unknown, expired or used up (403)" in capsys.readouterr().err
    assert not (tmp_path / "k2").exists()
    # The listing through the CLI reads the same database (SQLite or PostgreSQL).
    db = live_server.options.db
    data = ["--db", db] if db else ["--data-dir", str(live_server.options.data_dir)]
    rows = json.loads((await asyncio.to_thread(run, ["kits", "--json", *data], capsys))[1])
    assert [(r["id"], r["name"], r["online"]) for r in rows] == [
        (credential.kit_id, "Salle 7", False)
    ]


def test_a_forgotten_password_is_reset_and_sessions_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    reset = ["user", "password", "A@b.fr", *data]
    code, out = run(reset, capsys, "a new long password\n")
    assert code == 1 and "no admin a@b.fr" in out
    run(["user", "add", "a@b.fr", "--role", "national", *data], capsys, "long password!\n")

    async def open_session() -> str:
        engine = await open_database(database_url("", tmp_path))
        try:
            user = await store.user_by_email(engine, "a@b.fr")
            assert user is not None
            return (await store.create_session(engine, user["id"], 3600, time.time()))[0]
        finally:
            await engine.dispose()

    async def state(token: str) -> tuple[bool, bool]:
        engine = await open_database(database_url("", tmp_path))
        try:
            user = await store.user_by_email(engine, "a@b.fr")
            assert user is not None
            signed_in = await store.session_user(engine, token, time.time()) is not None
            return signed_in, verify_password(user["password_hash"], "a new long password")
        finally:
            await engine.dispose()

    token = asyncio.run(open_session())
    assert run(reset, capsys, "short\n")[0] == 2
    assert asyncio.run(state(token)) == (True, False)
    code, out = run(reset, capsys, "a new long password\n")
    assert code == 0 and "sessions are closed" in out
    assert asyncio.run(state(token)) == (False, True)
