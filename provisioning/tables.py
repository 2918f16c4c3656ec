"""The database schema (SQLAlchemy Core). Changes go through a new Alembic migration in
``provisioning/migrations/versions``; the tests check that the migrated schema matches this."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
Time = sa.Float(precision=53)
"""Seconds since the epoch (UTC); double precision on PostgreSQL."""
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

schools = sa.Table(
    "schools",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("departement", sa.String(8), nullable=False, index=True),
    sa.Column("created_at", Time, nullable=False),
)

kits = sa.Table(
    "kits",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("school_id", sa.String(32), sa.ForeignKey("schools.id"), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time),
    sa.Column("online", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_seen", Time),
    sa.Column("offline_since", Time),
    sa.Column("software", sa.String(64), nullable=False, server_default=""),
    sa.Column("health", sa.Text),
    sa.Column("applied_config", sa.String(16)),
    sa.Column("config_status", sa.String(16), nullable=False, server_default=""),
    sa.Column("config_reason", sa.String(500), nullable=False, server_default=""),
    sa.Column("session", sa.String(8), nullable=False, server_default="idle"),
    sa.Column("problems", sa.String(500), nullable=False, server_default=""),
    # problems: the latest report's problem codes, space-separated ("" when none); session and
    # problems are what the admin list filters on. link_node: the server node holding the kit's
    # link, NULL when none (docs/cluster.md).
    sa.Column("link_node", sa.String(64), index=True),
)

health_history = sa.Table(
    "health_history",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kit_id", sa.String(32), nullable=False),
    sa.Column("received_at", Time, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
    sa.Column("sent_at", Time),
    # sent_at: when the kit made the report; unique per kit, so a report sent again (no
    # ``stored`` acknowledgement came before its node failed) is stored once.
    sa.Index("ix_health_history_kit_time", "kit_id", "received_at"),
    sa.Index("ux_health_history_kit_sent", "kit_id", "sent_at", unique=True),
    sa.Index("ix_health_history_time", "received_at"),
)

enrollment_codes = sa.Table(
    "enrollment_codes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("school_id", sa.String(32), sa.ForeignKey("schools.id"), nullable=False),
    sa.Column("uses_left", sa.Integer, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(200), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(32), nullable=False, server_default=""),
    sa.Column("created_at", Time, nullable=False),
)

admin_sessions = sa.Table(
    "admin_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
)

config_layers = sa.Table(
    "config_layers",
    metadata,
    sa.Column("level", sa.String(8), primary_key=True),
    sa.Column("scope_id", sa.String(32), primary_key=True),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("url", sa.String(300), nullable=False, server_default=""),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("heartbeat_at", Time, nullable=False),
)
"""The live server nodes sharing this database (docs/cluster.md)."""

class_tokens = sa.Table(
    "class_tokens",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("kit_id", sa.String(32), nullable=False, index=True),
    sa.Column("claimed_at", Time, nullable=False),
    sa.Column("ended_at", Time, index=True),
)
"""Which kit created each class (the SHA-256 of its join token): the server's binding, so that
no other kit can claim that class, even across server restarts (docs/security.md)."""
