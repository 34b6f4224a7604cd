"""experiments and their arms

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("surface", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(32), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'stopped')", name="ck_experiments_status"),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('promote', 'rollback', 'inconclusive')",
            name="ck_experiments_decision",
        ),
    )
    op.create_index(
        "uq_experiments_running_surface",
        "experiments",
        ["surface"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "experiment_arms",
        sa.Column(
            "experiment_id",
            sa.Integer(),
            sa.ForeignKey("experiments.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("share", sa.Double(), nullable=False),
        sa.Column("retrieval", sa.String(64), nullable=False),
        sa.Column("ranking", sa.String(64), nullable=False),
        sa.UniqueConstraint("experiment_id", "name", name="uq_experiment_arms_name"),
        sa.CheckConstraint("share > 0 AND share <= 100", name="ck_experiment_arms_share"),
    )


def downgrade() -> None:
    op.drop_table("experiment_arms")
    op.drop_index("uq_experiments_running_surface", table_name="experiments")
    op.drop_table("experiments")
