"""Alembic environment: async, on the models' metadata, on a given connection when passed."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers every table on the metadata)
from app.db import create_engine, resolve_database
from app.migrate import include_name
from app.settings import get_settings

target_metadata = SQLModel.metadata


def run_with_connection(connection: Connection) -> None:
    """Configure the context on ``connection`` and run the migrations."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_standalone() -> None:
    """Run the migrations against the configured database (plain `alembic upgrade`)."""
    settings = get_settings()
    engine = create_engine(resolve_database(settings).url, settings)
    async with engine.connect() as connection:
        await connection.run_sync(run_with_connection)
        await connection.commit()
    await engine.dispose()


given = context.config.attributes.get("connection")
if given is not None:
    run_with_connection(given)
else:
    asyncio.run(run_standalone())
