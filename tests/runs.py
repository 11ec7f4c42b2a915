"""Helpers for run tests: graph builders and waiting for a run to end."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.factories import Account, Factory

RUN_FIELDS = """
  id status trigger input output error errorNodeId queuedAt startedAt finishedAt durationMs
  version { number }
  retryOf { id }
  steps { nodeId nodeType status attempt startedAt finishedAt durationMs input output error reused }
"""
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# Every node type of the catalogue.
NODE_TYPES = {
    "trigger",
    "http.request",
    "transform.set",
    "text.format",
    "logic.if",
    "logic.switch",
    "logic.merge",
    "flow.delay",
    "flow.fail",
    "output",
    "ai.generate",
    "pdf.extract_text",
}
CANCEL = """mutation($id: ID!) { runCancel(id: $id) {
  run { id status } userErrors { field code message } } }"""


def node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    """A React Flow node."""
    return {"id": node_id, "type": node_type, "position": {"x": 0, "y": 0}, "data": data}


def edge(source: str, target: str, handle: str | None = None) -> dict[str, Any]:
    """A React Flow edge (from ``handle`` of the source)."""
    return {
        "id": f"{source}->{target}",
        "source": source,
        "target": target,
        "sourceHandle": handle,
        "targetHandle": "in",
    }


def flow(
    *nodes: dict[str, Any], edges: str | None = None, handle: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A graph of ``nodes``, in a line unless ``edges`` says otherwise.

    ``edges`` is written "a->b, a.true->c": each edge leaves from the named handle of its
    source, else from ``handle``. ``extra`` keys (a viewport) are kept as they are.
    """
    if edges is None:
        links = [(a["id"], handle, b["id"]) for a, b in itertools.pairwise(nodes)]
    else:
        links = []
        for written in edges.split(","):
            source, target = (end.strip() for end in written.split("->"))
            source, _, named = source.partition(".")
            links.append((source, named or handle, target))
    return {
        "nodes": list(nodes),
        "edges": [edge(source, target, via) for source, via, target in links],
        **extra,
    }


PUBLISH = """mutation($i: WorkflowPublishInput!) { workflowPublish(input: $i) {
  workflow { id publishedVersion { number } } userErrors { field code message } } }"""


async def publish(
    factory: Factory, account: Account, workflow_id: str, version: int, **extra: Any
) -> dict[str, Any]:
    """The workflowPublish payload (no top-level errors allowed)."""
    body = await factory.gql(
        PUBLISH,
        {"i": {"workflowId": workflow_id, "version": version, **extra}},
        token=account.token,
    )
    assert "errors" not in body, body
    return body["data"]["workflowPublish"]


async def create_workflow(
    factory: Factory, owner: Account, graph: dict, name: str = "Flow", *, published: bool = True
) -> str:
    """A workflow with ``graph`` as version 1, published unless told (so its schedule and
    webhook run it); its id."""
    body = await factory.gql(
        """mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) {
             workflow { id currentVersion { diagnostics { code message nodeId } } }
             userErrors { field code message } } }""",
        {"i": {"workspaceId": owner.workspace_id, "name": name, "graph": graph}},
        token=owner.token,
    )
    payload = body["data"]["workflowCreate"]
    assert payload["userErrors"] == [], payload
    assert payload["workflow"]["currentVersion"]["diagnostics"] == [], payload
    workflow_id = payload["workflow"]["id"]
    if published:
        assert (await publish(factory, owner, workflow_id, 1))["userErrors"] == []
    return workflow_id


async def execute(
    factory: Factory, account: Account, workflow_id: str, input: Any = None, **extra: Any
) -> dict[str, Any]:
    """The workflowExecute payload."""
    body = await factory.gql(
        """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
             run { id status trigger queuedAt version { number } }
             userErrors { field code message } } }""",
        {"i": {"workflowId": workflow_id, "input": input, **extra}},
        token=account.token,
    )
    assert "errors" not in body, body
    return body["data"]["workflowExecute"]


async def start_run(
    factory: Factory, account: Account, graph: dict, input: Any = None, name: str = "Flow"
) -> str:
    """Create a workflow of ``graph`` and execute it; the run's id."""
    workflow_id = await create_workflow(factory, account, graph, name)
    return (await execute(factory, account, workflow_id, input))["run"]["id"]


async def run_graph(
    factory: Factory, account: Account, graph: dict, input: Any = None
) -> dict[str, Any]:
    """Create, execute and wait for a workflow of ``graph``; the run as the API shows it."""
    return await wait_for(factory, account, await start_run(factory, account, graph, input))


async def cancel_run(factory: Factory, account: Account, run_id: str) -> dict[str, Any]:
    """The runCancel payload (no top-level errors allowed)."""
    body = await factory.gql(CANCEL, {"id": run_id}, token=account.token)
    assert "errors" not in body, body
    return body["data"]["runCancel"]


async def read_run(factory: Factory, account: Account, run_id: str) -> dict[str, Any]:
    """The run as RunDetail shows it."""
    body = await factory.gql(
        f"query($id: ID!) {{ run(id: $id) {{ {RUN_FIELDS} }} }}",
        {"id": run_id},
        token=account.token,
    )
    assert "errors" not in body, body
    return body["data"]["run"]


async def wait_for(
    factory: Factory,
    account: Account,
    run_id: str,
    statuses: set[str] = TERMINAL,
    timeout: float = 20,
) -> dict[str, Any]:
    """Poll the run until its status is one of ``statuses``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        run = await read_run(factory, account, run_id)
        if run["status"] in statuses:
            return run
        assert loop.time() < deadline, f"run still {run['status']}: {run}"
        await asyncio.sleep(0.05)


def steps_by_node(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The run's steps keyed by node id."""
    return {step["nodeId"]: step for step in run["steps"]}


async def wait_step(
    factory: Factory, owner, run_id: str, node_id: str, status: str, timeout: float = 20
) -> dict:
    """Poll the run until step ``node_id`` has ``status``; the run then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        run = await read_run(factory, owner, run_id)
        if steps_by_node(run)[node_id]["status"] == status:
            return run
        assert loop.time() < deadline, run
        await asyncio.sleep(0.05)
