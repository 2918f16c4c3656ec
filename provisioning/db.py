"""Opening the database (SQLite by default, PostgreSQL with a ``postgresql://`` URL) and
bringing its schema up to date with the Alembic migrations shipped in the package."""

from __future__ import annotations

import contextlib
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .errors import DatabaseError

log = logging.getLogger("provisioning.db")


def database_url(db: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL for ``--db`` (empty = ``DATA_DIR/provisioning.sqlite3``)."""
    if not db:
        return f"sqlite+aiosqlite:///{data_dir / 'provisioning.sqlite3'}"
    for prefix in ("postgresql://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql+asyncpg://" + db[len(prefix) :]
    if db.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + db[len("sqlite:///") :]
    if db.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:///")):
        return db
    raise DatabaseError("--db must be a postgresql:// or sqlite:/// URL")


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (CLI) never block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, fast commits
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Checkpoints (copying the WAL into the database, with an fsync) would otherwise run inside
    # whichever commit crosses 1000 pages: the batched writer's. :func:`checkpoint` runs them on
    # another connection instead, so a health batch never waits for a disk flush.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back to 64 MiB
    cursor.close()


async def checkpoint(engine: AsyncEngine) -> None:
    """Move the SQLite WAL into the database without blocking writers (no-op elsewhere)."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as connection:
        await connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=4, max_overflow=4)
        sa.event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    location = resources.files("provisioning").joinpath("migrations")
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Apply every migration not yet applied (idempotent)."""
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.upgrade(_alembic_config(c), "head"))
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        raise DatabaseError(f"cannot open or migrate the database: {exc}") from exc


SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def private_sqlite_file(url: str) -> None:
    """The SQLite database file is created 0600 whatever the umask (a hand-run ``serve`` or
    ``make demo`` under umask 022 made it, and its password and session hashes, readable by
    every local user); SQLite gives its -wal and -shm files the database file's mode. Files
    left readable by others by an older version are tightened. Not SQLite: nothing to do."""
    parsed = sa.engine.make_url(url)
    path = parsed.database or ""
    if not parsed.drivername.startswith("sqlite") or path in ("", ":memory:"):
        return
    if path.startswith("file:"):  # a URI: SQLite opens it, with the umask in force
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for suffix in SQLITE_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                mode = os.stat(path + suffix).st_mode & 0o777
                if mode & 0o077:
                    os.chmod(path + suffix, mode & 0o700)
                    log.warning("%s was readable by others: now %o", path + suffix, mode & 0o700)
    except OSError as exc:
        raise DatabaseError(f"cannot create the database file {path}: {exc}") from exc


async def open_database(url: str) -> AsyncEngine:
    private_sqlite_file(url)
    engine = make_engine(url)
    await migrate(engine)
    log.info("database ready (%s)", engine.url.render_as_string(hide_password=True))
    return engine
