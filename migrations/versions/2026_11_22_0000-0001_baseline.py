"""baseline: the empty schema every later revision builds on

Revision ID: 0001
Revises:
Create Date: 2026-11-22 00:00:00
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
