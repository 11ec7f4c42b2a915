"""Helpers for schedule tests: UTC moments, and setting a schedule with an injected clock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.auth.principal import Principal
from app.runtime import Runtime
from app.services.schedules import update_schedule
from tests.factories import Account
from tests.runs import flow, node

# A workflow whose output is the time it was fired for.
GRAPH = flow(
    node("t", "trigger"), node("out", "output", value="{{ trigger.scheduledAt }}"), handle="out"
)
# Monday 29 February: the rarest day a five-field cron can ask for (the fifth Monday of
# February), 28 to 40 years apart.
LEAP_MONDAY = "0 0 * 2 MON#5"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    """A UTC datetime."""
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def principal(account: Account) -> Principal:
    """The principal of an account, with its role in its workspace."""
    return Principal(user=account.user, roles={account.workspace.id: account.role})


async def set_schedule_at(
    runtime: Runtime, account: Account, workflow_id: uuid.UUID, now: datetime, **fields: Any
) -> Any:
    """update_schedule as ``account`` with the clock at ``now``, committed; the workflow."""
    async with runtime.sessions() as session:
        workflow = await update_schedule(
            session, principal=principal(account), workflow_id=workflow_id, now=now, **fields
        )
        await session.commit()
    return workflow
