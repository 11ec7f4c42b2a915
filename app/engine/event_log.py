"""Appending run events, in the transaction of the change that they record.

Each event takes the next ``seq`` of its run from ``runs.last_event_seq`` in the same
statement that inserts it, and NOTIFYs the channel with a small payload. NOTIFY is only a
wake-up, delivered at commit: readers always read the table after the last seq they saw.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import RunEventType, RunStatus, StepStatus

CHANNEL = "flowdeck_run_events"

_APPEND = text(
    """
    WITH bumped AS (
        UPDATE runs SET last_event_seq = last_event_seq + 1
        WHERE id = :run_id AND (CAST(:claim AS integer) IS NULL OR attempt = :claim)
        RETURNING id, workspace_id, workflow_id, last_event_seq
    ), added AS (
        INSERT INTO run_events (run_id, seq, workspace_id, workflow_id, type, at, run_status,
                                node_id, step_status, attempt, output, error)
        SELECT id, last_event_seq, workspace_id, workflow_id, :type, clock_timestamp(),
               :run_status, :node_id, :step_status, :attempt, CAST(:output AS jsonb), :error
        FROM bumped
        RETURNING run_id, seq, workflow_id, type
    )
    SELECT seq, pg_notify(:channel, json_build_object(
        'run', run_id, 'seq', seq, 'workflow', workflow_id, 'type', type)::text)
    FROM added
    """
)


async def append_event(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    type: RunEventType,
    claim: int | None = None,
    run_status: RunStatus | None = None,
    node_id: str | None = None,
    step_status: StepStatus | None = None,
    attempt: int | None = None,
    output: Any = None,
    error: str | None = None,
) -> int | None:
    """Append one event of a run (fenced by ``claim`` when given); its seq, or None."""
    row = (
        await session.execute(
            _APPEND,
            {
                "run_id": run_id,
                "channel": CHANNEL,
                "claim": claim,
                "type": type.value,
                "run_status": run_status.value if run_status else None,
                "node_id": node_id,
                "step_status": step_status.value if step_status else None,
                "attempt": attempt,
                "output": json.dumps(output) if output is not None else None,
                "error": error,
            },
        )
    ).first()
    return int(row[0]) if row else None
