"""experiments started by a publication: the canary version

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable, so experiments a person started (all of them so far) need no value.
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("canary_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("canary_version")
