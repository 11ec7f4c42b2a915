"""Applying Alembic migrations, under an advisory lock so replicas never migrate at once."""

from __future__ import annotations

import logging
from collections.abc import Callable

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

# An arbitrary constant shared by every Flowdeck process: the migration lock's key.
MIGRATION_LOCK_KEY = 0x466C6F77  # "Flow"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave procrastinate's objects out of model comparison: its pinned SQL creates them."""
    return not (name or "").startswith(("procrastinate_", "idx_procrastinate_"))


def alembic_config() -> Config:
    """The Alembic configuration of the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", "app:migrations")
    return config


def head_revision() -> str:
    """The newest revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        revision: str | None = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        return revision


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``, holding the migration advisory lock."""
    await _run(engine, lambda config, conn: command.upgrade(config, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Downgrade the database to ``revision``, holding the migration advisory lock."""
    await _run(engine, lambda config, conn: command.downgrade(config, revision))


async def _run(engine: AsyncEngine, action: Callable[[Config, Connection], None]) -> None:
    async with engine.connect() as conn:
        # A session-level lock: held across Alembic's own transactions, released on close.
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.commit()
        try:

            def apply(sync_conn: Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = sync_conn
                action(config, sync_conn)

            await conn.run_sync(apply)
            await conn.commit()
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            await conn.commit()
    log.info("database migrated", extra={"revision": head_revision()})
