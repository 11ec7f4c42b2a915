"""Every String argument of every operation refuses text PostgreSQL cannot store, in one place.

A NUL or a lone surrogate used to reach the database (an INTERNAL_SERVER_ERROR) wherever a
resolver had no check of its own. The check lives in schema/strings.py; these tests walk the
schema for every String position (arguments, input-object fields at any depth, list items)
so an argument added later is covered without a test of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_named_type,
)

from schema import schema
from tests.factories import Factory
from tests.hostile import (
    NUL_PROBLEM,
    SURROGATE_PROBLEM,
    unstorable,
    unstorable_error,
    without_locations,
)
from tests.runs import create_workflow, node
from tests.secrets import set_secret

Path = tuple[str | int, ...]


def string_paths(type_: GraphQLInputType, path: Path, depth: int = 0) -> Iterator[Path]:
    """Every path to a String inside a value of this input type (one list item each)."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        yield from string_paths(type_.of_type, (*path, 0), depth)
    elif isinstance(type_, GraphQLInputObjectType) and depth < 5:
        for name, field in type_.fields.items():
            yield from string_paths(field.type, (*path, name), depth + 1)
    elif isinstance(type_, GraphQLScalarType) and type_.name == "String":
        yield path


def root(kind: str) -> GraphQLObjectType:
    """The Query, Mutation or Subscription type."""
    type_ = getattr(schema._schema, f"{kind}_type")
    assert isinstance(type_, GraphQLObjectType)
    return type_


def route(kind: str, target: GraphQLObjectType) -> list[tuple[str, GraphQLField]]:
    """The shortest chain of fields from the root type down to a field of ``target``."""
    queue: list[tuple[GraphQLObjectType, list[tuple[str, GraphQLField]]]] = [(root(kind), [])]
    seen: set[str] = set()
    while queue:
        type_, chain = queue.pop(0)
        if type_ is target:
            return chain
        if type_.name in seen:
            continue
        seen.add(type_.name)
        for name, field in type_.fields.items():
            inner = get_named_type(field.type)
            if isinstance(inner, GraphQLObjectType):
                queue.append((inner, [*chain, (name, field)]))
    raise AssertionError(f"{target.name} is not reachable from {kind}")


def positions(kind: str) -> list[tuple[tuple[tuple[str, GraphQLField], ...], Path]]:
    """Every String position of an operation of this kind: the chain of fields to the field
    that takes it (root first), and the path inside that field's arguments."""
    found = []
    for type_ in schema._schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            paths = [
                path
                for argument, definition in field.args.items()
                for path in string_paths(definition.type, (argument,))
            ]
            if not paths:
                continue
            if type_ in (root("mutation"), root("query")) and type_ is not root(kind):
                continue
            try:
                chain = (*route(kind, type_), (name, field))
            except AssertionError:
                continue
            found += [(chain, path) for path in paths]
    return found


def with_value(path: Path, text: str) -> Any:
    """A value holding ``text`` at ``path`` (the argument's name dropped), nothing else."""
    if not path:
        return text
    inner = with_value(path[1:], text)
    return [inner] if isinstance(path[0], int) else {path[0]: inner}


def document(kind: str, chain: tuple[tuple[str, GraphQLField], ...]) -> str:
    """The operation reaching the last field of ``chain``, every argument of every field on
    the way a variable of its own type (``$<level>_<argument>``), sent without a value."""
    declared: list[str] = []
    selection = ""
    for level, (name, field) in reversed(list(enumerate(chain))):
        arguments: dict[str, GraphQLArgument] = field.args
        declared += [f"$v{level}_{a}: {d.type}" for a, d in arguments.items()]
        passed = ", ".join(f"{a}: $v{level}_{a}" for a in arguments)
        inner = selection or (
            "{ __typename }" if isinstance(get_named_type(field.type), GraphQLObjectType) else ""
        )
        selection = f"{name}{f'({passed})' if passed else ''} {inner}".strip()
        selection = f"{{ {selection} }}"
    return f"{kind} Probe({', '.join(declared)}) {selection}"


def label(chain: tuple[tuple[str, GraphQLField], ...], path: Path) -> str:
    return ".".join(name for name, _ in chain) + ":" + ".".join(map(str, path))


async def post(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps writes NUL and lone surrogates as \u escapes, as a JSON client would.
    return await client.post(
        "/graphql",
        content=json.dumps(body),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )


def test_the_walk_finds_the_arguments_it_must_cover() -> None:
    # Among every String position: the three arguments seen failing, and nested ones
    mutations = {label(chain, path) for chain, path in positions("mutation")}
    queries = {label(chain, path) for chain, path in positions("query")}
    assert {"secretDelete:input.name", "workflowExecute:input.idempotencyKey"} <= mutations
    assert {"workspace.workflows:search", "workflow.versions:after"} <= queries
    assert "workflowRuns.workflow.workspace.workflows:search" in {
        label(chain, path) for chain, path in positions("subscription")
    }


@pytest.mark.parametrize(
    ("text", "problem"), [("a\x00b", NUL_PROBLEM), ("\ud800", SURROGATE_PROBLEM)]
)
@pytest.mark.parametrize("kind", ["query", "mutation"])
async def test_every_string_argument_refuses_unstorable_text_and_writes_nothing(
    factory: Factory, client: httpx.AsyncClient, kind: str, text: str, problem: str
) -> None:
    # Given a signed-in owner with a workspace and a workflow
    owner = await factory.owner()
    await create_workflow(factory, owner, {"nodes": [node("start", "trigger")], "edges": []})
    before = await factory.snapshot()
    # When each String position of each operation gets the text (other arguments absent)
    results = {}
    for chain, path in positions(kind):
        level = len(chain) - 1
        variables = {f"v{level}_{path[0]}": with_value(path[1:], text)}
        response = await post(
            client, owner.token, {"query": document(kind, chain), "variables": variables}
        )
        results[label(chain, path)] = (response.status_code, without_locations(response.json()))
    # Then each is refused with one BAD_USER_INPUT naming that position, and nothing changed
    assert results == {
        label(chain, path): (200, unstorable(chain[-1][0], path, problem))
        for chain, path in positions(kind)
    }
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("text", "problem"), [("a\x00b", NUL_PROBLEM), ("\ud800", SURROGATE_PROBLEM)]
)
async def test_a_subscription_with_unstorable_text_ends_with_the_error(
    factory: Factory, client: httpx.AsyncClient, text: str, problem: str
) -> None:
    # Given subscriptions whose nested fields take String arguments (over graphql-sse)
    owner = await factory.owner()
    results = {}
    for chain, path in positions("subscription"):
        level = len(chain) - 1
        variables = {f"v{level}_{path[0]}": with_value(path[1:], text)}
        # When one is sent with the text
        response = await client.post(
            "/graphql",
            content=json.dumps({"query": document("subscription", chain), "variables": variables}),
            headers={
                "authorization": f"Bearer {owner.token}",
                "content-type": "application/json",
                "accept": "text/event-stream",
            },
        )
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        results[label(chain, path)] = [without_locations(event) for event in events]
    # Then its one event is that error, and the stream ends
    assert results == {
        label(chain, path): [unstorable(chain[-1][0], path, problem)]
        for chain, path in positions("subscription")
    }


async def test_the_reported_cases_are_user_errors(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given a workspace with a secret and a workflow
    owner = await factory.owner()
    await set_secret(factory, owner, "KEY", "value-1234")
    workflow_id = await create_workflow(
        factory, owner, {"nodes": [node("start", "trigger")], "edges": []}
    )
    delete = "mutation($i: SecretDeleteInput!) { secretDelete(input: $i) { deletedName } }"
    execute = "mutation($i: WorkflowExecuteInput!) { workflowExecute(input: $i) { run { id } } }"
    calls = {
        "secretDelete NUL": (delete, {"workspaceId": owner.workspace_id, "name": "\x00"}),
        "secretDelete surrogate": (delete, {"workspaceId": owner.workspace_id, "name": "\ud800"}),
        "workflowExecute NUL key": (execute, {"workflowId": workflow_id, "idempotencyKey": "\x00"}),
    }
    before = await factory.snapshot()
    # When each is sent as it was reported
    results = {}
    for label, (query, values) in calls.items():
        response = await post(client, owner.token, {"query": query, "variables": {"i": values}})
        results[label] = (response.status_code, without_locations(response.json()))
    # Then each is a user error naming the argument, and nothing was deleted or run
    assert results == {
        "secretDelete NUL": (200, unstorable("secretDelete", ("input", "name"), NUL_PROBLEM)),
        "secretDelete surrogate": (
            200,
            unstorable("secretDelete", ("input", "name"), SURROGATE_PROBLEM),
        ),
        "workflowExecute NUL key": (
            200,
            unstorable("workflowExecute", ("input", "idempotencyKey"), NUL_PROBLEM),
        ),
    }
    assert await factory.snapshot() == before


async def test_literals_defaults_and_fragments_are_checked_and_all_reported(
    factory: Factory, client: httpx.AsyncClient
) -> None:
    # Given one operation with unstorable text as a variable's default, as a literal, and
    # inside a fragment
    owner = await factory.owner()
    workflow_id = await create_workflow(
        factory, owner, {"nodes": [node("start", "trigger")], "edges": []}
    )
    query = (
        'mutation($key: String = "k\\u0000") {'
        f' run: workflowExecute(input: {{workflowId: "{workflow_id}", idempotencyKey: $key}})'
        " { run { id } }"
        ' space: workspaceCreate(input: {name: "a\\u0000"}) { workspace { ...W } } }'
        ' fragment W on Workspace { workflows(first: 1, search: "\\ud83d\\ude00\\u0000") {'
        " totalCount } }"
    )
    before = await factory.snapshot()
    # When it is sent
    response = await post(client, owner.token, {"query": query})
    # Then every one is reported, nothing ran, nothing was written
    assert response.status_code == 200
    assert without_locations(response.json()) == {
        "data": None,
        "errors": [
            unstorable_error("run", ("input", "idempotencyKey"), NUL_PROBLEM),
            unstorable_error("space", ("input", "name"), NUL_PROBLEM),
            unstorable_error("workflows", ("search",), NUL_PROBLEM),
        ],
    }
    assert await factory.snapshot() == before


def test_only_operations_with_an_argument_that_can_hold_text_are_walked() -> None:
    # The walk costs about 120 us a request; an operation taking only IDs, numbers and
    # enums skips it (decided once per document).
    from graphql import parse

    from schema.strings import takes_text

    def takes(text: str, name: str | None = None) -> bool:
        return takes_text(schema._schema, parse(text), name)

    assert not takes("query E($id: ID!) { workflow(id: $id) { id name currentVersion { graph } } }")
    assert not takes("query($id: ID!) { workflow(id: $id) { runs(first: 5) { totalCount } } }")
    assert takes('query { templates(workspaceId: "w") { id } workflow(id: "x") { id } }') is False
    assert takes("mutation($i: SecretSetInput!) { secretSet(input: $i) { secret { name } } }")
    assert (
        takes(
            'query A { workflow(id: "x") { id } } query B { ...F } '
            'fragment F on Query { workflow(id: "y") { diff(from: 1, to: 2) { nodesAdded } } '
            "viewer { email } } ",
            "A",
        )
        is False
    )
    assert takes(
        "query($w: ID!, $s: String) { ...F } fragment F on Query { workspace(id: $w) { "
        "workflows(first: 1, search: $s) { totalCount } } }"
    )
