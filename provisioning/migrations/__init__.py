"""Alembic migrations of the provisioning database (run by :func:`provisioning.db.migrate`)."""
