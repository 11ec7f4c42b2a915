"""Alembic: upgrade → downgrade → upgrade on an empty database, and no drift from the models."""

from __future__ import annotations

import uuid
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


async def test_the_upgrade_publishes_each_workflows_current_version_that_can_run(
    empty_engine: AsyncEngine,
) -> None:
    # Given data from before drafts existed: every save was live
    await migrate(empty_engine, "0004")
    ids = {name: uuid.uuid4() for name in ("ws", "clean", "warned", "fixed_then_broken")}
    warning = '[{"severity": "WARNING", "code": "NO_TRIGGER", "message": "No trigger."}]'
    async with empty_engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO workspaces (id, name) VALUES (:id, 'Old')"), {"id": ids["ws"]}
        )
        for name, versions in (
            ("clean", ["[]", "[]"]),
            ("warned", [warning]),
            ("fixed_then_broken", ["[]", warning]),
        ):
            await conn.execute(
                text(
                    "INSERT INTO workflows (id, workspace_id, name, current_version) "
                    "VALUES (:id, :ws, :name, :current)"
                ),
                {"id": ids[name], "ws": ids["ws"], "name": name, "current": len(versions)},
            )
            for number, diagnostics in enumerate(versions, start=1):
                await conn.execute(
                    text(
                        "INSERT INTO workflow_versions (id, workspace_id, workflow_id, number, "
                        "graph, diagnostics) VALUES (:id, :ws, :wf, :n, '{}', "
                        "CAST(:d AS jsonb))"
                    ),
                    {
                        "id": uuid.uuid4(),
                        "ws": ids["ws"],
                        "wf": ids[name],
                        "n": number,
                        "d": diagnostics,
                    },
                )

    # When the database is upgraded
    await migrate(empty_engine)

    # Then the current version is published where it was saved without warnings, and only there
    async with empty_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT name, published_version, published_at IS NOT NULL, published_by_id "
                "FROM workflows ORDER BY name"
            )
        )
        assert [tuple(row) for row in rows] == [
            ("clean", 2, True, None),
            ("fixed_then_broken", None, False, None),
            ("warned", None, False, None),
        ]
        retention = await conn.scalar(text("SELECT run_retention_days FROM workspaces"))
        assert retention == 90
    await downgrade(empty_engine, "0004")
    await migrate(empty_engine)
