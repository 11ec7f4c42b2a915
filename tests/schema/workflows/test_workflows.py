"""Workflows through GraphQL over HTTP: create, save, history, versions, diff, rollback, delete."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from tests.factories import Account, Factory
from tests.hostile import user_error

VERSION_FIELDS = """
  id number message createdAt restoredFrom graph
  createdBy { id name }
  diagnostics { severity code message nodeId edgeId }
"""
CREATE = f"""
mutation($input: WorkflowCreateInput!) {{
  workflowCreate(input: $input) {{
    workflow {{ id name description isTemplate currentVersion {{ {VERSION_FIELDS} }} }}
    userErrors {{ field code message }}
  }}
}}"""
SAVE = f"""
mutation($input: WorkflowSaveInput!) {{
  workflowSave(input: $input) {{
    workflow {{ id name updatedAt currentVersion {{ {VERSION_FIELDS} }} }}
    userErrors {{ field code message }}
  }}
}}"""
ROLLBACK = f"""
mutation($input: WorkflowRollbackInput!) {{
  workflowRollback(input: $input) {{
    workflow {{ id currentVersion {{ {VERSION_FIELDS} }} }}
    userErrors {{ field code message }}
  }}
}}"""
HISTORY = """
query($id: ID!, $first: Int!, $after: String) {
  workflow(id: $id) {
    versions(first: $first, after: $after) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { node { number message restoredFrom } }
    }
  }
}"""

# What React Flow's toObject() gives, with the keys a builder keeps beside the engine's.
REACT_FLOW_GRAPH: dict[str, Any] = {
    "nodes": [
        {
            "id": "trigger",
            "type": "trigger",
            "position": {"x": 0, "y": 0},
            "data": {"label": "Start", "inputSchema": {"type": "object"}},
            "measured": {"width": 180, "height": 44},
            "selected": False,
            "dragging": False,
            "style": {"border": "1px solid #777", "opacity": 0.5},
        },
        {
            "id": "call",
            "type": "http.request",
            "position": {"x": 280.5, "y": -12.25},
            "data": {"label": "Call", "method": "GET", "url": "https://api.example.com/x"},
            "measured": {"width": 200, "height": 60},
            "zIndex": 3,
        },
    ],
    "edges": [
        {
            "id": "e1",
            "source": "trigger",
            "target": "call",
            "sourceHandle": "out",
            "targetHandle": None,
            "animated": True,
            "markerEnd": {"type": "arrowclosed", "width": 20},
            "label": "go ✓ 日本",
        }
    ],
    "viewport": {"x": -12.5, "y": 40, "zoom": 1.25},
    "builderMeta": {"grid": [16, 16], "snap": True, "nothing": None, "big": 9007199254740993},
}


async def create(factory: Factory, owner: Account, name: str = "Flow", graph: Any = None) -> dict:
    body = await factory.gql(
        CREATE,
        {"input": {"workspaceId": owner.workspace_id, "name": name, "graph": graph}},
        token=owner.token,
    )
    payload = body["data"]["workflowCreate"]
    assert payload["userErrors"] == []
    return payload["workflow"]


async def save(
    factory: Factory, owner: Account, workflow_id: str, graph: Any, base: int, **extra: Any
) -> dict:
    body = await factory.gql(
        SAVE,
        {"input": {"workflowId": workflow_id, "graph": graph, "baseVersion": base, **extra}},
        token=owner.token,
    )
    return body["data"]["workflowSave"]


async def test_create_without_graph_starts_empty_at_version_1(factory: Factory) -> None:
    owner = await factory.owner()

    workflow = await create(factory, owner, name="  Invoices  ")

    assert workflow["name"] == "Invoices"
    assert workflow["description"] == ""
    assert workflow["isTemplate"] is False
    version = workflow["currentVersion"]
    assert version["number"] == 1
    assert version["graph"] == {"nodes": [], "edges": []}
    assert version["restoredFrom"] is None
    assert version["message"] is None
    assert version["diagnostics"] == []
    assert version["createdBy"]["name"] == owner.user.name


async def test_react_flow_graph_round_trips_key_for_key(factory: Factory) -> None:
    owner = await factory.owner()

    created = await create(factory, owner, graph=REACT_FLOW_GRAPH)
    reread = await factory.gql(
        "query($id: ID!) { workflow(id: $id) { currentVersion { graph } } }",
        {"id": created["id"]},
        token=owner.token,
    )

    assert created["currentVersion"]["graph"] == REACT_FLOW_GRAPH
    graph = reread["data"]["workflow"]["currentVersion"]["graph"]
    assert graph == REACT_FLOW_GRAPH
    assert [n["id"] for n in graph["nodes"]] == ["trigger", "call"]
    assert graph["builderMeta"]["grid"] == [16, 16]
    assert isinstance(graph["nodes"][1]["position"]["x"], float)
    assert isinstance(graph["viewport"]["y"], int)


async def test_names_are_unique_per_workspace_case_insensitive(factory: Factory) -> None:
    owner = await factory.owner()
    other = await factory.owner()
    await create(factory, owner, name="Billing")
    before = await factory.snapshot()

    body = await factory.gql(
        CREATE, {"input": {"workspaceId": owner.workspace_id, "name": "BILLING"}}, token=owner.token
    )

    assert body["data"]["workflowCreate"] == {
        "workflow": None,
        "userErrors": [
            user_error(
                ("input", "name"),
                "NOT_UNIQUE",
                'A workflow named "BILLING" already exists in this workspace.',
            )
        ],
    }
    assert await factory.snapshot() == before
    # Another workspace may use the same name.
    assert (await create(factory, other, name="billing"))["name"] == "billing"


async def test_save_writes_the_next_version_and_reports_warnings(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)
    graph = {
        "nodes": [
            {"id": "t", "type": "trigger", "data": {}},
            {"id": "lonely", "type": "output", "data": {"value": "{{ input }}"}},
        ],
        "edges": [],
    }

    payload = await save(
        factory, owner, workflow["id"], graph, 1, message="Add output", name="Renamed"
    )

    assert payload["userErrors"] == []
    saved = payload["workflow"]
    assert saved["name"] == "Renamed"
    version = saved["currentVersion"]
    assert version["number"] == 2
    assert version["message"] == "Add output"
    assert version["graph"] == graph
    assert version["diagnostics"] == [
        {
            "severity": "WARNING",
            "code": "UNREACHABLE_NODE",
            "message": version["diagnostics"][0]["message"],
            "nodeId": "lonely",
            "edgeId": None,
        }
    ]
    assert await factory.scalar("SELECT count(*) FROM workflow_versions") == 2


async def test_graph_with_errors_is_refused_with_paths_and_nothing_written(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)
    before = await factory.snapshot()
    graph = {
        "nodes": [{"id": "a", "type": "trigger"}, {"id": "a", "type": "output"}],
        "edges": [{"id": "e", "source": "a", "target": "ghost"}],
    }

    payload = await save(factory, owner, workflow["id"], graph, 1)

    assert payload["workflow"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        (["input", "graph", "nodes", "1", "id"], "GRAPH_INVALID"),
        (["input", "graph", "edges", "0", "target"], "GRAPH_INVALID"),
    ]
    assert await factory.snapshot() == before
    assert await factory.scalar("SELECT current_version FROM workflows") == 1


async def test_stale_base_version_is_a_conflict_and_writes_nothing(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)
    assert (await save(factory, owner, workflow["id"], {"nodes": []}, 1))["userErrors"] == []
    before = await factory.snapshot()

    payload = await save(factory, owner, workflow["id"], {"nodes": [], "edges": []}, 1)

    assert payload == {
        "workflow": None,
        "userErrors": [
            user_error(
                ("input", "baseVersion"),
                "VERSION_CONFLICT",
                (
                    "Version 2 was saved after version 1; "
                    "reload the workflow and apply your change again."
                ),
            )
        ],
    }
    assert await factory.snapshot() == before


async def test_racing_saves_from_one_base_one_wins_numbers_never_skip(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)

    results = await asyncio.gather(
        *(
            save(factory, owner, workflow["id"], {"nodes": [], "edges": [], "n": i}, 1)
            for i in range(8)
        )
    )

    winners = [r for r in results if not r["userErrors"]]
    losers = [r for r in results if r["userErrors"]]
    assert len(winners) == 1
    assert {e["code"] for r in losers for e in r["userErrors"]} == {"VERSION_CONFLICT"}
    assert winners[0]["workflow"]["currentVersion"]["number"] == 2
    numbers = await factory.scalar(
        "SELECT array_agg(number ORDER BY number) FROM workflow_versions"
    )
    assert numbers == [1, 2]


async def test_sequential_saves_number_versions_without_gaps(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)

    for base in range(1, 6):
        payload = await save(factory, owner, workflow["id"], {"nodes": [], "v": base + 1}, base)
        assert payload["workflow"]["currentVersion"]["number"] == base + 1

    numbers = await factory.scalar(
        "SELECT array_agg(number ORDER BY number) FROM workflow_versions"
    )
    assert numbers == [1, 2, 3, 4, 5, 6]


async def test_history_is_newest_first_and_pages_with_cursors(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)
    for base in range(1, 5):
        await save(factory, owner, workflow["id"], {"nodes": []}, base, message=f"save {base + 1}")

    first = await factory.gql(HISTORY, {"id": workflow["id"], "first": 2}, token=owner.token)
    page1 = first["data"]["workflow"]["versions"]
    second = await factory.gql(
        HISTORY,
        {"id": workflow["id"], "first": 10, "after": page1["pageInfo"]["endCursor"]},
        token=owner.token,
    )
    page2 = second["data"]["workflow"]["versions"]

    assert page1["totalCount"] == 5
    assert [e["node"]["number"] for e in page1["edges"]] == [5, 4]
    assert page1["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["number"] for e in page2["edges"]] == [3, 2, 1]
    assert page2["pageInfo"]["hasNextPage"] is False
    assert page2["edges"][0]["node"]["message"] == "save 3"


async def test_read_any_version_by_number(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner, graph={"nodes": [], "edges": [], "first": True})
    await save(factory, owner, workflow["id"], {"nodes": [], "edges": [], "second": True}, 1)
    query = (
        "query($id: ID!, $n: Int!) { workflow(id: $id) { version(number: $n) { number graph } } }"
    )

    one = await factory.gql(query, {"id": workflow["id"], "n": 1}, token=owner.token)
    missing = await factory.gql(query, {"id": workflow["id"], "n": 7}, token=owner.token)

    assert one["data"]["workflow"]["version"] == {
        "number": 1,
        "graph": {"nodes": [], "edges": [], "first": True},
    }
    assert missing["data"]["workflow"]["version"] is None


async def test_diff_reports_nodes_and_edges_by_id(factory: Factory) -> None:
    owner = await factory.owner()
    v1 = {
        "nodes": [
            {"id": "t", "type": "trigger", "position": {"x": 0, "y": 0}, "data": {}},
            {"id": "a", "type": "output", "position": {"x": 1, "y": 0}, "data": {"value": "1"}},
            {"id": "gone", "type": "output", "data": {}},
        ],
        "edges": [
            {"id": "e1", "source": "t", "target": "a"},
            {"id": "e2", "source": "t", "target": "gone"},
        ],
    }
    v2 = copy.deepcopy(v1)
    v2["nodes"][1]["position"] = {"x": 5, "y": 5}
    v2["nodes"][1]["data"] = {"value": "2"}
    del v2["nodes"][2]
    v2["nodes"].append({"id": "new", "type": "output", "data": {}})
    v2["edges"] = [
        {"id": "e1", "source": "t", "target": "a"},
        {"id": "e3", "source": "t", "target": "new"},
    ]
    workflow = await create(factory, owner, graph=v1)
    await save(factory, owner, workflow["id"], v2, 1)

    body = await factory.gql(
        """query($id: ID!) { workflow(id: $id) { diff(from: 1, to: 2) {
             nodesAdded nodesRemoved nodesChanged { nodeId fields } edgesAdded edgesRemoved edgesChanged
           } } }""",
        {"id": workflow["id"]},
        token=owner.token,
    )

    assert body["data"]["workflow"]["diff"] == {
        "nodesAdded": ["new"],
        "nodesRemoved": ["gone"],
        "nodesChanged": [{"nodeId": "a", "fields": ["data", "position"]}],
        "edgesAdded": ["e3"],
        "edgesRemoved": ["e2"],
        "edgesChanged": [],
    }


async def test_rollback_writes_a_new_version_copying_the_old_graph(factory: Factory) -> None:
    owner = await factory.owner()
    original = {"nodes": [{"id": "t", "type": "trigger", "data": {"k": [1, 2]}}], "edges": []}
    workflow = await create(factory, owner, graph=original)
    await save(factory, owner, workflow["id"], {"nodes": [], "edges": []}, 1)

    body = await factory.gql(
        ROLLBACK, {"input": {"workflowId": workflow["id"], "toVersion": 1}}, token=owner.token
    )

    payload = body["data"]["workflowRollback"]
    assert payload["userErrors"] == []
    version = payload["workflow"]["currentVersion"]
    assert version["number"] == 3
    assert version["restoredFrom"] == 1
    assert version["graph"] == original
    assert version["message"] == "Rollback to version 1"
    # History is never rewritten.
    graphs = await factory.scalar("SELECT json_agg(graph ORDER BY number) FROM workflow_versions")
    assert graphs == [original, {"nodes": [], "edges": []}, original]


async def test_rollback_with_stale_base_version_conflicts(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)
    await save(factory, owner, workflow["id"], {"nodes": []}, 1)
    before = await factory.snapshot()

    body = await factory.gql(
        ROLLBACK,
        {"input": {"workflowId": workflow["id"], "toVersion": 1, "baseVersion": 1}},
        token=owner.token,
    )

    assert [e["code"] for e in body["data"]["workflowRollback"]["userErrors"]] == [
        "VERSION_CONFLICT"
    ]
    assert await factory.snapshot() == before


async def test_delete_removes_the_workflow_and_its_versions(factory: Factory) -> None:
    owner = await factory.owner()
    workflow = await create(factory, owner)
    await save(factory, owner, workflow["id"], {"nodes": []}, 1)

    body = await factory.gql(
        "mutation($id: ID!) { workflowDelete(id: $id) { deletedId userErrors { code } } }",
        {"id": workflow["id"]},
        token=owner.token,
    )
    after = await factory.gql(
        "query($id: ID!) { workflow(id: $id) { id } }", {"id": workflow["id"]}, token=owner.token
    )

    assert body["data"]["workflowDelete"] == {"deletedId": workflow["id"], "userErrors": []}
    assert after["data"]["workflow"] is None
    assert after["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await factory.scalar("SELECT count(*) FROM workflow_versions") == 0


async def test_validate_graph_runs_the_checks_without_saving(factory: Factory) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()

    body = await factory.gql(
        """query($g: JSON!) { validateGraph(graph: $g) { severity code message nodeId edgeId } }""",
        {
            "g": {
                "nodes": [{"id": "x", "type": "trigger"}],
                "edges": [{"id": "e", "source": "x", "target": "y"}],
            }
        },
        token=owner.token,
    )

    assert body["data"]["validateGraph"] == [
        {
            "severity": "ERROR",
            "code": "EDGE_TARGET_UNKNOWN",
            "message": 'Edge "e" points to node "y", which does not exist.',
            "nodeId": None,
            "edgeId": "e",
        }
    ]
    assert await factory.snapshot() == before
