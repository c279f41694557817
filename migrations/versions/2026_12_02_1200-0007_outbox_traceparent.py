"""outbox: the emitting request's trace context, so a relayed task joins its trace (expand only)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable, no default: a metadata-only change, no table rewrite or long lock.
    op.add_column("outbox", sa.Column("traceparent", sa.String(length=64), nullable=True))


def downgrade():
    op.drop_column("outbox", "traceparent")
