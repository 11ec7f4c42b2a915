"""Run mutations with wrong, hostile and oversized input: the exact error, and nothing written."""

from __future__ import annotations

import json
import uuid

import pytest

from app.models import Role
from tests.factories import Factory, gid
from tests.runs import create_workflow, node

EXECUTE = """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { field code message } } }"""
RETRY = """mutation($i: RunRetryInput!) { runRetry(input: $i) {
  run { id } userErrors { field code message } } }"""
CANCEL = "mutation($id: ID!) { runCancel(id: $id) { run { id } userErrors { code } } }"
TRIGGER_ONLY = {"nodes": [node("t", "trigger")], "edges": []}


def refused(field: list[str], code: str, message: str) -> dict:
    return {"run": None, "userErrors": [{"field": field, "code": code, "message": message}]}


@pytest.mark.parametrize(
    ("raw_input", "field", "message"),
    [
        pytest.param(
            "NaN",
            ["input", "input"],
            "Number is NaN or infinite, which JSON cannot store.",
            id="nan",
        ),
        pytest.param(
            "1" + "0" * 400, ["input", "input"], "Integer does not fit in 64 bits.", id="10**400"
        ),
        pytest.param(
            '"a\\u0000b"',
            ["input", "input"],
            "String contains a NUL character, which JSONB cannot store.",
            id="nul",
        ),
        pytest.param(
            "[" * 40 + "]" * 40,
            ["input", "input", *["0"] * 32],
            "Value is nested deeper than 32 levels.",
            id="depth-40",
        ),
        pytest.param(
            json.dumps(["x" * 60_000] * 20),
            ["input", "input"],
            "The input is 1200080 bytes; the limit is 1048576.",
            id="1.2MB",
        ),
    ],
)
async def test_an_input_that_cannot_be_stored_is_refused(
    factory: Factory, client, raw_input: str, field: list[str], message: str
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    before = await factory.snapshot()
    body = (
        '{"query": '
        + json.dumps(EXECUTE)
        + ', "variables": {"i": {"workflowId": "'
        + workflow_id
        + '", "input": '
        + raw_input
        + "}}}"
    )

    response = await client.post(
        "/graphql",
        content=body,
        headers={"authorization": f"Bearer {owner.token}", "content-type": "application/json"},
    )

    assert response.status_code == 200
    assert response.json() == {"data": {"workflowExecute": refused(field, "INVALID", message)}}
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            {"idempotencyKey": ""},
            refused(["input", "idempotencyKey"], "INVALID", "Must be 1 to 200 characters."),
        ),
        (
            {"idempotencyKey": "k" * 201},
            refused(["input", "idempotencyKey"], "INVALID", "Must be 1 to 200 characters."),
        ),
        ({"version": 0}, refused(["input", "version"], "NOT_FOUND", "Version 0 does not exist.")),
        ({"version": -5}, refused(["input", "version"], "NOT_FOUND", "Version -5 does not exist.")),
        ({"version": 99}, refused(["input", "version"], "NOT_FOUND", "Version 99 does not exist.")),
    ],
    ids=["empty-key", "201-char-key", "version-0", "version-negative", "version-missing"],
)
async def test_bad_execute_options_are_user_errors(
    factory: Factory, extra: dict, expected: dict
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    before = await factory.snapshot()

    body = await factory.gql(
        EXECUTE, {"i": {"workflowId": workflow_id, **extra}}, token=owner.token
    )

    assert body == {"data": {"workflowExecute": expected}}
    assert await factory.snapshot() == before


async def test_wrong_types_and_missing_fields_are_graphql_errors(factory: Factory) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    before = await factory.snapshot()

    too_big = await factory.gql(
        EXECUTE, {"i": {"workflowId": workflow_id, "version": 2**31}}, token=owner.token
    )
    missing = await factory.gql(EXECUTE, {"i": {}}, token=owner.token)
    wrong = await factory.gql(
        RETRY, {"i": {"runId": workflow_id, "fromFailedStep": "yes"}}, token=owner.token
    )

    assert too_big["errors"][0]["message"] == (
        "Variable '$i' has invalid value at .version: "
        "Int cannot represent non 32-bit signed integer value: 2147483648"
    )
    assert missing["errors"][0]["message"] == (
        "Variable '$i' has invalid value: Expected value of type 'WorkflowExecuteInput' "
        "to include required field 'workflowId', found: {}."
    )
    assert wrong["errors"][0]["message"].startswith(
        "Variable '$i' has invalid value at .fromFailedStep"
    )
    assert await factory.snapshot() == before


async def test_malformed_cross_kind_and_foreign_ids_read_as_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    run_id = (await factory.gql(EXECUTE, {"i": {"workflowId": workflow_id}}, token=owner.token))[
        "data"
    ]["workflowExecute"]["run"]["id"]
    before = await factory.snapshot()
    calls = [
        ("workflowExecute", EXECUTE, {"i": {"workflowId": "garbage"}}, "Workflow not found."),
        (
            "workflowExecute",
            EXECUTE,
            {"i": {"workflowId": owner.workspace_id}},
            "Workflow not found.",
        ),
        (
            "workflowExecute",
            EXECUTE,
            {"i": {"workflowId": gid("Workflow", uuid.uuid4())}},
            "Workflow not found.",
        ),
        ("runRetry", RETRY, {"i": {"runId": "garbage"}}, "Run not found."),
        ("runRetry", RETRY, {"i": {"runId": workflow_id}}, "Run not found."),
        ("runCancel", CANCEL, {"id": "garbage"}, "Run not found."),
        ("runCancel", CANCEL, {"id": gid("Run", uuid.uuid4())}, "Run not found."),
    ]
    foreign = [
        ("workflowExecute", EXECUTE, {"i": {"workflowId": workflow_id}}, "Workflow not found."),
        ("runRetry", RETRY, {"i": {"runId": run_id}}, "Run not found."),
        ("runCancel", CANCEL, {"id": run_id}, "Run not found."),
    ]

    for caller, (name, query, variables, message) in [
        *((owner, call) for call in calls),
        *((stranger, call) for call in foreign),
    ]:
        body = await factory.gql(query, variables, token=caller.token)
        assert (body["data"], body["errors"][0]["message"], body["errors"][0]["extensions"]) == (
            None,
            message,
            {"code": "NOT_FOUND"},
        ), name

    assert await factory.snapshot() == before


async def test_roles_below_member_cannot_run_cancel_or_retry(factory: Factory) -> None:
    owner = await factory.owner()
    viewer = await factory.member(owner, Role.VIEWER)
    member = await factory.member(owner, Role.MEMBER)
    workflow_id = await create_workflow(factory, owner, TRIGGER_ONLY)
    run_id = (await factory.gql(EXECUTE, {"i": {"workflowId": workflow_id}}, token=owner.token))[
        "data"
    ]["workflowExecute"]["run"]["id"]
    before = await factory.snapshot()

    for query, variables in (
        (EXECUTE, {"i": {"workflowId": workflow_id}}),
        (RETRY, {"i": {"runId": run_id}}),
        (CANCEL, {"id": run_id}),
    ):
        body = await factory.gql(query, variables, token=viewer.token)
        assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert await factory.snapshot() == before

    # A member may: execute (and, the run not having ended, retry is refused as a user error).
    executed = await factory.gql(EXECUTE, {"i": {"workflowId": workflow_id}}, token=member.token)
    retried = await factory.gql(RETRY, {"i": {"runId": run_id}}, token=member.token)

    assert executed["data"]["workflowExecute"]["userErrors"] == []
    assert retried == {
        "data": {
            "runRetry": refused(
                ["input", "runId"], "INVALID", "The run has not ended (QUEUED); cancel it first."
            )
        }
    }
    assert await factory.scalar("SELECT count(*) FROM runs") == 2
