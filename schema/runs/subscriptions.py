"""Live run progress: the event log replayed after a seq, then followed as it grows."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from app.events import follow
from schema.context import Info
from schema.ids import decode_id
from schema.runs.types import Run, RunEvent


@strawberry.type
class RunSubscriptions:
    @strawberry.subscription(
        description="Every event of the run after `afterSeq` (all when null), then live events "
        "until the terminal one, then complete: no gap, no duplicate, also on reconnect."
    )
    async def run_progress(
        self, info: Info, run_id: strawberry.ID, after_seq: int | None = None
    ) -> AsyncGenerator[RunEvent, None]:
        runtime = info.context.runtime
        async for event in info.context.stream(
            "runProgress",
            lambda principal: follow.run_progress(
                runtime.sessions,
                runtime.hub,
                principal=principal,
                run_id=decode_id("Run", run_id),
                after_seq=after_seq,
            ),
        ):
            yield RunEvent.from_model(event)

    @strawberry.subscription(
        description="Runs of one workflow as they are queued, start and finish (a live run list)."
    )
    async def workflow_runs(
        self, info: Info, workflow_id: strawberry.ID
    ) -> AsyncGenerator[Run, None]:
        runtime = info.context.runtime
        async for run in info.context.stream(
            "workflowRuns",
            lambda principal: follow.workflow_runs(
                runtime.sessions,
                runtime.hub,
                principal=principal,
                workflow_id=decode_id("Workflow", workflow_id),
            ),
        ):
            yield Run.from_model(run)
