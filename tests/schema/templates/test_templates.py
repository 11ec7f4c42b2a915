"""The template gallery, workspace templates, and cloning."""

from __future__ import annotations

from app.services.templates import builtin_templates
from tests.factories import Factory

TEMPLATES = (
    "query($ws: ID!) { templates(workspaceId: $ws) { id name description category source graph } }"
)
CLONE = """mutation($i: TemplateCloneInput!) {
  templateClone(input: $i) { workflow { id name currentVersion { number graph } }
                             userErrors { field code message } } }"""
SET_TEMPLATE = """mutation($i: WorkflowSetTemplateInput!) {
  workflowSetTemplate(input: $i) { workflow { id isTemplate templateCategory } userErrors { code } } }"""


async def test_templates_lists_the_gallery_then_the_workspace_templates(factory: Factory) -> None:
    owner = await factory.owner()
    created = await factory.gql(
        "mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { workflow { id } } }",
        {"i": {"workspaceId": owner.workspace_id, "name": "Our onboarding", "description": "Ours"}},
        token=owner.token,
    )
    workflow_id = created["data"]["workflowCreate"]["workflow"]["id"]
    flagged = await factory.gql(
        SET_TEMPLATE,
        {"i": {"workflowId": workflow_id, "isTemplate": True, "category": "HR"}},
        token=owner.token,
    )
    assert flagged["data"]["workflowSetTemplate"]["workflow"] == {
        "id": workflow_id,
        "isTemplate": True,
        "templateCategory": "HR",
    }

    body = await factory.gql(TEMPLATES, {"ws": owner.workspace_id}, token=owner.token)

    templates = body["data"]["templates"]
    builtin = builtin_templates()
    assert [t["name"] for t in templates] == [t.name for t in builtin] + ["Our onboarding"]
    assert {t["source"] for t in templates[: len(builtin)]} == {"BUILTIN"}
    assert templates[-1] == {
        "id": workflow_id,
        "name": "Our onboarding",
        "description": "Ours",
        "category": "HR",
        "source": "WORKSPACE",
        "graph": {"nodes": [], "edges": []},
    }


async def test_clone_copies_the_graph_into_a_new_workflow_at_version_1(factory: Factory) -> None:
    owner = await factory.owner()
    listed = await factory.gql(TEMPLATES, {"ws": owner.workspace_id}, token=owner.token)
    template = listed["data"]["templates"][0]

    first = await factory.gql(
        CLONE,
        {"i": {"templateId": template["id"], "workspaceId": owner.workspace_id}},
        token=owner.token,
    )
    second = await factory.gql(
        CLONE,
        {"i": {"templateId": template["id"], "workspaceId": owner.workspace_id}},
        token=owner.token,
    )
    named = await factory.gql(
        CLONE,
        {"i": {"templateId": template["id"], "workspaceId": owner.workspace_id, "name": "Mine"}},
        token=owner.token,
    )

    workflow = first["data"]["templateClone"]["workflow"]
    assert workflow["name"] == template["name"]
    assert workflow["currentVersion"] == {"number": 1, "graph": template["graph"]}
    assert second["data"]["templateClone"]["workflow"]["name"] == f"{template['name']} (2)"
    assert named["data"]["templateClone"]["workflow"]["name"] == "Mine"
    again = await factory.gql(TEMPLATES, {"ws": owner.workspace_id}, token=owner.token)
    assert again["data"]["templates"][0] == template


async def test_clone_of_a_workspace_template_leaves_it_unchanged(factory: Factory) -> None:
    owner = await factory.owner()
    graph = {"nodes": [{"id": "t", "type": "trigger", "data": {"x": 1}}], "edges": []}
    created = await factory.gql(
        "mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { workflow { id } } }",
        {"i": {"workspaceId": owner.workspace_id, "name": "Base", "graph": graph}},
        token=owner.token,
    )
    template_id = created["data"]["workflowCreate"]["workflow"]["id"]
    await factory.gql(
        SET_TEMPLATE, {"i": {"workflowId": template_id, "isTemplate": True}}, token=owner.token
    )

    body = await factory.gql(
        CLONE,
        {"i": {"templateId": template_id, "workspaceId": owner.workspace_id, "name": "Copy"}},
        token=owner.token,
    )

    clone = body["data"]["templateClone"]["workflow"]
    assert clone["currentVersion"] == {"number": 1, "graph": graph}
    assert clone["id"] != template_id
    assert await factory.scalar("SELECT count(*) FROM workflow_versions") == 2


async def test_a_workflow_that_is_not_a_template_cannot_be_cloned(factory: Factory) -> None:
    owner = await factory.owner()
    created = await factory.gql(
        "mutation($i: WorkflowCreateInput!) { workflowCreate(input: $i) { workflow { id } } }",
        {"i": {"workspaceId": owner.workspace_id, "name": "Private"}},
        token=owner.token,
    )
    before = await factory.snapshot()

    body = await factory.gql(
        CLONE,
        {
            "i": {
                "templateId": created["data"]["workflowCreate"]["workflow"]["id"],
                "workspaceId": owner.workspace_id,
            }
        },
        token=owner.token,
    )

    assert body["errors"][0]["message"] == "Template not found."
    assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert await factory.snapshot() == before
