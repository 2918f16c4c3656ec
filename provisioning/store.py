"""Every database query of the server, through SQLAlchemy Core (the same SQL on SQLite and
PostgreSQL). Functions take the engine and plain values; nothing here knows about HTTP."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import (
    admin_sessions,
    audit_log,
    class_tokens,
    config_layers,
    enrollment_codes,
    health_history,
    kits,
    nodes,
    schools,
    users,
)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by hand


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def new_enrollment_code() -> str:
    """16 characters from a 32-letter alphabet (80 bits), shown as XXXX-XXXX-XXXX-XXXX."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


# -- schools -----------------------------------------------------------------------------------


async def add_school(engine: AsyncEngine, school_id: str, name: str, departement: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            schools.insert().values(
                id=school_id, name=name, departement=departement, created_at=time.time()
            )
        )


async def get_school(engine: AsyncEngine, school_id: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(schools.select().where(schools.c.id == school_id))).first()
    return dict(row._mapping) if row else None


async def list_schools(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(schools.select().order_by(schools.c.departement, schools.c.id))
    return [dict(r._mapping) for r in rows]


# -- kits --------------------------------------------------------------------------------------


async def load_kits(engine: AsyncEngine) -> list[dict[str, Any]]:
    query = sa.select(kits, schools.c.departement).join(schools, kits.c.school_id == schools.c.id)
    async with engine.connect() as conn:
        rows = await conn.execute(query)
    return [dict(r._mapping) for r in rows]


async def mark_all_offline(engine: AsyncEngine, now: float) -> None:
    """At start-up no kit is connected yet."""
    async with engine.begin() as conn:
        await conn.execute(
            kits.update()
            .where(kits.c.online == sa.true())
            .values(online=False, offline_since=sa.func.coalesce(kits.c.last_seen, now))
        )


async def enroll(
    engine: AsyncEngine, code: str, name: str, now: float
) -> tuple[dict[str, Any], str] | None:
    """Use one use of ``code`` and create a kit; returns (kit row, secret) or None when the code
    is unknown, expired or used up. Atomic: two kits racing for the last use cannot both win."""
    code_hash = sha256_hex(normalize_code(code))
    kit_id = "kit-" + secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        result = await conn.execute(
            enrollment_codes.update()
            .where(
                enrollment_codes.c.code_hash == code_hash,
                enrollment_codes.c.uses_left > 0,
                enrollment_codes.c.expires_at > now,
            )
            .values(uses_left=enrollment_codes.c.uses_left - 1)
            .returning(enrollment_codes.c.school_id, enrollment_codes.c.id)
        )
        row = result.first()
        if row is None:
            return None
        values = {
            "id": kit_id,
            "name": name or kit_id,
            "school_id": row.school_id,
            "secret_hash": sha256_hex(secret),
            "created_at": now,
        }
        await conn.execute(kits.insert().values(**values))
        departement = (
            await conn.execute(
                sa.select(schools.c.departement).where(schools.c.id == row.school_id)
            )
        ).scalar_one()
        await _audit(conn, now, f"enrollment-code:{row.id}", "kit.enroll", kit_id, {"name": name})
    return {**values, "departement": departement}, secret


async def update_kit(engine: AsyncEngine, kit_id: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(kits.update().where(kits.c.id == kit_id).values(**values))


LATEST_COLUMNS = (
    ("last_seen", "k_seen"),
    ("health", "k_health"),
    ("software", "k_software"),
    ("session", "k_session"),
    ("problems", "k_problems"),
)
STATUS_COLUMNS = (
    ("online", "k_online"),
    ("offline_since", "k_offline_since"),
    ("last_seen", "k_seen"),
)
CONFIG_COLUMNS = (
    ("applied_config", "k_applied"),
    ("config_status", "k_status"),
    ("config_reason", "k_reason"),
)
SQLITE_ROWS_PER_STATEMENT = 2000
"""Rows per multi-row statement (SQLite allows 32,766 bound values per statement)."""


async def write_batch(
    engine: AsyncEngine,
    latest: Sequence[dict[str, Any]],
    history: Sequence[dict[str, Any]],
    status: Sequence[dict[str, Any]],
    config: Sequence[dict[str, Any]] = (),
    tokens: Sequence[dict[str, Any]] = (),
    audits: Sequence[dict[str, Any]] = (),
) -> None:
    """One transaction for everything the link accumulated since the last flush."""
    async with engine.begin() as conn:
        await conn.run_sync(write_rows, latest, history, status, config, tokens, audits)


def lock_kits(ids: Sequence[str] | None = None, link_node: str | None = None) -> sa.Select[Any]:
    """``SELECT … FOR UPDATE`` of these kits' rows (or those linked to ``link_node``) in id
    order. Every PostgreSQL transaction that updates several kits takes this first: a writer's
    per-kit updates and a node's ``UPDATE … WHERE id IN (…)`` otherwise lock rows in different
    orders and deadlock (16 deadlocks in a 5-minute run of two nodes, before)."""
    where = (
        kits.c.id.in_(sorted(set(ids or ())))
        if link_node is None
        else (kits.c.link_node == link_node)
    )
    return sa.select(kits.c.id).where(where).order_by(kits.c.id).with_for_update()


def write_rows(
    conn: sa.Connection,
    latest: Sequence[dict[str, Any]],
    history: Sequence[dict[str, Any]],
    status: Sequence[dict[str, Any]],
    config: Sequence[dict[str, Any]] = (),
    tokens: Sequence[dict[str, Any]] = (),
    audits: Sequence[dict[str, Any]] = (),
) -> None:
    """The batch's statements on an open transaction (SQLite: multi-row statements)."""
    _upsert_tokens(conn, tokens)
    if audits:
        conn.execute(audit_log.insert(), list(audits))
    if conn.dialect.name == "sqlite":
        _sqlite_update(conn, LATEST_COLUMNS, latest)
        _sqlite_insert_history(conn, history)
        _sqlite_update(conn, STATUS_COLUMNS, status)
        _sqlite_update(conn, CONFIG_COLUMNS, config)
        return
    conn.execute(lock_kits([row["k_id"] for part in (latest, status, config) for row in part]))
    for columns, rows in (
        (LATEST_COLUMNS, latest),
        (STATUS_COLUMNS, status),
        (CONFIG_COLUMNS, config),
    ):
        if rows:
            values: dict[str, Any] = {column: sa.bindparam(key) for column, key in columns}
            statement = kits.update().where(kits.c.id == sa.bindparam("k_id")).values(values)
            conn.execute(statement, list(rows))
    if history:
        # A report sent again (its node failed before the kit's acknowledgement) is stored once.
        once = postgresql_insert(health_history).on_conflict_do_nothing(
            index_elements=[health_history.c.kit_id, health_history.c.sent_at]
        )
        conn.execute(once, list(history))


def _upsert_tokens(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Class-token bindings (a claim, then its end), one row per digest."""
    if not rows:
        return
    dialect = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    statement = dialect(class_tokens)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[class_tokens.c.digest],
            set_={"ended_at": statement.excluded.ended_at},
        ),
        list(rows),
    )


async def load_class_tokens(engine: AsyncEngine, ended_since: float) -> list[dict[str, Any]]:
    """Live bindings and those ended after ``ended_since``, oldest first."""
    query = (
        sa.select(class_tokens)
        .where(sa.or_(class_tokens.c.ended_at.is_(None), class_tokens.c.ended_at >= ended_since))
        .order_by(class_tokens.c.claimed_at)
    )
    async with engine.connect() as conn:
        rows = await conn.execute(query)
    return [dict(r._mapping) for r in rows]


async def prune_class_tokens(engine: AsyncEngine, ended_before: float) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            class_tokens.delete().where(class_tokens.c.ended_at < ended_before)
        )
    return int(result.rowcount or 0)


# SQLite: one multi-row statement per chunk instead of an ``executemany`` (which steps, and
# trades the GIL, once per row).


def _sqlite_update(
    conn: sa.Connection, columns: tuple[tuple[str, str], ...], rows: Sequence[dict[str, Any]]
) -> None:
    assignments = ", ".join(f"{column} = v.column{i + 2}" for i, (column, _) in enumerate(columns))
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start : start + SQLITE_ROWS_PER_STATEMENT]
        placeholder = "(" + ", ".join("?" * (len(columns) + 1)) + ")"
        sql = (
            f"UPDATE kits SET {assignments} FROM (VALUES {', '.join([placeholder] * len(chunk))})"
            " AS v WHERE kits.id = v.column1"
        )
        params = [value for row in chunk for value in (row["k_id"], *(row[k] for _, k in columns))]
        conn.exec_driver_sql(sql, tuple(params))


def _sqlite_insert_history(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start : start + SQLITE_ROWS_PER_STATEMENT]
        sql = (
            "INSERT OR IGNORE INTO health_history (kit_id, received_at, report, sent_at) VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
        )
        columns = ("kit_id", "received_at", "report", "sent_at")
        params = [r.get(column) for r in chunk for column in columns]
        conn.exec_driver_sql(sql, tuple(params))


async def prune_history(engine: AsyncEngine, before: float) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(
            health_history.delete().where(health_history.c.received_at < before)
        )
    return int(result.rowcount or 0)


def history_query(kit_id: str, limit: int) -> sa.Select[Any]:
    """A kit's latest ``limit`` history entries, newest first."""
    return (
        sa.select(health_history.c.received_at, health_history.c.sent_at, health_history.c.report)
        .where(health_history.c.kit_id == kit_id)
        .order_by(health_history.c.received_at.desc())
        .limit(limit)
    )


async def health_history_of(engine: AsyncEngine, kit_id: str, limit: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(history_query(kit_id, limit))
    return [
        {"received_at": r.received_at, "sent_at": r.sent_at, "report": json.loads(r.report)}
        for r in rows
    ]


# -- enrollment codes --------------------------------------------------------------------------


async def create_enrollment_code(
    engine: AsyncEngine, school_id: str, uses: int, expires_at: float, actor: str
) -> str:
    code = new_enrollment_code()
    now = time.time()
    async with engine.begin() as conn:
        result = await conn.execute(
            enrollment_codes.insert()
            .values(
                code_hash=sha256_hex(normalize_code(code)),
                school_id=school_id,
                uses_left=uses,
                expires_at=expires_at,
                created_by=actor,
                created_at=now,
            )
            .returning(enrollment_codes.c.id)
        )
        code_id = result.scalar_one()
        detail = {"school": school_id, "uses": uses, "expires_at": expires_at, "code_id": code_id}
        await _audit(conn, now, actor, "enrollment_code.create", school_id, detail)
    return code


# -- admins ------------------------------------------------------------------------------------


async def add_user(
    engine: AsyncEngine, email: str, password_hash: str, role: str, scope: str, actor: str
) -> int:
    now = time.time()
    async with engine.begin() as conn:
        result = await conn.execute(
            users.insert()
            .values(
                email=email, password_hash=password_hash, role=role, scope=scope, created_at=now
            )
            .returning(users.c.id)
        )
        user_id = int(result.scalar_one())
        await _audit(conn, now, actor, "user.add", email, {"role": role, "scope": scope})
    return user_id


async def user_by_email(engine: AsyncEngine, email: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(users.select().where(users.c.email == email))).first()
    return dict(row._mapping) if row else None


async def list_users(engine: AsyncEngine) -> list[dict[str, Any]]:
    query = sa.select(users.c.id, users.c.email, users.c.role, users.c.scope, users.c.created_at)
    async with engine.connect() as conn:
        rows = await conn.execute(query.order_by(users.c.email))
    return [dict(r._mapping) for r in rows]


async def set_password(
    engine: AsyncEngine, user: dict[str, Any], password_hash: str, kept_session: str, actor: str
) -> None:
    """A new password for ``user`` (a row of ``users``); every session of that admin but
    ``kept_session`` ends (a stolen one among them)."""
    user_id = user["id"]
    async with engine.begin() as conn:
        await conn.execute(
            users.update().where(users.c.id == user_id).values(password_hash=password_hash)
        )
        await conn.execute(
            admin_sessions.delete().where(
                admin_sessions.c.user_id == user_id,
                admin_sessions.c.token_hash != sha256_hex(kept_session),
            )
        )
        await _audit(conn, time.time(), actor, "user.password", user["email"], {})


async def remove_user(engine: AsyncEngine, user_id: int, actor: str) -> str | None:
    """Delete an admin and end its sessions at once; returns its email, None if unknown."""
    async with engine.begin() as conn:
        query = sa.select(users.c.email).where(users.c.id == user_id)
        email = (await conn.execute(query)).scalar_one_or_none()
        if email is None:
            return None
        await conn.execute(admin_sessions.delete().where(admin_sessions.c.user_id == user_id))
        await conn.execute(users.delete().where(users.c.id == user_id))
        await _audit(conn, time.time(), actor, "user.remove", email, {})
    return str(email)


async def create_session(
    engine: AsyncEngine, user_id: int, lifetime_s: float, now: float
) -> tuple[str, str]:
    """A new admin session; returns (cookie token, CSRF token). Only the hash is stored."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    async with engine.begin() as conn:
        await conn.execute(admin_sessions.delete().where(admin_sessions.c.expires_at < now))
        await conn.execute(
            admin_sessions.insert().values(
                token_hash=sha256_hex(token),
                user_id=user_id,
                csrf=csrf,
                created_at=now,
                expires_at=now + lifetime_s,
            )
        )
    return token, csrf


async def session_user(engine: AsyncEngine, token: str, now: float) -> dict[str, Any] | None:
    query = (
        sa.select(users.c.id, users.c.email, users.c.role, users.c.scope, admin_sessions.c.csrf)
        .join(users, users.c.id == admin_sessions.c.user_id)
        .where(admin_sessions.c.token_hash == sha256_hex(token), admin_sessions.c.expires_at > now)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row else None


async def delete_session(engine: AsyncEngine, token: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            admin_sessions.delete().where(admin_sessions.c.token_hash == sha256_hex(token))
        )


# -- audit -------------------------------------------------------------------------------------


async def _audit(
    conn: Any, now: float, actor: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    await conn.execute(
        audit_log.insert().values(
            at=now, actor=actor, action=action, target=target, detail=json.dumps(detail)
        )
    )


async def audit(
    engine: AsyncEngine, actor: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    async with engine.begin() as conn:
        await _audit(conn, time.time(), actor, action, target, detail)


async def list_audit(
    engine: AsyncEngine, limit: int, actor: str | None = None
) -> list[dict[str, Any]]:
    return audit_dicts(await audit_rows(engine, limit, actor))


async def audit_rows(
    engine: AsyncEngine, limit: int, actor: str | None = None
) -> Sequence[sa.Row[Any]]:
    """The newest entries (an admin's own only, with ``actor``); :func:`audit_dicts` makes
    them into dicts, off the event loop for a long page."""
    query = audit_log.select().order_by(audit_log.c.id.desc()).limit(limit)
    if actor is not None:
        query = query.where(audit_log.c.actor == actor)
    async with engine.connect() as conn:
        return (await conn.execute(query)).all()


def audit_dicts(rows: Sequence[sa.Row[Any]]) -> list[dict[str, Any]]:
    return [{**dict(r._mapping), "detail": json.loads(r.detail)} for r in rows]


# -- configuration layers ----------------------------------------------------------------------


async def load_config_layers(engine: AsyncEngine) -> dict[tuple[str, str], dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(config_layers.select())
    return {(r.level, r.scope_id): json.loads(r.config) for r in rows}


async def put_config_layer(
    engine: AsyncEngine, level: str, scope_id: str, overlay: dict[str, Any], actor: str
) -> None:
    now = time.time()
    key = (config_layers.c.level == level) & (config_layers.c.scope_id == scope_id)
    async with engine.begin() as conn:
        await conn.execute(config_layers.delete().where(key))
        await conn.execute(
            config_layers.insert().values(
                level=level,
                scope_id=scope_id,
                config=json.dumps(overlay),
                updated_at=now,
                updated_by=actor,
            )
        )
        await _audit(conn, now, actor, "config.set", f"{level}:{scope_id}", overlay)


# -- cluster: server nodes on one PostgreSQL (provisioning/cluster.py, docs/cluster.md) --------

RELEASED = {"online": False, "link_node": None}
LINK_ROWS_PER_STATEMENT = 5000
"""Kit ids per ``IN (…)`` (asyncpg takes at most 32,767 parameters per statement)."""


async def register_node(engine: AsyncEngine, node_id: str, url: str, now: float) -> None:
    """This node is alive (a row left by an earlier run of the same id is replaced)."""
    statement = postgresql_insert(nodes).values(
        id=node_id, url=url, started_at=now, heartbeat_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=[nodes.c.id],
        set_={"url": url, "started_at": now, "heartbeat_at": now},
    )
    async with engine.begin() as conn:
        await conn.execute(statement)


async def node_heartbeat(engine: AsyncEngine, node_id: str, now: float) -> bool:
    """False when this node's row is gone (another node took it over: it was silent)."""
    async with engine.begin() as conn:
        result = await conn.execute(
            nodes.update().where(nodes.c.id == node_id).values(heartbeat_at=now)
        )
    return bool(result.rowcount)


async def live_nodes(engine: AsyncEngine) -> dict[str, str]:
    """Every registered node → its URL."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(nodes.c.id, nodes.c.url))
    return {row.id: row.url for row in rows}


async def remove_node(engine: AsyncEngine, node_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(nodes.delete().where(nodes.c.id == node_id))


async def take_over_nodes(
    engine: AsyncEngine, me: str, before: float, now: float, announce: Any
) -> list[str]:
    """Delete every node whose heartbeat is older than ``before`` and mark its kits offline,
    in one transaction with the announcement (``announce(dead) → NOTIFY payload``). Two live
    nodes may run this at once: ``DELETE … RETURNING`` gives each dead row to one of them."""
    async with engine.begin() as conn:
        result = await conn.execute(
            nodes.delete()
            .where(nodes.c.heartbeat_at < before, nodes.c.id != me)
            .returning(nodes.c.id)
        )
        dead = [str(row.id) for row in result]
        for node in dead:
            await conn.execute(lock_kits(link_node=node))
            await conn.execute(
                kits.update()
                .where(kits.c.link_node == node)
                .values(**RELEASED, offline_since=sa.func.coalesce(kits.c.last_seen, now))
            )
            await conn.execute(sa.select(sa.func.pg_notify("fleet", announce(node))))
    return dead


async def release_on_start(engine: AsyncEngine, me: str, now: float) -> int:
    """At a node's start: kits linked to it (its earlier run), to no node, or to a node no
    longer registered are offline; kits of the other live nodes are left as they are."""
    registered = sa.select(nodes.c.id)
    async with engine.begin() as conn:
        result = await conn.execute(
            kits.update()
            .where(
                sa.or_(kits.c.online == sa.true(), kits.c.link_node.is_not(None)),
                sa.or_(
                    kits.c.link_node.is_(None),
                    kits.c.link_node == me,
                    kits.c.link_node.not_in(registered),
                ),
            )
            .values(
                **RELEASED,
                offline_since=sa.case(
                    (kits.c.online == sa.true(), sa.func.coalesce(kits.c.last_seen, now)),
                    else_=kits.c.offline_since,
                ),
            )
        )
    return int(result.rowcount or 0)


async def write_links(
    engine: AsyncEngine,
    me: str,
    held: Sequence[str],
    released: Sequence[str],
    payloads: Sequence[str],
    now: float,
) -> None:
    """One transaction: the kits whose link this node now holds, those it let go (only if
    still its own: a newer link on another node wins), then the events (delivered at commit,
    after the rows they describe)."""
    step = LINK_ROWS_PER_STATEMENT
    async with engine.begin() as conn:
        everyone = sorted({*held, *released})
        for start in range(0, len(everyone), step):
            await conn.execute(lock_kits(everyone[start : start + step]))
        for start in range(0, len(held), step):
            await conn.execute(
                kits.update()
                .where(kits.c.id.in_(held[start : start + step]))
                .values(link_node=me, online=True, offline_since=None)
            )
        for start in range(0, len(released), step):
            await conn.execute(
                kits.update()
                .where(kits.c.id.in_(released[start : start + step]), kits.c.link_node == me)
                .values(**RELEASED, offline_since=sa.func.coalesce(kits.c.last_seen, now))
            )
        if payloads:
            await conn.execute(
                sa.text("SELECT pg_notify('fleet', p) FROM unnest(CAST(:ps AS text[])) AS p"),
                {"ps": list(payloads)},
            )


async def kit_route(engine: AsyncEngine, kit_id: str) -> tuple[str, str] | None:
    """(node, URL) of the live node holding this kit's link, None when no node does."""
    query = (
        sa.select(kits.c.link_node, nodes.c.url)
        .join(nodes, nodes.c.id == kits.c.link_node)
        .where(kits.c.id == kit_id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return (str(row.link_node), str(row.url)) if row is not None else None


async def load_kit(engine: AsyncEngine, kit_id: str) -> dict[str, Any] | None:
    query = (
        sa.select(kits, schools.c.departement)
        .join(schools, kits.c.school_id == schools.c.id)
        .where(kits.c.id == kit_id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row is not None else None


async def class_token(engine: AsyncEngine, digest: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        query = class_tokens.select().where(class_tokens.c.digest == digest)
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row is not None else None


async def claim_class_token(engine: AsyncEngine, digest: str, kit_id: str, now: float) -> str:
    """Bind ``digest`` to ``kit_id`` unless it is bound already; returns its owner (the
    database arbitrates between nodes: the first claim committed wins)."""
    async with engine.begin() as conn:
        await conn.execute(
            postgresql_insert(class_tokens)
            .values(digest=digest, kit_id=kit_id, claimed_at=now, ended_at=None)
            .on_conflict_do_nothing(index_elements=[class_tokens.c.digest])
        )
        owner = await conn.execute(
            sa.select(class_tokens.c.kit_id).where(class_tokens.c.digest == digest)
        )
    return str(owner.scalar_one())


async def load_config_layer(
    engine: AsyncEngine, level: str, scope_id: str
) -> dict[str, Any] | None:
    key = (config_layers.c.level == level) & (config_layers.c.scope_id == scope_id)
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(config_layers.c.config).where(key))).first()
    return json.loads(row.config) if row is not None else None
