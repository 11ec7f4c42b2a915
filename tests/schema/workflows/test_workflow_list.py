"""The workflow list: newest-updated first, search, keyset pages, and no N+1."""

from __future__ import annotations

from typing import Any

from app.auth.principal import Principal
from app.models import Role
from app.services.graphs import GraphPolicy
from app.services.workflows import create_workflow
from app.settings import Settings
from tests.factories import Account, Factory, Wire

LIST = """
query WorkflowList($workspaceId: ID!, $first: Int!, $after: String, $search: String) {
  workspace(id: $workspaceId) {
    id
    name
    workflows(first: $first, after: $after, search: $search) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges {
        cursor
        node {
          id name description isTemplate updatedAt
          currentVersion { number createdAt createdBy { id name } }
        }
      }
    }
  }
}"""


async def make_workflows(factory: Factory, owner: Account, names: list[str]) -> None:
    policy = GraphPolicy.from_settings(Settings(database_url=None))
    async with factory.sessions() as session:
        principal = Principal(user=owner.user, roles={owner.workspace.id: Role.OWNER})
        for name in names:
            await create_workflow(
                session,
                principal=principal,
                workspace_id=owner.workspace.id,
                name=name,
                description=None,
                graph={"nodes": [], "edges": [], "name": name},
                policy=policy,
            )
            await session.commit()


async def names(factory: Factory, owner: Account, **variables: Any) -> tuple[list[str], dict]:
    body = await factory.gql(
        LIST, {"workspaceId": owner.workspace_id, **variables}, token=owner.token
    )
    connection = body["data"]["workspace"]["workflows"]
    return [e["node"]["name"] for e in connection["edges"]], connection


async def test_newest_updated_first_and_saving_moves_to_top(factory: Factory) -> None:
    owner = await factory.owner()
    await make_workflows(factory, owner, ["one", "two", "three"])
    listed, _ = await names(factory, owner, first=10)
    assert listed == ["three", "two", "one"]

    one_id = (await names(factory, owner, first=10))[1]["edges"][2]["node"]["id"]
    await factory.gql(
        "mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }",
        {"i": {"workflowId": one_id, "graph": {"nodes": []}, "baseVersion": 1}},
        token=owner.token,
    )

    assert (await names(factory, owner, first=10))[0] == ["one", "three", "two"]


async def test_search_matches_names_case_insensitively_and_literally(factory: Factory) -> None:
    owner = await factory.owner()
    await make_workflows(
        factory, owner, ["Invoice sync", "Daily INVOICES", "Payroll", "100% done", "a_b"]
    )

    assert (await names(factory, owner, first=10, search="invoice"))[0] == [
        "Daily INVOICES",
        "Invoice sync",
    ]
    assert (await names(factory, owner, first=10, search="%"))[0] == ["100% done"]
    assert (await names(factory, owner, first=10, search="_"))[0] == ["a_b"]
    listed, connection = await names(factory, owner, first=10, search="nothing like it")
    assert listed == []
    assert connection["totalCount"] == 0
    assert connection["pageInfo"] == {"hasNextPage": False, "endCursor": None}


async def test_pages_cover_every_workflow_once(factory: Factory) -> None:
    owner = await factory.owner()
    expected = [f"wf {i:02d}" for i in range(23)]
    await make_workflows(factory, owner, expected)

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        listed, connection = await names(factory, owner, first=10, after=after)
        seen += listed
        pages += 1
        assert connection["totalCount"] == 23
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
        assert connection["edges"][-1]["cursor"] == after

    assert pages == 3
    assert seen == list(reversed(expected))


async def test_list_page_statement_count_does_not_grow_with_page_size(
    factory: Factory, wire: Wire
) -> None:
    owner = await factory.owner()
    await make_workflows(factory, owner, [f"wf {i}" for i in range(50)])

    async def measure(first: int) -> int:
        variables = {"workspaceId": owner.workspace_id, "first": first}
        count, body = await wire.statements(LIST, variables, token=owner.token)
        assert len(body["data"]["workspace"]["workflows"]["edges"]) == first
        return count

    await measure(1)  # the token's first use: kept by the process

    # workspace, page, count, versions, users (createdBy), counted on the wire whichever
    # library sends them; sign-in from the principal cache.
    assert {first: await measure(first) for first in (1, 10, 50)} == {1: 5, 10: 5, 50: 5}


AUTOMATION = """
query($workspaceId: ID!, $first: Int!) {
  workspace(id: $workspaceId) {
    workflows(first: $first) {
      edges { node {
        id
        schedule { enabled cron timezone nextFireAt recentFires(limit: 3) { fireAt outcome } }
        webhook { enabled url requireSignature }
      } }
    }
  }
}"""


async def test_schedules_fires_and_webhooks_of_a_page_load_in_one_statement_each(
    factory: Factory, wire: Wire
) -> None:
    # Given 50 workflows, each with a schedule that has fired and a webhook
    owner = await factory.owner()
    await make_workflows(factory, owner, [f"wf {i}" for i in range(50)])
    await factory.execute(
        """UPDATE workflows SET schedule_cron = '0 9 * * *', schedule_timezone = 'UTC',
             schedule_enabled = true, schedule_next_fire_at = now() + interval '1 day'"""
    )
    await factory.execute(
        """INSERT INTO schedule_fires (id, workspace_id, workflow_id, fire_at, outcome)
           SELECT gen_random_uuid(), workspace_id, id, now() - d * interval '1 day', 'SKIPPED'
           FROM workflows, generate_series(1, 4) d"""
    )
    await factory.execute(
        """INSERT INTO webhooks (id, workspace_id, workflow_id, token)
           SELECT gen_random_uuid(), workspace_id, id, md5(id::text) FROM workflows"""
    )

    async def measure(first: int) -> int:
        variables = {"workspaceId": owner.workspace_id, "first": first}
        count, body = await wire.statements(AUTOMATION, variables, token=owner.token)
        edges = body["data"]["workspace"]["workflows"]["edges"]
        assert len(edges) == first
        assert all(len(e["node"]["schedule"]["recentFires"]) == 3 for e in edges)
        assert all(e["node"]["webhook"]["enabled"] for e in edges)
        return count

    await measure(1)  # the token's first use: kept by the process

    # page, fires, and webhooks (with the session's ping, BEGIN and ROLLBACK); no workspace
    # read (only its id is asked); sign-in from the principal cache.
    assert {first: await measure(first) for first in (1, 10, 50)} == {1: 6, 10: 6, 50: 6}
