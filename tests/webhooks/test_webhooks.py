"""The webhook endpoint, POST /hooks/{id}: deliveries start durable runs; signing, repeats,
refusals, rate limits and waiting for the result."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.webhooks import RateLimiter
from schema.ids import decode_id
from tests.factories import Factory
from tests.runs import create_workflow, flow, node, read_run, wait_for
from tests.webhooks.helpers import GREETING, UPDATE, enable, hooked_workflow, path_of, signed


async def test_enable_gives_a_url_and_a_post_starts_a_durable_run(
    factory: Factory, client: httpx.AsyncClient, worker: None
) -> None:
    # Given a workflow with its webhook on
    owner, _workflow_id, hook = await hooked_workflow(factory, GREETING)
    assert hook["enabled"] is True
    assert hook["requireSignature"] is False
    assert hook["signingSecret"] is None
    token = hook["url"].rsplit("/", 1)[1]
    assert hook["url"] == f"http://flowdeck.test/hooks/{token}"
    assert len(token) == 43  # 256 random bits
    # When JSON is posted to it
    response = await client.post(path_of(hook["url"]), json={"name": "Ada"})
    # Then the answer is 202 with the run, which exists already, and then succeeds
    assert response.status_code == 202
    answer = response.json()
    assert answer["status"] == "QUEUED"
    assert answer["duplicate"] is False
    run = await wait_for(factory, owner, answer["runId"])
    assert run["status"] == "SUCCEEDED"
    assert run["trigger"] == "WEBHOOK"
    assert run["input"] == {"name": "Ada"}
    assert run["output"] == "Hello Ada!"


async def test_signed_deliveries(factory: Factory, client: httpx.AsyncClient) -> None:
    owner, workflow_id, hook = await hooked_workflow(factory, GREETING, requireSignature=True)
    secret = hook["signingSecret"]
    path = path_of(hook["url"])
    body = json.dumps({"name": "Ada"}).encode()
    before = await factory.snapshot()
    cases = {
        "unsigned": {"content-type": "application/json"},
        "bad signature": {**signed(secret, body), "x-flowdeck-signature": "sha256=" + "0" * 64},
        "signed for another body": signed(secret, b'{"name": "Eve"}'),
        "signed with another secret": signed("whsec_guess", body),
        "replayed timestamp": signed(secret, body, at=int(time.time()) - 301),
        "future timestamp": signed(secret, body, at=int(time.time()) + 301),
        "timestamp not a number": {**signed(secret, body), "x-flowdeck-timestamp": "yesterday"},
    }
    messages = {}
    for name, headers in cases.items():
        response = await client.post(path, content=body, headers=headers)
        assert response.status_code == 401, name
        messages[name] = response.json()["error"]["message"]
    assert messages == {
        "unsigned": "Missing X-Flowdeck-Timestamp or X-Flowdeck-Signature.",
        "bad signature": "The signature does not match the body.",
        "signed for another body": "The signature does not match the body.",
        "signed with another secret": "The signature does not match the body.",
        "replayed timestamp": "The timestamp is more than 300 seconds from the server's clock.",
        "future timestamp": "The timestamp is more than 300 seconds from the server's clock.",
        "timestamp not a number": "X-Flowdeck-Timestamp must be Unix seconds.",
    }
    assert await factory.snapshot() == before
    # A good signature (also beside a stale one, as during a secret rotation) is accepted
    good = signed(secret, body)
    good["x-flowdeck-signature"] = "sha256=" + "1" * 64 + "," + good["x-flowdeck-signature"]
    accepted = await client.post(path, content=body, headers=good)
    assert accepted.status_code == 202
    # After rotating the secret, the old one no longer signs
    rotated = await enable(factory, owner, workflow_id, rotateSigningSecret=True)
    assert rotated["signingSecret"] not in (None, secret)
    old = await client.post(path, content=body, headers=signed(secret, body))
    assert old.status_code == 401
    new = await client.post(path, content=body, headers=signed(rotated["signingSecret"], body))
    assert new.status_code == 202


async def test_a_repeated_delivery_id_starts_one_run(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, GREETING)
    path = path_of(hook["url"])
    headers = {"x-flowdeck-delivery": "evt_123"}
    first, *others = await asyncio.gather(
        *(client.post(path, json={"name": "Ada"}, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in (first, *others)} == {202}
    assert {r.json()["runId"] for r in others} == {first.json()["runId"]}
    assert await factory.scalar("SELECT count(*) FROM runs") == 1
    assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 1
    again = await client.post(path, json={"name": "Ada"}, headers=headers)
    assert again.json()["duplicate"] is True
    # The same delivery id with another body is a conflict, and writes nothing
    before = await factory.snapshot()
    conflict = await client.post(path, json={"name": "Eve"}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert await factory.snapshot() == before
    # Another delivery id is another run
    other = await client.post(
        path, json={"name": "Ada"}, headers={"x-flowdeck-delivery": "evt_124"}
    )
    assert other.json()["runId"] != first.json()["runId"]


async def test_a_replayed_signed_delivery_without_a_delivery_id_starts_one_run(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a signing webhook and one signed delivery that carries no delivery id
    _owner, _workflow_id, hook = await hooked_workflow(factory, GREETING, requireSignature=True)
    path = path_of(hook["url"])
    body = b'{"name": "Ada"}'
    headers = signed(hook["signingSecret"], body)
    first = await client.post(path, content=body, headers=headers)
    assert (first.status_code, first.json()["duplicate"]) == (202, False)
    runs = await factory.scalar("SELECT count(*) FROM runs")
    # When it is replayed within the window as it was, after it and concurrently
    replays = [await client.post(path, content=body, headers=headers)]
    replays += await asyncio.gather(
        *(client.post(path, content=body, headers=headers) for _ in range(4))
    )
    # Then every replay answers with the first run, and no run was added
    assert [(r.status_code, r.json()["runId"], r.json()["duplicate"]) for r in replays] == [
        (202, first.json()["runId"], True)
    ] * 5
    assert await factory.scalar("SELECT count(*) FROM runs") == runs == 1
    # ... while another body, or the same body signed at another time, is a new delivery
    other_body = b'{"name": "Eve"}'
    other = await client.post(
        path, content=other_body, headers=signed(hook["signingSecret"], other_body)
    )
    earlier = int(headers["x-flowdeck-timestamp"]) - 1
    resigned = await client.post(
        path, content=body, headers=signed(hook["signingSecret"], body, at=earlier)
    )
    assert (other.json()["duplicate"], resigned.json()["duplicate"]) == (False, False)
    assert await factory.scalar("SELECT count(*) FROM runs") == 3


async def test_a_signed_delivery_id_survives_re_signing(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a signed delivery with a delivery id, re-signed for its retry (a new timestamp)
    _owner, _workflow_id, hook = await hooked_workflow(factory, GREETING, requireSignature=True)
    path = path_of(hook["url"])
    body = b'{"name": "Ada"}'
    now = int(time.time())
    first = await client.post(
        path,
        content=body,
        headers={**signed(hook["signingSecret"], body, at=now), "x-flowdeck-delivery": "evt_1"},
    )
    retry = await client.post(
        path,
        content=body,
        headers={
            **signed(hook["signingSecret"], body, at=now + 1),
            "x-flowdeck-delivery": "evt_1",
        },
    )
    # Then the delivery id makes it the same delivery
    assert (retry.json()["runId"], retry.json()["duplicate"]) == (first.json()["runId"], True)
    assert await factory.scalar("SELECT count(*) FROM runs") == 1


async def test_refused_deliveries_write_nothing(
    factory: Factory, client: httpx.AsyncClient, settings
) -> None:
    owner, workflow_id, hook = await hooked_workflow(factory, GREETING)
    path = path_of(hook["url"])
    limit = settings.webhook_max_body_bytes
    before = await factory.snapshot()
    big = b'{"x": "' + b"a" * limit + b'"}'

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    cases = [
        ("oversized", {"content": big, "headers": {"content-type": "application/json"}}, 413),
        (
            "oversized, streamed",
            {"content": streamed(), "headers": {"content-type": "application/json"}},
            413,
        ),
        (
            "form body",
            {
                "content": b"name=Ada",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
        ),
        ("text body", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        ("no content type", {"content": b'{"a": 1}'}, 415),
        (
            "broken JSON",
            {"content": b'{"a": ', "headers": {"content-type": "application/json"}},
            400,
        ),
        ("NaN", {"content": b'{"a": NaN}', "headers": {"content-type": "application/json"}}, 400),
        (
            "huge integer",
            {
                "content": b'{"a": 1' + b"0" * 400 + b"}",
                "headers": {"content-type": "application/json"},
            },
            400,
        ),
        (
            "NUL in a string",
            {"content": b'{"a": "x\\u0000y"}', "headers": {"content-type": "application/json"}},
            400,
        ),
        (
            "too deep",
            {
                "content": b'{"a":' * 40 + b"1" + b"}" * 40,
                "headers": {"content-type": "application/json"},
            },
            400,
        ),
        ("delivery id too long", {"json": {}, "headers": {"x-flowdeck-delivery": "d" * 191}}, 400),
    ]
    for name, request, status in cases:
        response = await client.post(path, **request)
        assert response.status_code == status, (name, response.text)
    assert await factory.snapshot() == before
    # Unknown, malformed and disabled webhooks are 404
    assert (await client.post("/hooks/" + "A" * 43, json={})).status_code == 404
    assert (await client.post("/hooks/x'; DROP TABLE runs;--", json={})).status_code == 404
    assert (await client.get(path)).status_code == 405
    await factory.gql(
        UPDATE, {"i": {"workflowId": workflow_id, "enabled": False}}, token=owner.token
    )
    assert (await client.post(path, json={})).status_code == 404
    # Rotating the URL retires the old one
    renewed = await enable(factory, owner, workflow_id, rotateUrl=True)
    assert renewed["url"] != hook["url"]
    assert (await client.post(path, json={})).status_code == 404
    assert (await client.post(path_of(renewed["url"]), json={})).status_code == 202


async def test_a_published_version_that_cannot_run_is_refused(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # A half-drawn save (version 2) no longer reaches the webhook: it runs the published
    # version (tests/schema/test_publishing.py). A published version that today's rules
    # refuse (its node type gone since, say) is still refused with 422: set up in SQL, as
    # workflowPublish itself refuses such a version.
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GREETING)
    hook = await enable(factory, owner, workflow_id)
    broken = flow(node("start", "trigger"), node("x", "no.such.type"))
    await factory.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "graph": broken, "baseVersion": 1}},
        token=owner.token,
    )
    await factory.execute(
        "UPDATE workflows SET published_version = 2 WHERE id = :id",
        id=decode_id("Workflow", workflow_id),
    )
    before = await factory.snapshot()
    response = await client.post(path_of(hook["url"]), json={})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "WORKFLOW_CANNOT_RUN"
    assert "Version 2 cannot run" in response.json()["error"]["message"]
    assert await factory.snapshot() == before


async def test_rate_limit_per_webhook(
    factory: Factory, client: httpx.AsyncClient, settings
) -> None:
    token = "R" * 43  # well-formed, unknown: counted before it is looked up
    statuses: list[int] = []
    while 429 not in statuses:
        assert len(statuses) < 2 * settings.webhook_rate_burst, statuses
        response = await client.post(f"/hooks/{token}", json={})
        statuses.append(response.status_code)
    # The burst passes, then the caller is told when to come back
    assert statuses.count(404) >= settings.webhook_rate_burst
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    # Another webhook has its own budget
    assert (await client.post("/hooks/" + "S" * 43, json={})).status_code == 404


def test_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.allow("a", now=100.0) == 0.5  # one token comes back in half a second
    assert limiter.allow("a", now=100.25) == pytest.approx(0.25)
    assert limiter.allow("a", now=100.5) == 0.0
    assert limiter.allow("b", now=100.5) == 0.0  # buckets are per webhook


async def test_wait_for_result_answers_with_the_output(
    factory: Factory, client: httpx.AsyncClient, worker: None
) -> None:
    owner, _workflow_id, hook = await hooked_workflow(factory, GREETING, waitForResult=True)
    response = await client.post(path_of(hook["url"]), json={"name": "Ada"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "SUCCEEDED"
    assert answer["output"] == "Hello Ada!"
    assert answer["error"] is None
    assert (await read_run(factory, owner, answer["runId"]))["status"] == "SUCCEEDED"
    # A failing run answers with its error
    failing = flow(
        node("start", "trigger"), node("stop", "flow.fail", message="No {{ input.name }}")
    )
    other = await create_workflow(factory, owner, failing, name="Failing")
    other_hook = await enable(factory, owner, other, waitForResult=True)
    failed = (await client.post(path_of(other_hook["url"]), json={"name": "Bob"})).json()
    assert failed["status"] == "FAILED"
    assert failed["error"] == 'Node "stop" (flow.fail) failed: No Bob'


async def test_the_url_id_stays_out_of_logs(
    factory: Factory, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    _owner, _workflow_id, hook = await hooked_workflow(factory, GREETING)
    token = hook["url"].rsplit("/", 1)[1]
    caplog.set_level(logging.INFO)
    await client.post(path_of(hook["url"]), json={"name": "Ada"})
    lines = [json.dumps(r.__dict__, default=str) for r in caplog.records]
    assert any("/hooks/" in line for line in lines)
    assert not any(token in line for line in lines)
