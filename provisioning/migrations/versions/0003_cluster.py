"""Several server nodes on one database, and a kit list the database can sort and filter.

- ``kits.session`` and ``kits.problems``: the state the admin list filters on, written with each
  kit's latest report (the list is paginated, filtered and counted in SQL, docs/provisioning.md).
- ``kits.link_node``: the server node holding the kit's link (NULL when none): a pupil's request
  that reaches another node is forwarded there (docs/cluster.md).
- ``nodes``: the live server nodes and their heartbeat; a node whose heartbeat stops is taken
  over by another, which marks its kits offline once.
- ``health_history.sent_at``: when the kit made the report; unique per kit, so a report sent
  again after a node failed (the kit had no ``stored`` acknowledgement for it) is stored once.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("kits") as batch:
        batch.add_column(sa.Column("session", sa.String(8), nullable=False, server_default="idle"))
        batch.add_column(sa.Column("problems", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("link_node", sa.String(64)))
    op.create_index("ix_kits_link_node", "kits", ["link_node"])
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(300), nullable=False, server_default=""),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("heartbeat_at", Time, nullable=False),
    )
    with op.batch_alter_table("health_history") as batch:
        batch.add_column(sa.Column("sent_at", Time))
    op.create_index(
        "ux_health_history_kit_sent", "health_history", ["kit_id", "sent_at"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ux_health_history_kit_sent", "health_history")
    with op.batch_alter_table("health_history") as batch:
        batch.drop_column("sent_at")
    op.drop_table("nodes")
    op.drop_index("ix_kits_link_node", "kits")
    with op.batch_alter_table("kits") as batch:
        batch.drop_column("link_node")
        batch.drop_column("problems")
        batch.drop_column("session")
