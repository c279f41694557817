"""jobs: a partial index on running jobs, for the sweep that requeues abandoned ones

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    # CONCURRENTLY: built without blocking writes to jobs (outside a transaction).
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_jobs_running",
            "jobs",
            ["id"],
            postgresql_where=sa.text("status = 'running'"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade():
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_jobs_running", table_name="jobs", postgresql_concurrently=True, if_exists=True
        )
