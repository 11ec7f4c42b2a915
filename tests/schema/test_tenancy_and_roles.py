"""Tenants are walls, and roles are enforced on every operation."""

from __future__ import annotations

import uuid

import pytest

from app.models import Role
from tests.factories import Account, Factory, gid

CREATE = """mutation($i: WorkflowCreateInput!) {
  workflowCreate(input: $i) { workflow { id } userErrors { field code message } } }"""
SET_TEMPLATE = """mutation($i: WorkflowSetTemplateInput!) {
  workflowSetTemplate(input: $i) { userErrors { code } } }"""


async def new_workflow(factory: Factory, owner: Account, name: str = "Secret plan") -> str:
    """A new workflow of ``owner``'s; its ID."""
    body = await factory.gql(
        CREATE, {"i": {"workspaceId": owner.workspace_id, "name": name}}, token=owner.token
    )
    return body["data"]["workflowCreate"]["workflow"]["id"]


async def victim_template(factory: Factory) -> tuple[Account, Account, str]:
    """A victim whose workspace holds a template workflow, an attacker elsewhere, and the
    template's ID."""
    victim = await factory.owner("Victim")
    attacker = await factory.owner("Attacker")
    workflow_id = await new_workflow(factory, victim)
    body = await factory.gql(
        SET_TEMPLATE, {"i": {"workflowId": workflow_id, "isTemplate": True}}, token=victim.token
    )
    assert body["data"]["workflowSetTemplate"]["userErrors"] == [], body
    return victim, attacker, workflow_id


def operations(workflow_id: str, workspace_id: str) -> list[tuple[str, dict]]:
    """Every operation that names a workflow or a workspace."""
    return [
        ("query($id: ID!) { workflow(id: $id) { id name } }", {"id": workflow_id}),
        ("query($id: ID!) { workspace(id: $id) { id name } }", {"id": workspace_id}),
        ("query($id: ID!) { templates(workspaceId: $id) { id } }", {"id": workspace_id}),
        (
            "mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }",
            {"i": {"workflowId": workflow_id, "graph": {"nodes": []}, "baseVersion": 1}},
        ),
        (
            "mutation($i: WorkflowRollbackInput!) { workflowRollback(input: $i) { userErrors { code } } }",
            {"i": {"workflowId": workflow_id, "toVersion": 1}},
        ),
        ("mutation($id: ID!) { workflowDelete(id: $id) { deletedId } }", {"id": workflow_id}),
        (
            SET_TEMPLATE,
            {"i": {"workflowId": workflow_id, "isTemplate": True}},
        ),
        (CREATE, {"i": {"workspaceId": workspace_id, "name": "Intruder"}}),
        (
            "mutation($i: MemberSetInput!) { memberSet(input: $i) { userErrors { code } } }",
            {"i": {"workspaceId": workspace_id, "email": "x@example.com", "role": "OWNER"}},
        ),
        (
            "mutation($i: TemplateCloneInput!) { templateClone(input: $i) { userErrors { code } } }",
            {"i": {"templateId": workflow_id, "workspaceId": workspace_id}},
        ),
    ]


async def test_another_workspaces_ids_read_exactly_like_missing_ones(factory: Factory) -> None:
    victim, attacker, workflow_id = await victim_template(factory)
    before = await factory.snapshot()
    missing_workflow = gid("Workflow", uuid.uuid4())
    missing_workspace = gid("Workspace", uuid.uuid4())

    for (query, real_vars), (_, missing_vars) in zip(
        operations(workflow_id, victim.workspace_id),
        operations(missing_workflow, missing_workspace),
        strict=True,
    ):
        real = await factory.gql(query, real_vars, token=attacker.token)
        missing = await factory.gql(query, missing_vars, token=attacker.token)
        assert real["errors"][0]["extensions"] == {"code": "NOT_FOUND"}, query
        assert [e["message"] for e in real["errors"]] == [e["message"] for e in missing["errors"]]
        assert real.get("data") == missing.get("data")

    assert await factory.snapshot() == before


async def test_a_workspace_template_cannot_be_cloned_into_your_workspace_from_outside(
    factory: Factory,
) -> None:
    _victim, attacker, workflow_id = await victim_template(factory)
    before = await factory.snapshot()

    body = await factory.gql(
        "mutation($i: TemplateCloneInput!) { templateClone(input: $i) { workflow { id } } }",
        {"i": {"templateId": workflow_id, "workspaceId": attacker.workspace_id}},
        token=attacker.token,
    )

    assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert await factory.snapshot() == before


ALLOWED = {
    # operation index in operations() → weakest role allowed
    0: Role.VIEWER,
    1: Role.VIEWER,
    2: Role.VIEWER,
    3: Role.EDITOR,
    4: Role.EDITOR,
    5: Role.OWNER,
    6: Role.EDITOR,
    7: Role.EDITOR,
    8: Role.OWNER,
    9: Role.EDITOR,
}


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER, Role.EDITOR])
async def test_roles_below_the_needed_one_get_forbidden_and_change_nothing(
    factory: Factory, role: Role
) -> None:
    owner = await factory.owner()
    workflow_id = await new_workflow(factory, owner)
    await factory.gql(
        SET_TEMPLATE,
        {"i": {"workflowId": workflow_id, "isTemplate": True}},
        token=owner.token,
    )
    account = await factory.member(owner, role)

    for index, (query, variables) in enumerate(operations(workflow_id, owner.workspace_id)):
        before = await factory.snapshot()
        body = await factory.gql(query, variables, token=account.token)
        if role.allows(ALLOWED[index]):
            assert "errors" not in body, (index, body)
            continue
        assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}, (index, body)
        assert await factory.snapshot() == before, index


async def test_without_a_valid_token_everything_is_unauthenticated(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await new_workflow(factory, owner)
    before = await factory.snapshot()

    for token in (None, "fdk_not-a-real-token-at-all-000000000", "garbage"):
        for query, variables in operations(workflow_id, owner.workspace_id):
            body = await factory.gql(query, variables, token=token)
            assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}, query
        body = await factory.gql("{ viewer { id } }", token=token)
        assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}

    assert await factory.snapshot() == before
