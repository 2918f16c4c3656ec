"""The admin kit list's queries: paginated, filtered, sorted and counted in SQL.

Measured at 15,000 kits (docs/provisioning.md, "Admin list"): sorting and counting in the
database keeps the event loop free; only the page's rows become Python objects. The rest of the
server's queries are in :mod:`provisioning.store`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .store import history_query
from .tables import kits, schools

KIT_SORTS = ("departement", "school", "name", "last_seen", "state")
KIT_STATES = ("online", "offline", "problem", "live", "revoked")
REACH_RANK = ("unknown", "udp", "turn-udp", "turn-tcp", "turn-tls", "none")
"""A school's network class is its most restrictive kit's: the highest rank found."""

_active = kits.c.revoked_at.is_(None)
_online = sa.and_(_active, kits.c.online == sa.true())
_STATE_WHERE: dict[str, sa.ColumnElement[bool]] = {
    "online": _online,
    "offline": sa.and_(_active, kits.c.online == sa.false()),
    "problem": sa.and_(_active, kits.c.problems != ""),
    "live": sa.and_(_online, kits.c.session == "live"),
    "revoked": kits.c.revoked_at.is_not(None),
}
_STATE_RANK = sa.case(
    (kits.c.revoked_at.is_not(None), 4),
    (kits.c.online == sa.false(), 0),
    (kits.c.problems != "", 1),
    (kits.c.session == "live", 2),
    else_=3,
)
"""``sort=state``: offline first, then device problems, live classes, idle, revoked last."""


def _reach_rank() -> sa.ColumnElement[int]:
    """The rank of a kit's network reach, read from its latest report's JSON text.

    The text is the server's own compact ``model_dump_json`` of a validated report, in which
    the network part starts ``"network":{"reach":"…"``: a LIKE finds it with the same SQL on
    SQLite and PostgreSQL (no JSON functions, which differ). Reading the reports' text is most
    of the counts' time (~80 of ~130 ms at 15,000 kits on SQLite); finding the value with
    ``instr``/``strpos`` instead was no faster."""
    whens = [
        (kits.c.health.like(f'%"network":{{"reach":"{reach}"%'), rank)
        for rank, reach in enumerate(REACH_RANK)
        if rank > 0
    ]
    return sa.case(*whens, else_=0)


@dataclass(frozen=True, slots=True)
class KitQuery:
    """One page of the admin kit list; ``role``/``scope`` are the admin's (provisioning/auth.py)."""

    role: str
    scope: str = ""
    limit: int = 100
    offset: int = 0
    sort: str = "departement"
    order: str = "asc"
    departement: str | None = None
    school: str | None = None
    state: str | None = None
    q: str | None = None


def scope_where(role: str, scope: str) -> sa.ColumnElement[bool]:
    """What an admin sees (``Admin.sees_kit`` as SQL over kits JOIN schools)."""
    if role == "national":
        return sa.true()
    if role == "departement":
        return schools.c.departement == scope
    return schools.c.id == scope


def _like_escaped(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _kit_where(query: KitQuery) -> list[sa.ColumnElement[bool]]:
    where = [scope_where(query.role, query.scope)]
    if query.departement is not None:
        where.append(schools.c.departement == query.departement)
    if query.school is not None:
        where.append(kits.c.school_id == query.school)
    if query.state is not None:
        where.append(_STATE_WHERE[query.state])
    if query.q:
        pattern = _like_escaped(query.q)
        where.append(
            sa.or_(
                *(
                    sa.func.lower(column).like(pattern, escape="\\")
                    for column in (kits.c.name, kits.c.id, kits.c.school_id, schools.c.name)
                )
            )
        )
    return where


def _kit_order(query: KitQuery) -> list[sa.ColumnElement[Any]]:
    keys: dict[str, list[sa.ColumnElement[Any]]] = {
        "departement": [schools.c.departement, kits.c.school_id, kits.c.name],
        "school": [kits.c.school_id, kits.c.name],
        "name": [kits.c.name],
        "last_seen": [sa.func.coalesce(kits.c.last_seen, 0.0)],
        "state": [_STATE_RANK, schools.c.departement, kits.c.school_id, kits.c.name],
    }
    columns = [*keys[query.sort], kits.c.id]  # the id: a stable order across pages
    return [c.desc() if query.order == "desc" else c.asc() for c in columns]


_PAGE_COLUMNS = (
    kits.c.id,
    kits.c.name,
    kits.c.school_id,
    schools.c.departement,
    kits.c.revoked_at,
    kits.c.online,
    kits.c.last_seen,
    kits.c.offline_since,
    kits.c.software,
    kits.c.problems,
    kits.c.session,
    kits.c.health,
    kits.c.applied_config,
    kits.c.config_status,
    kits.c.config_reason,
)


async def kit_page(engine: AsyncEngine, query: KitQuery) -> tuple[Sequence[sa.Row[Any]], int]:
    """One page of kits (rows of kits JOIN schools, columns as :data:`_PAGE_COLUMNS`) and how
    many match in all. Rows, not dicts: the caller turns them into JSON off the event loop."""
    joined = kits.join(schools, kits.c.school_id == schools.c.id)
    where = _kit_where(query)
    page = (
        sa.select(*_PAGE_COLUMNS)
        .select_from(joined)
        .where(*where)
        .order_by(*_kit_order(query))
        .limit(query.limit)
        .offset(query.offset)
    )
    total = sa.select(sa.func.count()).select_from(joined).where(*where)
    async with engine.connect() as conn:
        rows = (await conn.execute(page)).all()
        count = (await conn.execute(total)).scalar_one()
    return rows, int(count)


COUNT_NAMES = ("kits", "online", "live", "problem", "revoked")


async def kit_counts(engine: AsyncEngine, role: str, scope: str) -> Sequence[sa.Row[Any]]:
    """Per school in scope (those without a kit too): its kits, online, live, problem and
    revoked counts and its network rank (:data:`REACH_RANK`), one GROUP BY. Rows, made into
    dicts by :func:`count_dicts` off the event loop (3,000 schools: ~15 ms of Python)."""

    def counted(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    reach = sa.func.max(sa.case((_active, _reach_rank()), else_=0))
    query = (
        sa.select(
            schools.c.id,
            schools.c.name,
            schools.c.departement,
            sa.func.count(kits.c.id).label("kits"),
            counted(_STATE_WHERE["online"]).label("online"),
            counted(_STATE_WHERE["live"]).label("live"),
            counted(_STATE_WHERE["problem"]).label("problem"),
            counted(_STATE_WHERE["revoked"]).label("revoked"),
            sa.func.coalesce(reach, 0).label("reach"),
        )
        .select_from(schools.outerjoin(kits, kits.c.school_id == schools.c.id))
        .where(scope_where(role, scope))
        .group_by(schools.c.departement, schools.c.id, schools.c.name)
        .order_by(schools.c.departement, schools.c.id)
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).all()


def count_dicts(rows: Sequence[sa.Row[Any]]) -> list[dict[str, Any]]:
    """:func:`kit_counts` rows as the API shows them."""
    return [
        {
            "id": r[0],
            "name": r[1],
            "departement": r[2],
            "kits": int(r[3]),
            "online": int(r[4]),
            "live": int(r[5]),
            "problem": int(r[6]),
            "revoked": int(r[7]),
            "reach": REACH_RANK[int(r[8])] if r[8] else "",
        }
        for r in rows
    ]


async def schools_in_scope(engine: AsyncEngine, role: str, scope: str) -> Sequence[sa.Row[Any]]:
    """The schools an admin sees, filtered in SQL (rows: id, name, departement, created_at)."""
    query = (
        sa.select(schools.c.id, schools.c.name, schools.c.departement, schools.c.created_at)
        .where(scope_where(role, scope))
        .order_by(schools.c.departement, schools.c.id)
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).all()


async def health_history_json(engine: AsyncEngine, kit_id: str, limit: int) -> str:
    """A kit's latest history entries as one JSON array, newest first, built around the stored
    report texts (valid JSON written by the server) without parsing them: 2,000 reports parsed
    and dumped again took ~80 ms of event loop, this ~3 ms."""
    async with engine.connect() as conn:
        rows = (await conn.execute(history_query(kit_id, limit))).all()
    items = [f'{{"received_at":{json.dumps(r.received_at)},"report":{r.report}}}' for r in rows]
    return "[" + ",".join(items) + "]"
