"""Inputs of the schedule mutations."""

from __future__ import annotations

import strawberry

from schema.schedules.types import ScheduleOverlap


@strawberry.input(description="A workflow's schedule: cron, time zone, on or off, overlap policy.")
class WorkflowScheduleUpdateInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    cron: str = strawberry.field(
        description="Five fields: minute hour day-of-month month day-of-week, e.g. "
        '"0 9 * * MON-FRI" (INVALID_CRON otherwise).'
    )
    timezone: str = strawberry.field(
        description="IANA time zone, e.g. Europe/Berlin (INVALID_TIMEZONE otherwise)."
    )
    enabled: bool = strawberry.field(description="Whether it fires; false keeps cron and zone.")
    overlap: ScheduleOverlap | None = strawberry.field(
        default=None, description="SKIP (the default) or ALLOW; unchanged when null."
    )
