"""Catalogue-aware checks of a workflow graph, on top of the structural ones in graph.py.

:func:`validate_workflow_graph` runs :func:`~app.engine.graph.validate_graph` and, when that
found no ERROR, checks each node against its type in the catalogue and each edge against
the handles of the nodes it joins. What it adds are WARNINGs: a half-drawn workflow can be
saved, only a sound one runs.

- ``UNKNOWN_NODE_TYPE``: the node's type is not in the catalogue.
- ``INVALID_CONFIG``: the node's ``data`` does not validate against its type's config model.
  A string holding ``{{`` may render to any type, so errors at such a value are not reported.
- ``EXPRESSION_SYNTAX``: an expression in the node's ``data`` does not compile.
- ``UNKNOWN_HANDLE``: an edge leaves by a handle its source does not have (or leaves a node
  with no outputs), or enters by a handle its target does not have (or enters a trigger).

:func:`missing_secrets` adds ``MISSING_SECRET``, which needs the workspace's secrets: the
services call it when a graph is saved. It is the one WARNING that does not stop a version
from running: a secret may be set after the save, and a run whose secret is still missing
fails at the node that reads it, saying so.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from app.engine.expressions import secret_reads, syntax_errors
from app.engine.graph import Diagnostic, GraphLimits, Severity, has_errors, validate_graph
from app.engine.nodes.base import NodeType, load_catalogue

_SHOWN_CHARS = 80
#: MISSING_SECRET warnings beyond this many are counted in one more.
MAX_SECRET_WARNINGS = 50


def _quote(text: str) -> str:
    """Quote a name for a message, shortening a very long one."""
    return f'"{text}"' if len(text) <= _SHOWN_CHARS else f'"{text[:_SHOWN_CHARS]}..."'


def _quote_all(handles: Iterable[str]) -> str:
    """Quote a list of handles for a message."""
    return ", ".join(_quote(handle) for handle in handles) or "none"


def _expression_paths(data: dict[str, Any]) -> list[tuple[str, ...]]:
    """The paths, within data, of the strings that hold an expression."""
    found: list[tuple[str, ...]] = []
    pending: list[tuple[object, tuple[str, ...]]] = [(data, ())]
    while pending:
        value, path = pending.pop()
        if isinstance(value, dict):
            pending.extend((child, (*path, str(key))) for key, child in value.items())
        elif isinstance(value, list):
            pending.extend((child, (*path, str(index))) for index, child in enumerate(value))
        elif isinstance(value, str) and "{{" in value:
            found.append(path)
    return found


def _config_problems(
    node_type: NodeType, data: dict[str, Any]
) -> list[tuple[tuple[str, ...], str]]:
    """(field path, message) for each config error that is not at an expression's value."""
    config_model: type[BaseModel] = node_type.config_model
    try:
        config_model.model_validate(data)
    except ValidationError as error:
        expressions = _expression_paths(data)
        problems = []
        for item in error.errors(include_url=False):
            field = tuple(str(part) for part in item["loc"])
            # An error at (or inside) an expression's value says nothing: it may render to
            # any type. Errors about other fields, or about the config as a whole, stand.
            if not any(field[: len(path)] == path for path in expressions):
                problems.append((field, str(item["msg"])))
        return problems
    return []


def _node_diagnostics(
    index: int, node: dict[str, Any], catalogue: dict[str, NodeType]
) -> list[Diagnostic]:
    """UNKNOWN_NODE_TYPE, INVALID_CONFIG and EXPRESSION_SYNTAX warnings for one node."""
    node_id, type_name = str(node["id"]), str(node["type"])
    where, name = ("nodes", str(index)), f"Node {_quote(node_id)}"
    data = cast("dict[str, Any]", node.get("data") or {})
    out: list[Diagnostic] = []

    def warn(code: str, message: str, path: tuple[str, ...]) -> None:
        out.append(Diagnostic(Severity.WARNING, code, message, path, node_id=node_id))

    node_type = catalogue.get(type_name)
    if node_type is None:
        message = f"{name} has type {_quote(type_name)}, which is not a known node type."
        warn("UNKNOWN_NODE_TYPE", message, (*where, "type"))
    else:
        for field, problem in _config_problems(node_type, data):
            message = f"{name}: {'.'.join(field) or 'config'}: {problem}."
            warn("INVALID_CONFIG", message, (*where, "data", *field))
    for path, problem in syntax_errors(data):
        warn("EXPRESSION_SYNTAX", f"{name}: {problem}", (*where, "data", *path))
    return out


def _handle_problem(
    node_id: str, node_type: NodeType, handles: tuple[str, ...], handle: str | None, side: str
) -> str | None:
    """Why an edge cannot use this handle of this node (side: "outputs" or "inputs"), if so."""
    node = f"node {_quote(node_id)}"
    if not handles:
        return f"{node} has no {side}: a node of type {_quote(node_type.type)} has none."
    if handle is not None and handle not in handles:
        return f"{node} has no handle {_quote(handle)}; its {side} are {_quote_all(handles)}."
    if handle is None and len(handles) > 1:
        # The engine routes by handle: an edge from no handle of a branching node never runs.
        return f"{node} has several {side} ({_quote_all(handles)}): say which one."
    return None


def _edge_diagnostics(
    index: int, edge: dict[str, Any], nodes: dict[str, tuple[NodeType | None, dict[str, Any]]]
) -> list[Diagnostic]:
    """UNKNOWN_HANDLE warnings for one edge, at whichever of its ends is of a known type."""
    edge_id, out = str(edge["id"]), []
    for end, field, side in (
        ("source", "sourceHandle", "outputs"),
        ("target", "targetHandle", "inputs"),
    ):
        node_id = str(edge[end])
        node_type, data = nodes[node_id]
        if node_type is None:
            continue  # already reported as UNKNOWN_NODE_TYPE
        handles = node_type.output_handles(data) if end == "source" else node_type.inputs
        problem = _handle_problem(node_id, node_type, handles, edge.get(field), side)
        if problem is not None:
            message = f"Edge {_quote(edge_id)}: {problem}"
            path = ("edges", str(index), field)
            out.append(
                Diagnostic(Severity.WARNING, "UNKNOWN_HANDLE", message, path, edge_id=edge_id)
            )
    return out


def validate_workflow_graph(graph: object, limits: GraphLimits = GraphLimits()) -> list[Diagnostic]:
    """Validate a builder graph: the structural checks, then those against the catalogue."""
    found = validate_graph(graph, limits)
    if has_errors(found):
        return found
    # No ERROR: the graph is an object whose nodes and edges are objects with unique string
    # ids, node types are strings, data is an object when present, edges join existing nodes.
    checked = cast("dict[str, Any]", graph)
    catalogue = load_catalogue()
    nodes: dict[str, tuple[NodeType | None, dict[str, Any]]] = {}
    for index, node in enumerate(checked.get("nodes", [])):
        found.extend(_node_diagnostics(index, node, catalogue))
        nodes[node["id"]] = (catalogue.get(node["type"]), node.get("data") or {})
    for index, edge in enumerate(checked.get("edges", [])):
        found.extend(_edge_diagnostics(index, edge, nodes))
    return found


@dataclass(frozen=True, slots=True)
class SecretUse:
    """A node that reads a workspace secret by name, and where in its config."""

    index: int
    node_id: str
    path: tuple[str, ...]  # within the node's data


def secret_uses(graph: Any) -> dict[str, list[SecretUse]]:
    """The secrets a graph without ERRORs reads by name, each with the nodes that read it
    (``{{ secrets.NAME }}`` in any string, and the fields of a type that name a secret)."""
    catalogue = load_catalogue()
    uses: dict[str, list[SecretUse]] = {}
    for index, node in enumerate(graph.get("nodes", [])):
        node_id, data = str(node["id"]), node.get("data") or {}
        found = secret_reads(data)
        node_type = catalogue.get(str(node["type"]))
        for field in node_type.secret_fields if node_type is not None else ():
            name = data.get(field)
            if isinstance(name, str) and name and "{{" not in name:
                found.append(((field,), name))
        for path, name in found:
            uses.setdefault(name, []).append(SecretUse(index, node_id, path))
    return uses


def missing_secrets(uses: dict[str, list[SecretUse]], present: Collection[str]) -> list[Diagnostic]:
    """A MISSING_SECRET warning for each secret used but not in ``present``, at its first use
    (at most MAX_SECRET_WARNINGS, the last one counting the rest)."""
    out: list[Diagnostic] = []
    missing = [(name, where) for name, where in uses.items() if name not in present]
    for name, where in missing[:MAX_SECRET_WARNINGS]:
        first = where[0]
        nodes = list(dict.fromkeys(use.node_id for use in where))
        named = ", ".join(_quote(node_id) for node_id in nodes)
        message = (
            f"Secret {_quote(name)} is not set in this workspace "
            f"(used by node{'s' if len(nodes) > 1 else ''} {named}): "
            "an owner sets it with secretSet before the workflow runs."
        )
        path = ("nodes", str(first.index), "data", *first.path)
        out.append(
            Diagnostic(Severity.WARNING, "MISSING_SECRET", message, path, node_id=first.node_id)
        )
    if len(missing) > MAX_SECRET_WARNINGS:
        rest = len(missing) - MAX_SECRET_WARNINGS
        message = f"{rest} more secrets used by this graph are not set in this workspace."
        out.append(Diagnostic(Severity.WARNING, "MISSING_SECRET", message, ()))
    return out


def executable_problems(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics that block running a workflow: every ERROR and every WARNING."""
    return [item for item in diagnostics if item.severity in (Severity.ERROR, Severity.WARNING)]
