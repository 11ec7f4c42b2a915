"""Fixtures of the schedule tests: a workflow to schedule."""

from __future__ import annotations

import pytest

from tests.factories import Account, Factory
from tests.runs import create_workflow
from tests.schedules import GRAPH


@pytest.fixture
async def workflow_id(factory: Factory, owner: Account) -> str:
    """A workflow of ``owner`` that outputs the time it was fired for; its GraphQL ID."""
    return await create_workflow(factory, owner, GRAPH)


@pytest.fixture
async def daily_at_nine(factory: Factory, owner: Account, workflow_id: str) -> None:
    """``workflow_id`` scheduled daily at 09:00 UTC, through the API."""
    body = await factory.gql(
        "mutation($i: WorkflowScheduleUpdateInput!) {"
        " workflowScheduleUpdate(input: $i) { userErrors { code } } }",
        {"i": {"workflowId": workflow_id, "cron": "0 9 * * *", "timezone": "UTC", "enabled": True}},
        token=owner.token,
    )
    assert body == {"data": {"workflowScheduleUpdate": {"userErrors": []}}}, body
