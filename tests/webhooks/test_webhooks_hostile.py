"""Hostile webhook deliveries: exact answers, and nothing written on refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from app.models import Role
from app.services.webhooks import signature
from tests.factories import Factory, gid
from tests.runs import create_workflow, flow, node, read_run, wait_for
from tests.secrets import owner_with_secrets
from tests.webhooks.helpers import ECHO, NOT_FOUND, enable, hooked_workflow, path_of, signed, update

DELETE_WORKFLOW = (
    """mutation($id: ID!) { workflowDelete(id: $id) { deletedId userErrors { code } } }"""
)

# --- configuration, as deliveries see it ---------------------------------------------------


async def test_signing_turned_off_then_on_makes_a_new_secret_and_retires_the_old(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a signed webhook
    owner, workflow_id, hook = await hooked_workflow(factory, ECHO, requireSignature=True)
    first = hook["signingSecret"]
    path = path_of(hook["url"])
    body = b'{"n": 1}'
    # When signing is turned off, the secret is gone and unsigned deliveries pass
    off = await enable(factory, owner, workflow_id, requireSignature=False)
    assert off["requireSignature"] is False
    assert off["signingSecret"] is None
    assert await factory.scalar("SELECT signing_ciphertext IS NULL FROM webhooks") is True
    unsigned = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 202
    # When it is turned on again, a new secret is shown once; the old one no longer signs
    on = await enable(factory, owner, workflow_id, requireSignature=True)
    second = on["signingSecret"]
    assert second.startswith("whsec_")
    assert second != first
    before = await factory.snapshot()
    old = await client.post(path, content=body, headers=signed(first, body))
    assert (old.status_code, old.json()) == (
        401,
        {"error": {"code": "UNAUTHENTICATED", "message": "The signature does not match the body."}},
    )
    assert await factory.snapshot() == before
    new = await client.post(path, content=body, headers=signed(second, body))
    assert new.status_code == 202
    # Leaving signing on (null) keeps the secret and never shows it again
    again = await enable(factory, owner, workflow_id, requireSignature=None)
    assert again["signingSecret"] is None
    assert (await client.post(path, content=body, headers=signed(second, body))).status_code == 202


async def test_a_deleted_workflows_webhook_is_gone(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    owner, workflow_id, hook = await hooked_workflow(factory, ECHO)
    deleted = await factory.gql(DELETE_WORKFLOW, {"id": workflow_id}, token=owner.token)
    assert deleted["data"]["workflowDelete"]["userErrors"] == []
    assert await factory.scalar("SELECT count(*) FROM webhooks") == 0
    before = await factory.snapshot()
    response = await client.post(path_of(hook["url"]), json={"a": 1})
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    body = await update(factory, owner, workflow_id)
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await factory.snapshot() == before


# --- deliveries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 202),
        ("application/json; charset=utf-8", 202),
        ("APPLICATION/JSON", 202),
        ("Application/Json ; charset=UTF-8", 202),
        ("application/vnd.api+json", 202),
        ("application/cloudevents+json; charset=utf-8", 202),
        ("application/jsonx", 415),
        ("application/json-seq", 415),
        ("text/json", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("json", 415),
        ("", 415),
    ],
)
async def test_content_types(
    factory: Factory, client: httpx.AsyncClient, content_type: str, status: int
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    before = await factory.snapshot()
    response = await client.post(
        path_of(hook["url"]), content=b'{"a": 1}', headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    if status == 415:
        assert response.json() == {
            "error": {
                "code": "UNSUPPORTED_MEDIA_TYPE",
                "message": "Send the body as JSON, with Content-Type: application/json.",
            }
        }
        assert await factory.snapshot() == before
    else:
        run_input = await factory.scalar("SELECT input FROM runs")
        assert run_input == {"a": 1}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", None),
        (b"   \r\n ", None),
        (b"null", None),
        (b"[1, 2]", [1, 2]),
        (b'"hello"', "hello"),
        (b"0", 0),
        (b"false", False),
        ('{"name": "Zoë ☃ \U0001f600"}'.encode(), {"name": "Zoë ☃ \U0001f600"}),
    ],
)
async def test_any_json_value_or_an_empty_body_becomes_the_run_input(
    factory: Factory, client: httpx.AsyncClient, worker: None, content: bytes, expected: object
) -> None:
    owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    response = await client.post(
        path_of(hook["url"]), content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 202, response.text
    run = await wait_for(factory, owner, response.json()["runId"])
    assert (run["status"], run["input"], run["output"]) == ("SUCCEEDED", expected, expected)


async def test_an_invalid_utf8_body_is_400_and_writes_nothing(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    before = await factory.snapshot()
    response = await client.post(
        path_of(hook["url"]), content=b'{"a": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BAD_REQUEST"
    assert await factory.snapshot() == before


@pytest.mark.parametrize("length", [19, 20, 64, 65, 500])
async def test_url_ids_of_any_length_that_match_nothing_are_404(
    factory: Factory, client: httpx.AsyncClient, length: int
) -> None:
    await hooked_workflow(factory, ECHO)
    before = await factory.snapshot()
    response = await client.post(f"/hooks/{'a' * length}", json={"a": 1})
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert await factory.snapshot() == before


async def test_a_stored_url_id_with_a_character_more_or_less_is_404(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    path = path_of(hook["url"])
    before = await factory.snapshot()
    for variant in (path + "A", path[:-1], path.upper(), path + "%00", path + "%20"):
        response = await client.post(variant, json={"a": 1})
        assert response.status_code == 404, variant
    assert await factory.snapshot() == before


async def test_a_body_streamed_in_chunks_just_under_the_cap_is_accepted_and_one_over_is_413(
    factory: Factory, client: httpx.AsyncClient, settings
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    limit = settings.webhook_max_body_bytes
    exact = b'{"x": 1}' + b" " * (limit - 8)
    assert len(exact) == limit

    def chunks(data: bytes) -> AsyncIterator[bytes]:
        async def generate() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 7919):
                yield data[start : start + 7919]

        return generate()

    before = await factory.snapshot()
    over = await client.post(
        path_of(hook["url"]),
        content=chunks(exact + b" "),
        headers={"content-type": "application/json"},
    )
    assert (over.status_code, over.json()) == (
        413,
        {"error": {"code": "PAYLOAD_TOO_LARGE", "message": f"The body is over {limit} bytes."}},
    )
    assert await factory.snapshot() == before
    fits = await client.post(
        path_of(hook["url"]), content=chunks(exact), headers={"content-type": "application/json"}
    )
    assert fits.status_code == 202, fits.text
    assert await factory.scalar("SELECT input FROM runs") == {"x": 1}


async def test_a_delivery_id_with_nul_is_400_and_writes_nothing(
    factory: Factory, raw_client: httpx.AsyncClient
) -> None:
    # uvicorn refuses NUL in a header itself; an ASGI server that passes it must not cause a 500
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    before = await factory.snapshot()
    headers = [(b"content-type", b"application/json"), (b"x-flowdeck-delivery", b"evt\x00nul")]
    response = await raw_client.post(path_of(hook["url"]), content=b"{}", headers=headers)
    assert (response.status_code, response.json()) == (
        400,
        {"error": {"code": "BAD_REQUEST", "message": "A delivery id cannot contain NUL."}},
    )
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    "delivery_id",
    [b"evt\xc3\xa9-utf8", b"\xff\xfe", b"evt\x01\x7f", b"tab\there", b"a" * 190],
    ids=["utf-8", "latin-1", "control", "tab", "190 chars"],
)
async def test_delivery_ids_of_other_bytes_deduplicate(
    factory: Factory, raw_client: httpx.AsyncClient, delivery_id: bytes
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    headers = [(b"content-type", b"application/json"), (b"x-flowdeck-delivery", delivery_id)]
    first = await raw_client.post(path_of(hook["url"]), content=b"{}", headers=headers)
    again = await raw_client.post(path_of(hook["url"]), content=b"{}", headers=headers)
    assert first.status_code == 202, first.text
    assert (first.json()["duplicate"], again.status_code) == (False, 202)
    assert again.json() == {**first.json(), "duplicate": True}
    assert await factory.scalar("SELECT count(*) FROM runs") == 1
    stored = await factory.scalar("SELECT idempotency_key FROM runs")
    assert stored == "webhook:" + delivery_id.decode("latin-1")


async def test_a_signature_header_of_a_thousand_parts_is_refused_quickly(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO, requireSignature=True)
    body = b'{"a": 1}'
    good = signed(hook["signingSecret"], body)
    junk = ",".join(["sha256=" + "0" * 64] * 999)
    before = await factory.snapshot()
    # Only the first five signatures are tried: a valid one after 999 others does not count
    late = await client.post(
        path_of(hook["url"]),
        content=body,
        headers={**good, "x-flowdeck-signature": junk + "," + good["x-flowdeck-signature"]},
    )
    assert (late.status_code, late.json()["error"]["message"]) == (
        401,
        "The signature does not match the body.",
    )
    commas = await client.post(
        path_of(hook["url"]), content=body, headers={**good, "x-flowdeck-signature": "," * 1000}
    )
    assert (commas.status_code, commas.json()["error"]["message"]) == (
        401,
        "The signature does not match the body.",
    )
    assert await factory.snapshot() == before
    first = await client.post(
        path_of(hook["url"]),
        content=body,
        headers={**good, "x-flowdeck-signature": good["x-flowdeck-signature"] + "," + junk},
    )
    assert first.status_code == 202


@pytest.mark.parametrize(
    ("timestamp", "message"),
    [
        ("1" * 5000, "X-Flowdeck-Timestamp must be Unix seconds."),
        ("1.7e9", "X-Flowdeck-Timestamp must be Unix seconds."),
        ("-1", "The timestamp is more than 300 seconds from the server's clock."),
        (
            "99999999999999999999999",
            "The timestamp is more than 300 seconds from the server's clock.",
        ),
    ],
)
async def test_malformed_and_far_timestamps_are_401(
    factory: Factory, client: httpx.AsyncClient, timestamp: str, message: str
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO, requireSignature=True)
    body = b"{}"
    headers = {
        "content-type": "application/json",
        "x-flowdeck-timestamp": timestamp,
        "x-flowdeck-signature": signature(hook["signingSecret"], timestamp, body),
    }
    before = await factory.snapshot()
    response = await client.post(path_of(hook["url"]), content=body, headers=headers)
    assert (response.status_code, response.json()) == (
        401,
        {"error": {"code": "UNAUTHENTICATED", "message": message}},
    )
    assert await factory.snapshot() == before


async def test_concurrent_deliveries_of_one_id_tell_exactly_one_it_was_first(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    headers = {"x-flowdeck-delivery": "evt_race"}
    answers = await asyncio.gather(
        *(client.post(path_of(hook["url"]), json={"n": 1}, headers=headers) for _ in range(8))
    )
    assert [a.status_code for a in answers] == [202] * 8
    assert len({a.json()["runId"] for a in answers}) == 1
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7


async def test_a_manual_run_cannot_pass_for_a_webhook_delivery(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a member who executed the workflow with an idempotency key shaped like a delivery's
    owner, workflow_id, hook = await hooked_workflow(factory, ECHO)
    member = await factory.member(owner, Role.MEMBER)
    executed = await factory.gql(
        """mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
             run { id trigger } userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "input": {"n": 1}, "idempotencyKey": "webhook:evt_1"}},
        token=member.token,
    )
    manual = executed["data"]["workflowExecute"]["run"]
    assert manual["trigger"] == "MANUAL"
    before = await factory.snapshot()
    # When the webhook's sender delivers evt_1
    response = await client.post(
        path_of(hook["url"]), json={"n": 1}, headers={"x-flowdeck-delivery": "evt_1"}
    )
    # Then the delivery is not answered with the member's run as if it were its own
    assert (response.status_code, response.json()) == (
        409,
        {
            "error": {
                "code": "IDEMPOTENCY_CONFLICT",
                "message": "This delivery id was used for a delivery with a different body.",
            }
        },
    )
    assert await factory.snapshot() == before


async def test_wait_for_result_answers_a_cancelled_run(
    factory: Factory, client: httpx.AsyncClient, worker: None
) -> None:
    # Given a webhook that waits for a run that waits a long time
    owner = await factory.owner()
    slow = flow(
        node("start", "trigger"),
        node("wait", "flow.delay", seconds=3600),
        node("out", "output", value="{{ input }}"),
    )
    workflow_id = await create_workflow(factory, owner, slow)
    hook = await enable(factory, owner, workflow_id, waitForResult=True)
    # When a delivery waits and the run is cancelled meanwhile
    delivery = asyncio.create_task(client.post(path_of(hook["url"]), json={"n": 1}))
    run_id = None
    while run_id is None:
        await asyncio.sleep(0.05)
        raw_id = await factory.scalar("SELECT id::text FROM runs")
        run_id = gid("Run", raw_id) if raw_id else None
    cancelled = await factory.gql(
        "mutation($id: ID!) { runCancel(id: $id) { run { status } userErrors { code } } }",
        {"id": run_id},
        token=owner.token,
    )
    assert cancelled["data"]["runCancel"]["userErrors"] == []
    response = await asyncio.wait_for(delivery, 10)
    # Then the answer says so at once
    assert response.status_code == 200
    assert response.json() == {
        "runId": run_id,
        "status": "CANCELLED",
        "duplicate": False,
        "output": None,
        "error": (await read_run(factory, owner, run_id))["error"],
    }


async def test_a_redelivery_after_the_workflow_changed_is_still_the_same_delivery(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a delivery, and then a new version of the workflow
    owner, workflow_id, hook = await hooked_workflow(factory, ECHO)
    headers = {"x-flowdeck-delivery": "evt_redelivered"}
    first = await client.post(path_of(hook["url"]), json={"n": 1}, headers=headers)
    assert first.status_code == 202
    saved = await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "graph": ECHO, "baseVersion": 1, "message": "v2"}},
        token=owner.token,
    )
    assert saved["data"]["workflowSave"]["userErrors"] == []
    before = await factory.snapshot()
    # When the sender retries the same delivery (same id, same body)
    again = await client.post(path_of(hook["url"]), json={"n": 1}, headers=headers)
    # Then it is answered with the first delivery's run, as any repeat is
    assert (again.status_code, again.json()) == (202, {**first.json(), "duplicate": True})
    assert await factory.snapshot() == before
    # And the same id with another body is still a conflict
    other = await client.post(path_of(hook["url"]), json={"n": 2}, headers=headers)
    assert other.status_code == 409
    assert await factory.snapshot() == before


async def test_wait_for_result_never_answers_a_secret(
    factory: Factory, client: httpx.AsyncClient, worker: None
) -> None:
    # Given a waiting webhook whose workflow outputs a secret, or fails quoting it
    key = "sk-live-0a1b2c3d4e5f6a7b8c9d"
    owner = await owner_with_secrets(factory, KEY=key)
    graph = flow(
        node("start", "trigger"),
        node("out", "output", value="{{ {'key': secrets.KEY, 'sent': input} }}"),
        node("stop", "flow.fail", message="refused {{ secrets.KEY }}"),
        edges="start->out, start->stop",
    )
    ok_graph = {"nodes": graph["nodes"][:2], "edges": graph["edges"][:1]}
    answers = []
    for name, shape in (("Outputs", ok_graph), ("Fails", graph)):
        workflow_id = await create_workflow(factory, owner, shape, name=name)
        hook = await enable(factory, owner, workflow_id, waitForResult=True)
        # When a delivery (which itself carries the key) waits for the run
        response = await client.post(path_of(hook["url"]), json={"echo": key})
        assert response.status_code == 200
        answers.append(response.json())
    # Then the answers show the placeholder, never the key
    assert answers[0]["output"] == {"key": "[secret:KEY]", "sent": {"echo": "[secret:KEY]"}}
    assert answers[1]["status"] == "FAILED"
    assert answers[1]["error"] == 'Node "stop" (flow.fail) failed: refused [secret:KEY]'
    assert key not in str(answers)


async def test_a_rotated_url_keeps_the_signing_secret_and_the_old_url_is_gone(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    owner, workflow_id, hook = await hooked_workflow(
        factory, ECHO, requireSignature=True, waitForResult=False
    )
    secret = hook["signingSecret"]
    renewed = await enable(factory, owner, workflow_id, rotateUrl=True)
    assert renewed["url"] != hook["url"]
    assert renewed["signingSecret"] is None  # unchanged, so not shown again
    assert renewed["requireSignature"] is True
    body = b'{"a": 1}'
    before = await factory.snapshot()
    old = await client.post(path_of(hook["url"]), content=body, headers=signed(secret, body))
    assert (old.status_code, old.json()) == (404, NOT_FOUND)
    assert await factory.snapshot() == before
    new = await client.post(path_of(renewed["url"]), content=body, headers=signed(secret, body))
    assert new.status_code == 202


@pytest.mark.parametrize("declared", [b"\xb2", b"-1", b"1e3", b" 12", b""])
async def test_a_malformed_content_length_is_413_and_writes_nothing(
    factory: Factory, raw_client: httpx.AsyncClient, declared: bytes
) -> None:
    # uvicorn refuses these itself; behind an ASGI server that passes them, the app's body
    # limit answers before the webhook reads anything (in its own, GraphQL-shaped, words)
    _owner, _workflow_id, hook = await hooked_workflow(factory, ECHO)
    before = await factory.snapshot()
    headers = [(b"content-type", b"application/json"), (b"content-length", declared)]
    response = await raw_client.post(path_of(hook["url"]), content=b"{}", headers=headers)
    assert (response.status_code, response.json()) == (
        413,
        {
            "errors": [
                {
                    "message": "Request body over 4194304 bytes.",
                    "extensions": {"code": "PAYLOAD_TOO_LARGE"},
                }
            ]
        },
    )
    assert await factory.snapshot() == before
