"""Schedules under attack: hostile input, costly expressions, edge zones, roles, races."""

from __future__ import annotations

import asyncio
import calendar
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.engine.cron import fire_times
from app.models import Role
from schema.ids import decode_id
from tests.factories import Account, Factory, gid
from tests.hostile import (
    NUL_PROBLEM,
    SURROGATE_PROBLEM,
    nothing_written,
    unstorable,
    user_error,
    without_locations,
)
from tests.runs import create_workflow, execute
from tests.schedules import GRAPH, LEAP_MONDAY

UPDATE = """
mutation($i: WorkflowScheduleUpdateInput!) {
  workflowScheduleUpdate(input: $i) {
    workflow { id schedule { enabled cron timezone overlap nextFireAt upcoming(count: 3) } }
    userErrors { field code message }
  }
}
"""
UPCOMING = "query($id: ID!, $n: Int!) { workflow(id: $id) { schedule { upcoming(count: $n) } } }"


async def set_schedule(factory: Factory, account: Account, workflow_id: str, **fields) -> dict:
    """The whole response body of workflowScheduleUpdate."""
    return await factory.gql(
        UPDATE, {"i": {"workflowId": workflow_id, **fields}}, token=account.token
    )


def leap_mondays(zone: str, after: datetime, before: datetime) -> list[str]:
    """Midnights (in ``zone``) of every Monday 29 February in (after, before), in UTC."""
    found = []
    for year in range(after.year, before.year + 1):
        if calendar.isleap(year) and date(year, 2, 29).weekday() == 0:
            moment = datetime(year, 2, 29, tzinfo=ZoneInfo(zone)).astimezone(UTC)
            if after < moment < before:
                found.append(moment.isoformat())
    return found


# --- cost: an expression must not stall the event loop ------------------------------------


async def test_upcoming_of_the_rarest_cron_stops_at_fifty_years(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    body = await set_schedule(
        factory, owner, workflow_id, cron=LEAP_MONDAY, timezone="Asia/Kathmandu", enabled=True
    )

    read = await factory.gql(UPCOMING, {"id": workflow_id, "n": 50}, token=owner.token)

    # Until 2044 the next Monday 29 Februaries within 50 years are those of 2044 and 2072;
    # 2112 and beyond (up to 3368 for fifty of them) are not worth walking to.
    expected = ["2044-02-28T18:15:00+00:00", "2072-02-28T18:15:00+00:00"]
    assert body["data"]["workflowScheduleUpdate"]["workflow"]["schedule"]["upcoming"] == expected
    assert read == {"data": {"workflow": {"schedule": {"upcoming": expected}}}}
    now = datetime.now(UTC)
    assert expected == leap_mondays("Asia/Kathmandu", now, now + timedelta(days=50 * 366))


async def test_thirty_aliased_upcoming_lists_of_the_rarest_cron_stop_at_the_horizon(
    factory: Factory,
) -> None:
    # Each list used to walk 1,300 years of Februaries (~150 ms on the event loop); 30 of
    # them blocked the process for seconds. The time it takes is measured in bench/; here,
    # that every list stops at the 50-year horizon.
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, GRAPH)
    await set_schedule(
        factory, owner, workflow_id, cron=LEAP_MONDAY, timezone="Asia/Kathmandu", enabled=True
    )
    aliases = " ".join(f"u{n}: upcoming(count: 50)" for n in range(30))
    query = f"query($id: ID!) {{ workflow(id: $id) {{ schedule {{ {aliases} }} }} }}"

    body = await factory.gql(query, {"id": workflow_id}, token=owner.token)

    assert "errors" not in body
    expected = ["2044-02-28T18:15:00+00:00", "2072-02-28T18:15:00+00:00"]
    assert set(map(tuple, body["data"]["workflow"]["schedule"].values())) == {tuple(expected)}


# --- hostile input: refused with the exact reason, and nothing written ---------------------


def cron_error(message: str) -> dict:
    """The user error of a refused cron."""
    return user_error(("input", "cron"), "INVALID_CRON", message)


BAD_CHARACTERS = "Only printable ASCII characters, spaces and tabs."
NEVER = "This expression never fires."


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("*/0 * * * *", "Not a valid cron expression: bad minute."),
        ("2147483648 * * * *", "Not a valid cron expression: bad minute."),
        ("0 0 1-99999999999999999999 * *", "Not a valid cron expression: bad day-of-month."),
        ("0 0 * * MON#6", "Not a valid cron expression: bad day-of-week."),
        ("0 0 15W * *", "Not a valid cron expression: bad day-of-month."),
        ("0 0 * * L", "Not a valid cron expression: bad day-of-week."),
        ("0 0 31 2 *", NEVER),
        ("0 0 30 2 */2", NEVER),
        ("0 0 */30 2 MON#5", NEVER),
        (
            "@daily",
            "A cron expression has 5 fields (minute hour day-of-month month "
            "day-of-week); this one has 1.",
        ),
        ("0 9 * * 🙂", BAD_CHARACTERS),
        ("0 9 * * \u202eIRF-NOM", BAD_CHARACTERS),
        ("0 9 * * \u0661", BAD_CHARACTERS),
        ("0\x0b9 * * *", BAD_CHARACTERS),
        ("0\n9 * * *", BAD_CHARACTERS),
        ("\x01" * 200, BAD_CHARACTERS),
        ("🙂" * 201, "At most 200 characters."),
        ("*" * 10_000, "At most 200 characters."),
    ],
    ids=[
        "step-0",
        "2-to-the-31",
        "huge-range",
        "sixth-monday",
        "W",
        "bare-L",
        "feb-31",
        "feb-30-and-star-weekday",
        "feb-1-and-fifth-monday",
        "at-daily",
        "emoji",
        "rtl-override",
        "arabic-digit",
        "vertical-tab",
        "newline",
        "200-controls",
        "201-emoji",
        "10k",
    ],
)
async def test_a_hostile_cron_is_refused_and_nothing_changes(
    factory: Factory, owner: Account, workflow_id: str, daily_at_nine: None, cron: str, message: str
) -> None:
    async with nothing_written(factory):
        body = await set_schedule(
            factory, owner, workflow_id, cron=cron, timezone="UTC", enabled=False
        )

    assert body == {
        "data": {"workflowScheduleUpdate": {"workflow": None, "userErrors": [cron_error(message)]}}
    }


@pytest.mark.parametrize(
    "timezone",
    [
        "Mars/Olympus",
        "localtime",
        "../etc/passwd",
        "",
        "europe/berlin",
        "Factory",
        "/etc/localtime",
        "Etc/GMT+14",
        "UTC ",
        "Europe/Berlin\x01",
        "posixrules",
        "right/UTC",
        "posix/UTC",
        "Europe/Berlin/../Berlin",
        "X" * 10_000,
        "🙂",
    ],
)
async def test_an_invalid_or_hostile_timezone_is_refused_and_nothing_changes(
    factory: Factory, owner: Account, workflow_id: str, timezone: str
) -> None:
    async with nothing_written(factory):
        body = await set_schedule(
            factory, owner, workflow_id, cron="0 9 * * *", timezone=timezone, enabled=True
        )

    assert body == {
        "data": {
            "workflowScheduleUpdate": {
                "workflow": None,
                "userErrors": [
                    user_error(
                        ("input", "timezone"),
                        "INVALID_TIMEZONE",
                        ("Not an IANA time zone name; use one such as Europe/Berlin or UTC."),
                    )
                ],
            }
        }
    }


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("cron", "\x00" * 200, NUL_PROBLEM),
        ("cron", "0 9 * * *\ud800", SURROGATE_PROBLEM),
        ("timezone", "Europe/Berlin\x00", NUL_PROBLEM),
        ("timezone", "\udfff", SURROGATE_PROBLEM),
    ],
    ids=["200-nuls", "cron-surrogate", "timezone-nul", "timezone-surrogate"],
)
async def test_an_unstorable_cron_or_timezone_is_refused_before_anything_runs(
    factory: Factory,
    owner: Account,
    workflow_id: str,
    daily_at_nine: None,
    field: str,
    value: str,
    problem: str,
) -> None:
    fields = {"cron": "0 9 * * *", "timezone": "UTC", "enabled": False, field: value}
    async with nothing_written(factory):
        # json.dumps escapes NUL and lone surrogates as \u escapes (httpx's json= cannot).
        response = await factory.client.post(
            "/graphql",
            content=json.dumps(
                {"query": UPDATE, "variables": {"i": {"workflowId": workflow_id, **fields}}}
            ),
            headers={"authorization": f"Bearer {owner.token}", "content-type": "application/json"},
        )

    assert without_locations(response.json()) == unstorable(
        "workflowScheduleUpdate", ("input", field), problem
    )


INVALID = "Variable '$i' has invalid value at ."


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"cron": None, "timezone": "UTC", "enabled": True},
            "cron: Expected value of non-null type 'String!' not to be None.",
        ),
        (
            {"cron": "0 9 * * *", "timezone": None, "enabled": True},
            "timezone: Expected value of non-null type 'String!' not to be None.",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "UTC", "enabled": None},
            "enabled: Expected value of non-null type 'Boolean!' not to be None.",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "UTC", "enabled": "yes"},
            "enabled: Boolean cannot represent a non boolean value: 'yes'",
        ),
        (
            {"cron": 9, "timezone": "UTC", "enabled": True},
            "cron: String cannot represent a non string value: 9",
        ),
        (
            {"cron": ["0 9 * * *"], "timezone": "UTC", "enabled": True},
            "cron: String cannot represent a non string value: ['0 9 * * *']",
        ),
        (
            {"cron": "0 9 * * *", "timezone": "UTC", "enabled": True, "overlap": "NEVER"},
            "overlap: Value 'NEVER' does not exist in 'ScheduleOverlap' enum.",
        ),
    ],
    ids=[
        "null-cron",
        "null-zone",
        "null-enabled",
        "string-enabled",
        "int-cron",
        "list-cron",
        "bad-overlap",
    ],
)
async def test_input_of_the_wrong_type_is_refused_before_anything_runs(
    factory: Factory,
    owner: Account,
    workflow_id: str,
    daily_at_nine: None,
    fields: dict,
    message: str,
) -> None:
    async with nothing_written(factory):
        body = await set_schedule(factory, owner, workflow_id, **fields)

    assert body["data"] is None
    assert [error["message"] for error in body["errors"]] == [INVALID + message]


async def test_ids_that_are_not_a_workflow_of_the_callers_workspace_read_as_not_found(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    doomed = await create_workflow(factory, owner, GRAPH, "Doomed")
    workflow_id = await create_workflow(factory, owner, GRAPH)
    run_id = (await execute(factory, owner, workflow_id, {}))["run"]["id"]
    deleted = await factory.gql(
        "mutation($id: ID!) { workflowDelete(id: $id) { deletedId } }",
        {"id": doomed},
        token=owner.token,
    )
    run_uuid = decode_id("Run", run_id)
    before = await factory.snapshot()

    targets = [
        doomed,  # deleted
        run_id,  # a Run's id
        gid("Workflow", run_uuid),  # a Run's key dressed as a workflow
        gid("Workspace", owner.workspace.id),
        gid("Workflow", "not-a-uuid"),
        "Workflow:" + str(uuid.uuid4()),  # not encoded
        "",
        "🙂",
        "A" * 10_000,
        12345,
    ]
    bodies = [
        await set_schedule(
            factory,
            owner,
            target,
            cron="0 9 * * *",
            timezone="UTC",
            enabled=True,  # type: ignore[arg-type]
        )
        for target in targets
    ]

    assert deleted["data"]["workflowDelete"]["deletedId"] == doomed
    for body in bodies:
        assert body["data"] is None
        assert body["errors"][0]["message"] == "Workflow not found."
        assert body["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert await factory.snapshot() == before


@pytest.mark.parametrize("role", [Role.EDITOR, Role.OWNER])
async def test_editors_and_owners_set_a_schedule_that_viewers_can_read(
    factory: Factory, role: Role
) -> None:
    owner = await factory.owner()
    account = owner if role is Role.OWNER else await factory.member(owner, role)
    viewer = await factory.member(owner, Role.VIEWER)
    workflow_id = await create_workflow(factory, owner, GRAPH)

    body = await set_schedule(
        factory, account, workflow_id, cron="0 0 1 1 *", timezone="Pacific/Kiritimati", enabled=True
    )
    read = await factory.gql(
        "query($id: ID!) { workflow(id: $id) { schedule { cron timezone } } }",
        {"id": workflow_id},
        token=viewer.token,
    )

    year = datetime.now(ZoneInfo("Pacific/Kiritimati")).year + 1
    assert body["data"]["workflowScheduleUpdate"] == {
        "workflow": {
            "id": workflow_id,
            "schedule": {
                "enabled": True,
                "cron": "0 0 1 1 *",
                "timezone": "Pacific/Kiritimati",
                "overlap": "SKIP",
                "nextFireAt": f"{year - 1}-12-31T10:00:00+00:00",
                "upcoming": [f"{y - 1}-12-31T10:00:00+00:00" for y in (year, year + 1, year + 2)],
            },
        },
        "userErrors": [],
    }
    assert read == {
        "data": {"workflow": {"schedule": {"cron": "0 0 1 1 *", "timezone": "Pacific/Kiritimati"}}}
    }


async def test_a_stranger_and_an_anonymous_caller_change_nothing(factory: Factory) -> None:
    owner = await factory.owner()
    stranger = await factory.owner("Elsewhere")
    workflow_id = await create_workflow(factory, owner, GRAPH)
    await set_schedule(factory, owner, workflow_id, cron="0 9 * * *", timezone="UTC", enabled=True)
    before = await factory.snapshot()

    as_stranger = await set_schedule(
        factory, stranger, workflow_id, cron="* * * * *", timezone="UTC", enabled=True
    )
    anonymous = await factory.gql(
        UPDATE,
        {"i": {"workflowId": workflow_id, "cron": "* * * * *", "timezone": "UTC", "enabled": True}},
    )
    read = await factory.gql(
        "query($id: ID!) { workflow(id: $id) { schedule { cron } } }",
        {"id": workflow_id},
        token=stranger.token,
    )

    assert as_stranger["data"] is None
    assert as_stranger["errors"][0]["message"] == "Workflow not found."
    assert as_stranger["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert anonymous["data"] is None
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert read["data"] == {"workflow": None}
    assert read["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
    assert await factory.snapshot() == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("upcoming(count: $n)", 0, "count must be between 1 and 50."),
        ("upcoming(count: $n)", 2**31 - 1, "count must be between 1 and 50."),
        ("upcoming(count: $n)", -(2**31), "count must be between 1 and 50."),
        ("recentFires(limit: $n) { fireAt }", 0, "limit must be between 1 and 100."),
        ("recentFires(limit: $n) { fireAt }", 101, "limit must be between 1 and 100."),
        ("recentFires(limit: $n) { fireAt }", -1, "limit must be between 1 and 100."),
        ("recentFires(limit: $n) { fireAt }", 2**31 - 1, "limit must be between 1 and 100."),
    ],
)
async def test_count_and_limit_out_of_range_are_refused(
    factory: Factory,
    owner: Account,
    workflow_id: str,
    daily_at_nine: None,
    field: str,
    value: int,
    message: str,
) -> None:

    body = await factory.gql(
        f"query($id: ID!, $n: Int!) {{ workflow(id: $id) {{ schedule {{ {field} }} }} }}",
        {"id": workflow_id, "n": value},
        token=owner.token,
    )

    assert body["data"] == {"workflow": {"schedule": None}}
    assert body["errors"][0]["message"] == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**31, "Int cannot represent non 32-bit signed integer value: 2147483648"),
        (-(2**31) - 1, "Int cannot represent non 32-bit signed integer value: -2147483649"),
        (1.5, "Int cannot represent non-integer value: 1.5"),
        ("5", "Int cannot represent non-integer value: '5'"),
    ],
)
async def test_a_count_that_is_not_a_32_bit_integer_is_refused_by_graphql(
    factory: Factory,
    owner: Account,
    workflow_id: str,
    daily_at_nine: None,
    value: object,
    message: str,
) -> None:

    body = await factory.gql(UPCOMING, {"id": workflow_id, "n": value}, token=owner.token)

    assert body["data"] is None
    assert [error["message"] for error in body["errors"]] == [
        f"Variable '$n' has invalid value: {message}"
    ]


# --- racing updates ---------------------------------------------------------------------------


async def test_concurrent_updates_leave_one_of_them_whole(
    factory: Factory, owner: Account, workflow_id: str
) -> None:
    wanted = [
        ("0 0 * 2 MON#5", "Asia/Kathmandu"),
        ("*/5 * * * *", "Australia/Lord_Howe"),
        ("30 2 * * *", "Antarctica/Troll"),
        ("0 0 L * *", "America/Sao_Paulo"),
        ("0 12 * * MON-FRI", "Pacific/Chatham"),
        ("0 0 1 1 *", "Etc/GMT-14"),
    ]

    bodies = await asyncio.gather(
        *(
            set_schedule(factory, owner, workflow_id, cron=cron, timezone=zone, enabled=True)
            for cron, zone in wanted
        )
    )
    now = datetime.now(UTC)
    cron, zone, stored_next = (
        (
            await factory.scalar(
                "SELECT row(schedule_cron, schedule_timezone, schedule_next_fire_at)::text "
                "FROM workflows"
            )
        )
        .strip("()")
        .rsplit(",", 2)
    )

    assert [b["data"]["workflowScheduleUpdate"]["userErrors"] for b in bodies] == [[]] * 6
    assert (cron.strip('"'), zone) in wanted
    expected_next = next(fire_times(cron.strip('"'), zone, now - timedelta(seconds=5)))
    assert datetime.fromisoformat(stored_next.strip('"')) in (
        expected_next,
        next(fire_times(cron.strip('"'), zone, now)),
    )
