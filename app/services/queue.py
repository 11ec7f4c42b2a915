"""The run queue as services see it: a port the worker implements and the runtime wires."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Run


class RunQueue(Protocol):
    """Who drives runs, told in the caller's transaction."""

    def reserve(self) -> float | None:
        """A slot in this process for a run about to be written: the lease (in seconds) its
        row is born with, or None when this process is full (a worker's job drives it).
        Hand the run to ``start``, or the slot back to ``release`` when none was written."""
        ...

    def release(self) -> None:
        """Give back a slot ``reserve`` took for a run that was not written."""
        ...

    async def start(self, session: AsyncSession, run: Run) -> None:
        """Have a new run driven once the caller commits: here when it was born leased (see
        ``reserve``), else by a worker's job."""
        ...

    async def defer_drive(
        self, session: AsyncSession, run_id: uuid.UUID, *, schedule_at: datetime | None = None
    ) -> int:
        """Queue "drive run X" (at ``schedule_at``) in the session's transaction; its job id."""
        ...

    async def stop(self, session: AsyncSession, job_id: int) -> None:
        """Cancel a job not started yet, or ask its worker to abort it (in the transaction)."""
        ...
