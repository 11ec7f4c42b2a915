"""Driving one run: claim it, run ready nodes, note every step, finish it.

A driver holds the run by its claim (``runs.attempt``); each write is fenced by it. A run
is resumable at any point: steps already SUCCEEDED (or SKIPPED, or FAILED with
continue-on-fail) are settled and never run again, and a step left RUNNING by a driver that
died is run again by the next claim.

Pure nodes run in the driver's own loop, one after another, their steps noted in the
journal; nodes with an outside effect (or a wait) run as tasks, concurrently, and write
their start and their result at once. Before the driver waits for such a task, it flushes
what it noted, so observers follow the run as it goes. A run whose nodes are all pure is
written in one statement when it ends.

There are three ways in: ``drive`` claims a run from the database (a worker's job, or a
recovery), ``drive_queued`` drives a run this process queued a moment ago (nothing to read
back), and ``drive_born`` drives a run that exists only in memory until its first flush
inserts it (a webhook delivery run where it was received). The driver is handed what it
needs (sessions, a connection pool, settings, a secrets source, a way to resume later, a
clock); it imports no service.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.trace import Span
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app import tracing
from app.engine.caps import cap_output
from app.engine.claim import Claim, RunInfo, SecretsSource, StepState, no_secrets
from app.engine.journal import Birth, Journal, Pool
from app.engine.plan import NodePlan, PlanError, RunPlan, build_plan, cached_plan, edge_is_active
from app.engine.redact import redactor_for
from app.engine.states import LeaseLost, claim_run, end_run
from app.engine.steps import StepResult, StepRunner
from app.metrics import RUNS_DRIVING, run_finished
from app.models import Run, RunEventType, RunStatus, RunStep, StepStatus, WorkflowVersion
from app.outage import ride_out
from app.settings import Settings

log = logging.getLogger(__name__)

# Queue the run's next drive at a time (a long wait released the driver), in the session's
# transaction.
Resume = Callable[[AsyncSession, uuid.UUID, datetime], Awaitable[object]]
Clock = Callable[[], datetime]


STARTED = RunEventType.RUN_STARTED


async def _compiled(version_id: uuid.UUID, graph: Any) -> RunPlan:
    """A version's plan, compiled in a thread: a large graph's expressions take a second,
    which on the event loop would hold the worker's heartbeats (and every other run)."""
    return await asyncio.to_thread(build_plan, version_id, graph)


def utc_now() -> datetime:
    """The current time in UTC (the driver's default clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended: its status, and its output and error as stored (redacted)."""

    status: RunStatus
    output: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to start in memory: its row's values, written by its first flush."""

    id: uuid.UUID
    birth: Birth
    input: Any
    # The version of its workspace's secrets it runs with (None: the latest).
    secrets_version: int | None = None


class RunDriver:
    """Drives one run to its end, or until it waits (release) or is taken over."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        pool: Pool,
        settings: Settings,
        run_id: uuid.UUID,
        resume: Resume,
        job_id: int | None = None,
        secrets: SecretsSource = no_secrets,
        clock: Clock = utc_now,
        lease_seconds: float | None = None,
    ) -> None:
        self.sessions = sessions
        self.pool = pool
        self.settings = settings
        self.run_id = run_id
        self.resume = resume
        self.job_id = job_id
        self.secrets = secrets
        self.now = clock
        # Set for a run driven where it was queued: no job stands behind it, its lease does.
        self.lease_seconds = lease_seconds
        self.failure: tuple[str, str] | None = None
        # How the run ended, once this driver ended it; set once its row is written.
        self.end: RunEnd | None = None
        self.written = asyncio.Event()
        self._error: str | None = None
        self._span: Span | None = None

    # --- the ways in -------------------------------------------------------------------

    async def drive(self) -> str:
        """Claim the run from the database and drive it: finished, released, lost or idle."""
        claim = await self._claim()
        if claim is None:
            return "idle"
        journal = Journal(
            self.pool,
            run_id=claim.run.id,
            fence=claim.number,
            steps=claim.steps,
            written=self.written,
        )
        return await self._drive(claim, journal)

    async def drive_queued(self, run: Run) -> str:
        """Drive a run this process queued and committed a moment ago (attempt 0)."""
        plan = await self._plan(run.version_id)
        if plan is None:
            return "idle"  # its lease runs out and a worker's claim ends it FAILED
        steps = {node.id: StepState(status=StepStatus.PENDING) for node in plan.order}
        journal = Journal(
            self.pool, run_id=run.id, fence=run.attempt, steps=steps, written=self.written
        )
        return await self._start(RunInfo.of(run), plan, journal)

    async def drive_born(self, new: NewRun, plan: RunPlan, *, queue_first: bool) -> str:
        """Drive a run that exists only in memory until a flush inserts it.

        With ``queue_first`` it is written QUEUED before it starts (``written`` is set then);
        else its first flush writes it as far as it got: all of it, when all its nodes are
        pure. Raises DuplicateRun, having written nothing, when its idempotency key is taken.
        """
        now = self.now()
        steps = {node.id: StepState(status=StepStatus.PENDING) for node in plan.order}
        birth = new.birth
        journal = Journal(
            self.pool, run_id=new.id, fence=0, steps=steps, birth=birth, written=self.written
        )
        journal.queued(at=now)
        if self.lease_seconds is not None:
            journal.run_values["lease_until"] = now + timedelta(seconds=self.lease_seconds)
        if queue_first:
            await journal.flush()
        info = RunInfo(
            id=new.id,
            workspace_id=birth.workspace_id,
            workflow_id=birth.workflow_id,
            version_id=birth.version_id,
            version_number=birth.version_number,
            input=new.input,
            deadline_at=None,
            trigger=birth.trigger,
            started_at=None,
            traceparent=birth.traceparent,
        )
        return await self._start(info, plan, journal, new.secrets_version)

    async def _start(
        self, run: RunInfo, plan: RunPlan, journal: Journal, secrets_version: int | None = None
    ) -> str:
        """Claim a run known to be QUEUED (the first claim) in the journal, and drive it."""
        now = self.now()
        deadline = now + timedelta(seconds=self.settings.run_timeout_seconds)
        claim = Claim(
            run=dataclasses.replace(run, deadline_at=deadline, started_at=now),
            plan=plan,
            number=journal.fence + 1,
            steps=journal.steps,
        )
        journal.run(
            RunStatus.QUEUED,
            RunStatus.RUNNING,
            at=now,
            values={"attempt": claim.number, "started_at": now, "deadline_at": deadline},
            event=STARTED,
        )
        await self._open_secrets(claim, secrets_version)
        return await self._drive(claim, journal)

    # --- claiming ----------------------------------------------------------------------

    async def _claim(self) -> Claim | None:
        # Through an outage the claim waits for the database (its transaction rolled back).
        return await ride_out(self._claim_once)

    async def _claim_once(self) -> Claim | None:
        async with self.sessions() as session, session.begin():
            run = await claim_run(
                session,
                run_id=self.run_id,
                job_id=self.job_id,
                timeout_seconds=self.settings.run_timeout_seconds,
            )
            if run is None:
                return None
            return await self._load(session, run)

    async def _load(self, session: AsyncSession, run: Run) -> Claim | None:
        """What driving a claimed run needs: its plan, its steps, its workspace's secrets."""
        graph = await session.scalar(
            select(col(WorkflowVersion.graph)).where(col(WorkflowVersion.id) == run.version_id)
        )
        try:
            plan = cached_plan(run.version_id) or await _compiled(run.version_id, graph)
        except PlanError as error:
            await end_run(
                session,
                run_id=run.id,
                target=RunStatus.FAILED,
                claim=None,
                values={"error": str(error)},
            )
            return None
        rows = await session.scalars(select(RunStep).where(col(RunStep.run_id) == run.id))
        claim = Claim(run=RunInfo.of(run), plan=plan, number=run.attempt)
        claim.steps = {row.node_id: StepState.from_row(row) for row in rows}
        claim.secrets = await self.secrets(session, run.workspace_id)
        claim.redactor = redactor_for(claim.secrets)
        for node in plan.order:
            state = claim.steps[node.id]
            if state.status is StepStatus.FAILED and not node.policy.continue_on_fail:
                # An earlier claim failed this node: the run fails, it does not go on.
                self.failure = (node.id, state.error or "failed")
        return claim

    async def _plan(self, version_id: uuid.UUID) -> RunPlan | None:
        plan = cached_plan(version_id)
        if plan is not None:
            return plan

        async def read() -> Any:
            async with self.sessions() as session:
                return await session.scalar(
                    select(col(WorkflowVersion.graph)).where(col(WorkflowVersion.id) == version_id)
                )

        graph = await ride_out(read)
        try:
            return await _compiled(version_id, graph)
        except PlanError:
            return None

    async def _open_secrets(self, claim: Claim, version: int | None) -> None:
        """The workspace's secrets (as of ``version`` when known), and their redactor."""

        async def read() -> Mapping[str, str]:
            async with self.sessions() as session:
                return await self.secrets(session, claim.run.workspace_id, version)

        claim.secrets = await ride_out(read)
        claim.redactor = redactor_for(claim.secrets)

    # --- driving -----------------------------------------------------------------------

    async def _drive(self, claim: Claim, journal: Journal) -> str:
        RUNS_DRIVING.inc()
        run = claim.run
        if tracing.enabled():
            self._span = tracing.start_run_span(
                run.traceparent,
                {
                    "flowdeck.run.id": str(run.id),
                    "flowdeck.workflow.id": str(run.workflow_id),
                    "flowdeck.workflow.version": run.version_number,
                    "flowdeck.run.trigger": run.trigger,
                    "flowdeck.run.attempt": claim.number,
                },
            )
        outcome = "error"
        try:
            outcome = await self._drive_to_end(claim, journal)
            return outcome
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        finally:
            RUNS_DRIVING.dec()
            if self._span is not None:
                self._end_span(outcome)

    def _end_span(self, outcome: str) -> None:
        """End this claim's span: how the drive ended, and the run's status if it ended."""
        end = self.end
        tracing.end_span(
            self._span,
            {
                "flowdeck.run.outcome": outcome,
                "flowdeck.run.status": end.status.value if end is not None else None,
            },
            error=end.error if end is not None and end.status is RunStatus.FAILED else None,
        )

    async def _drive_to_end(self, claim: Claim, journal: Journal) -> str:
        deadline = claim.run.deadline_at or self.now()
        try:
            async with asyncio.timeout(max((deadline - self.now()).total_seconds(), 0.001)):
                return await self._loop(claim, journal)
        except LeaseLost:
            log.warning("run taken over by another driver", extra={"run_id": str(claim.run.id)})
            return "lost"
        except TimeoutError:
            seconds = self.settings.run_timeout_seconds
            self._fail(claim, journal, f"The run timed out after {seconds} seconds.", None)
            try:
                await journal.flush()
            except LeaseLost:
                return "lost"
            return self._ended(claim, RunEnd(RunStatus.FAILED, None, self._error))
        except asyncio.CancelledError:
            await asyncio.shield(self._on_cancel(claim, journal))
            raise

    async def _loop(self, claim: Claim, journal: Journal) -> str:
        runner = StepRunner(claim, journal, self.settings, self.now, self._span)
        running: dict[asyncio.Task[StepResult], str] = {}
        try:
            while True:
                progressed = False
                if self.failure is None:
                    for node_id in self._advance(claim, journal, set(running.values())):
                        if self.failure is not None:
                            break  # an inline node just failed the run: start nothing more
                        node = claim.plan.nodes[node_id]
                        if node.inline:
                            self._settled(await runner.run(node), running)
                            progressed = True
                            # A pure node may never wait on anything: let the loop have its
                            # turn (heartbeats, requests) between them, not after hundreds.
                            await asyncio.sleep(0)
                        else:
                            running[asyncio.create_task(runner.run(node))] = node_id
                if progressed:
                    continue  # what the inline nodes produced may make more nodes ready
                if not running:
                    break
                # About to wait on tasks with effects: let observers see how far the run got.
                await journal.flush()
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    if not task.cancelled():  # cancelled by our own fail-fast below
                        self._settled(task.result(), running)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return await self._conclude(claim, journal)

    def _settled(self, result: StepResult, running: dict[asyncio.Task[StepResult], str]) -> None:
        if result.failed and not result.continue_on_fail and self.failure is None:
            self.failure = (result.node_id, result.error or "failed")
            for task in running:  # fail fast: the run fails, the others stop
                task.cancel()

    def _advance(self, claim: Claim, journal: Journal, active: set[str]) -> list[str]:
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
                    state.finished_at = self.now()
                    journal.step(node.id, StepStatus.SKIPPED, at=state.finished_at)
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

    # --- ending ------------------------------------------------------------------------

    async def _conclude(self, claim: Claim, journal: Journal) -> str:
        if self.failure is not None:
            node_id, message = self.failure
            node = claim.plan.nodes[node_id]
            self._fail(claim, journal, f'Node "{node_id}" ({node.type}) failed: {message}', node_id)
            await journal.flush()
            return self._ended(claim, RunEnd(RunStatus.FAILED, None, self._error))
        waiting = [s.wake_at for s in claim.steps.values() if s.wake_at is not None]
        if waiting and any(s.status is StepStatus.RUNNING for s in claim.steps.values()):
            return await self._release(claim, journal, min(waiting))
        outputs = {
            node.id: claim.steps[node.id].output
            for node in claim.plan.order
            if node.is_output and claim.steps[node.id].status is StepStatus.SUCCEEDED
        }
        output = next(iter(outputs.values())) if len(outputs) == 1 else (outputs or None)
        output = await cap_output(claim.redactor.stored(output), self.settings)
        now = self.now()
        self._settle_open(claim, journal, now)
        journal.run(
            RunStatus.RUNNING,
            RunStatus.SUCCEEDED,
            at=now,
            values={"output": output, "finished_at": now, "lease_until": None},
            output=output,
        )
        await journal.flush()
        return self._ended(claim, RunEnd(RunStatus.SUCCEEDED, output, None))

    def _ended(self, claim: Claim, end: RunEnd) -> str:
        """The run's end is written: keep it, and count it."""
        self.end = end
        run = claim.run
        run_finished(end.status.value, run.trigger, run.started_at, self.now())
        return "finished"

    async def _release(self, claim: Claim, journal: Journal, wake_at: datetime) -> str:
        """Free the driver while steps wait; a job drives the run again at ``wake_at``."""
        if claim.run.deadline_at is not None:
            # The run's timeout counts while it waits: wake up for it, at the latest.
            wake_at = min(wake_at, claim.run.deadline_at)
        journal.run(
            RunStatus.RUNNING,
            RunStatus.RUNNING,
            at=self.now(),
            values={"wake_at": wake_at, "lease_until": None},
        )
        await journal.flush()

        async def queue_resume() -> None:
            async with self.sessions() as session, session.begin():
                await self.resume(session, claim.run.id, wake_at)

        await ride_out(queue_resume)
        return "released"

    def _settle_open(self, claim: Claim, journal: Journal, now: datetime) -> None:
        """Every step still PENDING or RUNNING ends CANCELLED (in graph order)."""
        for node in claim.plan.order:
            state = claim.steps[node.id]
            if state.status in (StepStatus.PENDING, StepStatus.RUNNING):
                state.finished_at, state.wake_at, state.error = now, None, None
                journal.step(node.id, StepStatus.CANCELLED, at=now)

    def _fail(self, claim: Claim, journal: Journal, message: str, node_id: str | None) -> None:
        now = self.now()
        self._error = message
        self._settle_open(claim, journal, now)
        journal.run(
            RunStatus.RUNNING,
            RunStatus.FAILED,
            at=now,
            values={
                "error": message,
                "error_node_id": node_id,
                "finished_at": now,
                "lease_until": None,
            },
            error=message,
        )

    async def _on_cancel(self, claim: Claim, journal: Journal) -> None:
        """Stopped from outside: a shutdown releases the run to resume (not a crash).

        When runCancel stopped it, the claim was fenced out already: nothing is written. A
        run still only in memory was never accepted: it is dropped.
        """
        if journal.birth is not None:
            return
        journal.run(
            RunStatus.RUNNING,
            RunStatus.RUNNING,
            at=self.now(),
            values={"wake_at": self.now(), "lease_until": None},
        )
        try:
            await journal.flush(retry=False)  # once: a stopping process does not wait
        except LeaseLost:
            return
        except Exception:  # the database may be gone too: the lease or the job recovers it
            log.warning("could not release a stopped run", extra={"run_id": str(claim.run.id)})
