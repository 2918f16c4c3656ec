"""Alembic environment: migrations run on the connection :func:`provisioning.db.migrate` hands
over (SQLite or PostgreSQL, through the same async engine as the server)."""

from __future__ import annotations

from alembic import context

from provisioning.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
