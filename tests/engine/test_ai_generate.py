"""Tests for the ai.generate node against a real OpenAI-compatible stub server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from app.engine.nodes.ai_generate import AiGenerateConfig, run
from app.engine.nodes.base import NodeContext, NodeFailure, NodeOutcome
from app.engine.outbound import OutboundBlocked
from app.settings import Settings
from tests.factories import Factory
from tests.openai_stub import SERVER_ERROR, OpenAIStub
from tests.runs import create_workflow, edge, execute, node, steps_by_node, wait_for
from tests.servers import LocalHTTP

RUN_ID = uuid.UUID("5d0c2a8e-1f3b-4c6d-9e7a-2b4c6d8e0f12")
WORKSPACE_ID = uuid.UUID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
API_KEY = "sk-test-4f1d2c3b5a697887"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    """The OpenAI-compatible endpoint, requiring API_KEY."""
    server = OpenAIStub(api_key=API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def open_stub() -> Iterator[OpenAIStub]:
    """The OpenAI-compatible endpoint, accepting any caller (a local model server)."""
    server = OpenAIStub().start()
    yield server
    server.stop()


def context(settings: Settings, secrets: dict[str, str] | None = None) -> NodeContext:
    return NodeContext(
        run_id=RUN_ID,
        workspace_id=WORKSPACE_ID,
        node_id="summarize",
        attempt=1,
        step_started_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
        settings=settings,
        secrets={"OPENAI_KEY": API_KEY} if secrets is None else secrets,
    )


async def call(data: dict[str, Any], ctx: NodeContext) -> NodeOutcome:
    """Run the node with this config (as the builder saves it), with a hang guard."""
    config = AiGenerateConfig.model_validate(data)
    return await asyncio.wait_for(run(ctx, config, {}), 10)


def config(stub: OpenAIStub, **data: Any) -> dict[str, Any]:
    return {
        "baseUrl": stub.base_url,
        "model": "gpt-4o-mini",
        "prompt": "summarize the quarterly report",
        "apiKeySecret": "OPENAI_KEY",
        **data,
    }


# --- the node type and its config --------------------------------------------------------


def test_config_reads_camel_case_ignores_builder_keys_and_writes_values_as_text() -> None:
    config = AiGenerateConfig.model_validate(
        {
            "label": "Summarize",
            "baseUrl": "https://api.openai.com/v1",
            "model": "gpt-4o-mini",
            "system": None,
            "prompt": {"ticket": 42, "tags": ["billing"]},
            "apiKeySecret": "OPENAI_KEY",
            "temperature": 0.2,
            "maxTokens": 600,
        }
    )

    assert config.model_dump() == {
        "retry": None,
        "timeout_seconds": None,
        "continue_on_fail": False,
        "base_url": "https://api.openai.com/v1",
        "model": "gpt-4o-mini",
        "system": None,
        "prompt": '{"ticket":42,"tags":["billing"]}',
        "api_key_secret": "OPENAI_KEY",
        "temperature": 0.2,
        "max_tokens": 600,
    }


@pytest.mark.parametrize(
    ("data", "location", "message"),
    [
        ({"temperature": 2.5}, ("temperature",), "Input should be less than or equal to 2"),
        ({"temperature": -0.1}, ("temperature",), "Input should be greater than or equal to 0"),
        ({"maxTokens": 0}, ("maxTokens",), "Input should be greater than or equal to 1"),
        (
            {"maxTokens": 131_073},
            ("maxTokens",),
            "Input should be less than or equal to 131072",
        ),
        ({"model": ""}, ("model",), "String should have at least 1 character"),
        ({"prompt": ""}, ("prompt",), "String should have at least 1 character"),
        ({"prompt": None}, ("prompt",), "Input should be a valid string"),
        ({"apiKeySecret": ""}, ("apiKeySecret",), "String should have at least 1 character"),
    ],
)
def test_config_rejects_what_cannot_be_sent(
    data: dict[str, Any], location: tuple[str, ...], message: str
) -> None:
    valid = {"baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini", "prompt": "Hi"}

    with pytest.raises(ValidationError) as invalid:
        AiGenerateConfig.model_validate({**valid, **data})

    assert [(e["loc"], e["msg"]) for e in invalid.value.errors()] == [(location, message)]


# --- requests and outputs ----------------------------------------------------------------


async def test_sends_the_chat_completion_request_and_outputs_the_answer(
    stub: OpenAIStub, settings: Settings
) -> None:
    outcome = await call(
        config(
            stub,
            system="You are a precise analyst.",
            temperature=0.2,
            maxTokens=50,
        ),
        context(settings),
    )

    assert outcome == NodeOutcome(
        {
            "text": "SUMMARIZE THE QUARTERLY REPORT",
            "model": "gpt-4o-mini-2024-07-18",
            "finishReason": "stop",
            "usage": {"promptTokens": 9, "completionTokens": 4, "totalTokens": 13},
        }
    )
    assert stub.requests == [
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a precise analyst."},
                {"role": "user", "content": "summarize the quarterly report"},
            ],
            "temperature": 0.2,
            "max_tokens": 50,
        }
    ]
    [hit] = stub.hits
    assert (hit.method, hit.path) == ("POST", "/v1/chat/completions")
    assert {
        name: hit.headers[name]
        for name in ("authorization", "content-type", "accept", "idempotency-key", "user-agent")
    } == {
        "authorization": f"Bearer {API_KEY}",
        "content-type": "application/json",
        "accept": "application/json",
        "idempotency-key": f"{RUN_ID}:summarize",
        "user-agent": "Flowdeck/0.1",
    }


async def test_optional_fields_left_out_are_not_sent(
    open_stub: OpenAIStub, settings: Settings
) -> None:
    data = config(open_stub, baseUrl=f"{open_stub.base_url}/", prompt="hello there")
    del data["apiKeySecret"]

    outcome = await call(data, context(settings, secrets={}))

    assert outcome.output["text"] == "HELLO THERE"
    assert open_stub.requests == [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    ]
    [hit] = open_stub.hits
    assert hit.path == "/v1/chat/completions"
    assert "authorization" not in hit.headers


async def test_an_answer_cut_by_max_tokens_reports_length(
    stub: OpenAIStub, settings: Settings
) -> None:
    outcome = await call(config(stub, maxTokens=2), context(settings))

    assert outcome.output == {
        "text": "SUMMARIZE THE",
        "model": "gpt-4o-mini-2024-07-18",
        "finishReason": "length",
        "usage": {"promptTokens": 4, "completionTokens": 2, "totalTokens": 6},
    }


async def test_a_key_with_surrounding_whitespace_is_sent_trimmed(
    stub: OpenAIStub, settings: Settings
) -> None:
    outcome = await call(config(stub), context(settings, secrets={"OPENAI_KEY": f" {API_KEY}\n"}))

    assert outcome.output["text"] == "SUMMARIZE THE QUARTERLY REPORT"
    assert [hit.headers["authorization"] for hit in stub.hits] == [f"Bearer {API_KEY}"]


async def test_a_completion_without_usage_or_model_reports_none_and_the_requested_model(
    open_stub: OpenAIStub, settings: Settings
) -> None:
    open_stub.mode = "malformed"
    open_stub.malformed_body = {"choices": [{"message": {"role": "assistant", "content": "Hi"}}]}

    outcome = await call(config(open_stub), context(settings))

    assert outcome.output == {
        "text": "Hi",
        "model": "gpt-4o-mini",
        "finishReason": None,
        "usage": {"promptTokens": None, "completionTokens": None, "totalTokens": None},
    }


# --- failures ----------------------------------------------------------------------------


async def test_a_wrong_key_fails_with_the_upstream_message_and_never_the_key(
    stub: OpenAIStub, settings: Settings
) -> None:
    wrong = "sk-test-wrong-0000000000"

    with pytest.raises(NodeFailure) as failure:
        await call(config(stub), context(settings, secrets={"OPENAI_KEY": wrong}))

    assert str(failure.value) == "AI endpoint answered 401: Incorrect API key provided: [redacted]."
    assert stub.requests == []


async def test_no_key_for_an_endpoint_that_needs_one_fails_with_its_message(
    stub: OpenAIStub, settings: Settings
) -> None:
    data = config(stub)
    del data["apiKeySecret"]

    with pytest.raises(NodeFailure) as failure:
        await call(data, context(settings))

    assert str(failure.value) == (
        "AI endpoint answered 401: You didn't provide an API key. You need to provide your API "
        "key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
    )


async def test_a_missing_secret_fails_before_anything_is_sent(
    stub: OpenAIStub, settings: Settings
) -> None:
    with pytest.raises(NodeFailure) as failure:
        await call(config(stub), context(settings, secrets={"OTHER": "x"}))

    assert str(failure.value) == 'The secret "OPENAI_KEY" is not set in this workspace.'
    assert stub.hits == []


async def test_a_server_error_fails_with_the_upstream_message(
    stub: OpenAIStub, settings: Settings
) -> None:
    stub.mode = "server_error"

    with pytest.raises(NodeFailure) as failure:
        await call(config(stub), context(settings))

    assert str(failure.value) == f"AI endpoint answered 500: {SERVER_ERROR}"
    assert len(stub.requests) == 1


async def test_an_error_body_that_is_not_json_is_quoted_in_short(settings: Settings) -> None:
    async def gateway(request: Request) -> Response:
        page = "<html><body><h1>502 Bad Gateway</h1>" + "<p>upstream down</p>" * 20 + "</body>"
        return Response(page, status_code=502, media_type="text/html")

    proxy = LocalHTTP(routes={"/v1/chat/completions": gateway}).start()
    try:
        with pytest.raises(NodeFailure) as failure:
            await call(
                {"baseUrl": proxy.url("/v1"), "model": "m", "prompt": "Hi"}, context(settings)
            )
    finally:
        proxy.stop()

    excerpt = ("<html><body><h1>502 Bad Gateway</h1>" + "<p>upstream down</p>" * 9)[:199]
    assert str(failure.value) == f"AI endpoint answered 502: {excerpt}…"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
            "AI endpoint answered 200 with something other than a chat completion: "
            "it has no choices.",
        ),
        (
            ["not", "an", "object"],
            "AI endpoint answered 200 with something other than a chat completion: "
            "it has no choices.",
        ),
        (
            {"choices": [{"index": 0, "text": "legacy completion"}]},
            "AI endpoint answered 200 with something other than a chat completion: "
            "its first choice has no message.",
        ),
        (
            {"choices": [{"message": {"role": "assistant", "content": [{"type": "text"}]}}]},
            "AI endpoint answered 200 with something other than a chat completion: "
            "its message content is not text.",
        ),
        (
            {
                "choices": [
                    {
                        "message": {"role": "assistant", "content": None},
                        "finish_reason": "content_filter",
                    }
                ]
            },
            "The model answered without text (finish reason: content_filter).",
        ),
    ],
)
async def test_a_body_that_is_not_a_chat_completion_fails_clearly(
    open_stub: OpenAIStub, settings: Settings, body: Any, message: str
) -> None:
    open_stub.mode = "malformed"
    open_stub.malformed_body = body

    with pytest.raises(NodeFailure) as failure:
        await call(config(open_stub), context(settings))

    assert str(failure.value) == message


async def test_a_body_that_is_not_json_fails_clearly(
    open_stub: OpenAIStub, settings: Settings
) -> None:
    open_stub.mode = "malformed"
    open_stub.malformed_body = b"<html>maintenance</html>"

    with pytest.raises(NodeFailure) as failure:
        await call(config(open_stub), context(settings))

    assert str(failure.value) == (
        "AI endpoint answered 200 with something other than a chat completion: "
        "the body is not JSON."
    )


async def test_a_metadata_address_is_refused_by_the_outbound_policy(settings: Settings) -> None:
    data = {"baseUrl": "http://169.254.169.254/v1", "model": "m", "prompt": "Hi"}

    with pytest.raises(OutboundBlocked) as refused:
        await call(data, context(settings))

    assert str(refused.value) == (
        "Refused to connect to 169.254.169.254: cloud metadata address is not allowed."
    )


# --- through the API, with a worker ------------------------------------------------------


def ai_graph(stub: OpenAIStub) -> dict[str, Any]:
    return {
        "nodes": [
            node("t", "trigger"),
            node(
                "ai",
                "ai.generate",
                label="Write",
                baseUrl=stub.base_url,
                model="gpt-4o-mini",
                system="Answer in one line.",
                prompt="Write a haiku about {{ trigger.topic }} for {{ input.audience }}",
                temperature="{{ trigger.warmth }}",
                maxTokens=40,
            ),
            node("out", "output", value="{{ nodes.ai.output }}"),
        ],
        "edges": [edge("t", "ai", "out"), edge("ai", "out", "out")],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }


async def test_a_workflow_renders_the_prompt_and_outputs_the_answer(
    factory: Factory, worker: None, open_stub: OpenAIStub
) -> None:
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, ai_graph(open_stub))

    queued = await execute(
        factory,
        owner,
        workflow_id,
        {"topic": "autumn rain", "audience": "the ops team", "warmth": 0.7},
    )
    run = await wait_for(factory, owner, queued["run"]["id"])

    answer = {
        "text": "WRITE A HAIKU ABOUT AUTUMN RAIN FOR THE OPS TEAM",
        "model": "gpt-4o-mini-2024-07-18",
        "finishReason": "stop",
        "usage": {"promptTokens": 14, "completionTokens": 10, "totalTokens": 24},
    }
    assert (run["status"], run["error"], run["output"]) == ("SUCCEEDED", None, answer)
    step = steps_by_node(run)["ai"]
    assert (step["nodeType"], step["status"], step["attempt"], step["output"]) == (
        "ai.generate",
        "SUCCEEDED",
        1,
        answer,
    )
    assert open_stub.requests == [
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Answer in one line."},
                {"role": "user", "content": "Write a haiku about autumn rain for the ops team"},
            ],
            "temperature": 0.7,
            "max_tokens": 40,
        }
    ]


async def test_a_workflow_whose_endpoint_fails_ends_failed_naming_the_node(
    factory: Factory, worker: None, open_stub: OpenAIStub
) -> None:
    open_stub.mode = "server_error"
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, ai_graph(open_stub))

    queued = await execute(
        factory, owner, workflow_id, {"topic": "tides", "audience": "sailors", "warmth": 0}
    )
    run = await wait_for(factory, owner, queued["run"]["id"])

    message = f"AI endpoint answered 500: {SERVER_ERROR}"
    assert (run["status"], run["error"], run["errorNodeId"], run["output"]) == (
        "FAILED",
        f'Node "ai" (ai.generate) failed: {message}',
        "ai",
        None,
    )
    steps = steps_by_node(run)
    assert (steps["ai"]["status"], steps["ai"]["error"]) == ("FAILED", message)
    assert steps["out"]["status"] == "CANCELLED"
    assert len(open_stub.requests) == 1
