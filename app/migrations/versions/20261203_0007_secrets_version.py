"""a workspace's secrets have a version that goes up with every change

Revision ID: 0007_secrets_version
Revises: 0006_lean_run_writes
Create Date: 2026-12-03 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007_secrets_version'
down_revision: str | None = '0006_lean_run_writes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'workspaces',
        sa.Column('secrets_version', sa.Integer(), server_default='0', nullable=False),
    )


def downgrade() -> None:
    op.drop_column('workspaces', 'secrets_version')
