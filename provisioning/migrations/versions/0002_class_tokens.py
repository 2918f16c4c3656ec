"""Class tokens: the server's record of which kit created each class.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "class_tokens",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("kit_id", sa.String(32), nullable=False),
        sa.Column("claimed_at", Time, nullable=False),
        sa.Column("ended_at", Time),
    )
    op.create_index("ix_class_tokens_kit_id", "class_tokens", ["kit_id"])
    op.create_index("ix_class_tokens_ended_at", "class_tokens", ["ended_at"])


def downgrade() -> None:
    op.drop_table("class_tokens")
