"""Hostile secrets: awkward values, every way a value can leak from a run, hostile secretSet input.

Each leak test runs a real workflow on a real worker against a real upstream, then reads
everything a run leaves behind (runs, steps, events, via the API and the tables) for the
value in any of its usual encodings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.auth.principal import Principal
from app.models import Role
from app.services import secrets as secret_service
from tests.factories import Account, Factory
from tests.hostile import problem_of, unstorable, user_error, without_locations
from tests.runs import (
    create_workflow,
    execute,
    flow,
    node,
    run_graph,
    steps_by_node,
    wait_for,
    wait_step,
)
from tests.secrets import (
    DELETE,
    LIST,
    SET,
    delete_secret,
    owner_with_secrets,
    sending_key,
    set_secret,
)
from tests.servers import LocalHTTP


def encodings(value: str) -> dict[str, str]:
    """The forms a value commonly takes on its way through HTTP, JSON, logs and CEL."""
    data = value.encode()
    forms = {
        "raw": value,
        "url": quote(value, safe=""),
        "url+": quote_plus(value, safe=""),
        "json": json.dumps(value)[1:-1],
        "json utf-8": json.dumps(value, ensure_ascii=False)[1:-1],
        "repr": repr(value)[1:-1],
        "base64": base64.b64encode(data).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(data).decode().rstrip("="),
    }
    return {name: form for name, form in forms.items() if len(form) >= 4}


async def everything_stored(factory: Factory) -> str:
    """Every row a run leaves behind, as text (JSON escapes decoded once more, too)."""
    dumps = []
    for table in ("runs", "run_steps", "run_events"):
        rows = await factory.scalar(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} t")
        dumps.append(rows)
    text = "\n".join(dumps)
    return text + "\n" + json.dumps(json.loads("[" + ",".join(d for d in dumps if d) + "]"))


async def assert_nowhere(factory: Factory, run: dict, value: str) -> None:
    """Neither the run as the API shows it nor any stored row holds the value, in any form."""
    shown = json.dumps(run, ensure_ascii=False) + json.dumps(run)
    stored = await everything_stored(factory)
    for name, form in encodings(value).items():
        assert form not in shown, f"the API shows the {name} form"
        assert form not in stored, f"a row holds the {name} form"


# --- values that look like JSON, numbers or words ----------------------------------------------


async def test_a_numeric_secret_used_as_a_number_is_redacted_in_the_run_output(
    factory: Factory, worker: None
) -> None:
    # Given a PIN, output as a number (the whole output) and inside an object
    owner = await owner_with_secrets(factory, PIN="48151623")
    graph = flow(
        node("start", "trigger"),
        node("build", "transform.set", fields={"pin": "{{ int(secrets.PIN) }}", "n": "{{ 7 }}"}),
        node("out", "output", value="{{ int(secrets.PIN) }}"),
    )
    # When it runs
    run = await run_graph(factory, owner, graph)
    # Then the number is replaced like a string would be, and nothing else is touched
    assert run["status"] == "SUCCEEDED"
    assert run["output"] == "[secret:PIN]"
    assert steps_by_node(run)["build"]["output"] == {"pin": "[secret:PIN]", "n": 7}
    await assert_nowhere(factory, run, "48151623")


@pytest.mark.parametrize("value", ["null", "true", "false", "1234", '", "', "\\n\\t"])
async def test_a_secret_that_looks_like_json_syntax_redacts_only_itself(
    factory: Factory, worker: None, value: str
) -> None:
    # Given a secret whose value is a JSON word, number or piece of syntax
    owner = await owner_with_secrets(factory, ODD=value)
    graph = flow(node("start", "trigger"), node("out", "output", value="{{ input }}"))
    # And an input full of nulls, booleans, numbers, lists and escapes, and the value itself
    data = {
        "a": None,
        "b": [True, False, None, 12, 3.5, "x", "y"],
        "c": 'line\nbreak\ttab "quoted" back\\slash',
        "d": {"nested": [None, {"e": False}]},
        "the value": f"<{value}>",
    }
    # When it runs
    run = await run_graph(factory, owner, graph, data)
    # Then the value is replaced where it is, and everything else comes out as it went in
    expected = {**data, "the value": "<[secret:ODD]>"}
    assert run["status"] == "SUCCEEDED"
    assert run["output"] == expected
    assert steps_by_node(run)["out"]["output"] == expected
    assert steps_by_node(run)["out"]["input"] == expected


async def test_two_secrets_one_inside_the_other_are_each_replaced_whole(
    factory: Factory, worker: None
) -> None:
    owner = await owner_with_secrets(factory, SHORT="abcd1234", LONG="abcd1234-and-more")
    both = "{{ secrets.LONG + ' / ' + secrets.SHORT + ' / ' + secrets.SHORT + '-and' }}"
    run = await run_graph(
        factory, owner, flow(node("start", "trigger"), node("out", "output", value=both))
    )
    assert run["output"] == "[secret:LONG] / [secret:SHORT] / [secret:SHORT]-and"


# --- a value on its way out and back: escaped, encoded, cut, collapsed ---------------------------

# Printable ASCII (it goes into a header), with JSON, URL and shell syntax in it.
AWKWARD = 'p"a\\ss /+=[x]{y}&z'
BASIC_USER = "user:"


async def test_an_awkward_value_echoed_back_in_every_encoding_is_redacted(
    factory: Factory, worker: None, upstream: LocalHTTP, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Given a value with quotes, a backslash, a space and URL syntax, sent upstream in a header,
    # the query, the path, a JSON body and Basic auth; the upstream echoes everything back
    owner = await owner_with_secrets(factory, AWK=AWKWARD)
    graph = flow(
        node("start", "trigger"),
        node(
            "call",
            "http.request",
            method="POST",
            url=upstream.url("/echo") + "?k={{ secrets.AWK }}",
            headers={
                "X-Key": "{{ secrets.AWK }}",
                "Authorization": "Basic {{ bytes('" + BASIC_USER + "' + secrets.AWK) }}",
            },
            body={"k": "{{ secrets.AWK }}"},
        ),
        node("b64", "output", value="{{ bytes(secrets.AWK) }}"),
        node("echo", "output", value="{{ input }}"),
        edges="start->call, call->echo, start->b64",
    )
    # When it runs
    run = await run_graph(factory, owner, graph)
    # Then the upstream got the real value
    [hit] = upstream.hits
    assert hit.headers["x-key"] == AWKWARD
    assert json.loads(hit.body) == {"k": AWKWARD}
    expected_basic = base64.b64encode((BASIC_USER + AWKWARD).encode()).decode()
    assert hit.headers["authorization"] == f"Basic {expected_basic}"
    # And the run shows it nowhere, in no encoding
    assert run["status"] == "SUCCEEDED"
    echoed = steps_by_node(run)["call"]["output"]
    assert echoed["headers"]["x-echo"] == "[secret:AWK]"
    assert echoed["body"]["headers"]["x-key"] == "[secret:AWK]"
    assert json.loads(echoed["body"]["body"]) == {"k": "[secret:AWK]"}
    assert echoed["body"]["url"].endswith("/echo?k=[secret:AWK]")
    assert run["output"]["b64"] == "[secret:AWK]"
    assert "[secret:AWK]" in echoed["body"]["headers"]["authorization"]
    await assert_nowhere(factory, run, AWKWARD)
    await assert_nowhere(factory, run, BASIC_USER + AWKWARD)
    # Nor does any log line of Flowdeck's (the upstream's own access log is the outside world)
    for record in caplog.records:
        if record.name != "uvicorn.access":
            line = json.dumps(record.__dict__, default=str) + record.getMessage()
            for name, form in encodings(AWKWARD).items():
                assert form not in line, (name, record.name)


KEY = "sk-live-7d1f0c93b2e84a56f1c2d3e4"


async def test_an_error_excerpt_that_cuts_through_the_key_shows_none_of_it(
    factory: Factory, worker: None, upstream: LocalHTTP
) -> None:
    # Given an upstream whose refusal quotes the key where the 200-character excerpt ends,
    # called with retries, and with continue-on-fail so that the error goes downstream
    owner = await owner_with_secrets(factory, KEY=KEY)
    graph = flow(
        node("start", "trigger"),
        sending_key(
            upstream.url("/refuse-long"),
            "KEY",
            retry={"maxAttempts": 2, "backoffSeconds": 0},
            continueOnFail=True,
        ),
        node("say", "text.format", template="Upstream said: {{ input.error }}"),
    )
    # When it runs
    run = await run_graph(factory, owner, graph)
    # Then the error ends with the key's placeholder, not its first characters
    expected = "HTTP 403 from 127.0.0.1: Denied. " + "x" * 170 + " key=[secret:KEY]…"
    steps = steps_by_node(run)
    assert steps["call"]["error"] == expected
    assert steps["call"]["output"] == {"error": expected}
    assert steps["say"]["output"] == f"Upstream said: {expected}"
    retrying = await factory.scalar(
        "SELECT error FROM run_events WHERE type = 'STEP_RETRYING' AND node_id = 'call'"
    )
    assert retrying == expected
    await assert_nowhere(factory, run, KEY)
    for length in range(8, len(KEY)):
        assert f"key={KEY[:length]}" not in await everything_stored(factory), length


async def test_an_error_excerpt_that_collapses_the_keys_whitespace_does_not_show_it(
    factory: Factory, worker: None, upstream: LocalHTTP
) -> None:
    spaced = "key  with   runs of    spaces"
    owner = await owner_with_secrets(factory, SPACED=spaced)
    call = sending_key(upstream.url("/refuse-raw"), "SPACED")
    run = await run_graph(factory, owner, flow(node("start", "trigger"), call))
    step = steps_by_node(run)["call"]
    assert step["error"] == "HTTP 500 from 127.0.0.1: bad key: [secret:SPACED]"
    assert step["output"]["body"] == "bad key:\n[secret:SPACED]"
    await assert_nowhere(factory, run, spaced)
    await assert_nowhere(factory, run, " ".join(spaced.split()))


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        (
            "{{ int(secrets.Q) }}",
            "{{ int(secrets.Q) }} failed: Function 'int' error: string parse error: invalid "
            "digit found in string. Check function arguments and their types.",
        ),
        (
            "{{ duration(secrets.Q) }}",
            "{{ duration(secrets.Q) }} failed: Function 'duration' error: Parsing Error: Error "
            '{ input: "[secret:Q]", code: Float }. Check function arguments and their types.',
        ),
        ("{{ trigger[secrets.Q] }}", "{{ trigger[secrets.Q] }} failed: no such key '[secret:Q]'"),
    ],
)
async def test_expression_errors_that_quote_the_value_escaped_do_not_show_it(
    factory: Factory, worker: None, expression: str, error: str
) -> None:
    # Given a value with a quote, a backslash, a newline and a non-ASCII letter, which CEL's
    # and Python's messages write escaped
    value = 'multi\nline "quoted" \\ é'
    owner = await owner_with_secrets(factory, Q=value)
    graph = flow(node("start", "trigger"), node("out", "output", value=expression))
    run = await run_graph(factory, owner, graph, {"a": 1})
    assert steps_by_node(run)["out"]["error"] == error
    assert run["error"] == f'Node "out" (output) failed: {error}'
    await assert_nowhere(factory, run, value)


async def test_a_secret_in_object_keys_and_two_outputs_is_redacted(
    factory: Factory, worker: None, upstream: LocalHTTP
) -> None:
    owner = await owner_with_secrets(factory, KEY=KEY)
    graph = flow(
        node("start", "trigger"),
        node("call", "http.request", url=upstream.url("/echo") + "?{{ secrets.KEY }}=1"),
        node("first", "output", value="{{ {secrets.KEY: [secrets.KEY]} }}"),
        node("second", "output", value="{{ input.body.url }}"),
        edges="start->call, call->second, start->first",
    )
    run = await run_graph(factory, owner, graph)
    assert run["output"]["first"] == {"[secret:KEY]": ["[secret:KEY]"]}
    assert run["output"]["second"].endswith("/echo?[secret:KEY]=1")
    await assert_nowhere(factory, run, KEY)


async def test_a_run_retried_from_the_failed_step_shows_no_value(
    factory: Factory, worker: None
) -> None:
    owner = await owner_with_secrets(factory, KEY=KEY)
    graph = flow(
        node("start", "trigger"),
        node("token", "transform.set", fields={"auth": "Bearer {{ secrets.KEY }}"}),
        node("stop", "flow.fail", message="stopped with {{ input.auth }}"),
    )
    run = await run_graph(factory, owner, graph)
    assert run["error"] == 'Node "stop" (flow.fail) failed: stopped with Bearer [secret:KEY]'
    body = await factory.gql(
        """mutation($i: RunRetryInput!) { runRetry(input: $i) { run { id } userErrors { code } } }""",
        {"i": {"runId": run["id"], "fromFailedStep": True}},
        token=owner.token,
    )
    retried = await wait_for(factory, owner, body["data"]["runRetry"]["run"]["id"])
    steps = steps_by_node(retried)
    assert steps["token"]["reused"] is True
    assert steps["token"]["output"] == {"auth": "Bearer [secret:KEY]"}
    assert retried["error"] == 'Node "stop" (flow.fail) failed: stopped with Bearer [secret:KEY]'
    await assert_nowhere(factory, retried, KEY)


# --- ai.generate: the key, trimmed and sent, quoted back ---------------------------------------

# Pasted with surrounding whitespace; ai.generate sends it trimmed.
AI_KEY = "  sk+live/7d1f0c93b2e84a56==\n"


@pytest.fixture
def careless_ai() -> Iterator[LocalHTTP]:
    """An OpenAI-compatible endpoint that quotes the key it got: URL-encoded in a long error
    (for the model "refuse"), or in its answer."""

    async def completions(request: Request) -> Response:
        given = request.headers["authorization"].removeprefix("Bearer ")
        body = json.loads(await request.body())
        if body["model"] == "refuse":
            message = "x" * 170 + " key " + quote(given, safe="")
            return JSONResponse({"error": {"message": message}}, status_code=401)
        answer = {"role": "assistant", "content": f"You sent {given}"}
        return JSONResponse(
            {"model": "m", "choices": [{"message": answer, "finish_reason": "stop"}]}
        )

    server = LocalHTTP(routes={"/v1/chat/completions": completions}).start()
    yield server
    server.stop()


@pytest.mark.parametrize("model", ["refuse", "answer"])
async def test_an_ai_endpoint_quoting_the_trimmed_key_shows_none_of_it(
    factory: Factory, worker: None, careless_ai: LocalHTTP, model: str
) -> None:
    owner = await owner_with_secrets(factory, AI=AI_KEY)
    ask = node(
        "ask",
        "ai.generate",
        baseUrl=careless_ai.url("/v1"),
        model=model,
        prompt="hello",
        apiKeySecret="AI",
    )
    run = await run_graph(factory, owner, flow(node("start", "trigger"), ask))
    [hit] = careless_ai.hits
    assert hit.headers["authorization"] == f"Bearer {AI_KEY.strip()}"
    step = steps_by_node(run)["ask"]
    if model == "refuse":
        assert step["error"] == "AI endpoint answered 401: " + "x" * 170 + " key [secret:AI]…"
    else:
        assert step["output"]["text"] == "You sent [secret:AI]"
    await assert_nowhere(factory, run, AI_KEY)
    await assert_nowhere(factory, run, AI_KEY.strip())


# --- a secret deleted while a run uses it ------------------------------------------------------


async def test_a_secret_deleted_mid_run_stays_redacted_and_the_next_run_cannot_read_it(
    factory: Factory, worker: None
) -> None:
    # Given an upstream that holds its answer until told, and then echoes the key it got
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def held(request: Request) -> Response:
        while not gate.is_set():
            await asyncio.sleep(0.02)
        return JSONResponse({"got": request.headers["x-key"]})

    server = LocalHTTP(routes={"/held": held}).start()
    try:
        owner = await owner_with_secrets(factory, KEY=KEY)
        graph = flow(
            node("start", "trigger"),
            sending_key(server.url("/held"), "KEY"),
            node("after", "text.format", template="{{ input.body.got }}|{{ secrets.KEY }}"),
        )
        workflow_id = await create_workflow(factory, owner, graph)
        run_id = (await execute(factory, owner, workflow_id))["run"]["id"]
        await wait_step(factory, owner, run_id, "call", "RUNNING")
        # When the secret is deleted while the call is in flight
        deleted = await delete_secret(factory, owner, "KEY")
        assert deleted == {"deletedName": "KEY", "userErrors": []}
        loop.call_soon(gate.set)
        run = await wait_for(factory, owner, run_id)
        # Then the run that had it keeps it redacted to its end
        assert run["status"] == "SUCCEEDED"
        assert steps_by_node(run)["call"]["output"]["body"] == {"got": "[secret:KEY]"}
        assert steps_by_node(run)["after"]["output"] == "[secret:KEY]|[secret:KEY]"
        await assert_nowhere(factory, run, KEY)
        # And a run started after the deletion does not get it
        second_id = (await execute(factory, owner, workflow_id))["run"]["id"]
        second = await wait_for(factory, owner, second_id)
        assert second["status"] == "FAILED"
        assert (
            steps_by_node(second)["call"]["error"] == "{{ secrets.KEY }} failed: no such key 'KEY'"
        )
    finally:
        gate.set()
        server.stop()


# --- secretSet with hostile input ---------------------------------------------------------------


async def raw_set(factory: Factory, account: Account, value_json: str, name_json: str) -> dict:
    """secretSet with its variables written as JSON text (for values httpx would not encode)."""
    body = (
        '{"query": ' + json.dumps(SET) + ', "variables": {"i": {"workspaceId": '
        f'{json.dumps(account.workspace_id)}, "name": {name_json}, "value": {value_json}}}}}}}'
    )
    response = await factory.client.post(
        "/graphql",
        content=body.encode(),
        headers={"authorization": f"Bearer {account.token}", "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("value_json", "message"),
    [
        ("123", "String cannot represent a non string value: 123"),
        ("null", "Expected value of non-null type 'String!' not to be None."),
        ('["abcd"]', "String cannot represent a non string value: ['abcd']"),
        ('{"v": "abcd"}', "String cannot represent a non string value: {'v': 'abcd'}"),
        ("true", "String cannot represent a non string value: True"),
    ],
)
async def test_a_value_of_the_wrong_type_is_refused_and_writes_nothing(
    factory: Factory, value_json: str, message: str
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    body = await raw_set(factory, owner, value_json, '"API_KEY"')
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == [
        f"Variable '$i' has invalid value at .value: {message}"
    ]
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("name", "value", "field", "message"),
    [
        pytest.param(
            "\u0410PI_KEY", "abcd", "name", "A secret's name is 1 to 100", id="cyrillic A"
        ),
        pytest.param(
            "\uff21PI_KEY", "abcd", "name", "A secret's name is 1 to 100", id="fullwidth A"
        ),
        pytest.param(
            "API_KEY\u200b", "abcd", "name", "A secret's name is 1 to 100", id="zero width"
        ),
        pytest.param("API_KEY\n", "abcd", "name", "A secret's name is 1 to 100", id="newline"),
        pytest.param("API KEY", "abcd", "name", "A secret's name is 1 to 100", id="space"),
        pytest.param("\u00c9T\u00c9", "abcd", "name", "A secret's name is 1 to 100", id="accents"),
        pytest.param("true", "abcd", "name", 'A secret cannot be named "true"', id="true"),
        pytest.param("null", "abcd", "name", 'A secret cannot be named "null"', id="null"),
        pytest.param("in", "abcd", "name", 'A secret cannot be named "in"', id="in"),
        pytest.param("false", "abcd", "name", 'A secret cannot be named "false"', id="false"),
        pytest.param(
            "KEY", "    ", "value", "A secret's value cannot be only whitespace", id="spaces"
        ),
        pytest.param(
            "KEY", "\n\t \r\n", "value", "A secret's value cannot be only whitespace", id="ws"
        ),
    ],
)
async def test_lookalike_and_unusable_names_and_blank_values_are_refused(
    factory: Factory, name: str, value: str, field: str, message: str
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    body = await raw_set(factory, owner, json.dumps(value), json.dumps(name))
    payload = body["data"]["secretSet"]
    assert payload["secret"] is None
    [error] = payload["userErrors"]
    assert (error["field"], error["code"]) == (["input", field], "INVALID")
    assert error["message"].startswith(message), error["message"]
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        pytest.param("KEY", "abcd\ud800", "value", id="surrogate-value"),
        pytest.param("KEY", "abcd\u0000", "value", id="nul-value"),
        pytest.param("K\udfffEY", "abcd", "name", id="surrogate-name"),
        pytest.param("\u0000", "abcd", "name", id="nul-name"),
    ],
)
async def test_unstorable_names_and_values_are_refused_before_anything_runs(
    factory: Factory, name: str, value: str, field: str
) -> None:
    owner = await factory.owner()
    before = await factory.snapshot()
    body = await raw_set(factory, owner, json.dumps(value), json.dumps(name))
    text = name if field == "name" else value
    assert without_locations(body) == unstorable("secretSet", ("input", field), problem_of(text))
    assert await factory.snapshot() == before


async def test_names_usable_in_cel_that_look_like_keywords_are_accepted_and_work(
    factory: Factory, worker: None
) -> None:
    owner = await factory.owner()
    for name in ("if", "_", "secrets", "TRUE", "in_"):
        assert (await set_secret(factory, owner, name, f"value-of-{name}!"))["userErrors"] == []
    names = "{{ [secrets.if, secrets._, secrets.secrets, secrets.TRUE, secrets.in_] }}"
    run = await run_graph(
        factory, owner, flow(node("start", "trigger"), node("out", "output", value=names))
    )
    assert run["output"] == [
        "[secret:if]",
        "[secret:_]",
        "[secret:secrets]",
        "[secret:TRUE]",
        "[secret:in_]",
    ]


async def test_the_longest_values_and_a_five_megabyte_body(factory: Factory) -> None:
    owner = await factory.owner()
    # 65,536 characters is the most, however many bytes they take
    for name, value in (("ASCII", "a" * 65_536), ("EMOJI", "\U0001f600" * 65_536)):
        payload = await set_secret(factory, owner, name, value)
        assert payload["userErrors"] == [], name
    before = await factory.snapshot()
    over = await set_secret(factory, owner, "OVER", "\U0001f600" * 65_537)
    assert over["userErrors"][0]["message"].startswith("A secret's value is 4 to 65536 characters")
    # A 5 MB request is refused before any resolver runs
    response = await factory.client.post(
        "/graphql",
        json={
            "query": SET,
            "variables": {
                "i": {"workspaceId": owner.workspace_id, "name": "HUGE", "value": "a" * 5_000_000}
            },
        },
        headers={"authorization": f"Bearer {owner.token}"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await factory.snapshot() == before


async def test_without_a_token_nothing_is_set_listed_or_deleted(factory: Factory) -> None:
    owner = await owner_with_secrets(factory, KEY=KEY)
    before = await factory.snapshot()
    variables = {"workspaceId": owner.workspace_id, "name": "KEY", "value": "planted"}
    for query, given in ((SET, {"i": variables}), (DELETE, {"i": {**variables, "value": None}})):
        given["i"] = {k: v for k, v in given["i"].items() if v is not None}
        body = await factory.gql(query, given)
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    listed = await factory.gql(LIST, {"id": owner.workspace_id})
    assert listed["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await factory.snapshot() == before


async def test_a_value_sent_with_the_wrong_type_is_not_written_to_the_log(
    factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # The error tells the sender what it sent (GraphQL's own message); no log line may keep it
    owner = await factory.owner()
    caplog.set_level(logging.DEBUG)
    body = await raw_set(factory, owner, json.dumps([KEY]), '"API_KEY"')
    assert body["errors"][0]["message"].endswith(f"['{KEY}']")
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in json.dumps(record.__dict__, default=str)


# --- a thousand secrets -------------------------------------------------------------------------


async def set_many(
    factory: Factory, app: Starlette, owner: Account, values: dict[str, str]
) -> None:
    """Set secrets through the service, in one transaction (a thousand GraphQL calls is slow)."""
    principal = Principal(user=owner.user, roles={owner.workspace.id: Role.OWNER})
    async with factory.sessions() as session:
        for name, value in values.items():
            await secret_service.set_secret(
                session,
                principal=principal,
                keyring=app.state.runtime.keyring,
                workspace_id=owner.workspace.id,
                name=name,
                value=value,
            )
        await session.commit()


THOUSAND = {f"S{i:04}": f"tok_{i:04}_{'abcdefghij'[i % 10] * 8}{i * 7919:08}" for i in range(1000)}


async def test_a_thousand_secrets_are_each_redacted(
    factory: Factory, app: Starlette, worker: None, upstream: LocalHTTP
) -> None:
    owner = await factory.owner()
    await set_many(factory, app, owner, THOUSAND)
    listed = await factory.gql(LIST, {"id": owner.workspace_id}, token=owner.token)
    assert len(listed["data"]["workspace"]["secrets"]) == 1000
    call = sending_key(
        upstream.url("/echo"),
        "S0777",
        method="POST",
        body={"all": "{{ [secrets.S0000, secrets.S0500, secrets.S0999] }}"},
    )
    run = await run_graph(factory, owner, flow(node("start", "trigger"), call))
    echoed = steps_by_node(run)["call"]["output"]
    assert echoed["headers"]["x-echo"] == "[secret:S0777]"
    assert json.loads(echoed["body"]["body"]) == {
        "all": ["[secret:S0000]", "[secret:S0500]", "[secret:S0999]"]
    }
    for name in ("S0000", "S0500", "S0777", "S0999"):
        await assert_nowhere(factory, run, THOUSAND[name])


async def test_a_workspace_holds_at_most_a_thousand_secrets_and_a_mebibyte_of_values(
    factory: Factory, app: Starlette
) -> None:
    # Every run of the workspace decrypts all of them and builds their redaction on a shared
    # worker: a thousand values of 65,536 characters took 9 s and 700 MB there
    owner = await factory.owner()
    await set_many(factory, app, owner, THOUSAND)
    before = await factory.snapshot()
    over_count = await set_secret(factory, owner, "ONE_MORE", "another-value")
    assert over_count == {
        "secret": None,
        "userErrors": [
            user_error(
                ("input", "name"),
                "INVALID",
                "A workspace holds at most 1000 secrets; delete one first.",
            )
        ],
    }
    assert await factory.snapshot() == before
    # Replacing one of them is not adding one
    replaced = await set_secret(factory, owner, "S0001", "a-new-value")
    assert replaced["userErrors"] == []
    # Size: at most a mebibyte of values (UTF-8) together
    other = await factory.owner("Globex")
    big = {f"BIG{i}": f"{i:02}" + "v" * 65_534 for i in range(15)} | {"SMALL": "s" * 100}
    await set_many(factory, app, other, big)
    before = await factory.snapshot()
    too_big = await set_secret(factory, other, "LAST", "w" * 65_435 + "\u00e9")
    assert too_big["userErrors"] == [
        user_error(
            ("input", "value"),
            "INVALID",
            (
                "A workspace's secrets take at most 1048576 bytes together (UTF-8); "
                "with this value they would take 1048577."
            ),
        )
    ]
    assert await factory.snapshot() == before
    assert (await set_secret(factory, other, "LAST", "w" * 65_436))["userErrors"] == []
    assert (
        await factory.scalar(
            "SELECT sum(octet_length(ciphertext) - 16) FROM secrets WHERE workspace_id = :w",
            w=other.workspace.id,
        )
        == 1_048_576
    )
