"""Fixtures of the GraphQL tests: the hostile-input client and a workspace owner."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import Account, Factory
from tests.hostile import Api


@pytest.fixture
def api(raw_client: httpx.AsyncClient, factory: Factory) -> Api:
    """An Api whose client turns app exceptions into 500 responses (asserted against)."""
    return Api(raw_client, factory)


@pytest.fixture
async def owner(factory: Factory) -> Account:
    """The owner of workspace "Acme"."""
    return await factory.owner()
