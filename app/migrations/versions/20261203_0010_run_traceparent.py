"""a run keeps the traceparent of the span that queued it

Revision ID: 0010_run_traceparent
Revises: 0009_auth_notify
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010_run_traceparent'
down_revision: str | None = '0009_auth_notify'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('traceparent', sa.String(length=100), nullable=True))


def downgrade() -> None:
    op.drop_column('runs', 'traceparent')
