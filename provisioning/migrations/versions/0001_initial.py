"""Initial schema: schools, kits, health history, enrollment codes, admins, audit, config.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schools",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("departement", sa.String(8), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_index("ix_schools_departement", "schools", ["departement"])
    op.create_table(
        "kits",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("school_id", sa.String(32), sa.ForeignKey("schools.id"), nullable=False),
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
    )
    op.create_index("ix_kits_school_id", "kits", ["school_id"])
    op.create_table(
        "health_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kit_id", sa.String(32), nullable=False),
        sa.Column("received_at", Time, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
    )
    op.create_index("ix_health_history_kit_time", "health_history", ["kit_id", "received_at"])
    op.create_index("ix_health_history_time", "health_history", ["received_at"])
    op.create_table(
        "enrollment_codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("school_id", sa.String(32), sa.ForeignKey("schools.id"), nullable=False),
        sa.Column("uses_left", sa.Integer, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(200), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("expires_at", Time, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Time, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "config_layers",
        sa.Column("level", sa.String(8), primary_key=True),
        sa.Column("scope_id", sa.String(32), primary_key=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "config_layers",
        "audit_log",
        "admin_sessions",
        "users",
        "enrollment_codes",
        "health_history",
        "kits",
        "schools",
    ):
        op.drop_table(table)
