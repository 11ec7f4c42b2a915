"""Driving one run: claim it, run ready nodes concurrently, record every step, finish it.

A driver holds the run by its claim (``runs.attempt``); each write is fenced by it. A run
is resumable at any point: steps already SUCCEEDED (or SKIPPED, or FAILED with
continue-on-fail) are settled and never run again, and a step left RUNNING by a worker that
died is run again by the next claim.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.engine.event_log import append_event
from app.engine.plan import NodePlan, PlanError, RunPlan, build_plan, edge_is_active
from app.engine.redact import NO_SECRETS, Redactor, redactor_for
from app.engine.states import (
    TERMINAL_RUN,
    LeaseLost,
    settle_open_steps,
    transition_run,
    transition_step,
)
from app.engine.steps import StepResult, StepRunner
from app.keyring import Keyring
from app.models import Run, RunEventType, RunStatus, RunStep, StepStatus, WorkflowVersion
from app.services.secrets import open_secrets

log = logging.getLogger(__name__)

# Resume is a release, not a crash; more claims than this finding the run abandoned mid-step
# means a node keeps killing its worker: the run ends FAILED with that reason.
MAX_CRASHES = 3

Resume = Callable[[AsyncSession, uuid.UUID, datetime], Awaitable[None]]


@dataclass(slots=True)
class StepState:
    """What the driver knows of one step."""

    id: uuid.UUID
    status: StepStatus
    attempt: int
    output: Any = None
    active_handles: frozenset[str] | None = None
    started_at: datetime | None = None
    wake_at: datetime | None = None
    error: str | None = None


@dataclass(slots=True)
class Claim:
    """A run as claimed by this driver."""

    run: Run
    plan: RunPlan
    steps: dict[str, StepState] = field(default_factory=dict)
    # The workspace's secrets for the nodes, and what keeps them out of everything stored.
    secrets: dict[str, str] = field(default_factory=dict)
    redactor: Redactor = NO_SECRETS


def _now() -> datetime:
    return datetime.now(UTC)


class RunDriver:
    """Drives one run to its end, or until it waits (release) or is taken over."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Any,
        run_id: uuid.UUID,
        resume: Resume,
        job_id: int | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.settings = settings
        self.run_id = run_id
        self.resume = resume
        self.job_id = job_id
        self.claim_number = 0
        self.failure: tuple[str, str] | None = None

    async def drive(self) -> str:
        """Drive the run; returns finished, released, lost or idle (nothing to do)."""
        claim = await self._claim()
        if claim is None:
            return "idle"
        timeout = (claim.run.deadline_at or _now()) - _now()
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
            run = (
                await session.execute(
                    select(Run).where(Run.id == self.run_id).with_for_update()  # type: ignore[arg-type]
                )
            ).scalar_one_or_none()
            if run is None:
                return None
            if self.job_id is not None and run.job_id is not None and run.job_id != self.job_id:
                return None  # a stale job: the run was handed to a newer one
            if run.status in TERMINAL_RUN:
                # E.g. cancelled while its worker was gone: nothing may stay RUNNING.
                settled = await settle_open_steps(
                    session, run_id=run.id, target=StepStatus.CANCELLED, claim=None
                )
                if settled and run.status is RunStatus.CANCELLED:
                    await append_event(
                        session,
                        run_id=run.id,
                        type=RunEventType.RUN_CANCELLED,
                        run_status=RunStatus.CANCELLED,
                        error=run.error,
                    )
                return None
            abandoned = run.status is RunStatus.RUNNING and run.wake_at is None
            crashes = run.crashes + (1 if abandoned else 0)
            self.claim_number = run.attempt + 1
            values: dict[str, Any] = {
                "attempt": self.claim_number,
                "crashes": crashes,
                "wake_at": None,
                "started_at": func.coalesce(Run.started_at, func.now()),
                "deadline_at": func.coalesce(
                    Run.deadline_at,
                    func.now() + timedelta(seconds=self.settings.run_timeout_seconds),
                ),
            }
            if crashes > MAX_CRASHES:
                await self._give_up(session, run, crashes)
                return None
            run = await transition_run(
                session,
                run_id=run.id,
                target=RunStatus.RUNNING,
                claim=None,
                values=values,
                current=run.status,
            )
            graph = await session.scalar(
                select(WorkflowVersion.graph).where(WorkflowVersion.id == run.version_id)  # type: ignore[arg-type]
            )
            rows = (
                await session.execute(select(RunStep).where(RunStep.run_id == run.id))  # type: ignore[arg-type]
            ).scalars()
            try:
                plan = build_plan(run.version_id, graph)
            except PlanError as error:
                await self._unrunnable(session, run, str(error))
                return None
            claim = Claim(run=run, plan=plan)
            if self.keyring is not None:
                claim.secrets = await open_secrets(
                    session, keyring=self.keyring, workspace_id=run.workspace_id
                )
                claim.redactor = redactor_for(claim.secrets)
            for row in rows:
                claim.steps[row.node_id] = StepState(
                    id=row.id,
                    status=row.status,
                    attempt=row.attempt,
                    output=row.output,
                    active_handles=frozenset(row.active_handles)
                    if row.active_handles is not None
                    else None,
                    started_at=row.started_at,
                    wake_at=row.wake_at,
                    error=row.error,
                )
            for node in plan.order:
                state = claim.steps[node.id]
                if state.status is StepStatus.FAILED and not node.policy.continue_on_fail:
                    # An earlier claim failed this node: the run fails, it does not go on.
                    self.failure = (node.id, state.error or "failed")
            return claim

    async def _unrunnable(self, session: AsyncSession, run: Run, message: str) -> None:
        await settle_open_steps(session, run_id=run.id, target=StepStatus.CANCELLED, claim=None)
        await transition_run(
            session,
            run_id=run.id,
            target=RunStatus.FAILED,
            claim=None,
            values={"error": message, "finished_at": func.now()},
            current=run.status,
        )

    async def _give_up(self, session: AsyncSession, run: Run, crashes: int) -> None:
        running = await session.scalar(
            select(RunStep.node_id).where(
                RunStep.run_id == run.id,  # type: ignore[arg-type]
                RunStep.status == StepStatus.RUNNING,  # type: ignore[arg-type]
            )
        )
        where = f' while node "{running}" was running' if running else ""
        message = (
            f"The worker running this run stopped {crashes} times{where}; giving up "
            "(a node may be crashing its worker)."
        )
        await settle_open_steps(
            session, run_id=run.id, target=StepStatus.FAILED, claim=None, error=message
        )
        await settle_open_steps(session, run_id=run.id, target=StepStatus.CANCELLED, claim=None)
        await transition_run(
            session,
            run_id=run.id,
            target=RunStatus.FAILED,
            claim=None,
            values={
                "crashes": crashes,
                "error": message,
                "error_node_id": running,
                "finished_at": func.now(),
            },
        )

    async def _loop(self, claim: Claim) -> str:
        runner = StepRunner(self, claim)
        running: dict[asyncio.Task[StepResult], str] = {}
        try:
            while True:
                if self.failure is None:
                    for node_id in await self._advance(claim, set(running.values())):
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

    async def _advance(self, claim: Claim, active: set[str]) -> list[str]:
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
                    await self._write_step(
                        claim, node.id, StepStatus.SKIPPED, {"finished_at": func.now()}
                    )
                    changed = True
                elif verdict == "ready":
                    ready.append(node.id)
        return ready

    def _resumable(self, state: StepState) -> bool:
        # Left RUNNING by an earlier claim (a crash, or a wait that is now over).
        return state.status is StepStatus.RUNNING and (
            state.wake_at is None or state.wake_at <= _now()
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

    async def _write_step(
        self,
        claim: Claim,
        node_id: str,
        target: StepStatus,
        values: dict[str, Any],
        *,
        announce: bool = True,
    ) -> None:
        state = claim.steps[node_id]
        async with self.sessions() as session, session.begin():
            await transition_step(
                session,
                step_id=state.id,
                run_id=claim.run.id,
                target=target,
                claim=self.claim_number,
                values=values,
                announce=announce,
            )
        state.status = target

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
            await settle_open_steps(
                session, run_id=claim.run.id, target=StepStatus.CANCELLED, claim=self.claim_number
            )
            await transition_run(
                session,
                run_id=claim.run.id,
                target=RunStatus.SUCCEEDED,
                claim=self.claim_number,
                values={"output": output, "finished_at": func.now()},
            )
        return "finished"

    async def _finish_failed(self, message: str, node_id: str | None) -> None:
        async with self.sessions() as session, session.begin():
            await settle_open_steps(
                session, run_id=self.run_id, target=StepStatus.CANCELLED, claim=self.claim_number
            )
            await transition_run(
                session,
                run_id=self.run_id,
                target=RunStatus.FAILED,
                claim=self.claim_number,
                values={"error": message, "error_node_id": node_id, "finished_at": func.now()},
            )

    async def _on_cancel(self) -> None:
        """Aborted: settle the steps of a cancelled run; a shutdown leaves it to resume."""
        async with self.sessions() as session, session.begin():
            status = await session.scalar(select(Run.status).where(Run.id == self.run_id))  # type: ignore[arg-type]
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
