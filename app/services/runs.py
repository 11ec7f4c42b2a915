"""Runs: execute a version (durable on return), cancel, retry, list and read them."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.engine.executor import NewRun
from app.engine.graph import check_json_value
from app.engine.journal import Birth
from app.engine.nodes.trigger import (
    InputCheck,
    InputSchemaUnusable,
    input_checks,
    input_problems,
    off_the_loop,
)
from app.engine.plan import RunPlan, build_plan, cached_plan
from app.engine.states import TERMINAL_RUN, end_run, open_run
from app.engine.validation import validate_workflow_graph
from app.errors import ErrorCode, FieldError, InputErrors, NotFound
from app.models import (
    AuditAction,
    AuditObjectType,
    Role,
    Run,
    RunEvent,
    RunStatus,
    RunStep,
    RunTrigger,
    StepStatus,
    Workflow,
    WorkflowVersion,
)
from app.services import audit
from app.services.graphs import GraphPolicy
from app.services.queue import RunQueue
from app.services.workflows import get_workflow
from app.tracing import current_traceparent

MAX_IDEMPOTENCY_KEY = 200


def _input_hash(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_run_input(value: Any, policy: GraphPolicy, max_bytes: int) -> int:
    """InputErrors unless ``value`` may be a run's input (nodeTest's input too); its size."""
    problems = check_json_value(
        value,
        max_depth=policy.limits.max_depth,
        max_string_length=policy.limits.max_string_length,
        path=("input", "input"),
    )
    if problems:
        raise InputErrors([FieldError(p.path, ErrorCode.INVALID, p.message) for p in problems])
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > max_bytes:
        raise InputErrors.single(
            ("input", "input"),
            ErrorCode.INVALID,
            f"The input is {size} bytes; the limit is {max_bytes}.",
        )
    return size


def _check_idempotency_key(key: str | None) -> None:
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InputErrors.single(
            ("input", "idempotencyKey"),
            ErrorCode.INVALID,
            f"Must be 1 to {MAX_IDEMPOTENCY_KEY} characters.",
        )


@dataclass(frozen=True, slots=True)
class _Runnable:
    """What queueing a run needs of a version: its id, its nodes, why it cannot run, and
    its triggers' input schemas, compiled."""

    id: uuid.UUID
    number: int
    nodes: tuple[dict[str, str], ...]
    problems: tuple[str, ...]
    input_checks: tuple[InputCheck, ...]


# Versions never change: what a run needs of one is kept per process (the graph is not read
# and validated again on every execute, webhook delivery and schedule fire).
_RUNNABLE: OrderedDict[tuple[uuid.UUID, int, Any], _Runnable] = OrderedDict()
_RUNNABLE_MAX = 1024


async def _runnable_version(
    session: AsyncSession, workflow_id: uuid.UUID, wanted: int, policy: GraphPolicy
) -> _Runnable:
    key = (workflow_id, wanted, policy.limits)
    cached = _RUNNABLE.get(key)
    if cached is not None:
        _RUNNABLE.move_to_end(key)
        return cached
    version = await _load_version(session, workflow_id, wanted)
    problems = tuple(p.message for p in validate_workflow_graph(version.graph, policy.limits))
    runnable = _Runnable(
        id=version.id,
        number=version.number,
        nodes=tuple(
            {"id": node["id"], "type": node["type"]} for node in version.graph.get("nodes", [])
        ),
        problems=problems,
        # Only a sound version's schemas are valid JSON Schemas (else INVALID_CONFIG).
        input_checks=() if problems else input_checks(version.graph),
    )
    _RUNNABLE[key] = runnable
    if len(_RUNNABLE) > _RUNNABLE_MAX:
        _RUNNABLE.popitem(last=False)
    return runnable


def _check_runnable(target: _Runnable) -> None:
    if target.problems:
        raise InputErrors(
            [
                FieldError(
                    ("input", "version"),
                    ErrorCode.GRAPH_INVALID,
                    f"Version {target.number} cannot run: {message}",
                )
                for message in target.problems
            ]
        )


def _input_errors(target: _Runnable, value: Any) -> list[FieldError]:
    """Where the input does not match each trigger's schema (GRAPH_INVALID: unusable)."""
    errors = []
    for check in target.input_checks:
        try:
            problems = input_problems(check.validator, value)
        except InputSchemaUnusable as unusable:
            message = (
                f"Version {target.number} cannot run: the input schema of trigger "
                f'"{check.node_id}" cannot be applied: {unusable}'
            )
            errors.append(FieldError(("input", "version"), ErrorCode.GRAPH_INVALID, message))
            continue
        errors += [
            FieldError(("input", "input", *p.path), ErrorCode.INPUT_INVALID, p.message)
            for p in problems
        ]
    return errors


async def _check_input_schema(target: _Runnable, value: Any, size: int) -> None:
    """InputErrors (INPUT_INVALID, with the path) unless the input matches every trigger's
    schema; nothing is written before this passes."""
    if not target.input_checks:
        return
    # jsonschema is pure Python: a large input can take a check up to its budget (a second),
    # which the event loop must not wait out.
    errors = await off_the_loop(size, functools.partial(_input_errors, target, value))
    if errors:
        raise InputErrors(errors)


async def _load_version(
    session: AsyncSession, workflow_id: uuid.UUID, wanted: int
) -> WorkflowVersion:
    version = (
        await session.execute(
            select(WorkflowVersion).where(
                col(WorkflowVersion.workflow_id) == workflow_id,
                col(WorkflowVersion.number) == wanted,
            )
        )
    ).scalar_one_or_none()
    if version is None:
        raise InputErrors.single(
            ("input", "version"), ErrorCode.NOT_FOUND, f"Version {wanted} does not exist."
        )
    return version


async def execute_workflow(
    session: AsyncSession,
    *,
    principal: Principal,
    queue: RunQueue,
    workflow_id: uuid.UUID,
    input: Any,
    version: int | None,
    idempotency_key: str | None,
    policy: GraphPolicy,
    max_input_bytes: int,
    trigger: RunTrigger = RunTrigger.MANUAL,
) -> Run:
    """Queue a run of a version; when this returns (and the caller commits) it is durable."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.MEMBER
    )
    return await queue_run(
        session,
        queue=queue,
        workflow=workflow,
        input=input,
        version=version,
        idempotency_key=idempotency_key,
        policy=policy,
        max_input_bytes=max_input_bytes,
        trigger=trigger,
        created_by_id=principal.user_id,
    )


async def queue_run(
    session: AsyncSession,
    *,
    queue: RunQueue,
    workflow: Workflow,
    input: Any,
    version: int | None,
    idempotency_key: str | None,
    policy: GraphPolicy,
    max_input_bytes: int,
    trigger: RunTrigger,
    created_by_id: uuid.UUID | None,
) -> Run:
    """Queue a run of a workflow the caller may run (schedules and webhooks call this too).

    The run, its steps, its first event and its job are written in the session's
    transaction. With an idempotency key already used, the earlier run comes back (or
    IDEMPOTENCY_CONFLICT when its input or version differ).
    """
    size = check_run_input(input, policy, max_input_bytes)
    _check_idempotency_key(idempotency_key)
    wanted = workflow.current_version if version is None else version
    target = await _runnable_version(session, workflow.id, wanted, policy)
    _check_runnable(target)
    await _check_input_schema(target, input, size)
    digest = _input_hash(input)
    run = await _open_and_start(
        session,
        queue,
        values={
            "workspace_id": workflow.workspace_id,
            "workflow_id": workflow.id,
            "version_id": target.id,
            "version_number": target.number,
            "trigger": trigger,
            "input": input,
            "input_hash": digest,
            "idempotency_key": idempotency_key,
            "created_by_id": created_by_id,
        },
        nodes=target.nodes,
        idempotent=idempotency_key is not None,
    )
    if run is None:
        existing = (
            await session.execute(
                select(Run).where(
                    col(Run.workflow_id) == workflow.id,
                    col(Run.idempotency_key) == idempotency_key,
                )
            )
        ).scalar_one()
        if existing.input_hash != digest or existing.version_id != target.id:
            raise InputErrors.single(
                ("input", "idempotencyKey"),
                ErrorCode.IDEMPOTENCY_CONFLICT,
                "This idempotency key was used for a run with a different input or version.",
            )
        return existing
    return run


async def _open_and_start(
    session: AsyncSession,
    queue: RunQueue,
    *,
    values: dict[str, Any],
    nodes: Sequence[Mapping[str, str]],
    kept: Mapping[str, RunStep] | None = None,
    idempotent: bool = False,
) -> Run | None:
    """Open a run (born leased to this process when it has room) and have it driven once
    the caller commits; None, with nothing written, when its idempotency key was taken."""
    traceparent = current_traceparent()
    if traceparent is not None:  # the trace of the operation (or fire) that queues it
        values = {**values, "traceparent": traceparent}
    lease = queue.reserve()
    try:
        run = await open_run(
            session, values=values, nodes=nodes, kept=kept, idempotent=idempotent,
            lease_seconds=lease,
        )  # fmt: skip
        if run is not None:
            await queue.start(session, run)
            return run
    except BaseException:
        if lease is not None:
            queue.release()
        raise
    if lease is not None:
        queue.release()
    return None


async def born_run(
    session: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    workflow_id: uuid.UUID,
    version: int,
    input: Any,
    idempotency_key: str | None,
    policy: GraphPolicy,
    max_input_bytes: int,
    trigger: RunTrigger,
    created_by_id: uuid.UUID | None = None,
    precondition: tuple[str, dict[str, Any]] | None = None,
) -> tuple[NewRun, RunPlan]:
    """A new run of a version in memory, for a driver to start at once (nothing written).

    The same checks as ``queue_run``; the session is used only when this process has not
    seen the version yet. The driver's first flush writes the run, or finds its idempotency
    key taken.
    """
    size = check_run_input(input, policy, max_input_bytes)
    _check_idempotency_key(idempotency_key)
    target = await _runnable_version(session, workflow_id, version, policy)
    _check_runnable(target)
    await _check_input_schema(target, input, size)
    plan = cached_plan(target.id)
    if plan is None:
        graph = await session.scalar(
            select(col(WorkflowVersion.graph)).where(col(WorkflowVersion.id) == target.id)
        )
        # Compiling a large graph's expressions takes a second: off the event loop.
        plan = await asyncio.to_thread(build_plan, target.id, graph)
    birth = Birth(
        workspace_id=workspace_id,
        workflow_id=workflow_id,
        version_id=target.id,
        version_number=target.number,
        trigger=trigger.value,
        input=input,
        input_hash=_input_hash(input),
        idempotency_key=idempotency_key,
        created_by_id=created_by_id,
        nodes=plan.refs,
        traceparent=current_traceparent(),
    )
    if precondition is not None:
        birth.precondition, birth.precondition_params = precondition
    return NewRun(id=uuid.uuid4(), birth=birth, input=input), plan


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """The run that holds an idempotency key: its id, trigger, input digest and status."""

    id: uuid.UUID
    trigger: RunTrigger
    input_hash: str
    status: RunStatus


async def key_holder(
    session: AsyncSession, *, workflow_id: uuid.UUID, idempotency_key: str
) -> KeyHolder | None:
    """The run of a workflow that holds an idempotency key, if one does."""
    row = (
        await session.execute(
            select(col(Run.id), col(Run.trigger), col(Run.input_hash), col(Run.status)).where(
                col(Run.workflow_id) == workflow_id, col(Run.idempotency_key) == idempotency_key
            )
        )
    ).one_or_none()
    return None if row is None else KeyHolder(*row)


def input_digest(value: Any) -> str:
    """The digest that tells whether two runs were given the same input."""
    return _input_hash(value)


async def get_run(
    session: AsyncSession, *, principal: Principal, run_id: uuid.UUID, role: Role = Role.VIEWER
) -> Run:
    """A run of one of the caller's workspaces (NotFound otherwise)."""
    run = (
        await session.execute(
            select(Run).where(col(Run.id) == run_id).execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if run is None or principal.role_in(run.workspace_id) is None:
        raise NotFound("Run")
    principal.require(run.workspace_id, role, "Run")
    return run


async def cancel_run(
    session: AsyncSession, *, principal: Principal, queue: RunQueue, run_id: uuid.UUID
) -> Run:
    """Cancel a queued or running run; its worker stops it and its steps within a second."""
    run = await get_run(session, principal=principal, run_id=run_id, role=Role.MEMBER)
    locked = (
        await session.execute(select(Run).where(col(Run.id) == run.id).with_for_update())
    ).scalar_one()
    if locked.status in TERMINAL_RUN:
        raise InputErrors.single(
            ("id",), ErrorCode.INVALID, f"The run already ended ({locked.status.value})."
        )
    # Settle the steps here and fence out any worker holding the run (its claim is bumped):
    # nothing stays RUNNING even if that worker is gone or paused, and RUN_CANCELLED is the
    # run's last event. The worker is told to stop at once through the queue.
    previous = locked.status  # end_run refreshes the row
    run = await end_run(
        session,
        run_id=run.id,
        target=RunStatus.CANCELLED,
        claim=None,
        values={"error": "Cancelled.", "attempt": col(Run.attempt) + 1, "wake_at": None},
    )
    if locked.job_id is not None:
        await queue.stop(session, locked.job_id)
    await audit.record(
        session,
        principal=principal,
        workspace_id=run.workspace_id,
        action=AuditAction.RUN_CANCEL,
        object_type=AuditObjectType.RUN,
        object_id=run.id,
        summary={"previousStatus": previous.value},
    )
    return run


def _reusable(succeeded: dict[str, RunStep], graph: Any) -> dict[str, RunStep]:
    """The succeeded steps none of whose ancestors runs again: their inputs are unchanged."""
    parents: dict[str, list[str]] = {}
    for edge in graph.get("edges", []):
        parents.setdefault(edge["target"], []).append(edge["source"])
    kept: dict[str, RunStep] = {}
    changed = True
    while changed:  # a fixed point over the (acyclic) graph
        changed = False
        for node_id, step in succeeded.items():
            if node_id not in kept and all(p in kept for p in parents.get(node_id, [])):
                kept[node_id] = step
                changed = True
    return kept


async def retry_run(
    session: AsyncSession,
    *,
    principal: Principal,
    queue: RunQueue,
    run_id: uuid.UUID,
    from_failed_step: bool,
) -> Run:
    """A new run of the same version and input; optionally keeping the steps that succeeded."""
    original = await get_run(session, principal=principal, run_id=run_id, role=Role.MEMBER)
    if original.status not in TERMINAL_RUN:
        raise InputErrors.single(
            ("input", "runId"),
            ErrorCode.INVALID,
            f"The run has not ended ({original.status.value}); cancel it first.",
        )
    graph = (
        await session.execute(
            select(col(WorkflowVersion.graph)).where(col(WorkflowVersion.id) == original.version_id)
        )
    ).scalar_one()
    kept: dict[str, RunStep] = {}
    if from_failed_step:
        rows = await session.scalars(
            select(RunStep).where(
                col(RunStep.run_id) == original.id,
                col(RunStep.status) == StepStatus.SUCCEEDED,
            )
        )
        kept = _reusable({step.node_id: step for step in rows}, graph)
    run = await _open_and_start(
        session,
        queue,
        values={
            "workspace_id": original.workspace_id,
            "workflow_id": original.workflow_id,
            "version_id": original.version_id,
            "version_number": original.version_number,
            "trigger": RunTrigger.RETRY,
            "input": original.input,
            "input_hash": original.input_hash,
            "retry_of_id": original.id,
            "created_by_id": principal.user_id,
        },
        nodes=[{"id": node["id"], "type": node["type"]} for node in graph.get("nodes", [])],
        kept=kept,
    )
    assert run is not None  # not idempotent: the insert always happens
    await audit.record(
        session,
        principal=principal,
        workspace_id=run.workspace_id,
        action=AuditAction.RUN_RETRY,
        object_type=AuditObjectType.RUN,
        object_id=original.id,
        summary={"fromFailedStep": from_failed_step, "reusedSteps": len(kept)},
    )
    return run


async def load_steps(
    session: AsyncSession, *, run_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[RunStep]]:
    """The steps of runs, in graph order, by run id."""
    rows = await session.execute(
        select(RunStep)
        .where(col(RunStep.run_id).in_(run_ids))
        .order_by(col(RunStep.run_id), col(RunStep.position))
    )
    found: dict[uuid.UUID, list[RunStep]] = {run_id: [] for run_id in run_ids}
    for step in rows.scalars():
        found[step.run_id].append(step)
    return found


async def runs_by_ids(session: AsyncSession, *, run_ids: list[uuid.UUID]) -> list[Run]:
    """Runs by id, oldest queued first."""
    rows = await session.execute(
        select(Run).where(col(Run.id).in_(run_ids)).order_by(col(Run.queued_at), col(Run.id))
    )
    return list(rows.scalars())


async def runs_changed_since(
    session: AsyncSession, *, workflow_id: uuid.UUID, since: datetime
) -> list[uuid.UUID]:
    """The runs of a workflow with a run event (queued, started, ended) since ``since``."""
    rows = await session.execute(
        select(col(RunEvent.run_id))
        .where(
            col(RunEvent.workflow_id) == workflow_id,
            col(RunEvent.at) >= since,
            col(RunEvent.run_status).is_not(None),
        )
        .distinct()
    )
    return list(rows.scalars())
