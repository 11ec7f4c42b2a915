"""The schedule tick: find the due schedules in batches, fire each, count what happened.

Every worker ticks. Each due workflow is fired in its own transaction by
``services.schedules.fire_due``, which locks its row (SKIP LOCKED, so workers share the work)
and claims the fire by its unique row: one firing per (workflow, fire time) across workers.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app import tracing
from app.errors import database_unavailable
from app.metrics import SCHEDULE_FIRES, SCHEDULE_LAG
from app.models import FireOutcome, utcnow
from app.services.schedules import Fired, due_schedules, fire_due
from app.worker.context import WorkerContext

log = logging.getLogger(__name__)

BATCH_SIZE = 100


@dataclass(slots=True)
class TickResult:
    """What one tick did: its fires, and the workflows it could not handle (tried again)."""

    fires: list[Fired] = field(default_factory=list)
    errors: int = 0


def _record(fired: Fired, now: datetime) -> None:
    SCHEDULE_FIRES.labels(outcome=fired.outcome.value).inc()
    SCHEDULE_LAG.observe(max(0.0, (now - fired.fire_at).total_seconds()))
    log.log(
        logging.WARNING if fired.outcome is FireOutcome.FAILED else logging.INFO,
        "schedule fired",
        extra={
            "workflow_id": str(fired.workflow_id),
            "fire_at": fired.fire_at.astimezone(UTC).isoformat(),
            "outcome": fired.outcome.value,
            "run_id": str(fired.run_id) if fired.run_id else None,
            "missed": fired.missed,
            "error": fired.error,
        },
    )


async def _fire(worker: WorkerContext, workflow_id: uuid.UUID, now: datetime) -> Fired | None:
    """Fire one due workflow in its own transaction (a run it starts joins the current
    span's trace)."""
    async with worker.sessions() as session, session.begin():
        return await fire_due(
            session,
            queue=worker.queue,
            policy=worker.graph_policy,
            max_input_bytes=worker.settings.max_run_input_bytes,
            workflow_id=workflow_id,
            now=now,
        )


async def tick(worker: WorkerContext, *, now: datetime | None = None) -> TickResult:
    """Fire every schedule due at ``now``, each workflow in its own transaction."""
    now = now or utcnow()
    result = TickResult()
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with worker.sessions() as session:
            batch = await due_schedules(session, now=now, after=after, limit=BATCH_SIZE)
        for _, workflow_id in batch:
            try:
                with tracing.span("schedule fire", {"flowdeck.workflow.id": str(workflow_id)}):
                    fired = await _fire(worker, workflow_id, now)
            except Exception as error:  # one broken schedule must not stop the others
                if database_unavailable(error):
                    raise  # nor can any other fire now: the loop tries again
                log.exception("schedule fire failed", extra={"workflow_id": str(workflow_id)})
                result.errors += 1
                continue
            if fired is not None:
                _record(fired, now)
                result.fires.append(fired)
        if len(batch) < BATCH_SIZE:
            return result
        after = batch[-1]
