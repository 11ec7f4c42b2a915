"""Alembic: upgrade → downgrade → upgrade on an empty database, and no drift from the models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.db import create_engine
from app.migrate import current_revision, downgrade, head_revision, include_name, migrate
from app.settings import Settings
from tests.databases import scratch_database


@pytest.fixture
async def empty_engine(server_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database of this test's own."""
    with scratch_database(server_url, "flowdeck_mig") as url:
        engine = create_engine(url, Settings(database_url=url))  # type: ignore[arg-type]
        yield engine
        await engine.dispose()


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        return {r[0] for r in rows}


async def test_upgrade_downgrade_upgrade_on_an_empty_database(empty_engine: AsyncEngine) -> None:
    await migrate(empty_engine)
    assert await current_revision(empty_engine) == head_revision()
    created = await tables(empty_engine)
    assert set(SQLModel.metadata.tables) <= created

    await downgrade(empty_engine, "base")
    assert await tables(empty_engine) == {"alembic_version"}
    assert await current_revision(empty_engine) is None

    await migrate(empty_engine)
    assert await tables(empty_engine) == created


async def test_models_and_migrations_do_not_drift(empty_engine: AsyncEngine) -> None:
    await migrate(empty_engine)

    async with empty_engine.connect() as conn:
        differences = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(
                    sync,
                    opts={
                        "compare_type": True,
                        "compare_server_default": True,
                        "include_name": include_name,
                    },
                ),
                SQLModel.metadata,
            )
        )

    assert differences == []


async def test_two_processes_migrating_at_once_take_turns(empty_engine: AsyncEngine) -> None:
    import asyncio

    await asyncio.gather(migrate(empty_engine), migrate(empty_engine))

    assert await current_revision(empty_engine) == head_revision()
