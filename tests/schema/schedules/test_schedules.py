"""Schedules through GraphQL: setting one, its upcoming times, refusals, roles and tenancy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from graphql import DocumentNode, FieldNode, FragmentSpreadNode, parse, print_ast, validate
from graphql.language import Visitor, visit
from graphql.language.visitor import REMOVE
from starlette.applications import Starlette

from app.models import Role
from app.worker.schedules import tick
from schema import schema
from tests.factories import Account, Factory, gid
from tests.hostile import user_error
from tests.runs import create_workflow
from tests.schedules import GRAPH

CONTRACT = Path(__file__).resolve().parents[2] / "contract" / "builder.graphql"
SCHEDULE_FIELDS = """
  enabled cron timezone overlap nextFireAt lastFiredAt skippedCount upcoming(count: 5)
"""
UPDATE = f"""
mutation($i: WorkflowScheduleUpdateInput!) {{
  workflowScheduleUpdate(input: $i) {{
    workflow {{ id schedule {{ {SCHEDULE_FIELDS} }} }}
    userErrors {{ field code message }}
  }}
}}
"""
READ = f"query($id: ID!) {{ workflow(id: $id) {{ schedule {{ {SCHEDULE_FIELDS} }} }} }}"
BERLIN = ZoneInfo("Europe/Berlin")


def weekday_nines_in_berlin(after: datetime, count: int) -> list[str]:
    """The next weekdays at 09:00 Berlin time after ``after``, by calendar arithmetic."""
    found: list[str] = []
    day = after.astimezone(BERLIN).date()
    while len(found) < count:
        moment = datetime(day.year, day.month, day.day, 9, 0, tzinfo=BERLIN)
        if day.weekday() < 5 and moment > after:
            found.append(moment.astimezone(UTC).isoformat())
        day += timedelta(days=1)
    return found


async def set_schedule(factory: Factory, account: Account, workflow_id: str, **fields) -> dict:
    """The workflowScheduleUpdate payload."""
    body = await factory.gql(
        UPDATE, {"i": {"workflowId": workflow_id, **fields}}, token=account.token
    )
    assert "errors" not in body, body
    return body["data"]["workflowScheduleUpdate"]


async def test_a_weekday_schedule_in_berlin_shows_its_next_five_times(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    before = datetime.now(UTC)
    payload = await set_schedule(
        factory, owner, workflow_id, cron="0 9 * * MON-FRI", timezone="Europe/Berlin", enabled=True
    )
    read = await factory.gql(READ, {"id": workflow_id}, token=owner.token)
    after = datetime.now(UTC)

    assert payload["userErrors"] == []
    schedule = payload["workflow"]["schedule"]
    # Computed at a moment between before and after: the same unless 09:00 passed meanwhile.
    assert schedule["upcoming"] in (
        weekday_nines_in_berlin(before, 5),
        weekday_nines_in_berlin(after, 5),
    )
    assert schedule == {
        "enabled": True,
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Berlin",
        "overlap": "SKIP",
        "nextFireAt": schedule["upcoming"][0],
        "lastFiredAt": None,
        "skippedCount": 0,
        "upcoming": schedule["upcoming"],
    }
    assert read == {"data": {"workflow": {"schedule": schedule}}}
    stored = await factory.scalar("SELECT schedule_next_fire_at FROM workflows")
    assert stored.isoformat() == schedule["nextFireAt"]


async def test_a_workflow_never_scheduled_has_no_schedule(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    body = await factory.gql(READ, {"id": workflow_id}, token=owner.token)

    assert body == {"data": {"workflow": {"schedule": None}}}


async def test_whitespace_is_normalised_and_overlap_is_kept_when_not_given(
    factory: Factory,
    owner: Account,
    workflow_id: str,
) -> None:
    first = await set_schedule(
        factory,
        owner,
        workflow_id,
        cron=" 0  9 *\t* * ",
        timezone="UTC",
        enabled=True,
        overlap="ALLOW",
    )
    second = await set_schedule(
        factory, owner, workflow_id, cron="30 8 * * *", timezone="Asia/Tokyo", enabled=True
    )

    assert first["userErrors"] == []
    assert first["workflow"]["schedule"]["cron"] == "0 9 * * *"
    assert first["workflow"]["schedule"]["overlap"] == "ALLOW"
    assert second["userErrors"] == []
    assert second["workflow"]["schedule"]["cron"] == "30 8 * * *"
    assert second["workflow"]["schedule"]["timezone"] == "Asia/Tokyo"
    assert second["workflow"]["schedule"]["overlap"] == "ALLOW"


FIVE_FIELDS = "A cron expression has 5 fields (minute hour day-of-month month day-of-week); "


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("every morning", FIVE_FIELDS + "this one has 2."),
        ("0 9 * * * *", FIVE_FIELDS + "this one has 6."),
        ("", FIVE_FIELDS + "this one has 0."),
        ("61 9 * * *", "Not a valid cron expression: bad minute."),
        ("0 24 * * *", "Not a valid cron expression: bad hour."),
        ("0 9 * 13 *", "Not a valid cron expression: bad month."),
        ("0 9 * * FUNDAY", "Not a valid cron expression: bad day-of-week."),
        ("0 0 30 2 *", "This expression never fires."),
        ("0 0 31 4,6 *", "This expression never fires."),
        ("0 " * 100 + "0", "At most 200 characters."),
        ("0 9 * * *\x7f", "Only printable ASCII characters, spaces and tabs."),
        ("0 9 * * \uff2dON", "Only printable ASCII characters, spaces and tabs."),
    ],
    ids=[
        "garbage",
        "six-fields",
        "empty",
        "minute-61",
        "hour-24",
        "month-13",
        "bad-weekday",
        "feb-30",
        "31st-of-30-day-months",
        "201-chars",
        "delete",
        "fullwidth",
    ],
)
async def test_an_invalid_cron_is_refused_and_nothing_changes(
    factory: Factory, owner: Account, workflow_id: str, daily_at_nine: None, cron: str, message: str
) -> None:
    before = await factory.snapshot()

    payload = await set_schedule(
        factory, owner, workflow_id, cron=cron, timezone="Europe/Berlin", enabled=True
    )

    assert payload == {
        "workflow": None,
        "userErrors": [user_error(("input", "cron"), "INVALID_CRON", message)],
    }
    assert await factory.snapshot() == before


TIMEZONE_ERROR = user_error(
    ("input", "timezone"),
    "INVALID_TIMEZONE",
    "Not an IANA time zone name; use one such as Europe/Berlin or UTC.",
)


async def test_a_bad_cron_and_a_bad_timezone_are_both_reported(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    before = await factory.snapshot()

    payload = await set_schedule(
        factory, owner, workflow_id, cron="soon", timezone="Mars/Olympus", enabled=False
    )

    assert payload == {
        "workflow": None,
        "userErrors": [
            user_error(("input", "cron"), "INVALID_CRON", FIVE_FIELDS + "this one has 1."),
            TIMEZONE_ERROR,
        ],
    }
    assert await factory.snapshot() == before


@pytest.mark.parametrize("role", [Role.VIEWER, Role.MEMBER])
async def test_viewers_and_members_cannot_set_a_schedule(factory: Factory, role: Role) -> None:
    owner = await factory.owner()
    account = await factory.member(owner, role)
    workflow_id = await create_workflow(factory, owner, GRAPH)
    before = await factory.snapshot()

    body = await factory.gql(
        UPDATE,
        {"i": {"workflowId": workflow_id, "cron": "0 9 * * *", "timezone": "UTC", "enabled": True}},
        token=account.token,
    )

    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert body["errors"][0]["message"] == (
        f"This needs the EDITOR role in the workspace; you are {role.value}."
    )
    assert body["errors"][0]["path"] == ["workflowScheduleUpdate"]
    assert await factory.snapshot() == before


async def test_an_editor_can_set_a_schedule(factory: Factory) -> None:
    owner = await factory.owner()
    editor = await factory.member(owner, Role.EDITOR)
    workflow_id = await create_workflow(factory, owner, GRAPH)

    payload = await set_schedule(
        factory, editor, workflow_id, cron="0 9 * * *", timezone="UTC", enabled=False
    )

    assert payload["userErrors"] == []
    assert payload["workflow"]["schedule"]["cron"] == "0 9 * * *"


async def test_another_workspaces_workflow_reads_as_not_found(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    workflow_id = await create_workflow(factory, owner, GRAPH)
    missing = gid("Workflow", "00000000-0000-0000-0000-000000000000")
    before = await factory.snapshot()

    bodies = [
        await factory.gql(
            UPDATE,
            {"i": {"workflowId": target, "cron": "0 9 * * *", "timezone": "UTC", "enabled": True}},
            token=stranger.token,
        )
        for target in (workflow_id, missing, gid("Run", "00000000-0000-0000-0000-000000000000"))
    ]

    for body in bodies:
        assert body["data"] is None
        assert body["errors"][0]["message"] == "Workflow not found."
        assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert await factory.snapshot() == before


async def test_disabling_keeps_cron_and_zone_and_stops_firing(
    factory: Factory, owner: Account, workflow_id: str, app: Starlette
) -> None:
    await set_schedule(
        factory, owner, workflow_id, cron="* * * * *", timezone="Europe/Berlin", enabled=True
    )

    payload = await set_schedule(
        factory, owner, workflow_id, cron="* * * * *", timezone="Europe/Berlin", enabled=False
    )
    result = await tick(app.state.runtime, now=datetime.now(UTC) + timedelta(days=2))

    assert payload["userErrors"] == []
    assert payload["workflow"]["schedule"] == {
        "enabled": False,
        "cron": "* * * * *",
        "timezone": "Europe/Berlin",
        "overlap": "SKIP",
        "nextFireAt": None,
        "lastFiredAt": None,
        "skippedCount": 0,
        "upcoming": [],
    }
    assert result.fires == []
    assert result.errors == 0
    assert await factory.scalar("SELECT count(*) FROM schedule_fires") == 0
    assert await factory.scalar("SELECT count(*) FROM runs") == 0


@pytest.mark.parametrize("count", [0, 51, -1])
async def test_upcoming_count_out_of_range_is_a_clear_error(
    factory: Factory, owner: Account, workflow_id: str, daily_at_nine: None, count: int
) -> None:

    body = await factory.gql(
        "query($id: ID!, $n: Int!) { workflow(id: $id) { schedule { upcoming(count: $n) } } }",
        {"id": workflow_id, "n": count},
        token=owner.token,
    )

    assert body["data"] == {"workflow": {"schedule": None}}
    assert body["errors"][0]["message"] == "count must be between 1 and 50."
    assert body["errors"][0]["path"] == ["workflow", "schedule", "upcoming"]
    assert body["errors"][0]["extensions"] == {
        "code": "BAD_USER_INPUT",
        "reason": "INVALID",
        "field": ["count"],
    }


async def test_fifty_upcoming_times_are_allowed(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    await set_schedule(factory, owner, workflow_id, cron="0 * * * *", timezone="UTC", enabled=True)

    before = datetime.now(UTC)
    body = await factory.gql(
        "query($id: ID!) { workflow(id: $id) { schedule { upcoming(count: 50) } } }",
        {"id": workflow_id},
        token=owner.token,
    )
    after = datetime.now(UTC)

    assert body["data"]["workflow"]["schedule"]["upcoming"] in (
        every(timedelta(hours=1), before, 50),
        every(timedelta(hours=1), after, 50),
    )


def every(step: timedelta, after: datetime, count: int) -> list[str]:
    """The next ``count`` UTC multiples of ``step`` (counted from midnight) after ``after``."""
    midnight = after.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight + step * ((after - midnight) // step + 1)
    return [(first + step * k).isoformat() for k in range(count)]


class _StripWebhook(Visitor):
    def enter_field(self, node: FieldNode, *args: object) -> object:
        return REMOVE if node.name.value == "webhook" else None


def contract_operations(*names: str) -> DocumentNode:
    """The named operations of the builder's contract, with the fragments they use."""
    definitions = parse(CONTRACT.read_text()).definitions
    fragments = {d.name.value: d for d in definitions if d.kind == "fragment_definition"}  # type: ignore[attr-defined]
    kept = [d for d in definitions if d.kind == "operation_definition" and d.name.value in names]  # type: ignore[attr-defined]
    used: set[str] = set()
    pending = list(kept)
    while pending:
        spreads: set[str] = set()
        visit(pending.pop(), _Spreads(spreads))
        for name in spreads - used:
            used.add(name)
            pending.append(fragments[name])
    return DocumentNode(definitions=(*kept, *(fragments[n] for n in sorted(used))))


class _Spreads(Visitor):
    def __init__(self, found: set[str]) -> None:
        super().__init__()
        self.found = found

    def enter_fragment_spread(self, node: FragmentSpreadNode, *args: object) -> None:
        self.found.add(node.name.value)


def test_the_contract_operations_with_schedules_validate() -> None:
    document = contract_operations("WorkflowScheduleUpdate", "WorkflowList", "WorkflowEditor")
    # The webhook field of WorkflowEditor is another issue's; leave it to its own test.
    document = visit(document, _StripWebhook())

    assert validate(schema._schema, document) == []


async def test_the_contracts_schedule_update_runs_as_written(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    document = contract_operations("WorkflowScheduleUpdate")

    before = datetime.now(UTC)
    response = await factory.client.post(
        "/graphql",
        json={
            "query": print_ast(document),
            "operationName": "WorkflowScheduleUpdate",
            "variables": {
                "input": {
                    "workflowId": workflow_id,
                    "cron": "*/15 * * * *",
                    "timezone": "UTC",
                    "enabled": True,
                }
            },
        },
        headers={"authorization": f"Bearer {owner.token}"},
    )
    after = datetime.now(UTC)

    payload = response.json()["data"]["workflowScheduleUpdate"]
    assert payload["userErrors"] == []
    assert payload["workflow"]["id"] == workflow_id
    schedule = payload["workflow"]["schedule"]
    assert schedule["upcoming"] in (
        every(timedelta(minutes=15), before, 3),
        every(timedelta(minutes=15), after, 3),
    )
    assert schedule == {
        "enabled": True,
        "cron": "*/15 * * * *",
        "timezone": "UTC",
        "nextFireAt": schedule["upcoming"][0],
        "upcoming": schedule["upcoming"],
    }


async def test_the_workflow_row_is_only_changed_in_its_schedule(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    columns = "name, description, current_version, updated_at, is_template"
    before = await factory.scalar(f"SELECT row({columns})::text FROM workflows")

    await set_schedule(factory, owner, workflow_id, cron="0 9 * * *", timezone="UTC", enabled=True)

    assert await factory.scalar(f"SELECT row({columns})::text FROM workflows") == before
    row = await factory.scalar(
        "SELECT row(schedule_cron, schedule_timezone, schedule_enabled)::text FROM workflows"
    )
    assert row == '("0 9 * * *",UTC,t)'
