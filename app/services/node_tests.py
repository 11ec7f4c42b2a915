"""nodeTest: run one node of a workflow version once, with a given input or the input a past
run recorded for it; nothing is written.

The node may wait on a slow upstream for up to its timeout: the database is only used
before it runs (one short session), so a waiting test holds no connection.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.auth.principal import Principal
from app.engine.node_tests import NodeTestCase, NodeTestResult, run_node_test
from app.engine.nodes.base import get_node_type
from app.errors import ErrorCode, InputErrors
from app.keyring import Keyring
from app.models import Role, RunStep, StepStatus, WorkflowVersion
from app.services.graphs import GraphPolicy
from app.services.runs import check_run_input, get_run
from app.services.secrets import open_secrets
from app.services.workflows import get_workflow

MAX_VERSION = 2**31 - 1
# The statuses of a step whose output `nodes.<id>.output` reads in a run.
_SETTLED = (StepStatus.SUCCEEDED, StepStatus.FAILED)


def _find_node(graph: Any, node_id: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    node = next((n for n in graph.get("nodes", []) if n.get("id") == node_id), None)
    if node is None:
        raise InputErrors.single(
            ("input", "nodeId"), ErrorCode.NOT_FOUND, f'The version has no node "{node_id}".'
        )
    sources = tuple(e["source"] for e in graph.get("edges", []) if e.get("target") == node_id)
    return node, sources


async def _recorded(
    session: AsyncSession,
    *,
    principal: Principal,
    workflow_id: uuid.UUID,
    run_id: uuid.UUID,
    node_id: str,
) -> tuple[Any, Any, dict[str, Any]]:
    """The input a past run gave the node, the run's input, and its nodes' outputs."""
    run = await get_run(session, principal=principal, run_id=run_id)
    if run.workflow_id != workflow_id:
        raise InputErrors.single(
            ("input", "fromRunId"), ErrorCode.INVALID, "That run is of another workflow."
        )
    steps = (await session.execute(select(RunStep).where(col(RunStep.run_id) == run.id))).scalars()
    by_node = {step.node_id: step for step in steps}
    step = by_node.get(node_id)
    if step is None or step.attempt == 0:
        raise InputErrors.single(
            ("input", "fromRunId"),
            ErrorCode.INVALID,
            f'Node "{node_id}" did not run in that run: it recorded no input for it.',
        )
    nodes = {other: {"output": s.output} for other, s in by_node.items() if s.status in _SETTLED}
    return step.input, run.input, nodes


async def run_node_once(
    sessions: async_sessionmaker[AsyncSession],
    *,
    principal: Principal,
    keyring: Keyring,
    settings: Any,
    policy: GraphPolicy,
    workflow_id: uuid.UUID,
    node_id: str,
    version: int | None,
    input: Any,
    input_given: bool,
    from_run_id: uuid.UUID | None,
) -> NodeTestResult:
    """Run one node of a version once (members and above); InputErrors when it cannot."""
    async with sessions() as session:
        workflow = await get_workflow(
            session, principal=principal, workflow_id=workflow_id, role=Role.MEMBER
        )
        if input_given and from_run_id is not None:
            raise InputErrors.single(
                ("input",), ErrorCode.INVALID, "Give either `input` or `fromRunId`, not both."
            )
        if input_given:
            check_run_input(input, policy, settings.max_run_input_bytes)
        number = workflow.current_version if version is None else version
        graph = None
        if 1 <= number <= MAX_VERSION:
            graph = await session.scalar(
                select(WorkflowVersion.graph).where(
                    col(WorkflowVersion.workflow_id) == workflow.id,
                    col(WorkflowVersion.number) == number,
                )
            )
        if graph is None:
            raise InputErrors.single(
                ("input", "version"), ErrorCode.NOT_FOUND, f"Version {number} does not exist."
            )
        node, sources = _find_node(graph, node_id)
        node_type = get_node_type(str(node.get("type")))
        if node_type is None:
            raise InputErrors.single(
                ("input", "nodeId"),
                ErrorCode.INVALID,
                f'Node "{node_id}" has type "{node.get("type")}", which is not a known node type.',
            )
        trigger, nodes = input, dict[str, Any]()
        if from_run_id is not None:
            input, trigger, nodes = await _recorded(
                session,
                principal=principal,
                workflow_id=workflow.id,
                run_id=from_run_id,
                node_id=node_id,
            )
        secrets = await open_secrets(session, keyring=keyring, workspace_id=workflow.workspace_id)
    case = NodeTestCase(
        node=node,
        node_type=node_type,
        sources=sources,
        input=input,
        nodes=nodes,
        trigger=trigger,
        run={"id": str(uuid.uuid4()), "workflowId": str(workflow.id), "version": number},
        workspace_id=workflow.workspace_id,
        secrets=secrets,
    )
    return await run_node_test(
        case, settings=settings, cap_seconds=settings.node_test_timeout_seconds
    )
