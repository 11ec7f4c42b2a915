"""Runs driven where they were queued: by the API process itself, under a lease, no job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.main import create_app
from app.services.webhooks import signature
from app.settings import Settings
from tests.factories import Factory
from tests.runs import (
    create_workflow,
    edge,
    execute,
    node,
    publish,
    read_run,
    wait_for,
    wait_step,
)
from tests.secrets import set_secret
from tests.servers import LocalHTTP

UPDATE = """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
  webhook { url } userErrors { code message } } }"""
CANCEL = "mutation($id: ID!) { runCancel(id: $id) { run { status } userErrors { code } } }"

THREE = {
    "nodes": [
        node("t", "trigger"),
        node(
            "shape",
            "transform.set",
            fields={"n": "{{ trigger.n }}", "twice": "{{ trigger.n * 2 }}"},
        ),
        node("out", "output", value="{{ input }}"),
    ],
    "edges": [edge("t", "shape", "out"), edge("shape", "out", "out")],
}
THREE_EVENTS = [
    (1, "RUN_QUEUED", None, None),
    (2, "RUN_STARTED", None, None),
    (3, "STEP_STARTED", "t", 1),
    (4, "STEP_SUCCEEDED", "t", 1),
    (5, "STEP_STARTED", "shape", 1),
    (6, "STEP_SUCCEEDED", "shape", 1),
    (7, "STEP_STARTED", "out", 1),
    (8, "STEP_SUCCEEDED", "out", 1),
    (9, "RUN_SUCCEEDED", None, None),
]


async def _app(settings: Settings, engine: AsyncEngine, url: str, **changes: Any) -> Starlette:
    return create_app(
        settings.model_copy(update={"inline_runs": 8, "run_lease_seconds": 3.0, **changes}),
        engine,
        url,
        own_engine=False,
    )


@pytest.fixture
async def inline_app(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[Starlette]:
    """An API app that drives the runs it queues (and no worker anywhere)."""
    application = await _app(settings, engine, database_url)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def here(inline_app: Starlette, engine: AsyncEngine) -> AsyncIterator[Factory]:
    """A factory whose GraphQL goes to the inline app."""
    transport = httpx.ASGITransport(app=inline_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield Factory(engine, c)


@pytest.fixture
def upstream() -> Iterator[LocalHTTP]:
    local = LocalHTTP().start()
    yield local
    local.stop()


async def events(factory: Factory, account: Any, run_id: str) -> list[tuple[Any, ...]]:
    """The run's events in order (the table, as every subscriber reads it)."""
    rows = await factory.scalar(
        "SELECT json_agg(json_build_array(e.seq, e.type, e.node_id, e.attempt) ORDER BY e.seq)"
        " FROM run_events e JOIN runs r ON r.id = e.run_id"
    )
    return [tuple(row) for row in rows]


async def webhook(factory: Factory, account: Any, workflow_id: str, **options: Any) -> str:
    body = await factory.gql(
        UPDATE, {"i": {"workflowId": workflow_id, "enabled": True, **options}}, token=account.token
    )
    assert body["data"]["workflowWebhookUpdate"]["userErrors"] == [], body
    return str(body["data"]["workflowWebhookUpdate"]["webhook"]["url"]).removeprefix(
        "http://flowdeck.test"
    )


async def test_an_executed_run_is_driven_by_the_process_that_queued_it(here: Factory) -> None:
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE)

    queued = await execute(here, owner, workflow_id, {"n": 21})
    run = await wait_for(here, owner, queued["run"]["id"])

    assert queued["run"]["status"] == "QUEUED"
    assert (run["status"], run["output"]) == ("SUCCEEDED", {"n": 21, "twice": 42})
    assert await events(here, owner, run["id"]) == THREE_EVENTS
    # No job stood behind it, and its lease was given back when it ended.
    assert await here.scalar("SELECT count(*) FROM procrastinate_jobs") == 0
    row = await here.scalar(
        "SELECT json_build_object('job', job_id, 'attempt', attempt, 'crashes', crashes,"
        " 'lease', lease_until) FROM runs"
    )
    assert row == {"job": None, "attempt": 1, "crashes": 0, "lease": None}


async def test_a_webhook_that_waits_gets_the_output_of_a_run_written_once(here: Factory) -> None:
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE)
    path = await webhook(here, owner, workflow_id, waitForResult=True)

    response = await here.client.post(path, json={"n": 2})

    answer = response.json()
    assert response.status_code == 200, answer
    assert (answer["status"], answer["output"], answer["duplicate"]) == (
        "SUCCEEDED",
        {"n": 2, "twice": 4},
        False,
    )
    assert await events(here, owner, answer["runId"]) == THREE_EVENTS
    assert await here.scalar("SELECT count(*) FROM procrastinate_jobs") == 0
    run = await read_run(here, owner, answer["runId"])
    assert [(s["nodeId"], s["status"], s["attempt"]) for s in run["steps"]] == [
        ("t", "SUCCEEDED", 1),
        ("shape", "SUCCEEDED", 1),
        ("out", "SUCCEEDED", 1),
    ]
    assert run["steps"][1]["input"] == {"n": 2}


async def test_a_webhook_that_does_not_wait_is_answered_once_its_run_is_queued(
    here: Factory,
) -> None:
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE)
    path = await webhook(here, owner, workflow_id)

    response = await here.client.post(path, json={"n": 5})

    answer = response.json()
    assert (response.status_code, answer["status"], answer["duplicate"]) == (202, "QUEUED", False)
    run = await wait_for(here, owner, answer["runId"])
    assert (run["status"], run["output"]) == ("SUCCEEDED", {"n": 5, "twice": 10})
    assert await events(here, owner, answer["runId"]) == THREE_EVENTS


async def test_repeated_deliveries_at_once_make_one_run(here: Factory) -> None:
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE)
    path = await webhook(here, owner, workflow_id, waitForResult=True)
    headers = {"x-flowdeck-delivery": "d-1"}

    responses = await asyncio.gather(
        *(here.client.post(path, json={"n": 1}, headers=headers) for _ in range(8))
    )

    answers = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200] * 8, answers
    assert sorted(a["duplicate"] for a in answers) == [False] + [True] * 7
    assert {a["runId"] for a in answers} == {answers[0]["runId"]}
    assert [a["output"] for a in answers] == [{"n": 1, "twice": 2}] * 8
    assert await here.scalar("SELECT count(*) FROM runs") == 1
    other = await here.client.post(path, json={"n": 2}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    assert await here.scalar("SELECT count(*) FROM runs") == 1


async def test_a_delivery_that_cannot_run_writes_nothing(here: Factory) -> None:
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE)
    path = await webhook(here, owner, workflow_id, waitForResult=True)
    before = await here.snapshot()

    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    response = await here.client.post(path, json={"n": deep})

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BAD_REQUEST"
    assert await here.snapshot() == before


@pytest.mark.parametrize("waits", [True, False])
async def test_a_delivery_here_runs_the_published_version_and_none_is_409(
    here: Factory, waits: bool
) -> None:
    # Given a workflow never published, with its webhook on
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE, published=False)
    path = await webhook(here, owner, workflow_id, waitForResult=waits)
    before = await here.snapshot()

    refused = await here.client.post(path, json={"n": 1})

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "WORKFLOW_NOT_PUBLISHED"
    assert await here.snapshot() == before
    # Once version 1 is published, a later draft (version 2) does not change what runs
    assert (await publish(here, owner, workflow_id, 1, baseVersion=0))["userErrors"] == []
    saved = await here.gql(
        """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) { userErrors { code } } }""",
        {"i": {"workflowId": workflow_id, "graph": THREE, "baseVersion": 1}},
        token=owner.token,
    )
    assert saved["data"]["workflowSave"]["userErrors"] == []
    accepted = await here.client.post(path, json={"n": 2})
    run = await wait_for(here, owner, accepted.json()["runId"])
    assert (run["status"], run["version"]) == ("SUCCEEDED", {"number": 1})


async def test_a_step_with_an_effect_is_written_before_its_call_and_after_it(
    here: Factory, upstream: LocalHTTP
) -> None:
    seen: list[list[tuple[str, str]]] = []

    async def look(request: Request) -> Response:
        # What the run's steps are while the call is in flight.
        rows = await here.scalar(
            "SELECT json_agg(json_build_array(node_id, status) ORDER BY position) FROM run_steps"
        )
        seen.append([tuple(r) for r in rows])
        return JSONResponse({"ok": True})

    upstream.routes["/look"] = look
    owner = await here.owner()
    graph = {
        "nodes": [
            node("t", "trigger"),
            node("call", "http.request", url=upstream.url("/look")),
            node("out", "output", value="{{ input.body.ok }}"),
        ],
        "edges": [edge("t", "call", "out"), edge("call", "out", "out")],
    }
    workflow_id = await create_workflow(here, owner, graph)

    run = await wait_for(here, owner, (await execute(here, owner, workflow_id))["run"]["id"])

    assert (run["status"], run["output"]) == ("SUCCEEDED", True)
    assert seen == [[("t", "SUCCEEDED"), ("call", "RUNNING"), ("out", "PENDING")]]


async def test_cancelling_a_run_driven_here_stops_it_within_a_second(
    here: Factory, inline_app: Starlette
) -> None:
    owner = await here.owner()
    graph = {
        "nodes": [
            node("t", "trigger"),
            node("wait", "flow.delay", seconds=20),
            node("out", "output", value="x"),
        ],
        "edges": [edge("t", "wait", "out"), edge("wait", "out", "out")],
    }
    workflow_id = await create_workflow(here, owner, graph)
    run_id = (await execute(here, owner, workflow_id))["run"]["id"]
    await wait_step(here, owner, run_id, "wait", "RUNNING")
    inline = inline_app.state.runtime.inline
    assert inline.active == 1

    body = await here.gql(CANCEL, {"id": run_id}, token=owner.token)
    loop = asyncio.get_running_loop()
    stopped_by = loop.time() + 1.0
    while inline.active and loop.time() < stopped_by:
        await asyncio.sleep(0.01)

    assert body["data"]["runCancel"]["run"]["status"] == "CANCELLED"
    assert inline.active == 0
    run = await read_run(here, owner, run_id)
    assert run["status"] == "CANCELLED"
    assert [(s["nodeId"], s["status"]) for s in run["steps"]] == [
        ("t", "SUCCEEDED"),
        ("wait", "CANCELLED"),
        ("out", "CANCELLED"),
    ]
    assert (await events(here, owner, run_id))[-1][1] == "RUN_CANCELLED"


async def test_past_its_capacity_a_process_hands_new_runs_to_the_workers(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> None:
    application = await _app(settings, engine, database_url, inline_runs=1)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
            factory = Factory(engine, c)
            owner = await factory.owner()
            graph = {
                "nodes": [node("t", "trigger"), node("wait", "flow.delay", seconds=20)],
                "edges": [edge("t", "wait", "out")],
            }
            workflow_id = await create_workflow(factory, owner, graph)
            first = (await execute(factory, owner, workflow_id))["run"]["id"]
            await wait_step(factory, owner, first, "wait", "RUNNING")

            second = (await execute(factory, owner, workflow_id))["run"]["id"]

            assert (await read_run(factory, owner, second))["status"] == "QUEUED"
            assert await factory.scalar("SELECT count(*) FROM procrastinate_jobs") == 1
            jobs = await factory.scalar("SELECT count(*) FROM runs WHERE job_id IS NOT NULL")
            assert jobs == 1


SAVE = """mutation($i: WorkflowSaveInput!) { workflowSave(input: $i) {
  workflow { currentVersion { number } } userErrors { code message } } }"""
SIGNED = """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
  webhook { url signingSecret } userErrors { code message } } }"""


def greeting(word: str) -> dict[str, Any]:
    return {
        "nodes": [
            node("t", "trigger"),
            node("say", "text.format", template=f"{word} {{{{ input.name }}}}"),
            node("out", "output", value="{{ input }}"),
        ],
        "edges": [edge("t", "say", "out"), edge("say", "out", "out")],
    }


async def test_a_delivery_right_after_a_publish_runs_the_new_version(here: Factory) -> None:
    # Given a webhook whose target this process has just looked up (and kept)
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, greeting("Hello"))
    path = await webhook(here, owner, workflow_id, waitForResult=True)
    first = (await here.client.post(path, json={"name": "Ada"})).json()
    # When the workflow is saved (a draft: still version 1 runs), then version 2 is published
    saved = await here.gql(
        SAVE,
        {"i": {"workflowId": workflow_id, "graph": greeting("Goodbye"), "baseVersion": 1}},
        token=owner.token,
    )
    assert saved["data"]["workflowSave"]["userErrors"] == []
    draft = (await here.client.post(path, json={"name": "Ada"})).json()
    assert (await publish(here, owner, workflow_id, 2, baseVersion=1))["userErrors"] == []
    second = (await here.client.post(path, json={"name": "Ada"})).json()
    # Then the delivery after the publish runs version 2, though the kept target said 1
    assert (first["output"], draft["output"], second["output"]) == (
        "Hello Ada",
        "Hello Ada",
        "Goodbye Ada",
    )
    versions = await here.scalar("SELECT json_agg(version_number ORDER BY queued_at) FROM runs")
    assert versions == [1, 1, 2]
    # And right after an unpublish, the kept target is found out: 409, nothing written
    unpublished = await here.gql(
        "mutation($id: ID!) { workflowUnpublish(id: $id) { userErrors { code } } }",
        {"id": workflow_id},
        token=owner.token,
    )
    assert unpublished["data"]["workflowUnpublish"]["userErrors"] == []
    before = await here.snapshot()
    refused = await here.client.post(path, json={"name": "Ada"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (
        409,
        "WORKFLOW_NOT_PUBLISHED",
    )
    assert await here.snapshot() == before


async def test_a_kept_target_never_outlives_a_disabled_hook_or_a_rotated_secret(
    here: Factory,
) -> None:
    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, THREE)
    body = await here.gql(
        SIGNED,
        {"i": {"workflowId": workflow_id, "enabled": True, "requireSignature": True}},
        token=owner.token,
    )
    hook = body["data"]["workflowWebhookUpdate"]["webhook"]
    path = hook["url"].removeprefix("http://flowdeck.test")
    # Each delivery its own body: a signed delivery without an id is known by what it signs.
    payloads = iter([b'{"n": 3}', b'{"n": 4}', b'{"n": 5}', b'{"n": 6}'])

    async def deliver(secret: str) -> httpx.Response:
        payload, at = next(payloads), str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "x-flowdeck-timestamp": at,
            "x-flowdeck-signature": signature(secret, at, payload),
        }
        return await here.client.post(path, content=payload, headers=headers)

    assert (await deliver(hook["signingSecret"])).status_code == 202
    # When the signing secret is rotated, the old one is refused at once
    rotated = await here.gql(
        SIGNED,
        {"i": {"workflowId": workflow_id, "enabled": True, "rotateSigningSecret": True}},
        token=owner.token,
    )
    new_secret = rotated["data"]["workflowWebhookUpdate"]["webhook"]["signingSecret"]
    old = await deliver(hook["signingSecret"])
    assert (old.status_code, old.json()["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert (await deliver(new_secret)).status_code == 202
    # And once the hook is disabled, a delivery is 404 and writes nothing
    await here.gql(SIGNED, {"i": {"workflowId": workflow_id, "enabled": False}}, token=owner.token)
    before = await here.snapshot()
    gone = await deliver(new_secret)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "NOT_FOUND")
    assert await here.snapshot() == before
    assert await here.scalar("SELECT count(*) FROM runs") == 2


async def test_a_secret_set_after_a_delivery_is_redacted_in_the_next(here: Factory) -> None:
    owner = await here.owner()
    graph = {
        "nodes": [node("t", "trigger"), node("out", "output", value="{{ input }}")],
        "edges": [edge("t", "out", "out")],
    }
    workflow_id = await create_workflow(here, owner, graph)
    path = await webhook(here, owner, workflow_id, waitForResult=True)
    before = (await here.client.post(path, json={"key": "sk-live-4242"})).json()

    assert (await set_secret(here, owner, "KEY", "sk-live-4242"))["userErrors"] == []
    after = (await here.client.post(path, json={"key": "sk-live-4242"})).json()

    assert before["output"] == {"key": "sk-live-4242"}  # not a secret yet
    assert after["output"] == {"key": "[secret:KEY]"}
    stored = await here.scalar("SELECT output::text FROM runs ORDER BY queued_at DESC LIMIT 1")
    assert "sk-live-4242" not in stored
