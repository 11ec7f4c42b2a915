"""A version's graph prepared for execution once: node types, compiled configs, edges."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.engine.expressions import CompiledConfig, compile_config
from app.engine.nodes.base import NodeConfig, NodeType, get_node_type
from app.models import StepStatus

PLAN_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class EdgePlan:
    """An incoming edge of a node."""

    source: str
    source_handle: str | None


@dataclass(slots=True)
class NodePlan:
    """One node ready to execute."""

    id: str
    type: str
    node_type: NodeType
    data: dict[str, Any]
    compiled: CompiledConfig
    policy: NodeConfig
    incoming: list[EdgePlan] = field(default_factory=list)

    @property
    def is_output(self) -> bool:
        """True for nodes whose output is the run's output."""
        return self.type == "output"

    @property
    def inline(self) -> bool:
        """Whether the driver runs it in its own loop: pure, and tried once (no backoff wait)."""
        retry = self.policy.retry
        return self.node_type.pure and (retry is None or retry.max_attempts == 1)


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Every node of a version, in the graph's order."""

    order: list[NodePlan]
    nodes: dict[str, NodePlan]

    @property
    def refs(self) -> list[tuple[str, str]]:
        """(node id, node type) of every node, in the graph's order (the steps' positions)."""
        return [(node.id, node.type) for node in self.order]


class PlanError(Exception):
    """The version cannot be executed (it should have been refused at execute time)."""


_cache: OrderedDict[uuid.UUID, RunPlan] = OrderedDict()


def build_plan(version_id: uuid.UUID, graph: Any) -> RunPlan:
    """The plan of a version, compiled once per process (versions are immutable)."""
    if version_id in _cache:
        _cache.move_to_end(version_id)
        return _cache[version_id]
    plan = _compile(graph)
    _cache[version_id] = plan
    if len(_cache) > PLAN_CACHE_SIZE:
        _cache.popitem(last=False)
    return plan


def _compile(graph: Any) -> RunPlan:
    order: list[NodePlan] = []
    for node in graph.get("nodes", []):
        node_type = get_node_type(node["type"])
        if node_type is None:
            raise PlanError(f'Unknown node type "{node["type"]}".')
        data = node.get("data") or {}
        try:
            policy = NodeConfig.model_validate(data)
        except ValidationError as error:
            raise PlanError(f'Node "{node["id"]}": {error}') from error
        order.append(
            NodePlan(
                id=node["id"],
                type=node["type"],
                node_type=node_type,
                data=data,
                compiled=compile_config(data),
                policy=policy,
            )
        )
    nodes = {n.id: n for n in order}
    for edge in graph.get("edges", []):
        nodes[edge["target"]].incoming.append(
            EdgePlan(source=edge["source"], source_handle=edge.get("sourceHandle"))
        )
    return RunPlan(order=order, nodes=nodes)


def cached_plan(version_id: uuid.UUID) -> RunPlan | None:
    """The plan of a version if this process compiled it already."""
    plan = _cache.get(version_id)
    if plan is not None:
        _cache.move_to_end(version_id)
    return plan


def edge_is_active(source: Any, plan: NodePlan, handle: str | None) -> bool:
    """An edge carries on when its source produced output on the edge's handle."""
    if source.status is StepStatus.FAILED:
        # Continue-on-fail: its output, {error}, goes on — through its only output handle,
        # or a switch's `default`; a failed logic.if takes neither branch.
        if not plan.policy.continue_on_fail:
            return False
        handles = plan.node_type.output_handles(plan.data)
        if len(handles) <= 1:
            return True
        return handle == "default" and "default" in handles
    if source.status is not StepStatus.SUCCEEDED:
        return False
    if source.active_handles is None:
        return True
    return handle is not None and handle in source.active_handles
