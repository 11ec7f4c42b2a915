"""The contract between the executor and node types: config, context, outcome, registry.

A node type is one module in this package that calls ``register(NodeType(...))`` at import;
the executor knows none by name. ``load_catalogue()`` imports every module of the package.
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from app.settings import Settings


class RetryPolicy(BaseModel):
    """How a failed node is retried: attempts in all, and the waits between them."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    max_attempts: int = Field(1, ge=1, le=10, description="Attempts in all, the first included.")
    backoff_seconds: float = Field(1.0, ge=0, le=3600, description="Wait before the 2nd attempt.")
    backoff_multiplier: float = Field(
        2.0, ge=1, le=10, description="Each further wait is the previous one times this."
    )

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (2, 3, …)."""
        return self.backoff_seconds * self.backoff_multiplier ** max(0, attempt - 2)


class NodeConfig(BaseModel):
    """Base of every node type's config (the node's ``data``); builder keys are ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    retry: RetryPolicy | None = Field(None, description="Retries with backoff on failure.")
    timeout_seconds: float | None = Field(
        None, gt=0, le=86_400, description="Fail the attempt when it runs longer than this."
    )
    continue_on_fail: bool = Field(
        False,
        description="When it fails, the run goes on: the step is FAILED and its output is "
        "{error: message} for the nodes after it.",
    )


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """What a node produced, and which of its output handles carry on (None: all of them)."""

    output: Any
    active_handles: frozenset[str] | None = None


class NodeFailure(Exception):
    """An expected failure of a node; its message becomes the step's error."""


class ReleaseUntil(Exception):
    """Raised by a node that waits long: free the worker and resume the node at ``wake_at``."""

    def __init__(self, wake_at: datetime) -> None:
        super().__init__(f"waiting until {wake_at.isoformat()}")
        self.wake_at = wake_at


@dataclass(slots=True)
class NodeContext:
    """What a running node may know and use; built by the executor for each attempt."""

    run_id: uuid.UUID
    workspace_id: uuid.UUID
    node_id: str
    attempt: int
    # When this step first started (stays the same across attempts and resumes): a
    # long flow.delay compares against it to know when it is done.
    step_started_at: datetime
    # Settings the node types read (outbound HTTP policy, caps).
    settings: Settings
    # The workspace's secrets, name to value (decrypted for this run; never stored).
    secrets: Mapping[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def secret(self, name: str) -> str:
        """The value of the workspace secret ``name``; a NodeFailure when it is not set."""
        value = self.secrets.get(name)
        if value is None:
            raise NodeFailure(f'The secret "{name}" is not set in this workspace.')
        return value


RunFunction = Callable[[NodeContext, Any, Any], Awaitable[NodeOutcome]]


@dataclass(frozen=True, slots=True)
class NodeType:
    """A kind of node: its form (config model), its handles, and how it runs."""

    type: str
    category: str
    label: str
    description: str
    # builtins.type: inside this class ``type`` names the field above, not the builtin.
    config_model: builtins.type[NodeConfig]
    run: RunFunction
    inputs: tuple[str, ...] = ("in",)
    outputs: tuple[str, ...] = ("out",)
    # For types whose output handles depend on the config (logic.switch): data -> handles.
    dynamic_outputs: Callable[[dict[str, Any]], tuple[str, ...]] | None = None
    # Config fields the node evaluates itself (lazily, e.g. switch conditions in order);
    # every other string field is rendered by the executor before ``run`` is called.
    lazy_fields: tuple[str, ...] = ()
    # Pure: no effect outside the run (no call, no wait), so running it again after a crash
    # is invisible and its step may be recorded together with the next write.
    pure: bool = False
    # Config fields that name a workspace secret (besides ``{{ secrets.NAME }}`` anywhere).
    secret_fields: tuple[str, ...] = ()

    def output_handles(self, data: dict[str, Any]) -> tuple[str, ...]:
        """The output handles of a node of this type with this config."""
        return self.dynamic_outputs(data) if self.dynamic_outputs else self.outputs

    def config_schema(self) -> dict[str, Any]:
        """The JSON Schema of the config, for the builder's form."""
        return self.config_model.model_json_schema(by_alias=True)


_CATALOGUE: dict[str, NodeType] = {}


def register(node_type: NodeType) -> NodeType:
    """Add a node type to the catalogue (each module calls this once at import)."""
    if node_type.type in _CATALOGUE:
        raise ValueError(f"node type {node_type.type!r} registered twice")
    _CATALOGUE[node_type.type] = node_type
    return node_type


_LOADED = False


def load_catalogue() -> dict[str, NodeType]:
    """Every node type, importing each module of this package once."""
    global _LOADED
    if not _LOADED:
        # Listing the package's modules reads the file system: once per process is enough
        # (this is on the path of every save and every run queued).
        package = importlib.import_module("app.engine.nodes")
        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "base":
                importlib.import_module(f"app.engine.nodes.{module.name}")
        _LOADED = True
    return _CATALOGUE


def get_node_type(name: str) -> NodeType | None:
    """The node type called ``name``, or None when the catalogue has none."""
    return load_catalogue().get(name)
