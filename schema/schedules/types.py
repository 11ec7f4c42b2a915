"""GraphQL types of schedules and their fires."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeAlias

import strawberry

from app import models
from app.models import FireOutcome as FireOutcomeModel
from app.models import ScheduleOverlap as ScheduleOverlapModel
from app.services import schedules as schedule_service
from app.services.records import FireRecord, WorkflowRecord
from schema.context import Info

if TYPE_CHECKING:
    from schema.runs.types import Run

ScheduleOverlap: TypeAlias = ScheduleOverlapModel
strawberry.enum(
    ScheduleOverlap,
    description="What a fire does while the previous scheduled run is still going: "
    "SKIP it (counted in skippedCount) or ALLOW another run beside it.",
)
ScheduleFireOutcome: TypeAlias = FireOutcomeModel
strawberry.enum(
    ScheduleFireOutcome,
    name="ScheduleFireOutcome",
    description="STARTED a run; SKIPPED (the previous scheduled run was still going, or no "
    "version is published: see error); FAILED (the published version cannot run).",
)


@strawberry.type(description="One firing of a schedule at one fire time.")
class ScheduleFire:
    row: strawberry.Private[models.ScheduleFire | FireRecord]
    fire_at: datetime = strawberry.field(description="The fire time it stands for (UTC).")
    outcome: ScheduleFireOutcome = strawberry.field(description="What it did.")
    error: str | None = strawberry.field(
        description="Why no run started: when FAILED, and when SKIPPED because no version is "
        "published (starting WORKFLOW_NOT_PUBLISHED:); null for an overlap skip."
    )
    missed: int = strawberry.field(
        description="Earlier fire times passed over while no worker was running (a catch-up "
        "fire stands for them), at most 1000."
    )

    @strawberry.field(description="The run it started (null unless STARTED, or once deleted).")
    async def run(self, info: Info) -> Annotated[Run, strawberry.lazy("schema.runs.types")] | None:
        from schema.runs.types import Run

        if self.row.run_id is None:
            return None
        row = await info.context.loaders.run_by_id.load(self.row.run_id)
        return Run.from_model(row) if row else None

    @classmethod
    def from_model(cls, row: models.ScheduleFire | FireRecord) -> ScheduleFire:
        """The type of a row."""
        return cls(
            row=row, fire_at=row.fire_at, outcome=row.outcome, error=row.error, missed=row.missed
        )


@strawberry.type(description="A workflow's cron schedule.")
class WorkflowSchedule:
    row: strawberry.Private[models.Workflow | WorkflowRecord]
    enabled: bool = strawberry.field(description="Whether it fires; off keeps cron and zone.")
    cron: str = strawberry.field(
        description="Five-field cron expression: minute hour day-of-month month day-of-week."
    )
    timezone: str = strawberry.field(description="IANA time zone the cron is read in.")
    overlap: ScheduleOverlap = strawberry.field(
        description="What a fire does while the previous scheduled run is still going."
    )
    next_fire_at: datetime | None = strawberry.field(
        description="When it fires next (UTC); null when disabled."
    )
    last_fired_at: datetime | None = strawberry.field(
        description="The fire time it last fired for (UTC), whatever the outcome."
    )
    skipped_count: int = strawberry.field(
        description="Fires skipped because the previous scheduled run was still going."
    )

    @strawberry.field(
        description="The next 1 to 50 fire times after now (UTC) within 50 years; [] when off."
    )
    def upcoming(self, count: int = 5) -> list[datetime]:
        return schedule_service.upcoming(self.row, count=count)

    @strawberry.field(description="Its latest fires, newest first (1 to 100).")
    async def recent_fires(self, info: Info, limit: int = 10) -> list[ScheduleFire]:
        schedule_service.check_fires_limit(limit)
        rows = await info.context.loaders.fires_by_workflow_and_limit.load((self.row.id, limit))
        return [ScheduleFire.from_model(row) for row in rows]

    @classmethod
    def from_model(cls, row: models.Workflow | WorkflowRecord) -> WorkflowSchedule | None:
        """The schedule of a workflow row; None when no cron was ever set."""
        if row.schedule_cron is None or row.schedule_timezone is None:
            return None
        return cls(
            row=row,
            enabled=row.schedule_enabled,
            cron=row.schedule_cron,
            timezone=row.schedule_timezone,
            overlap=ScheduleOverlapModel(row.schedule_overlap),
            next_fire_at=row.schedule_next_fire_at,
            last_fired_at=row.schedule_last_fired_at,
            skipped_count=row.schedule_skipped_count,
        )
