"""The retention loop: every ``run_prune_interval_seconds``, prune expired runs."""

from __future__ import annotations

import asyncio
import logging

from app.services.retention import prune_runs
from app.worker.context import WorkerContext

log = logging.getLogger(__name__)


async def retention_loop(worker: WorkerContext) -> None:
    """Prune the runs past their workspace's retention, then wait; forever."""
    while True:
        try:
            await prune_runs(worker.sessions)
        except Exception:  # the database may be restarting; try again next time
            log.warning("run pruning failed", exc_info=True)
        await asyncio.sleep(worker.settings.run_prune_interval_seconds)
