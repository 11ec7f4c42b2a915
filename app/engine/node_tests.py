"""Testing one node from the editor: its real implementation, once, as a run would run it.

The config is compiled and rendered with the same expression sandbox, validated by the
node type's config model, and ``run`` is called with a NodeContext carrying the workspace's
secrets and the settings of the outbound guard, under the node's timeout (capped by
``node_test_timeout_seconds``). Output and error are made storable, cut to the step cap and
redacted exactly as a step's are. Nothing is written: no run, no step, no event. There is
one attempt: retries and continue-on-fail are the run's business.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from app.engine.caps import cap_output
from app.engine.expressions import ExpressionError, compile_config, render_config
from app.engine.nodes.base import NodeConfig, NodeContext, NodeFailure, NodeType, ReleaseUntil
from app.engine.plan import NodePlan
from app.engine.redact import redactor_for, storable
from app.engine.steps import MAX_ERROR_LENGTH, failure_message
from app.models import StepStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeTestCase:
    """What a node is tested with: the node, its input, and the rest of a run's environment."""

    node: dict[str, Any]  # the node as the graph holds it ({id, type, data, ...})
    node_type: NodeType
    sources: tuple[str, ...]  # the nodes its incoming edges come from, in graph order
    input: Any
    nodes: dict[str, Any]  # other nodes' outputs, as `nodes.<id>.output` reads them
    trigger: Any
    run: dict[str, Any]  # what `run` reads: id, workflowId, version
    workspace_id: uuid.UUID
    secrets: dict[str, str]


@dataclass(frozen=True, slots=True)
class NodeTestResult:
    """How the one attempt ended."""

    status: StepStatus  # SUCCEEDED or FAILED
    output: Any
    error: str | None
    duration_ms: int
    active_handles: list[str] | None  # the output handles that carry on (None: all)


def parents_of(value: Any, sources: tuple[str, ...]) -> dict[str, Any]:
    """The parents' outputs as a run gives them to logic.merge: one parent's output is the
    input itself; several parents' outputs are the input keyed by their ids."""
    if len(sources) == 1:
        return {sources[0]: value}
    if isinstance(value, dict):
        return {source: value[source] for source in dict.fromkeys(sources) if source in value}
    return {}


def _plan(case: NodeTestCase) -> NodePlan:
    data = case.node.get("data") or {}
    return NodePlan(
        id=case.node["id"],
        type=case.node["type"],
        node_type=case.node_type,
        data=data,
        compiled=compile_config(data),
        policy=NodeConfig.model_validate(data),
    )


async def _attempt(
    node: NodePlan, case: NodeTestCase, env: dict[str, Any], settings: Any, seconds: float
) -> Any:
    """As StepRunner._attempt: render, validate, then run under the timeout."""
    node_type = node.node_type
    rendered = await render_config(node.compiled, env, skip=node_type.lazy_fields)
    config = node_type.config_model.model_validate(rendered)
    context = NodeContext(
        run_id=uuid.UUID(case.run["id"]),
        workspace_id=case.workspace_id,
        node_id=node.id,
        attempt=1,
        step_started_at=datetime.now(UTC),
        settings=settings,
        secrets=case.secrets,
        extras={"env": env, "parents": parents_of(case.input, case.sources)},
    )
    async with asyncio.timeout(seconds):
        return await node_type.run(context, config, case.input)


async def run_node_test(case: NodeTestCase, *, settings: Any, cap_seconds: float) -> NodeTestResult:
    """Run the node once; its outcome, redacted (the node's own failures are the answer)."""
    redact = redactor_for(case.secrets)
    loop = asyncio.get_running_loop()
    started = loop.time()
    env = {
        "input": case.input,
        "nodes": case.nodes,
        "trigger": case.trigger,
        "run": case.run,
        "secrets": case.secrets,
    }
    timeout = cap_seconds
    try:
        node = _plan(case)
        if node.policy.timeout_seconds is not None:
            timeout = min(node.policy.timeout_seconds, cap_seconds)
        outcome = await _attempt(node, case, env, settings, timeout)
    except asyncio.CancelledError:
        raise
    except ReleaseUntil as release:
        message = (
            f"The node would wait until {release.wake_at.isoformat()}; a test does not wait "
            "that long."
        )
        return _failed(message, loop.time() - started)
    except Exception as error:  # every failure of the node is its answer, as on a step
        if not isinstance(error, NodeFailure | ExpressionError | ValidationError | TimeoutError):
            trace = "".join(traceback.format_exception(error))
            log.warning(
                "node raised in a test",
                extra={"node_id": case.node["id"], "traceback": redact.text(trace)},
            )
        message = storable(redact.text(failure_message(error, timeout)))[:MAX_ERROR_LENGTH]
        return _failed(message, loop.time() - started)
    handles = sorted(outcome.active_handles) if outcome.active_handles is not None else None
    # As a step stores it: storable, cut to max_step_io_bytes with a marker, redacted.
    output = redact.value(await cap_output(storable(outcome.output), settings))
    return NodeTestResult(
        status=StepStatus.SUCCEEDED,
        output=output,
        error=None,
        duration_ms=int((loop.time() - started) * 1000),
        active_handles=handles,
    )


def _failed(message: str, seconds: float) -> NodeTestResult:
    return NodeTestResult(
        status=StepStatus.FAILED,
        output=None,
        error=message,
        duration_ms=int(seconds * 1000),
        active_handles=None,
    )
