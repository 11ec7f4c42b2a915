"""Running one node of a run: attempts with backoff, a timeout, and recording every step."""

from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.engine.claim import Claim, StepState
from app.engine.event_log import append_event
from app.engine.expressions import ExpressionError, render_config
from app.engine.nodes.base import NodeContext, NodeFailure, ReleaseUntil
from app.engine.outbound import OutboundBlocked
from app.engine.plan import NodePlan, edge_is_active
from app.engine.redact import storable
from app.engine.states import transition_step
from app.models import RunEventType, RunStep, StepStatus
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


def _message(error: BaseException, node: NodePlan) -> str:
    if isinstance(error, TimeoutError):
        return f"Timed out after {node.policy.timeout_seconds} seconds."
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in error.errors()
        )
        return f"Invalid configuration: {problems}"
    if isinstance(error, NodeFailure | ExpressionError):
        return str(error)
    # The details go to the log (with the run and node ids), not to every reader of the run.
    return f"Unexpected error in the node ({type(error).__name__}); see the worker's log."


def _retryable(error: BaseException) -> bool:
    # The same config and input fail the same way again: do not spend retries on them.
    return not isinstance(error, ValidationError | ExpressionError | OutboundBlocked)


class StepRecorder:
    """Writes a claimed run's step changes, each in its own transaction, fenced by the claim."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], claim: Claim) -> None:
        self.sessions = sessions
        self.claim = claim

    async def write(
        self, node_id: str, target: StepStatus, values: dict[str, Any], *, announce: bool = True
    ) -> None:
        """Move a step to ``target`` with ``values`` (and its event, unless ``announce`` is off)."""
        state = self.claim.steps[node_id]
        async with self.sessions() as session, session.begin():
            await transition_step(
                session,
                step_id=state.id,
                run_id=self.claim.run.id,
                target=target,
                claim=self.claim.number,
                values=values,
                announce=announce,
            )
        state.status = target

    async def retrying(self, node_id: str, attempt: int, message: str) -> None:
        """Record that a step's attempt failed and another will follow."""
        async with self.sessions() as session, session.begin():
            await append_event(
                session,
                run_id=self.claim.run.id,
                type=RunEventType.STEP_RETRYING,
                claim=self.claim.number,
                node_id=node_id,
                step_status=StepStatus.RUNNING,
                attempt=attempt,
                error=message,
            )


class StepRunner:
    """Runs nodes of one claimed run, recording their steps."""

    def __init__(self, recorder: StepRecorder, settings: Settings) -> None:
        self.recorder = recorder
        self.claim = recorder.claim
        self.settings = settings

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
        state = self.claim.steps[node.id]
        policy = node.policy
        attempts = policy.retry.max_attempts if policy.retry else 1
        value, env, parents = self._environment(node)
        attempt = state.attempt if state.status is StepStatus.RUNNING else 0
        redact = self.claim.redactor
        stored_input = redact.stored(value)
        while True:
            attempt += 1
            await self.recorder.write(
                node.id,
                StepStatus.RUNNING,
                {
                    "attempt": attempt,
                    "input": stored_input,
                    "wake_at": None,
                    "started_at": func.coalesce(col(RunStep.started_at), func.now()),
                },
            )
            state.attempt = attempt
            state.wake_at = None
            try:
                outcome = await self._attempt(node, state, attempt, value, env, parents)
            except ReleaseUntil as release:
                await self.recorder.write(
                    node.id,
                    StepStatus.RUNNING,
                    {"wake_at": release.wake_at},
                    announce=False,
                )
                state.wake_at = release.wake_at
                return StepResult(node.id, failed=False, continue_on_fail=False)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # every failure of a node is recorded on its step
                message = storable(redact.text(_message(error, node)))[:MAX_ERROR_LENGTH]
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
                if attempt < attempts and policy.retry is not None and _retryable(error):
                    await self.recorder.retrying(node.id, attempt, message)
                    await asyncio.sleep(policy.retry.delay_before(attempt + 1))
                    continue
                output = (
                    {"error": message}
                    if policy.continue_on_fail
                    else redact.stored(getattr(error, "output", None))
                )
                await self.recorder.write(
                    node.id,
                    StepStatus.FAILED,
                    {"error": message, "output": output, "finished_at": func.now()},
                )
                state.output = output
                state.error = message
                return StepResult(
                    node.id, failed=True, continue_on_fail=policy.continue_on_fail, error=message
                )
            # Later nodes get what JSONB can hold (as after a resume), not the secrets' redaction.
            produced = storable(outcome.output)
            handles = sorted(outcome.active_handles) if outcome.active_handles is not None else None
            await self.recorder.write(
                node.id,
                StepStatus.SUCCEEDED,
                {
                    "output": redact.value(produced),  # storable already: redact only
                    "active_handles": handles,
                    "error": None,
                    "finished_at": func.now(),
                },
            )
            state.output = produced
            state.active_handles = outcome.active_handles
            return StepResult(node.id, failed=False, continue_on_fail=policy.continue_on_fail)

    async def _attempt(
        self,
        node: NodePlan,
        state: StepState,
        attempt: int,
        value: Any,
        env: dict[str, Any],
        parents: dict[str, Any],
    ) -> Any:
        node_type = node.node_type
        rendered = await render_config(node.compiled, env, skip=node_type.lazy_fields)
        config = node_type.config_model.model_validate(rendered)
        context = NodeContext(
            run_id=self.claim.run.id,
            workspace_id=self.claim.run.workspace_id,
            node_id=node.id,
            attempt=attempt,
            step_started_at=state.started_at or datetime.now(UTC),
            settings=self.settings,
            secrets=self.claim.secrets,
            extras={"env": env, "parents": parents},
        )
        timeout = node.policy.timeout_seconds
        async with asyncio.timeout(timeout):
            return await node_type.run(context, config, value)
