"""Connections nested under a list (each workflow's versions and runs): one statement per
level whatever the page sizes, each parent's page right (cursors included), tenants apart."""

from __future__ import annotations

from typing import Any

from app.services.pagination import encode_cursor
from tests.factories import Account, Factory, Wire
from tests.schema.workflows.test_workflow_list import make_workflows

LIST = """
query($ws: ID!, $first: Int!, $versions: Int!, $after: String) {
  workspace(id: $ws) {
    workflows(first: $first) {
      edges { node {
        name
        versions(first: $versions, after: $after) {
          totalCount
          pageInfo { hasNextPage endCursor }
          edges { cursor node { number message } }
        }
      } }
    }
  }
}"""
RUNS = """
query($ws: ID!, $first: Int!, $runs: Int!, $status: RunStatus) {
  workspace(id: $ws) {
    workflows(first: $first) {
      edges { node {
        name
        runs(first: $runs, status: $status) {
          totalCount
          pageInfo { hasNextPage endCursor }
          edges { cursor node { id status trigger queuedAt version { number } } }
        }
      } }
    }
  }
}"""
# Run i of a workflow is queued i minutes ago; every third one FAILED, the others SUCCEEDED.
GENERATE_RUNS = """
INSERT INTO runs (id, workspace_id, workflow_id, version_id, version_number, status, trigger,
                  input_hash, queued_at)
SELECT gen_random_uuid(), w.workspace_id, w.id, v.id, 1,
       CASE WHEN i % 3 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END, 'MANUAL', '',
       now() - i * interval '1 minute'
FROM workflows w JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = 1
CROSS JOIN generate_series(1, :runs) AS i
WHERE w.workspace_id = :ws"""


async def with_versions(factory: Factory, owner: Account, count: int, versions: int) -> None:
    """``count`` workflows "wf 00" … of ``versions`` versions each ("save N" messages)."""
    await make_workflows(factory, owner, [f"wf {i:02d}" for i in range(count)])
    await factory.execute(
        """INSERT INTO workflow_versions (id, workspace_id, workflow_id, number, graph, message)
           SELECT gen_random_uuid(), workspace_id, id, n, '{"nodes": [], "edges": []}',
                  'save ' || n
           FROM workflows CROSS JOIN generate_series(2, :versions) AS n
           WHERE workspace_id = :ws""",
        versions=versions,
        ws=owner.workspace.id,
    )
    await factory.execute(
        "UPDATE workflows SET current_version = :versions WHERE workspace_id = :ws",
        versions=versions,
        ws=owner.workspace.id,
    )


def pages(body: dict[str, Any], field: str) -> dict[str, dict[str, Any]]:
    """Each listed workflow's nested connection, by name."""
    edges = body["data"]["workspace"]["workflows"]["edges"]
    return {e["node"]["name"]: e["node"][field] for e in edges}


async def test_versions_under_the_list_take_one_statement_whatever_the_page_size(
    factory: Factory, wire: Wire
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 50, 6)
    variables = {"ws": owner.workspace_id, "versions": 5}
    await wire.factory.gql(LIST, {**variables, "first": 1}, token=owner.token)  # token's first use

    counts = {}
    for first in (1, 10, 50):
        counts[first], body = await wire.statements(
            LIST, {**variables, "first": first}, token=owner.token
        )
        listed = pages(body, "versions")
        assert len(listed) == first
        assert all(
            [e["node"]["number"] for e in p["edges"]] == [6, 5, 4, 3, 2] for p in listed.values()
        )

    # The page of workflows, and every workflow's versions in one statement; none for the
    # workspace (only its id is asked: the membership says it exists), none to sign in (the
    # process keeps the token's principal).
    assert counts == {1: 2, 10: 2, 50: 2}


async def test_runs_under_the_list_take_one_statement_each_whatever_the_page_size(
    factory: Factory, wire: Wire
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 50, 2)
    await factory.execute(GENERATE_RUNS, runs=4, ws=owner.workspace.id)
    variables = {"ws": owner.workspace_id, "runs": 3, "status": None}
    await wire.factory.gql(RUNS, {**variables, "first": 1}, token=owner.token)

    counts = {}
    for first in (1, 10, 50):
        counts[first], body = await wire.statements(
            RUNS, {**variables, "first": first}, token=owner.token
        )
        listed = pages(body, "runs")
        assert len(listed) == first
        assert all(len(p["edges"]) == 3 and p["totalCount"] == 4 for p in listed.values())

    # The page of workflows, every workflow's runs, their counts, and the versions of every
    # run: one statement each.
    assert counts == {1: 4, 10: 4, 50: 4}


async def test_each_workflow_gets_its_own_page_of_versions_with_cursors(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 3, 4)
    # wf 01 gets a fifth version and wf 02 keeps only its first: pages of different lengths.
    await factory.execute(
        """INSERT INTO workflow_versions (id, workspace_id, workflow_id, number, graph, message)
           SELECT gen_random_uuid(), workspace_id, id, 5, '{}', 'save 5' FROM workflows
           WHERE name = 'wf 01'"""
    )
    await factory.execute(
        """DELETE FROM workflow_versions WHERE number > 1
           AND workflow_id = (SELECT id FROM workflows WHERE name = 'wf 02')"""
    )
    await factory.execute(
        """UPDATE workflows SET current_version = CASE name WHEN 'wf 01' THEN 5
           WHEN 'wf 02' THEN 1 ELSE 4 END"""
    )

    body = await factory.gql(
        LIST, {"ws": owner.workspace_id, "first": 3, "versions": 2}, token=owner.token
    )
    listed = pages(body, "versions")
    page = {
        name: ([e["node"]["number"] for e in p["edges"]], p["pageInfo"], p["totalCount"])
        for name, p in listed.items()
    }
    assert page == {
        "wf 00": ([4, 3], {"hasNextPage": True, "endCursor": encode_cursor([3])}, 4),
        "wf 01": ([5, 4], {"hasNextPage": True, "endCursor": encode_cursor([4])}, 5),
        "wf 02": ([1], {"hasNextPage": False, "endCursor": encode_cursor([1])}, 1),
    }
    assert [e["cursor"] for e in listed["wf 01"]["edges"]] == [
        encode_cursor([5]),
        encode_cursor([4]),
    ]
    assert listed["wf 00"]["edges"][0]["node"]["message"] == "save 4"

    # The same cursor continues each parent's own list.
    body = await factory.gql(
        LIST,
        {"ws": owner.workspace_id, "first": 3, "versions": 2, "after": encode_cursor([4])},
        token=owner.token,
    )
    after = {
        n: [e["node"]["number"] for e in p["edges"]] for n, p in pages(body, "versions").items()
    }
    assert after == {"wf 00": [3, 2], "wf 01": [3, 2], "wf 02": [1]}
    hasnext = {n: p["pageInfo"]["hasNextPage"] for n, p in pages(body, "versions").items()}
    assert hasnext == {"wf 00": True, "wf 01": True, "wf 02": False}


ALIASED = """
query($ws: ID!, $cursor: String) {
  workspace(id: $ws) {
    workflows(first: 2) {
      edges { node {
        name
        newest: versions(first: 1) { edges { node { number } } }
        older: versions(first: 10, after: $cursor) { edges { node { number createdAt } } }
        none: versions(first: 0) { pageInfo { hasNextPage endCursor } edges { cursor } }
      } }
    }
  }
}"""


async def test_aliased_nested_pages_keep_their_own_arguments(factory: Factory) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 2, 4)

    body = await factory.gql(
        ALIASED, {"ws": owner.workspace_id, "cursor": encode_cursor([3])}, token=owner.token
    )

    for edge in body["data"]["workspace"]["workflows"]["edges"]:
        node = edge["node"]
        assert [e["node"]["number"] for e in node["newest"]["edges"]] == [4]
        assert [e["node"]["number"] for e in node["older"]["edges"]] == [2, 1]
        assert all(e["node"]["createdAt"] for e in node["older"]["edges"])
        assert node["none"] == {"pageInfo": {"hasNextPage": True, "endCursor": None}, "edges": []}


async def test_each_workflow_gets_its_own_page_of_runs_filtered_and_counted(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 2, 1)
    await factory.execute(GENERATE_RUNS, runs=7, ws=owner.workspace.id)
    expected = {
        row["name"]: row
        for row in await factory.rows(
            """SELECT w.name, array_agg(r.id::text ORDER BY r.queued_at DESC) AS ids,
                      array_agg(r.queued_at ORDER BY r.queued_at DESC) AS at
               FROM runs r JOIN workflows w ON w.id = r.workflow_id
               WHERE r.status = 'FAILED' GROUP BY w.name"""
        )
    }

    body = await factory.gql(
        RUNS,
        {"ws": owner.workspace_id, "first": 2, "runs": 1, "status": "FAILED"},
        token=owner.token,
    )

    from schema.ids import encode_id

    for name, page in pages(body, "runs").items():
        ids = expected[name]["ids"]  # runs 3 and 6 of 7 failed
        assert page["totalCount"] == 2
        assert [e["node"]["id"] for e in page["edges"]] == [encode_id("Run", ids[0])]
        assert page["edges"][0]["node"]["status"] == "FAILED"
        assert page["edges"][0]["node"]["version"] == {"number": 1}
        cursor = encode_cursor([expected[name]["at"][0].isoformat(), ids[0]])
        assert page["edges"][0]["cursor"] == cursor
        assert page["pageInfo"] == {"hasNextPage": True, "endCursor": cursor}


async def test_nested_pages_never_reach_into_another_workspace(factory: Factory) -> None:
    ours = await factory.owner("Ours")
    theirs = await factory.owner("Theirs")
    await with_versions(factory, ours, 2, 2)
    await with_versions(factory, theirs, 2, 3)
    await factory.execute(GENERATE_RUNS, runs=2, ws=ours.workspace.id)
    await factory.execute(GENERATE_RUNS, runs=5, ws=theirs.workspace.id)
    their_workflow = await factory.scalar(
        "SELECT id FROM workflows WHERE workspace_id = :ws LIMIT 1", ws=theirs.workspace.id
    )
    from schema.ids import encode_id

    body = await factory.gql(
        LIST, {"ws": ours.workspace_id, "first": 10, "versions": 10}, token=ours.token
    )
    assert {n: p["totalCount"] for n, p in pages(body, "versions").items()} == {
        "wf 00": 2,
        "wf 01": 2,
    }
    body = await factory.gql(
        RUNS, {"ws": ours.workspace_id, "first": 10, "runs": 10, "status": None}, token=ours.token
    )
    assert {n: len(p["edges"]) for n, p in pages(body, "runs").items()} == {"wf 00": 2, "wf 01": 2}

    # Their workspace and their workflow read as not found, nested pages included.
    for query, variables in (
        (LIST, {"ws": theirs.workspace_id, "first": 10, "versions": 10}),
        (
            "query($id: ID!) { workflow(id: $id) { versions(first: 5) { totalCount } "
            "runs(first: 5) { totalCount } } }",
            {"id": encode_id("Workflow", their_workflow)},
        ),
    ):
        body = await factory.gql(query, variables, token=ours.token)
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND", body
        assert body["data"] in (None, {"workspace": None}, {"workflow": None})


EDITOR = """
query($id: ID!) {
  workflow(id: $id) {
    id name description isTemplate createdAt updatedAt
    currentVersion {
      id number message createdAt createdBy { id name } restoredFrom graph
      diagnostics { severity code message nodeId edgeId }
    }
  }
}"""


async def test_the_editor_read_is_one_statement_and_reads_only_what_it_shows(
    factory: Factory, wire: Wire
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 1, 3)
    workflow_id = await factory.scalar("SELECT id FROM workflows")
    await factory.execute("UPDATE workflow_versions SET created_by_id = :u", u=owner.user.id)
    from schema.ids import encode_id

    variables = {"id": encode_id("Workflow", workflow_id)}
    await wire.factory.gql(EDITOR, variables, token=owner.token)  # the token's first use

    with wire.counter.recording() as sent:
        count, body = await wire.statements(EDITOR, variables, token=owner.token)

    # The workflow with its newest version, its graph and its author.
    assert count == 1
    assert "workflow_versions" in sent[0]
    assert "graph" in sent[0]
    assert "JOIN users" in sent[0]
    version = body["data"]["workflow"]["currentVersion"]
    assert (version["number"], version["message"], version["graph"]) == (
        3,
        "save 3",
        {"nodes": [], "edges": []},
    )
    assert version["createdBy"] == {
        "id": encode_id("User", owner.user.id),
        "name": owner.user.name,
    }
    # As when executed field by field (a directive: no compiled plan takes it)
    directed = EDITOR.replace("updatedAt", "updatedAt @include(if: true)", 1)
    assert directed != EDITOR
    with wire.counter.recording() as sent:
        count, directed_body = await wire.statements(directed, variables, token=owner.token)
    assert (count, directed_body) == (1, body)
    assert "JOIN users" in sent[0]

    # Without `graph` (nor createdBy, description…), neither is read.
    slim = "query($id: ID!) { workflow(id: $id) { name currentVersion { number } } }"
    with wire.counter.recording() as sent:
        count, body = await wire.statements(slim, variables, token=owner.token)
    assert count == 1
    assert body["data"]["workflow"] == {"name": "wf 00", "currentVersion": {"number": 3}}
    assert "graph" not in sent[0]
    assert "description" not in sent[0]

    # Nor by the list with versions.
    with wire.counter.recording() as sent:
        await wire.statements(
            LIST, {"ws": owner.workspace_id, "first": 10, "versions": 5}, token=owner.token
        )
    assert not [s for s in sent if "graph" in s or "description" in s], sent


LAST_RUN = """
query($ws: ID!, $first: Int!) {
  workspace(id: $ws) {
    workflows(first: $first) {
      totalCount
      edges { node { name lastRun { id status queuedAt } } }
    }
  }
}"""


async def test_the_list_shows_each_workflows_newest_run_in_one_statement(
    factory: Factory, wire: Wire
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 30, 1)
    await factory.execute(GENERATE_RUNS, runs=3, ws=owner.workspace.id)
    # wf 00 has never run.
    await factory.execute(
        "DELETE FROM runs WHERE workflow_id = (SELECT id FROM workflows WHERE name = 'wf 00')"
    )
    newest = {
        row["name"]: row
        for row in await factory.rows(
            """SELECT DISTINCT ON (w.name) w.name, r.id, r.queued_at FROM runs r
               JOIN workflows w ON w.id = r.workflow_id ORDER BY w.name, r.queued_at DESC"""
        )
    }
    from schema.ids import encode_id

    variables = {"ws": owner.workspace_id, "first": 1}
    await wire.factory.gql(LAST_RUN, variables, token=owner.token)  # the token's first use
    counts = {}
    for first in (1, 10, 30):
        counts[first], body = await wire.statements(
            LAST_RUN, {**variables, "first": first}, token=owner.token
        )
        connection = body["data"]["workspace"]["workflows"]
        assert connection["totalCount"] == 30
        for edge in connection["edges"]:
            name, last = edge["node"]["name"], edge["node"]["lastRun"]
            if name == "wf 00":
                assert last is None
            else:
                assert last["id"] == encode_id("Run", newest[name]["id"])
                assert last["status"] == "SUCCEEDED"  # run 1 of each, a minute old

    # The page, the count, and every workflow's newest run.
    assert counts == {1: 3, 10: 3, 30: 3}
