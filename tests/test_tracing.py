"""OpenTelemetry traces: one trace from the operation (or delivery) that queues a run to the
run and its steps, across the API and a worker process, propagated through the run row.

The API runs in this process with the SDK's in-memory exporter. A worker in a subprocess
cannot share it: it exports with its real OTLP/HTTP exporter to a small OTLP receiver here,
whose protobuf requests the test decodes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.requests import Request
from starlette.responses import Response

from app import tracing
from schema.ids import decode_id
from tests.factories import Factory
from tests.processes import Processes
from tests.runs import create_workflow, flow, node
from tests.servers import LocalHTTP
from tests.webhooks.helpers import enable, path_of

CHAIN = flow(
    node("t", "trigger"),
    node("shape", "transform.set", fields={"twice": "{{ trigger.n * 2 }}"}),
    node("out", "output", value="{{ input }}"),
    handle="out",
)
EXECUTE = """mutation Go($i: WorkflowExecuteInput!) { workflowExecute(input: $i) {
  run { id } userErrors { code } } }"""
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Exported:
    """A span as a worker process exported it over OTLP."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status: int
    service: str


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


class Receiver:
    """An OTLP/HTTP traces endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.server = LocalHTTP()
        self.server.routes["/v1/traces"] = self._receive
        self.spans: list[Exported] = []

    async def _receive(self, request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Exported(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status=span.status.code,
                            service=resource["service.name"],
                        )
                    )
        return Response(b"", media_type="application/x-protobuf")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver()
    received.server.start()
    yield received
    received.server.stop()


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def named(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in finished if span.name == name]


async def finished_runs(factory: Factory, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    statement = "SELECT count(*) FROM runs WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
    while await factory.scalar(statement) < count:
        assert time.monotonic() < deadline, await factory.rows("SELECT status FROM runs")
        await asyncio.sleep(0.05)


async def test_one_run_is_one_trace_from_the_operation_to_each_step_across_processes(
    factory: Factory, spans: InMemorySpanExporter, receiver: Receiver, database_url: str
) -> None:
    workers = Processes(
        database_url,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.server.url("/v1/traces"),
        OTEL_BSP_SCHEDULE_DELAY="50",
    )
    try:
        workers.start()
        owner = await factory.owner()
        workflow_id = await create_workflow(factory, owner, CHAIN)
        spans.clear()
        response = await factory.client.post(
            "/graphql",
            json={
                "query": EXECUTE,
                "variables": {"i": {"workflowId": workflow_id, "input": {"n": 2}}},
            },
            headers={
                "authorization": f"Bearer {owner.token}",
                # The caller's own trace: the operation continues it.
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            },
        )
        run_id = decode_id("Run", response.json()["data"]["workflowExecute"]["run"]["id"])
        await finished_runs(factory, 1)
        deadline = time.monotonic() + 15
        while len(receiver.spans) < 4:
            assert time.monotonic() < deadline, receiver.spans
            await asyncio.sleep(0.05)
    finally:
        workers.stop_all()

    (operation,) = named(spans.get_finished_spans(), "mutation Go")
    assert operation.kind is SpanKind.SERVER
    assert operation.context is not None
    assert operation.parent is not None
    trace_id = hex_id(operation.context.trace_id, 32)
    operation_id = hex_id(operation.context.span_id, 16)
    assert trace_id == CALLER_TRACE
    assert hex_id(operation.parent.span_id, 16) == CALLER_SPAN
    assert dict(operation.attributes or {}) == {
        "graphql.operation.type": "mutation",
        "graphql.operation.name": "Go",
    }
    # The run row carries the operation's span to whichever process drives it.
    assert await factory.scalar("SELECT traceparent FROM runs") == (
        f"00-{trace_id}-{operation_id}-01"
    )
    # The worker process: the run's span under the operation, each step's under the run.
    (run,) = [span for span in receiver.spans if span.name == "run"]
    assert (run.trace_id, run.parent_span_id, run.service) == (
        trace_id,
        operation_id,
        "flowdeck-worker",
    )
    assert run.attributes == {
        "flowdeck.run.id": str(run_id),
        "flowdeck.workflow.id": str(decode_id("Workflow", workflow_id)),
        "flowdeck.workflow.version": 1,
        "flowdeck.run.trigger": "MANUAL",
        "flowdeck.run.attempt": 1,
        "flowdeck.run.outcome": "finished",
        "flowdeck.run.status": "SUCCEEDED",
    }
    steps = sorted(
        (span.name, span.trace_id, span.parent_span_id, tuple(sorted(span.attributes.items())))
        for span in receiver.spans
        if span.name.startswith("step ")
    )
    assert steps == sorted(
        (
            f"step {node_type}",
            trace_id,
            run.span_id,
            (
                ("flowdeck.node.id", node_id),
                ("flowdeck.node.type", node_type),
                ("flowdeck.step.attempt", 1),
                ("flowdeck.step.status", "SUCCEEDED"),
            ),
        )
        for node_id, node_type in (("t", "trigger"), ("shape", "transform.set"), ("out", "output"))
    )
    assert {span.trace_id for span in receiver.spans} == {trace_id}


# --- runs driven in the API process -------------------------------------------------------


async def test_a_webhook_delivery_its_run_and_steps_are_one_trace(
    here: Factory, spans: InMemorySpanExporter
) -> None:
    owner = await here.owner()
    flaky = flow(
        node("start", "trigger"),
        node("stop", "flow.fail", message="no {{ input.n }}"),
        handle="out",
    )
    hook = await enable(here, owner, await create_workflow(here, owner, flaky), waitForResult=True)
    spans.clear()

    answer = await here.client.post(path_of(hook["url"]), json={"n": 7})
    await finished_runs(here, 1)

    assert answer.status_code == 200
    assert answer.json()["status"] == "FAILED"
    finished = spans.get_finished_spans()
    (delivery,) = named(finished, "webhook delivery")
    (run,) = named(finished, "run")
    (trigger,) = named(finished, "step trigger")
    (stop,) = named(finished, "step flow.fail")
    assert delivery.context is not None
    assert delivery.parent is None
    assert delivery.kind is SpanKind.SERVER
    assert dict(delivery.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/hooks/{id}",
        "flowdeck.webhook.outcome": "COMPLETED",
        "http.response.status_code": 200,
    }
    assert hook["url"].rsplit("/", 1)[1] not in str(delivery.to_json())  # never the URL id
    assert {span.context.trace_id for span in finished if span.context} == {
        delivery.context.trace_id
    }
    assert run.parent is not None
    assert run.parent.span_id == delivery.context.span_id
    assert run.context is not None
    assert trigger.parent is not None
    assert trigger.parent.span_id == run.context.span_id
    assert stop.parent is not None
    assert stop.parent.span_id == run.context.span_id
    assert run.status.status_code is StatusCode.ERROR
    assert dict(run.attributes or {})["flowdeck.run.status"] == "FAILED"
    assert dict(run.attributes or {})["flowdeck.run.trigger"] == "WEBHOOK"
    assert stop.status.status_code is StatusCode.ERROR
    assert stop.status.description == "no 7"
    assert dict(stop.attributes or {})["flowdeck.step.status"] == "FAILED"
    # The run was born in memory; its row says the same.
    traceparent = await here.scalar("SELECT traceparent FROM runs")
    assert traceparent == (
        f"00-{hex_id(delivery.context.trace_id, 32)}-{hex_id(delivery.context.span_id, 16)}"
        f"-{hex_id(delivery.context.trace_flags, 2)}"
    )


async def test_traces_are_off_unless_the_environment_switches_them_on(here: Factory) -> None:
    assert tracing.wanted({}) is False
    assert tracing.wanted({"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}) is False
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is True
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"}) is True
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"}) is True
    assert (
        tracing.wanted({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
        is False
    )
    assert tracing.wanted({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is False
    assert tracing.configure("flowdeck-api", {}) is False
    assert tracing.enabled() is False

    owner = await here.owner()
    workflow_id = await create_workflow(here, owner, CHAIN)
    body = await here.gql(
        EXECUTE, {"i": {"workflowId": workflow_id, "input": {"n": 1}}}, token=owner.token
    )
    await finished_runs(here, 1)

    assert body["data"]["workflowExecute"]["userErrors"] == []
    assert await here.rows("SELECT status, traceparent FROM runs") == [
        {"status": "SUCCEEDED", "traceparent": None}
    ]


async def test_a_collector_that_never_answers_delays_and_fails_nothing(
    here: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It accepts connections and never answers: each export waits out its timeout, in the
    # exporter's thread.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    # The SDK reads these itself, from the environment.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    try:
        assert tracing.configure("flowdeck-api") is True
        owner = await here.owner()
        workflow_id = await create_workflow(here, owner, CHAIN)
        took = []
        for n in range(5):
            started = time.monotonic()
            body = await here.gql(
                EXECUTE, {"i": {"workflowId": workflow_id, "input": {"n": n}}}, token=owner.token
            )
            took.append(time.monotonic() - started)
            assert body["data"]["workflowExecute"]["userErrors"] == []
        await finished_runs(here, 5)
        stopping = time.monotonic()
        tracing.shutdown()
        stopped_in = time.monotonic() - stopping
    finally:
        tracing.use(None)
        silent.close()

    assert max(took) < 2, took  # each answer as without traces (an export would be 30 s)
    statuses = await here.rows("SELECT status, traceparent IS NOT NULL AS traced FROM runs")
    assert statuses == [{"status": "SUCCEEDED", "traced": True}] * 5
    assert stopped_in < tracing.SHUTDOWN_SECONDS + 1
