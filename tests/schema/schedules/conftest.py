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
