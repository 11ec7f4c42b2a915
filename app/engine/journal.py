"""A driver's record of its run: changes kept in memory, then written together in one statement.

The driver notes each change of its run and steps here as it happens, with the event the
state machine (``states.py``) gives it. ``flush`` writes everything noted since the last
flush as ONE statement: the run's row (fenced by the claim the driver holds), the latest
state of each changed step, and the events in order, numbered after the run's last seq,
with one NOTIFY. A statement is atomic, so a flush needs no transaction of its own: one
round trip. When the fence fails (the run was cancelled or taken over since), nothing of
the flush is written and ``LeaseLost`` is raised.

A flush the database could not take (an outage, a terminated connection) keeps what it was
to write and tries again with backoff until the database is back (``app.outage``). When
the statement may have been applied before its answer was lost, the retry first reads the
run back: a write that landed is not written twice (its events would be).

The driver decides when to flush: before a step with an outside effect starts and right
after it ends (its result is committed before anything that depends on it is observable),
before it waits, and when the run ends. Steps without effects ride along with the next
flush: re-running them after a crash is invisible.

A run born in memory (a webhook delivery run where it was received) has no row yet: its
first flush inserts the run, all its steps and its events, unless its idempotency key is
taken (``DuplicateRun``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from app.engine.claim import StepState
from app.engine.claim import json_text as encode
from app.engine.event_log import CHANNEL
from app.engine.states import (
    RUN_EVENTS,
    STEP_EVENTS,
    LeaseLost,
    check_run_transition,
    check_step_transition,
)
from app.errors import database_unavailable
from app.metrics import RUN_CLAIMS
from app.models import RunEventType, RunStatus, StepStatus
from app.outage import DATABASE, Backoff

Pool = AsyncConnectionPool[AsyncConnection[Any]]

# The run columns a flush may set, and their SQL types.
RUN_COLUMNS = {
    "status": "text",
    "attempt": "integer",
    "crashes": "integer",
    "output": "jsonb",
    "error": "text",
    "error_node_id": "text",
    "wake_at": "timestamptz",
    "deadline_at": "timestamptz",
    "lease_until": "timestamptz",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
}


class DuplicateRun(Exception):
    """A run born in memory whose idempotency key another run already holds."""


class StaleBirth(Exception):
    """A run born in memory whose precondition no longer held: nothing was written."""


class _Unanswered(Exception):
    """A flush's statement failed once sent: it may have been applied all the same."""

    def __init__(self, error: Exception, events: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.events = events


@dataclass(slots=True)
class Event:
    """One event, as noted: written with the next seq of its run at the flush."""

    type: RunEventType
    at: datetime
    run_status: RunStatus | None = None
    node_id: str | None = None
    step_status: StepStatus | None = None
    attempt: int | None = None
    output: str | None = None  # JSON text, redacted
    error: str | None = None


@dataclass(slots=True)
class Birth:
    """The row of a run born in memory, written by its first flush."""

    workspace_id: uuid.UUID
    workflow_id: uuid.UUID
    version_id: uuid.UUID
    version_number: int
    trigger: str
    input: Any
    input_hash: str
    idempotency_key: str | None
    created_by_id: uuid.UUID | None
    # (node id, node type) of each step, in the graph's order.
    nodes: Sequence[tuple[str, str]]
    # The W3C traceparent of the span that received it (traces on), kept in its row.
    traceparent: str | None = None
    # What must still hold when the run is written (a boolean SQL expression of our own,
    # its parameters named ``p_…``), e.g. that the webhook it came through is unchanged;
    # when it does not, nothing is written and StaleBirth is raised.
    precondition: str = "true"
    precondition_params: dict[str, Any] = dataclasses.field(default_factory=dict)


class Journal:
    """The unwritten changes of one run, held by the driver that claimed it."""

    def __init__(
        self,
        pool: Pool,
        *,
        run_id: uuid.UUID,
        fence: int,
        steps: dict[str, StepState],
        birth: Birth | None = None,
        written: asyncio.Event | None = None,
    ) -> None:
        self.pool = pool
        self.run_id = run_id
        # The run's attempt the next flush expects (the claim it holds).
        self.fence = fence
        self.steps = steps
        self.birth = birth
        self.run_values: dict[str, Any] = {}
        self.run_status: RunStatus | None = None
        self.dirty: dict[str, None] = {}
        self.events: list[Event] = []
        self.flushes = 0
        # The run's last event seq as the last flush left it (None until one did).
        self.seq: int | None = None
        # Flushes go one at a time, in the order their changes were noted (their seqs).
        self._lock = asyncio.Lock()
        # Set once the run's row exists (at once for a run that was queued already).
        self.written = written or asyncio.Event()
        if birth is None:
            self.written.set()

    @property
    def pending(self) -> bool:
        """Whether anything was noted since the last flush."""
        return bool(self.events or self.dirty or self.run_values or self.birth)

    def queued(self, *, at: datetime) -> None:
        """Note the first event of a run born in memory."""
        self.events.append(Event(RunEventType.RUN_QUEUED, at, run_status=RunStatus.QUEUED))

    def run(
        self,
        current: RunStatus,
        target: RunStatus,
        *,
        at: datetime,
        values: dict[str, Any] | None = None,
        event: RunEventType | None = None,
        output: Any = None,
        error: str | None = None,
    ) -> None:
        """Note a change of the run (a claim, a release, its end) and its event."""
        check_run_transition(current, target)
        self.run_status = target
        self.run_values["status"] = target.value
        self.run_values.update(values or {})
        kind = event or RUN_EVENTS.get(target)
        if kind is not None:
            self.events.append(
                Event(kind, at, run_status=target, output=encode(output), error=error)
            )

    def step(
        self,
        node_id: str,
        target: StepStatus,
        *,
        at: datetime,
        announce: bool = True,
    ) -> None:
        """Note that a step reached ``target`` (its state already updated) and its event."""
        state = self.steps[node_id]
        check_step_transition(state.status, target)
        state.status = target
        self.dirty[node_id] = None
        if announce:
            self.events.append(
                Event(
                    STEP_EVENTS[target],
                    at,
                    node_id=node_id,
                    step_status=target,
                    attempt=state.attempt,
                    output=state.stored_output if target is not StepStatus.RUNNING else None,
                    error=state.error if target is StepStatus.FAILED else None,
                )
            )

    def retrying(self, node_id: str, *, at: datetime, attempt: int, error: str) -> None:
        """Note that a step's attempt failed and another follows."""
        self.events.append(
            Event(
                RunEventType.STEP_RETRYING,
                at,
                node_id=node_id,
                step_status=StepStatus.RUNNING,
                attempt=attempt,
                error=error,
            )
        )

    async def flush(self, *, retry: bool = True) -> None:
        """Write everything noted, in one statement; LeaseLost when the fence fails.

        What is noted while the statement runs waits for the next flush. While the database
        is unavailable the flush waits and tries again (``retry``), or raises with everything
        kept for the next flush.
        """
        async with self._lock:
            backoff = Backoff()
            # Events of a try whose answer was lost: it may have been applied.
            unanswered: int | None = None
            while self.pending:
                try:
                    async with self.pool.connection() as conn:
                        if unanswered is not None:
                            await self._settle(conn, unanswered)
                            unanswered = None
                        if self.pending:
                            await self._write(conn)
                except _Unanswered as failure:
                    unanswered, error = failure.events, failure.error
                except Exception as failure:
                    error = failure
                else:
                    DATABASE.succeeded()
                    return
                # A run born here and not yet written was not accepted: its caller answers
                # (503) rather than wait for the database.
                if not (retry and self.written.is_set() and database_unavailable(error)):
                    raise error
                DATABASE.failed(error)
                await asyncio.sleep(backoff.next())

    async def _write(self, conn: AsyncConnection[Any]) -> None:
        """One try of the flush; on a failure, what it was to write is noted again."""
        statement, params, inserting = self._statement()
        # Only a claim sets the attempt: here, a run this process queued (or was born).
        claims = "attempt" in self.run_values
        fence = int(self.run_values.get("attempt", self.fence))
        taken = (self.run_values, self.dirty, self.events, self.birth)
        self.run_values, self.dirty, self.events, self.birth = {}, {}, [], None
        try:
            row = await (await conn.execute(statement, params)).fetchone()
        except Exception as error:
            self._keep(*taken)
            raise _Unanswered(error, len(taken[2])) from error
        if row is None:
            if inserting:
                raise DuplicateRun(str(params["key"]))
            raise LeaseLost(f"run {self.run_id} is no longer held by claim {self.fence}")
        if row[0] is None:
            raise StaleBirth(str(self.run_id))
        self._written(fence, int(row[0]))
        if claims:
            RUN_CLAIMS.labels("inline").inc()

    def _written(self, fence: int, seq: int) -> None:
        self.fence = fence
        self.seq = seq
        self.flushes += 1
        self.written.set()

    def _keep(
        self,
        run_values: dict[str, Any],
        dirty: dict[str, None],
        events: list[Event],
        birth: Birth | None,
    ) -> None:
        """Note again, before what was noted since, the changes of a flush that failed."""
        self.run_values = {**run_values, **self.run_values}
        self.dirty = {**dirty, **self.dirty}
        self.events = [*events, *self.events]
        self.birth = birth

    async def _settle(self, conn: AsyncConnection[Any], events: int) -> None:
        """Find out whether a try whose answer was lost was applied (the run reads as it
        would have left it); if so, its first ``events`` events are not written again."""
        cursor = await conn.execute(
            "SELECT attempt, last_event_seq FROM runs WHERE id = %s", (self.run_id,)
        )
        found = await cursor.fetchone()
        if found is None:
            return  # an insert that was not applied
        attempt, seq = int(found[0]), int(found[1])
        fence = int(self.run_values.get("attempt", self.fence))
        if self.birth is not None:
            landed = True  # the run's id is new: only this journal inserts it
        elif self.seq is not None:
            landed = attempt == fence and seq == self.seq + events
        else:
            # Before a first answer the seq is unknown; a write that moved the attempt (the
            # first claim, made here under a lease) is known by that attempt.
            landed = fence != self.fence and attempt == fence
        if landed:
            self.birth = None
            self.events = self.events[events:]
            self._written(fence, seq)
            if self.run_values.pop("attempt", None) is not None:
                RUN_CLAIMS.labels("inline").inc()

    def _statement(self) -> tuple[str, dict[str, Any], bool]:
        if self.birth is not None:
            statement = _insert_sql(self.birth.precondition)
            return statement, self._insert_params(self.birth), True
        columns = tuple(sorted(self.run_values))
        return _update_sql(columns), self._update_params(columns), False

    def _document(self, node_ids: Sequence[str]) -> str:
        """The flush's steps and events as one JSON parameter (stored JSON spliced as is)."""
        steps = []
        for node_id in node_ids:
            state = self.steps[node_id]
            steps.append(
                {
                    "node_id": node_id,
                    "status": state.status.value,
                    "attempt": state.attempt,
                    "input": _fragment(state.stored_input),
                    "output": _fragment(state.stored_output),
                    "handles": sorted(state.active_handles)
                    if state.active_handles is not None
                    else None,
                    "error": state.error,
                    "wake_at": state.wake_at,
                    "started_at": state.started_at,
                    "finished_at": state.finished_at,
                }
            )
        events = [
            {
                "type": e.type.value,
                "at": e.at,
                "run_status": e.run_status.value if e.run_status else None,
                "node_id": e.node_id,
                "step_status": e.step_status.value if e.step_status else None,
                "attempt": e.attempt,
                "output": _fragment(e.output),
                "error": e.error,
            }
            for e in self.events
        ]
        return orjson.dumps({"steps": steps, "events": events}).decode()

    def _notify_type(self) -> str:
        # Workflow subscribers wake on run-level events only; name the last one if any.
        run_level = [e.type for e in self.events if e.run_status is not None]
        return (run_level or [e.type for e in self.events] or [RunEventType.RUN_STARTED])[-1].value

    def _update_params(self, columns: tuple[str, ...]) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "fence": self.fence,
            "events": len(self.events),
            "channel": CHANNEL,
            "notify_type": self._notify_type(),
            **{f"r_{c}": self._param(c) for c in columns},
            "doc": self._document(list(self.dirty)),
        }

    def _param(self, column: str) -> Any:
        value = self.run_values[column]
        return encode(value) if RUN_COLUMNS[column] == "jsonb" else value

    def _insert_params(self, birth: Birth) -> dict[str, Any]:
        nodes = [node_id for node_id, _ in birth.nodes]
        return {
            "run": self.run_id,
            "workspace": birth.workspace_id,
            "workflow": birth.workflow_id,
            "version": birth.version_id,
            "version_number": birth.version_number,
            "trigger": birth.trigger,
            "input": encode(birth.input),
            "input_hash": birth.input_hash,
            "key": birth.idempotency_key,
            "created_by": birth.created_by_id,
            "traceparent": birth.traceparent,
            "channel": CHANNEL,
            "notify_type": self._notify_type(),
            "attempt": int(self.run_values.get("attempt", 0)),
            "r_status": self.run_values.get("status", RunStatus.QUEUED.value),
            "r_output": encode(self.run_values.get("output")),
            **{
                f"r_{c}": self.run_values.get(c)
                for c in (
                    "error",
                    "error_node_id",
                    "lease_until",
                    "deadline_at",
                    "started_at",
                    "finished_at",
                )
            },
            "types": [node_type for _, node_type in birth.nodes],
            "doc": self._document(nodes),
            **birth.precondition_params,
        }


def _fragment(text: str | None) -> orjson.Fragment | None:
    return None if text is None else orjson.Fragment(text)


# The document's steps and events as rows (a JSON null is SQL NULL, as in every other write),
# numbered in their order.
_STEPS = """ROWS FROM (jsonb_to_recordset(d.doc -> 'steps') AS (node_id text, status text,
    attempt integer, input jsonb, output jsonb, handles jsonb, error text,
    wake_at timestamptz, started_at timestamptz, finished_at timestamptz))
    WITH ORDINALITY AS v(node_id, status, attempt, input, output, handles, error, wake_at,
                         started_at, finished_at, n)"""
_EVENTS = """ROWS FROM (jsonb_to_recordset(d.doc -> 'events') AS (type text, at timestamptz,
    run_status text, node_id text, step_status text, attempt integer, output jsonb,
    error text))
    WITH ORDINALITY AS v(type, at, run_status, node_id, step_status, attempt, output, error, n)"""

_UPDATE_TEMPLATE = """
WITH d AS (SELECT %(doc)s::jsonb AS doc), r AS (
    UPDATE runs SET last_event_seq = last_event_seq + %(events)s{sets}
    WHERE id = %(run)s AND attempt = %(fence)s
    RETURNING id, workspace_id, workflow_id, last_event_seq
), s AS (
    UPDATE run_steps t SET status = v.status, attempt = v.attempt, input = v.input,
        output = v.output, active_handles = v.handles, error = v.error, wake_at = v.wake_at,
        started_at = v.started_at, finished_at = v.finished_at
    FROM d, {steps}
    WHERE t.run_id = (SELECT id FROM r) AND t.node_id = v.node_id
), e AS (
    INSERT INTO run_events (run_id, seq, workspace_id, workflow_id, type, at, run_status,
                            node_id, step_status, attempt, output, error)
    SELECT r.id, r.last_event_seq - %(events)s + v.n, r.workspace_id, r.workflow_id, v.type,
           v.at, v.run_status, v.node_id, v.step_status, v.attempt, v.output, v.error
    FROM r, d, {events}
)
SELECT r.last_event_seq, pg_notify(%(channel)s, json_build_object(
    'run', r.id, 'seq', r.last_event_seq, 'workflow', r.workflow_id,
    'type', %(notify_type)s::text)::text)
FROM r
"""

_INSERT_TEMPLATE = """
WITH d AS (SELECT %(doc)s::jsonb AS doc), r AS (
    INSERT INTO runs (id, workspace_id, workflow_id, version_id, version_number, status,
                      trigger, input, input_hash, idempotency_key, created_by_id, attempt,
                      crashes, output, error, error_node_id, lease_until, deadline_at,
                      last_event_seq, queued_at, started_at, finished_at, traceparent)
    SELECT %(run)s, %(workspace)s, %(workflow)s, %(version)s, %(version_number)s,
           %(r_status)s, %(trigger)s, %(input)s::jsonb, %(input_hash)s, %(key)s,
           %(created_by)s, %(attempt)s, 0, %(r_output)s::jsonb, %(r_error)s,
           %(r_error_node_id)s, %(r_lease_until)s, %(r_deadline_at)s,
           jsonb_array_length(d.doc -> 'events'),
           (d.doc -> 'events' -> 0 ->> 'at')::timestamptz,
           %(r_started_at)s, %(r_finished_at)s, %(traceparent)s
    FROM d WHERE {precondition}
    ON CONFLICT (workflow_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, workspace_id, workflow_id, last_event_seq
), s AS (
    INSERT INTO run_steps (id, workspace_id, run_id, node_id, node_type, position, status,
                           attempt, input, output, active_handles, error, reused, wake_at,
                           started_at, finished_at)
    SELECT gen_random_uuid(), r.workspace_id, r.id, v.node_id, (%(types)s::text[])[v.n],
           v.n - 1, v.status, v.attempt, v.input, v.output, v.handles, v.error, false,
           v.wake_at, v.started_at, v.finished_at
    FROM r, d, {steps}
), e AS (
    INSERT INTO run_events (run_id, seq, workspace_id, workflow_id, type, at, run_status,
                            node_id, step_status, attempt, output, error)
    SELECT r.id, v.n, r.workspace_id, r.workflow_id, v.type, v.at, v.run_status, v.node_id,
           v.step_status, v.attempt, v.output, v.error
    FROM r, d, {events}
)
SELECT r.last_event_seq FROM r CROSS JOIN LATERAL pg_notify(%(channel)s, json_build_object(
    'run', r.id, 'seq', r.last_event_seq, 'workflow', r.workflow_id,
    'type', %(notify_type)s::text)::text) AS n
UNION ALL  -- not written, and not for its idempotency key: the precondition failed
SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM r) AND NOT ({precondition})
"""


def _statement(template: str, **parts: str) -> str:
    # Our own SQL fragments, never input: the templates' placeholders filled in.
    for name, text in parts.items():
        template = template.replace("{" + name + "}", text)
    return template


_INSERT_SQL = _statement(_INSERT_TEMPLATE, steps=_STEPS, events=_EVENTS)
INSERT_SQL = _statement(_INSERT_SQL, precondition="true")
_UPDATE_SQL = _statement(_UPDATE_TEMPLATE, steps=_STEPS, events=_EVENTS)


@functools.lru_cache(maxsize=16)
def _insert_sql(precondition: str) -> str:
    return _statement(_INSERT_SQL, precondition=precondition)


@functools.lru_cache(maxsize=64)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = "".join(f", {c} = %(r_{c})s::{RUN_COLUMNS[c]}" for c in columns)
    return _statement(_UPDATE_SQL, sets=sets)
