"""One LISTEN connection per API process, waking the subscribers of a run or a workflow,
and telling the process's principal cache whose access changed.

NOTIFY is only a wake-up: a subscriber reads the event table after the last seq it saw, so
a lost notification (or a dropped listener connection, which reconnects by itself) costs
latency, never an event. Waking is a flag per subscriber, so a slow subscriber can neither
slow the others nor make the hub buffer anything. The principal cache keeps nothing while
the connection is down, and forgets everything when it comes back (app.auth.cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

from app.auth.cache import AUTH_CHANNEL, PrincipalCache
from app.engine.event_log import CHANNEL
from app.logs import log_database_unavailable

log = logging.getLogger(__name__)

RECONNECT_DELAY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
LIVENESS_SECONDS = 10.0
# Runs remembered per workflow subscriber between two reads (a live list needs only the
# latest state of each run; the oldest are dropped past this and picked up on their next event).
MAX_PENDING_RUNS = 1000


@dataclass(eq=False)
class RunWaiter:
    """A subscriber of one run: woken on any of its events."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, at_most: float) -> None:
        """Wait for a wake-up (or ``at_most`` seconds), then re-arm."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), at_most)
        self.event.clear()


@dataclass(eq=False)
class WorkflowWaiter(RunWaiter):
    """A subscriber of one workflow: woken with the ids of its runs that changed."""

    runs: OrderedDict[uuid.UUID, None] = field(default_factory=OrderedDict)

    def take(self) -> list[uuid.UUID]:
        """The runs that changed since the last call."""
        changed = list(self.runs)
        self.runs.clear()
        return changed


_Waiter = TypeVar("_Waiter", bound=RunWaiter)


class EventHub:
    """Listens on the event channel and wakes the interested subscribers of this process."""

    def __init__(self, url: str, principals: PrincipalCache | None = None) -> None:
        self.url = url
        # Kept only while this hub listens: it drops a user's on their announcement.
        self.principals = principals
        self._runs: dict[uuid.UUID, set[RunWaiter]] = {}
        self._workflows: dict[uuid.UUID, set[WorkflowWaiter]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        # Told of every run event's (run id, type): runs driven in this process stop on a
        # cancel.
        self.on_run_event: Callable[[uuid.UUID, str], None] | None = None
        # Awaited when the listener is back after losing its connection: an outage (or a
        # restart) that killed it has likely killed the idle pooled connections too.
        self.on_reconnected: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        """Start listening in the background."""
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _listening(self, on: bool) -> None:
        if self.principals is not None:
            self.principals.listening(on)

    @contextlib.contextmanager
    def watch_run(self, run_id: uuid.UUID) -> Iterator[RunWaiter]:
        """Be woken by the events of a run while the block lasts."""
        waiter = RunWaiter()
        self._runs.setdefault(run_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            self._discard(self._runs, run_id, waiter)

    @contextlib.contextmanager
    def watch_workflow(self, workflow_id: uuid.UUID) -> Iterator[WorkflowWaiter]:
        """Be woken with the runs of a workflow that change while the block lasts."""
        waiter = WorkflowWaiter()
        self._workflows.setdefault(workflow_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            self._discard(self._workflows, workflow_id, waiter)

    @staticmethod
    def _discard(table: dict[uuid.UUID, set[_Waiter]], key: uuid.UUID, waiter: _Waiter) -> None:
        waiters = table.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del table[key]

    def dispatch(self, payload: str) -> None:
        """Wake the subscribers an event concerns."""
        try:
            data = json.loads(payload)
            run_id = uuid.UUID(data["run"])
            workflow_id = uuid.UUID(data["workflow"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable event notification", extra={"payload": payload[:200]})
            return
        if self.on_run_event is not None:
            self.on_run_event(run_id, str(data.get("type", "")))
        for waiter in self._runs.get(run_id, ()):
            waiter.event.set()
        if str(data.get("type", "")).startswith("RUN_"):
            for workflow_waiter in self._workflows.get(workflow_id, ()):
                workflow_waiter.runs[run_id] = None
                workflow_waiter.runs.move_to_end(run_id)
                while len(workflow_waiter.runs) > MAX_PENDING_RUNS:
                    workflow_waiter.runs.popitem(last=False)
                workflow_waiter.event.set()

    def _wake_everyone(self) -> None:
        # After a reconnect notifications may have been missed: everyone re-reads.
        for waiters in self._runs.values():
            for waiter in waiters:
                waiter.event.set()

    async def _relay(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notification in conn.notifies(timeout=LIVENESS_SECONDS):
                if notification.channel == AUTH_CHANNEL:
                    if self.principals is not None:
                        self.principals.forget(notification.payload)
                else:
                    self.dispatch(notification.payload)
            # Quiet for a while: make sure the connection is still alive.
            await conn.execute("SELECT 1")

    async def _reconnected(self) -> None:
        if self.on_reconnected is None:
            return
        try:
            await self.on_reconnected()
        except Exception as error:  # the database went again: the next reconnect tries again
            log_database_unavailable(log, "could not check the pooled connections", error)

    async def _listen_forever(self) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="flowdeck-listener"
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {AUTH_CHANNEL}")
                    self.connected.set()
                    if failures:
                        log.info("event listener reconnected", extra={"attempts": failures})
                        await self._reconnected()
                    if failures or self.reconnects:
                        self._wake_everyone()
                    failures = 0
                    try:
                        self._listening(True)
                        await self._relay(conn)
                    finally:  # however the connection ends, what it would have said is unheard
                        self._listening(False)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as error:
                self.connected.clear()
                delay = RECONNECT_DELAY_SECONDS[min(failures, len(RECONNECT_DELAY_SECONDS) - 1)]
                if failures == 0:
                    # Once per outage, without the driver's text; each retry only at DEBUG.
                    log_database_unavailable(
                        log, "event listener lost its connection; reconnecting", error
                    )
                else:
                    log.debug("event listener still reconnecting", extra={"retry_in": delay})
                failures += 1
                self.reconnects += 1
                await asyncio.sleep(delay)
