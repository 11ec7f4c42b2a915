"""The README's example session, run exactly as written against a real `flowdeck serve`.

The operations, their variables and the shell delivery are read from README.md itself, in
order, so the README cannot drift from the code: each GraphQL operation must answer without
errors (top-level or user errors), the run it starts must end SUCCEEDED, and the webhook
delivery must start a run of the published version that succeeds too. A variable written
``"<Op: path>"`` is the value at ``path`` in the answer of operation ``Op``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.websockets import WebsocketsTransport
from graphql import OperationDefinitionNode, parse
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import TEST_SECRET_KEY
from tests.factories import Factory

README = Path(__file__).parent.parent / "README.md"
SESSION = "## An example session in GraphiQL"
FLOWDECK = str(Path(sys.executable).with_name("flowdeck"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
REFERENCE = re.compile(r"<(\w+): ([^>]+)>")
SEGMENT = re.compile(r"(\w+)((?:\[[^\]]+\])*)")
SELECTOR = re.compile(r"\[([^\]]+)\]")


@dataclass
class Step:
    """One operation of the session (with its variables), or a shell snippet."""

    kind: str  # query | mutation | subscription | sh
    text: str
    name: str = ""
    variables: Any = field(default_factory=dict)


def session_steps(readme: str) -> list[Step]:
    """The session's steps, in the README's order: each ```graphql block is one named
    operation, a ```json block right after it holds its variables, a ```sh block runs."""
    start = readme.index(SESSION)
    end = readme.find("\n## ", start + len(SESSION))
    steps: list[Step] = []
    for language, text in BLOCK.findall(readme[start : end if end != -1 else None]):
        if language == "graphql":
            [operation] = parse(text).definitions
            assert isinstance(operation, OperationDefinitionNode), text
            assert operation.name is not None, f"name every operation in the README: {text}"
            steps.append(Step(operation.operation.value, text, operation.name.value))
        elif language == "json":
            assert steps, text
            assert steps[-1].kind != "sh", text
            assert steps[-1].variables == {}, text
            steps[-1].variables = json.loads(text)
        elif language == "sh":
            steps.append(Step("sh", text))
        else:
            raise AssertionError(f"a ```{language} block in the session: {text}")
    return steps


def at(value: Any, path: str) -> Any:
    """The value at ``path`` (``a.b[0].c``, ``list[key=value]``) in an answer."""
    for segment in path.split("."):
        match = SEGMENT.fullmatch(segment)
        assert match is not None, path
        value = value[match.group(1)]
        for selector in SELECTOR.findall(match.group(2)):
            if selector.isdigit():
                value = value[int(selector)]
            else:
                key, _, wanted = selector.partition("=")
                [value] = [item for item in value if item[key] == wanted]
    return value


def resolve(value: Any, answers: dict[str, Any]) -> Any:
    """The variables with each ``"<Op: path>"`` replaced by that value of an earlier answer."""
    if isinstance(value, dict):
        return {key: resolve(item, answers) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, answers) for item in value]
    if isinstance(value, str) and (match := REFERENCE.fullmatch(value)):
        operation, path = match.groups()
        assert operation in answers, f"{value}: no earlier answer of {operation}"
        return at(answers[operation], path)
    return value


def user_errors(value: Any) -> Iterator[Any]:
    """Every userErrors list anywhere in an answer."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "userErrors":
                yield item
            else:
                yield from user_errors(item)
    elif isinstance(value, list):
        for item in value:
            yield from user_errors(item)


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def served(database_url: str, engine: AsyncEngine, tmp_path: Path) -> Iterator[Served]:
    """`flowdeck serve` as a user starts it (its embedded worker, runs driven where they
    are queued), on the test database."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "DATABASE_URL")}
    env = {k: v for k, v in env.items() if not k.startswith("FLOWDECK_")}
    env.update(DATABASE_URL=database_url, FLOWDECK_SECRET_KEY=TEST_SECRET_KEY)
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [FLOWDECK, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink
        )
    server = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "flowdeck serve did not answer /healthz"
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def subscribe(server: Served, token: str, step: Step, variables: Any) -> list[Any]:
    """Every payload of a subscription over graphql-transport-ws, until it completes."""
    transport = WebsocketsTransport(
        url=server.url.replace("http", "ws", 1) + "/graphql",
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"Authorization": f"Bearer {token}"},
    )
    payloads = []
    async with asyncio.timeout(30), Client(transport=transport) as session:
        request = GraphQLRequest(step.text, variable_values=variables)
        async for data in session.subscribe(request):
            payloads.append(data)
    return payloads


def test_the_session_reads_as_a_sequence_of_named_operations() -> None:
    steps = session_steps(README.read_text(encoding="utf-8"))
    names = [step.name for step in steps if step.kind != "sh"]
    assert names[:6] == [
        "Viewer",
        "Templates",
        "TemplateClone",
        "WorkflowExecute",
        "RunProgress",
        "RunDetail",
    ]
    assert len(set(names)) == len(names)
    assert [step.kind for step in steps][-1] == "sh"


async def test_the_readme_session_runs_as_written_and_its_runs_succeed(
    served: Served, engine: AsyncEngine
) -> None:
    steps = session_steps(README.read_text(encoding="utf-8"))
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        owner = await Factory(engine, client).owner("My workspace")
        headers = {"Authorization": f"Bearer {owner.token}"}
        answers: dict[str, Any] = {}
        for step in steps:
            if step.kind == "sh":
                webhook = answers["WorkflowWebhookUpdate"]["workflowWebhookUpdate"]["webhook"]
                shell = await asyncio.create_subprocess_exec(
                    "bash",
                    "-euo",
                    "pipefail",
                    "-c",
                    step.text,
                    env={
                        **os.environ,
                        "WEBHOOK_URL": webhook["url"],
                        "SIGNING_SECRET": webhook["signingSecret"],
                    },
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                async with asyncio.timeout(30):
                    stdout, stderr = await shell.communicate()
                assert shell.returncode == 0, stderr.decode()
                answers["sh"] = json.loads(stdout)
                continue
            variables = resolve(step.variables, answers)
            if step.kind == "subscription":
                answers[step.name] = await subscribe(served, owner.token, step, variables)
                continue
            response = await client.post(
                "/graphql", json={"query": step.text, "variables": variables}, headers=headers
            )
            body = response.json()
            assert response.status_code == 200, (step.name, body)
            assert "errors" not in body, (step.name, body)
            assert all(errors == [] for errors in user_errors(body["data"])), (step.name, body)
            answers[step.name] = body["data"]

        # The run the session started SUCCEEDED, as the README says, and it was watched to its end
        run = answers["RunDetail"]["run"]
        assert (run["status"], run["output"], run["error"]) == ("SUCCEEDED", "Hello, Ada!", None)
        assert [(s["nodeId"], s["status"]) for s in run["steps"]] == [
            ("trigger", "SUCCEEDED"),
            ("greet", "SUCCEEDED"),
            ("output", "SUCCEEDED"),
        ]
        events = [payload["runProgress"] for payload in answers["RunProgress"]]
        assert events[-1]["type"] == "RUN_SUCCEEDED"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        clone = answers["TemplateClone"]["templateClone"]["workflow"]["currentVersion"]
        assert clone["diagnostics"] == []
        assert answers["NodeTest"]["nodeTest"]["result"]["output"] == "Good morning, Grace!"

        # The signed delivery was accepted and ran the published version (2) to its end
        delivered = answers["sh"]
        assert (delivered["status"], delivered["duplicate"]) == ("QUEUED", False)
        query = "query($id: ID!) { run(id: $id) { status output version { number } } }"
        deadline = time.monotonic() + 20
        while True:
            response = await client.post(
                "/graphql",
                json={"query": query, "variables": {"id": delivered["runId"]}},
                headers=headers,
            )
            hooked = response.json()["data"]["run"]
            if hooked["status"] not in ("QUEUED", "RUNNING") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert hooked == {
            "status": "SUCCEEDED",
            "output": "Good morning, Ada!",
            "version": {"number": 2},
        }
