"""GraphQL types of runs, steps and the node catalogue."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import strawberry
from strawberry.scalars import JSON

from app import models
from app.engine.nodes.base import NodeType as NodeTypeModel
from app.models import RunEventType as RunEventTypeModel
from app.models import RunStatus as RunStatusModel
from app.models import RunTrigger as RunTriggerModel
from app.models import StepStatus as StepStatusModel
from app.services.records import RunRecord
from schema.context import Info
from schema.ids import encode_id
from schema.selection import columns_for, selected_names

if TYPE_CHECKING:
    from schema.workflows.types import Workflow, WorkflowVersion

RunStatus: TypeAlias = RunStatusModel
strawberry.enum(RunStatus, description="QUEUED → RUNNING → an end status.")
StepStatus: TypeAlias = StepStatusModel
strawberry.enum(StepStatus, description="PENDING → RUNNING → an end status.")
RunTrigger: TypeAlias = RunTriggerModel
strawberry.enum(RunTrigger, description="What started a run.")
RunEventType: TypeAlias = RunEventTypeModel
strawberry.enum(RunEventType, description="What happened to a run.")


def run_duration_ms(started: datetime | None, finished: datetime | None) -> int | None:
    """Milliseconds from start to end; None until both are known."""
    if started is None or finished is None:
        return None
    return int((finished - started).total_seconds() * 1000)


@strawberry.type(description="The execution of one node in a run.")
class RunStep:
    row: strawberry.Private[models.RunStep]
    node_id: str = strawberry.field(description="The node's id in the graph.")
    node_type: str = strawberry.field(description="The node's type, e.g. http.request.")
    status: StepStatus = strawberry.field(description="Where the step is.")
    attempt: int = strawberry.field(description="Attempts made (0 before the first).")
    started_at: datetime | None = strawberry.field(description="When its first attempt began.")
    finished_at: datetime | None = strawberry.field(description="When it ended.")
    input: JSON | None = strawberry.field(description="What the node received.")
    output: JSON | None = strawberry.field(description="What the node produced.")
    error: str | None = strawberry.field(description="Why it failed, if it did.")
    reused: bool = strawberry.field(
        description="Kept from the original run by a retry from the failed step."
    )

    @strawberry.field(description="Milliseconds from start to end, when it ended.")
    def duration_ms(self) -> int | None:
        return run_duration_ms(self.row.started_at, self.row.finished_at)

    @classmethod
    def from_model(cls, row: models.RunStep) -> RunStep:
        """The type of a row."""
        return cls(
            row=row,
            node_id=row.node_id,
            node_type=row.node_type,
            status=row.status,
            attempt=row.attempt,
            started_at=row.started_at,
            finished_at=row.finished_at,
            input=row.input,
            output=row.output,
            error=row.error,
            reused=row.reused,
        )


@strawberry.type(description="One execution of one workflow version.")
class Run:
    row: strawberry.Private[models.Run | RunRecord]
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    status: RunStatus = strawberry.field(description="Where the run is.")
    trigger: RunTrigger = strawberry.field(description="What started it.")
    input: JSON | None = strawberry.field(description="The run's input (the trigger's output).")
    output: JSON | None = strawberry.field(description="The output node's value, when it ran.")
    error: str | None = strawberry.field(description="Why it failed, naming the node.")
    error_node_id: str | None = strawberry.field(description="The node that failed, if any.")
    queued_at: datetime = strawberry.field(description="When it was queued.")
    started_at: datetime | None = strawberry.field(description="When a worker started it.")
    finished_at: datetime | None = strawberry.field(description="When it ended.")

    @strawberry.field(description="Milliseconds from start to end, when it ended.")
    def duration_ms(self) -> int | None:
        return run_duration_ms(self.row.started_at, self.row.finished_at)

    @strawberry.field(description="The version it ran (runs execute exactly their version).")
    async def version(
        self, info: Info
    ) -> Annotated[WorkflowVersion, strawberry.lazy("schema.workflows.types")]:
        from schema.workflows.types import WorkflowVersion, version_columns

        row = await info.context.loaders.version_by_key.load(
            (self.row.workflow_id, self.row.version_number, version_columns(info))
        )
        assert row is not None
        return WorkflowVersion.from_model(row)

    @strawberry.field(description="The workflow.")
    async def workflow(
        self, info: Info
    ) -> Annotated[Workflow, strawberry.lazy("schema.workflows.types")]:
        from schema.workflows.types import Workflow

        row = await info.context.loaders.workflow_by_id.load(self.row.workflow_id)
        assert row is not None
        return Workflow.from_model(row)

    @strawberry.field(description="One step per node of the version, in the graph's order.")
    async def steps(self, info: Info) -> list[RunStep]:
        rows = await info.context.loaders.steps_by_run_id.load(self.row.id)
        return [RunStep.from_model(row) for row in rows]

    @strawberry.field(description="The run this one retried, if it is a retry.")
    async def retry_of(self, info: Info) -> Run | None:
        if self.row.retry_of_id is None:
            return None
        row = await info.context.loaders.run_by_id.load(self.row.retry_of_id)
        return Run.from_model(row) if row else None

    @classmethod
    def from_model(cls, row: models.Run | RunRecord) -> Run:
        """The type of a row. A lean row holds only the columns its selection needs: the
        others are never shown."""
        return cls(
            row=row,
            id=strawberry.ID(encode_id("Run", row.id)),
            status=getattr(row, "status", RunStatusModel.QUEUED),
            trigger=getattr(row, "trigger", RunTriggerModel.MANUAL),
            input=getattr(row, "input", None),
            output=getattr(row, "output", None),
            error=getattr(row, "error", None),
            error_node_id=getattr(row, "error_node_id", None),
            queued_at=row.queued_at,
            started_at=getattr(row, "started_at", None),
            finished_at=getattr(row, "finished_at", None),
        )


# The columns each field of a run needs besides id, workflow_id and queued_at.
RUN_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": (),
    "status": ("status",),
    "trigger": ("trigger",),
    "input": ("input",),
    "output": ("output",),
    "error": ("error",),
    "errorNodeId": ("error_node_id",),
    "queuedAt": (),
    "startedAt": ("started_at",),
    "finishedAt": ("finished_at",),
    "durationMs": ("started_at", "finished_at"),
    "version": ("version_number",),
    "workflow": (),
    "steps": (),
    "retryOf": ("retry_of_id",),
}


def run_columns(info: Info, below: tuple[str, ...] = ()) -> frozenset[str]:
    """The run columns the selection under the current field (or ``below`` it) needs."""
    return columns_for(selected_names(info, below), RUN_COLUMNS, RunRecord.selectable())


@strawberry.type(description="One event of a run, numbered 1, 2, 3 … per run.")
class RunEvent:
    seq: int = strawberry.field(description="Position in the run's event log.")
    type: RunEventType = strawberry.field(description="What happened.")
    at: datetime = strawberry.field(description="When.")
    run_status: RunStatus | None = strawberry.field(description="The run's status, on run events.")
    node_id: str | None = strawberry.field(description="The node, on step events.")
    step_status: StepStatus | None = strawberry.field(
        description="The step's status, on step events."
    )
    attempt: int | None = strawberry.field(description="The step's attempt, on step events.")
    output: JSON | None = strawberry.field(description="The step's (or run's) output.")
    error: str | None = strawberry.field(description="The step's (or run's) error.")

    @classmethod
    def from_model(cls, row: models.RunEvent) -> RunEvent:
        """The type of a row."""
        return cls(
            seq=row.seq,
            type=row.type,
            at=row.at,
            run_status=row.run_status,
            node_id=row.node_id,
            step_status=row.step_status,
            attempt=row.attempt,
            output=row.output,
            error=row.error,
        )


@strawberry.type(description="A kind of node the builder can place, with its config form.")
class NodeType:
    type: str = strawberry.field(description='The type name, e.g. "http.request".')
    category: str = strawberry.field(description="Palette group.")
    label: str = strawberry.field(description="Short name for the palette.")
    description: str = strawberry.field(description="What it does.")
    config_schema: JSON = strawberry.field(description="JSON Schema of the node's `data`.")
    inputs: list[str] = strawberry.field(description="Input handle ids.")
    outputs: list[str] = strawberry.field(
        description="Output handle ids (logic.switch: one per case plus default)."
    )

    @classmethod
    def from_model(cls, model: NodeTypeModel) -> NodeType:
        """The type of a catalogue entry."""
        schema: dict[str, Any] = model.config_schema()
        return cls(
            type=model.type,
            category=model.category,
            label=model.label,
            description=model.description,
            config_schema=JSON(schema),
            inputs=list(model.inputs),
            outputs=list(model.outputs),
        )
