"""steps and events carry their run's workspace and workflow without constraints of their own

Revision ID: 0006_lean_run_writes
Revises: 0005_run_lease
Create Date: 2026-12-03 07:30:00

A run's steps and events are written on every run; their workspace_id and workflow_id are
copied from the run, whose own foreign keys hold them, and they are deleted with the run.
Their foreign keys and their workspace indexes cost a check and an index entry per row and
served no query: a quarter of PostgreSQL's CPU per run (bench/runs_load.py). The workflow
index of events is kept only for the run-level events a workflow's live run list reads.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006_lean_run_writes'
down_revision: str | None = '0005_run_lease'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint('fk_run_events_workspace_id_workspaces', 'run_events', type_='foreignkey')
    op.drop_constraint('fk_run_events_workflow_id_workflows', 'run_events', type_='foreignkey')
    op.drop_constraint('fk_run_steps_workspace_id_workspaces', 'run_steps', type_='foreignkey')
    op.drop_index('ix_run_events_workspace_id', table_name='run_events')
    op.drop_index('ix_run_events_workflow_id', table_name='run_events')
    op.drop_index('ix_run_steps_workspace_id', table_name='run_steps')
    op.create_index(
        'ix_run_events_workflow_id_at',
        'run_events',
        ['workflow_id', 'at'],
        postgresql_where=sa.text('run_status IS NOT NULL'),
    )


def downgrade() -> None:
    op.drop_index('ix_run_events_workflow_id_at', table_name='run_events')
    op.create_index('ix_run_steps_workspace_id', 'run_steps', ['workspace_id'])
    op.create_index('ix_run_events_workflow_id', 'run_events', ['workflow_id'])
    op.create_index('ix_run_events_workspace_id', 'run_events', ['workspace_id'])
    op.create_foreign_key(
        'fk_run_steps_workspace_id_workspaces', 'run_steps', 'workspaces',
        ['workspace_id'], ['id'], ondelete='CASCADE',
    )
    op.create_foreign_key(
        'fk_run_events_workflow_id_workflows', 'run_events', 'workflows',
        ['workflow_id'], ['id'], ondelete='CASCADE',
    )
    op.create_foreign_key(
        'fk_run_events_workspace_id_workspaces', 'run_events', 'workspaces',
        ['workspace_id'], ['id'], ondelete='CASCADE',
    )
