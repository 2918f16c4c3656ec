"""The Alembic migrations produce exactly the schema the code uses, on SQLite and PostgreSQL,
and running them again is harmless."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from provisioning.db import database_url, migrate, open_database
from provisioning.tables import metadata


async def test_migrated_schema_matches_the_tables(tmp_path: Path, db_url: str) -> None:
    engine = await open_database(database_url(db_url, tmp_path))
    try:
        await migrate(engine)  # a second run changes nothing
        async with engine.connect() as connection:
            diff = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
            version = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert [row[0] for row in version] == ["0003"]
    finally:
        await engine.dispose()
    assert diff == [], diff
