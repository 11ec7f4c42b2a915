"""Driving one run: claim it, run ready nodes concurrently, record every step, finish it.

A driver holds the run by its claim (``runs.attempt``); each write is fenced by it. A run
is resumable at any point: steps already SUCCEEDED (or SKIPPED, or FAILED with
continue-on-fail) are settled and never run again, and a step left RUNNING by a worker that
died is run again by the next claim. The driver is handed what it needs (sessions,
settings, a secrets source, a way to resume later, a clock); it imports no service.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.engine.claim import Claim, SecretsSource, StepState, no_secrets
from app.engine.plan import NodePlan, PlanError, build_plan, edge_is_active
from app.engine.redact import redactor_for
from app.engine.states import (
    LeaseLost,
    claim_run,
    end_run,
    transition_run,
)
from app.engine.steps import StepRecorder, StepResult, StepRunner
from app.models import Run, RunStatus, RunStep, StepStatus, WorkflowVersion
from app.settings import Settings

log = logging.getLogger(__name__)

# Queue the run's next drive at a time (a long wait released the driver), in the session's
# transaction.
Resume = Callable[[AsyncSession, uuid.UUID, datetime], Awaitable[object]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC (the driver's default clock)."""
    return datetime.now(UTC)


class RunDriver:
    """Drives one run to its end, or until it waits (release) or is taken over."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        run_id: uuid.UUID,
        resume: Resume,
        job_id: int | None = None,
        secrets: SecretsSource = no_secrets,
        clock: Clock = utc_now,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.run_id = run_id
        self.resume = resume
        self.job_id = job_id
        self.secrets = secrets
        self.now = clock
        self.claim_number = 0
        self.failure: tuple[str, str] | None = None

    async def drive(self) -> str:
        """Drive the run; returns finished, released, lost or idle (nothing to do)."""
        claim = await self._claim()
        if claim is None:
            return "idle"
        timeout = (claim.run.deadline_at or self.now()) - self.now()
        try:
            async with asyncio.timeout(max(timeout.total_seconds(), 0.001)):
                return await self._loop(claim)
        except LeaseLost:
            log.warning("run taken over by another worker", extra={"run_id": str(self.run_id)})
            return "lost"
        except TimeoutError:
            seconds = self.settings.run_timeout_seconds
            await self._finish_failed(f"The run timed out after {seconds} seconds.", None)
            return "finished"
        except asyncio.CancelledError:
            await asyncio.shield(self._on_cancel())
            raise

    async def _claim(self) -> Claim | None:
        async with self.sessions() as session, session.begin():
            run = await claim_run(
                session,
                run_id=self.run_id,
                job_id=self.job_id,
                timeout_seconds=self.settings.run_timeout_seconds,
            )
            if run is None:
                return None
            self.claim_number = run.attempt
            return await self._load(session, run)

    async def _load(self, session: AsyncSession, run: Run) -> Claim | None:
        """What driving a claimed run needs: its plan, its steps, its workspace's secrets."""
        graph = await session.scalar(
            select(col(WorkflowVersion.graph)).where(col(WorkflowVersion.id) == run.version_id)
        )
        try:
            plan = build_plan(run.version_id, graph)
        except PlanError as error:
            await end_run(
                session,
                run_id=run.id,
                target=RunStatus.FAILED,
                claim=None,
                values={"error": str(error)},
            )
            return None
        rows = (
            await session.execute(select(RunStep).where(col(RunStep.run_id) == run.id))
        ).scalars()
        claim = Claim(run=run, plan=plan, number=run.attempt)
        claim.steps = {row.node_id: StepState.from_row(row) for row in rows}
        claim.secrets = await self.secrets(session, run.workspace_id)
        claim.redactor = redactor_for(claim.secrets)
        for node in plan.order:
            state = claim.steps[node.id]
            if state.status is StepStatus.FAILED and not node.policy.continue_on_fail:
                # An earlier claim failed this node: the run fails, it does not go on.
                self.failure = (node.id, state.error or "failed")
        return claim

    async def _loop(self, claim: Claim) -> str:
        recorder = StepRecorder(self.sessions, claim)
        runner = StepRunner(recorder, self.settings)
        running: dict[asyncio.Task[StepResult], str] = {}
        try:
            while True:
                if self.failure is None:
                    for node_id in await self._advance(claim, recorder, set(running.values())):
                        task = asyncio.create_task(runner.run(claim.plan.nodes[node_id]))
                        running[task] = node_id
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    if task.cancelled():  # cancelled by our own fail-fast below
                        continue
                    result = task.result()
                    if result.failed and not result.continue_on_fail and self.failure is None:
                        self.failure = (result.node_id, result.error or "failed")
                if self.failure is not None:
                    for task in running:
                        task.cancel()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return await self._conclude(claim)

    async def _advance(self, claim: Claim, recorder: StepRecorder, active: set[str]) -> list[str]:
        """Skip the nodes whose inputs are all inactive; return the nodes ready to run."""
        ready: list[str] = []
        changed = True
        while changed:
            changed = False
            for node in claim.plan.order:
                state = claim.steps[node.id]
                if state.status is not StepStatus.PENDING and not self._resumable(state):
                    continue
                if node.id in ready or node.id in active:
                    continue
                verdict = self._readiness(claim, node)
                if verdict == "skip":
                    await recorder.write(node.id, StepStatus.SKIPPED, {"finished_at": func.now()})
                    changed = True
                elif verdict == "ready":
                    ready.append(node.id)
        return ready

    def _resumable(self, state: StepState) -> bool:
        # Left RUNNING by an earlier claim (a crash, or a wait that is now over).
        return state.status is StepStatus.RUNNING and (
            state.wake_at is None or state.wake_at <= self.now()
        )

    def _readiness(self, claim: Claim, node: NodePlan) -> str:
        if not node.incoming:
            return "ready"
        any_active = False
        for edge in node.incoming:
            source = claim.steps[edge.source]
            if source.status in (StepStatus.PENDING, StepStatus.RUNNING):
                return "wait"
            if edge_is_active(source, claim.plan.nodes[edge.source], edge.source_handle):
                any_active = True
        return "ready" if any_active else "skip"

    async def _conclude(self, claim: Claim) -> str:
        if self.failure is not None:
            node_id, message = self.failure
            node = claim.plan.nodes[node_id]
            await self._finish_failed(f'Node "{node_id}" ({node.type}) failed: {message}', node_id)
            return "finished"
        waiting = [s.wake_at for s in claim.steps.values() if s.wake_at is not None]
        if waiting and any(s.status is StepStatus.RUNNING for s in claim.steps.values()):
            wake_at = min(w for w in waiting if w is not None)
            if claim.run.deadline_at is not None:
                # The run's timeout counts while it waits: wake up for it, at the latest.
                wake_at = min(wake_at, claim.run.deadline_at)
            async with self.sessions() as session, session.begin():
                await transition_run(
                    session,
                    run_id=claim.run.id,
                    target=RunStatus.RUNNING,
                    claim=self.claim_number,
                    values={"wake_at": wake_at},
                )
                await self.resume(session, claim.run.id, wake_at)
            return "released"
        outputs = {
            node.id: claim.steps[node.id].output
            for node in claim.plan.order
            if node.is_output and claim.steps[node.id].status is StepStatus.SUCCEEDED
        }
        output = next(iter(outputs.values())) if len(outputs) == 1 else (outputs or None)
        output = claim.redactor.stored(output)
        async with self.sessions() as session, session.begin():
            await end_run(
                session,
                run_id=claim.run.id,
                target=RunStatus.SUCCEEDED,
                claim=self.claim_number,
                values={"output": output},
            )
        return "finished"

    async def _finish_failed(self, message: str, node_id: str | None) -> None:
        async with self.sessions() as session, session.begin():
            await end_run(
                session,
                run_id=self.run_id,
                target=RunStatus.FAILED,
                claim=self.claim_number,
                values={"error": message, "error_node_id": node_id},
            )

    async def _on_cancel(self) -> None:
        """Aborted: settle the steps of a cancelled run; a shutdown leaves it to resume."""
        async with self.sessions() as session, session.begin():
            status = await session.scalar(select(col(Run.status)).where(col(Run.id) == self.run_id))
            # Cancelled: runCancel settled the steps and fenced this claim out already.
            if status is RunStatus.RUNNING:
                # A worker shutting down: release the run so the next claim is not a crash.
                try:
                    await transition_run(
                        session,
                        run_id=self.run_id,
                        target=RunStatus.RUNNING,
                        claim=self.claim_number,
                        values={"wake_at": func.now()},
                    )
                except LeaseLost:
                    return
