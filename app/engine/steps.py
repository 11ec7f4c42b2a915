"""Running one node of a run: attempts with backoff, a timeout, and noting every step.

Each change is noted in the run's journal with the clock's time. A node with an outside
effect has its start written before it runs and its result written as soon as it ends
(so a crash repeats at most the call in flight); a pure node's step waits for the
driver's next flush.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry.trace import Span
from pydantic import ValidationError

from app import tracing
from app.engine.caps import cap_output
from app.engine.claim import Claim, StepState, json_text
from app.engine.expressions import ExpressionError, render_config
from app.engine.journal import Journal
from app.engine.nodes.base import NodeContext, NodeFailure, NodeOutcome, ReleaseUntil
from app.engine.outbound import OutboundBlocked
from app.engine.plan import NodePlan, edge_is_active
from app.engine.redact import storable
from app.metrics import STEP_DURATION, STEP_RETRIES
from app.models import StepStatus
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class StepResult:
    """How a node's step ended in this claim."""

    node_id: str
    failed: bool
    continue_on_fail: bool
    error: str | None = None


def failure_message(error: BaseException, timeout_seconds: float | None) -> str:
    """What a step's error says of an exception (nodeTest says the same)."""
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout_seconds} seconds."
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors()
        )
        return f"Invalid configuration: {problems}"
    if isinstance(error, NodeFailure | ExpressionError):
        return str(error)
    # The details go to the log (with the run and node ids), not to every reader of the run.
    return f"Unexpected error in the node ({type(error).__name__}); see the worker's log."


def _observe(node: NodePlan, state: StepState, status: StepStatus) -> None:
    """A step ended: observe its duration, from its first attempt (in memory, no statement)."""
    if state.started_at is not None and state.finished_at is not None:
        seconds = (state.finished_at - state.started_at).total_seconds()
        STEP_DURATION.labels(node.type, status.value).observe(max(0.0, seconds))


def _retryable(error: BaseException) -> bool:
    # The same config and input fail the same way again: do not spend retries on them.
    return not isinstance(error, ValidationError | ExpressionError | OutboundBlocked)


class StepRunner:
    """Runs nodes of one claimed run, noting their steps in its journal."""

    def __init__(
        self,
        claim: Claim,
        journal: Journal,
        settings: Settings,
        clock: Callable[[], datetime],
        span: Span | None = None,
    ) -> None:
        self.claim = claim
        self.journal = journal
        self.settings = settings
        self.now = clock
        # The claim's span (traces on): each step's span goes under it.
        self.span = span

    def _environment(self, node: NodePlan) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        steps = self.claim.steps
        plan = self.claim.plan
        parents: dict[str, Any] = {}
        for edge in node.incoming:
            source = steps[edge.source]
            if edge_is_active(source, plan.nodes[edge.source], edge.source_handle):
                parents.setdefault(edge.source, source.output)
        run = self.claim.run
        if not node.incoming:
            value = run.input
        elif len(parents) == 1:
            value = next(iter(parents.values()))
        else:
            value = parents
        env = {
            "input": value,
            "nodes": {
                node_id: {"output": state.output}
                for node_id, state in steps.items()
                if state.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)
            },
            "trigger": run.input,
            "run": {
                "id": str(run.id),
                "workflowId": str(run.workflow_id),
                "version": run.version_number,
            },
            "secrets": self.claim.secrets,
        }
        return value, env, parents

    async def run(self, node: NodePlan) -> StepResult:
        """Run a node to its end in this claim (success, failure, or a release)."""
        if self.span is None:  # traces off: nothing to build
            return await self._run(node, None)
        span = tracing.start_child_span(
            self.span,
            f"step {node.type}",
            {"flowdeck.node.id": node.id, "flowdeck.node.type": node.type},
        )
        if span is None:
            return await self._run(node, None)
        state = self.claim.steps[node.id]
        status = StepStatus.CANCELLED.value  # unless it ends otherwise
        try:
            result = await self._run(node, span)
            # SUCCEEDED, FAILED, or RUNNING: released to wait, it goes on in a later claim.
            status = state.status.value
            return result
        finally:
            failed = status == StepStatus.FAILED.value
            tracing.end_span(
                span,
                {"flowdeck.step.attempt": state.attempt, "flowdeck.step.status": status},
                error=state.error if failed else None,
            )

    async def _run(self, node: NodePlan, span: Span | None) -> StepResult:
        state = self.claim.steps[node.id]
        policy = node.policy
        attempts = policy.retry.max_attempts if policy.retry else 1
        value, env, parents = self._environment(node)
        attempt = state.attempt if state.status is StepStatus.RUNNING else 0
        stored_input = await self._capped_text(self.claim.redactor.stored(value))
        while True:
            attempt += 1
            await self._started(node, state, attempt, stored_input)
            try:
                outcome = await self._attempt(node, state, attempt, value, env, parents)
            except ReleaseUntil as release:
                state.wake_at = release.wake_at
                self.journal.step(node.id, StepStatus.RUNNING, at=self.now(), announce=False)
                return StepResult(node.id, failed=False, continue_on_fail=False)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # every failure of a node is recorded on its step
                message = self._failure_message(node, error)
                if attempt < attempts and policy.retry is not None and _retryable(error):
                    STEP_RETRIES.labels(node.type).inc()
                    if span is not None:
                        span.add_event(
                            "retry", {"flowdeck.step.attempt": attempt, "error": message}
                        )
                    self.journal.retrying(node.id, at=self.now(), attempt=attempt, error=message)
                    # Observers see the retry before the wait.
                    await self.journal.flush()
                    await asyncio.sleep(policy.retry.delay_before(attempt + 1))
                    continue
                return await self._failed(node, state, error, message)
            return await self._succeeded(node, state, outcome)

    async def _started(
        self, node: NodePlan, state: StepState, attempt: int, stored_input: str | None
    ) -> None:
        now = self.now()
        state.attempt = attempt
        state.stored_input = stored_input
        state.wake_at = None
        state.started_at = state.started_at or now
        self.journal.step(node.id, StepStatus.RUNNING, at=now)
        if not node.node_type.pure:  # an outside effect: its start is written before it
            await self.journal.flush()

    def _failure_message(self, node: NodePlan, error: Exception) -> str:
        redact = self.claim.redactor
        message = storable(redact.text(failure_message(error, node.policy.timeout_seconds)))[
            :MAX_ERROR_LENGTH
        ]
        if not isinstance(error, NodeFailure | ExpressionError | TimeoutError):
            # The traceback may quote a secret: it is logged redacted, as text.
            trace = "".join(traceback.format_exception(error))
            log.warning(
                "node raised",
                extra={
                    "run_id": str(self.claim.run.id),
                    "node_id": node.id,
                    "traceback": redact.text(trace),
                },
            )
        return str(message)

    async def _failed(
        self, node: NodePlan, state: StepState, error: Exception, message: str
    ) -> StepResult:
        continues = node.policy.continue_on_fail
        output = (
            {"error": message}
            if continues
            else await cap_output(
                self.claim.redactor.stored(getattr(error, "output", None)), self.settings
            )
        )
        state.output = output
        state.stored_output = json_text(output)
        state.error = message
        state.finished_at = self.now()
        self.journal.step(node.id, StepStatus.FAILED, at=state.finished_at)
        _observe(node, state, StepStatus.FAILED)
        if not node.node_type.pure:  # its result is written before anything depends on it
            await self.journal.flush()
        return StepResult(node.id, failed=True, continue_on_fail=continues, error=message)

    async def _succeeded(
        self, node: NodePlan, state: StepState, outcome: NodeOutcome
    ) -> StepResult:
        redact = self.claim.redactor
        # Later nodes get what is stored (as after a resume): JSONB-storable and capped,
        # but not the secrets' redaction.
        produced = storable(outcome.output)
        stored = json_text(redact.value(produced))  # storable already
        if stored is not None and len(stored) * 4 > self.settings.max_step_io_bytes:
            produced = await cap_output(produced, self.settings)
            stored = json_text(redact.value(produced))
        state.output = produced
        state.stored_output = stored
        state.active_handles = outcome.active_handles
        state.error = None
        state.finished_at = self.now()
        self.journal.step(node.id, StepStatus.SUCCEEDED, at=state.finished_at)
        _observe(node, state, StepStatus.SUCCEEDED)
        if not node.node_type.pure:  # its result is written before anything depends on it
            await self.journal.flush()
        return StepResult(node.id, failed=False, continue_on_fail=node.policy.continue_on_fail)

    async def _capped_text(self, value: object) -> str | None:
        """A stored value's JSON text, cut to the step cap when over it (with a marker)."""
        text = json_text(value)
        # Characters are at most four bytes: most values are far below the cap, uncounted.
        if text is not None and len(text) * 4 > self.settings.max_step_io_bytes:
            return json_text(await cap_output(value, self.settings))
        return text

    async def _attempt(
        self,
        node: NodePlan,
        state: StepState,
        attempt: int,
        value: Any,
        env: dict[str, Any],
        parents: dict[str, Any],
    ) -> NodeOutcome:
        node_type = node.node_type
        rendered = await render_config(node.compiled, env, skip=node_type.lazy_fields)
        config = node_type.config_model.model_validate(rendered)
        context = NodeContext(
            run_id=self.claim.run.id,
            workspace_id=self.claim.run.workspace_id,
            node_id=node.id,
            attempt=attempt,
            step_started_at=state.started_at or self.now(),
            settings=self.settings,
            secrets=dict(self.claim.secrets),
            extras={"env": env, "parents": parents},
        )
        timeout = node.policy.timeout_seconds
        async with asyncio.timeout(timeout):
            return await node_type.run(context, config, value)
