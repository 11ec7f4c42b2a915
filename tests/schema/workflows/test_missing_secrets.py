"""MISSING_SECRET: saving or cloning a graph that reads a secret its workspace does not have
says so, one warning per name, at the first node that reads it."""

from __future__ import annotations

from typing import Any

from tests.factories import Account, Factory, gid
from tests.runs import flow, node, publish
from tests.secrets import set_secret

DIAGNOSTICS = "diagnostics { severity code message path nodeId }"
CLONE = f"""mutation($i: TemplateCloneInput!) {{ templateClone(input: $i) {{
  workflow {{ id currentVersion {{ number {DIAGNOSTICS} }} }} userErrors {{ code message }} }} }}"""
SAVE = f"""mutation($i: WorkflowSaveInput!) {{ workflowSave(input: $i) {{
  workflow {{ currentVersion {{ number {DIAGNOSTICS} }} }} userErrors {{ code message }} }} }}"""
ROLLBACK = f"""mutation($i: WorkflowRollbackInput!) {{ workflowRollback(input: $i) {{
  workflow {{ currentVersion {{ number {DIAGNOSTICS} }} }} userErrors {{ code message }} }} }}"""
CREATE = f"""mutation($i: WorkflowCreateInput!) {{ workflowCreate(input: $i) {{
  workflow {{ id currentVersion {{ number {DIAGNOSTICS} }} }} userErrors {{ code message }} }} }}"""
GRAPH = "query($id: ID!) { workflow(id: $id) { currentVersion { graph } } }"
ACTION = "an owner sets it with secretSet before the workflow runs."


def missing(name: str, nodes: list[str], path: list[str]) -> dict[str, Any]:
    used = ", ".join(f'"{n}"' for n in nodes)
    return {
        "severity": "WARNING",
        "code": "MISSING_SECRET",
        "message": f'Secret "{name}" is not set in this workspace '
        f"(used by node{'s' if len(nodes) > 1 else ''} {used}): {ACTION}",
        "path": path,
        "nodeId": nodes[0],
    }


async def clone(factory: Factory, owner: Account, slug: str) -> dict[str, Any]:
    body = await factory.gql(
        CLONE,
        {"i": {"templateId": gid("Template", slug), "workspaceId": owner.workspace_id}},
        token=owner.token,
    )
    assert "errors" not in body, body
    return body["data"]["templateClone"]


async def save(factory: Factory, owner: Account, workflow_id: str, base: int) -> dict[str, Any]:
    graph = (await factory.gql(GRAPH, {"id": workflow_id}, token=owner.token))["data"]
    body = await factory.gql(
        SAVE,
        {
            "i": {
                "workflowId": workflow_id,
                "graph": graph["workflow"]["currentVersion"]["graph"],
                "baseVersion": base,
            }
        },
        token=owner.token,
    )
    assert "errors" not in body, body
    return body["data"]["workflowSave"]


async def test_cloning_a_template_that_needs_secrets_names_each_missing_one(
    factory: Factory,
) -> None:
    owner = await factory.owner()

    cloned = await clone(factory, owner, "classify-feedback-with-ai")

    assert cloned["userErrors"] == []
    assert cloned["workflow"]["currentVersion"]["diagnostics"] == [
        missing("OPENAI_API_KEY", ["classify"], ["nodes", "1", "data", "apiKeySecret"]),
        missing(
            "ISSUES_API_KEY",
            ["issue"],
            ["nodes", "3", "data", "headers", "Authorization"],
        ),
        missing(
            "PRODUCT_API_KEY",
            ["idea"],
            ["nodes", "4", "data", "headers", "Authorization"],
        ),
        missing(
            "CHAT_WEBHOOK_TOKEN",
            ["kudos"],
            ["nodes", "5", "data", "headers", "Authorization"],
        ),
    ]


async def test_a_secret_set_in_the_workspace_clears_its_warning_at_the_next_save_and_another_workspaces_does_not(
    factory: Factory,
) -> None:
    # Given a clone of a template that reads CHAT_WEBHOOK_TOKEN, and another workspace that
    # has a secret of that name
    owner = await factory.owner("Acme")
    globex = await factory.owner("Globex")
    assert (await set_secret(factory, globex, "CHAT_WEBHOOK_TOKEN", "xoxb-globex"))[
        "userErrors"
    ] == []
    cloned = await clone(factory, owner, "notify-chat-on-webhook")
    workflow_id = cloned["workflow"]["id"]
    warning = cloned["workflow"]["currentVersion"]["diagnostics"]

    # When the workflow is saved again: still missing (Globex's does not count)
    still = await save(factory, owner, workflow_id, 1)
    # When its own workspace sets it and saves again, and rolls back to version 1
    assert (await set_secret(factory, owner, "CHAT_WEBHOOK_TOKEN", "xoxb-acme"))["userErrors"] == []
    cleared = await save(factory, owner, workflow_id, 2)
    rolled = await factory.gql(
        ROLLBACK, {"i": {"workflowId": workflow_id, "toVersion": 1}}, token=owner.token
    )

    # Then version 1 and 2 warned, version 3 and its rollback copy do not
    [only] = warning
    assert (only["code"], only["nodeId"]) == ("MISSING_SECRET", "post")
    assert only["message"].startswith('Secret "CHAT_WEBHOOK_TOKEN" is not set in this workspace')
    assert still["workflow"]["currentVersion"] == {"number": 2, "diagnostics": warning}
    assert cleared["workflow"]["currentVersion"] == {"number": 3, "diagnostics": []}
    assert rolled["data"]["workflowRollback"]["workflow"]["currentVersion"] == {
        "number": 4,
        "diagnostics": [],
    }


async def test_a_missing_secret_does_not_stop_publishing_or_running(factory: Factory) -> None:
    # A warning about the workspace at save time, not about the graph: the secret may be set
    # later, and a run whose secret is still missing fails at its node, saying so
    owner = await factory.owner()
    graph = flow(
        node("t", "trigger"), node("out", "output", value="{{ secrets.LATER }}"), handle="out"
    )
    created = await factory.gql(
        CREATE,
        {"i": {"workspaceId": owner.workspace_id, "name": "Later", "graph": graph}},
        token=owner.token,
    )
    workflow = created["data"]["workflowCreate"]["workflow"]

    published = await publish(factory, owner, workflow["id"], 1)

    assert workflow["currentVersion"]["diagnostics"] == [
        missing("LATER", ["out"], ["nodes", "1", "data", "value"])
    ]
    assert published["userErrors"] == []
    assert published["workflow"]["publishedVersion"] == {"number": 1}


async def test_many_odd_and_long_secret_names_are_named_within_bounds(factory: Factory) -> None:
    owner = await factory.owner()
    long_name = "K" * 3000
    nodes = [node("t", "trigger")]
    # 60 nodes each reading its own missing secret, one of them twice and by index
    for i in range(60):
        nodes.append(node(f"n{i}", "transform.set", fields={"v": f"{{{{ secrets.S{i} }}}}"}))
    nodes.append(
        node(
            "odd",
            "transform.set",
            fields={
                "a": "{{ secrets['with space'] + secrets.S0 }}",
                "b": f"{{{{ secrets.{long_name} }}}}",
                "not": "secrets.S99 outside braces, {{ 'secrets.S98' }} in a literal",
            },
        )
    )
    graph = flow(*nodes, handle="out")
    created = await factory.gql(
        CREATE,
        {"i": {"workspaceId": owner.workspace_id, "name": "Many", "graph": graph}},
        token=owner.token,
    )
    diagnostics = created["data"]["workflowCreate"]["workflow"]["currentVersion"]["diagnostics"]

    assert [d["code"] for d in diagnostics] == ["MISSING_SECRET"] * 51
    assert diagnostics[0] == missing("S0", ["n0", "odd"], ["nodes", "1", "data", "fields", "v"])
    assert diagnostics[49]["message"].startswith('Secret "S49" ')
    # S50 … S59, "with space" and the long one: counted, not listed
    assert diagnostics[50] == {
        "severity": "WARNING",
        "code": "MISSING_SECRET",
        "message": "12 more secrets used by this graph are not set in this workspace.",
        "path": [],
        "nodeId": None,
    }
    assert "S98" not in str(diagnostics)
    assert "S99" not in str(diagnostics)
