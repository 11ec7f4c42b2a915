"""The retention loop: every ``run_prune_interval_seconds``, prune expired runs."""

from __future__ import annotations

import logging

from app.outage import DATABASE, DatabaseWatch, every
from app.services.retention import prune_runs
from app.worker.context import WorkerContext

log = logging.getLogger(__name__)


async def prune_expired_runs(worker: WorkerContext) -> None:
    """Delete the runs past their workspace's retention (with their steps and events)."""
    await prune_runs(worker.sessions)


async def retention_loop(worker: WorkerContext, *, watch: DatabaseWatch = DATABASE) -> None:
    """Prune the runs past their workspace's retention, then wait; forever (through
    database outages too)."""
    await every(
        worker.settings.run_prune_interval_seconds,
        lambda: prune_expired_runs(worker),
        "run pruning",
        logger=log,
        watch=watch,
    )
