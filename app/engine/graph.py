"""Validation of workflow graphs saved by the builder (React Flow ``toObject()`` output).

The graph comes from an untrusted client, so it may be *any* JSON-decoded value, including
hostile ones (NaN, huge integers, NUL, lone surrogates, nesting 100,000 deep).
:func:`validate_graph` first checks that it can be stored as strict JSON / PostgreSQL JSONB
(:func:`check_json_value`), then checks its structure, and, when there are no ERRORs (which
block a save), computes WARNINGs (which block execution). All walks are iterative and linear.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

#: check_json_value stops after this many diagnostics.
MAX_JSON_DIAGNOSTICS = 50

_INT_BOUND = 2**63
_MESSAGE_ID_CHARS = 80
_KIND_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
_KIND_NAMES.update({bool: "boolean", type(None): "null"})
_ENDPOINTS = (("source", "EDGE_SOURCE_UNKNOWN", "from"), ("target", "EDGE_TARGET_UNKNOWN", "to"))


class Severity(str, enum.Enum):  # noqa: UP042 - the API asks for a str mixin
    """How serious a diagnostic is: errors block saving, warnings block execution."""

    ERROR = "ERROR"
    WARNING = "WARNING"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a graph, with a machine code and a path into the graph."""

    severity: Severity
    code: str
    message: str
    path: tuple[str, ...]
    node_id: str | None = None
    edge_id: str | None = None


@dataclass(frozen=True, slots=True)
class GraphLimits:
    """Size limits applied by :func:`validate_graph`."""

    max_nodes: int = 500
    max_edges: int = 2000
    max_depth: int = 32
    max_string_length: int = 100_000
    max_id_length: int = 200


def _error(code: str, message: str, path: tuple[str, ...], **ids: str | None) -> Diagnostic:
    return Diagnostic(Severity.ERROR, code, message, path, **ids)


def _kind(value: object) -> str:
    """Name the JSON type of a value (or its Python type when it is not plain JSON)."""
    return _KIND_NAMES.get(type(value)) or f"Python {type(value).__name__}"


def _quote(text: str) -> str:
    """Quote a (validated) string for a message, shortening very long ones."""
    short = len(text) <= _MESSAGE_ID_CHARS
    return f'"{text}"' if short else f'"{text[:_MESSAGE_ID_CHARS]}..."'


def _string_problem(text: str, max_length: int) -> tuple[str, str] | None:
    """Return (code, description) when a string cannot be stored, else None."""
    if len(text) > max_length:
        return "STRING_TOO_LONG", f"is {len(text)} characters long; the maximum is {max_length}"
    if "\x00" in text:
        return "INVALID_JSON_VALUE", "contains a NUL character, which JSONB cannot store"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "INVALID_JSON_VALUE", "contains a lone surrogate, which is not valid UTF-8"
    return None


def _scalar_problem(value: object, max_length: int) -> tuple[str, str] | None:
    """Return (code, message) when a non-container value cannot be stored, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -_INT_BOUND < value < _INT_BOUND:
            return "INVALID_JSON_VALUE", "Integer does not fit in 64 bits."
    elif isinstance(value, float) and not math.isfinite(value):
        return "INVALID_JSON_VALUE", "Number is NaN or infinite, which JSON cannot store."
    elif isinstance(value, str):
        problem = _string_problem(value, max_length)
        return None if problem is None else (problem[0], f"String {problem[1]}.")
    elif not (value is None or isinstance(value, bool | float)):
        return "INVALID_JSON_VALUE", f"Value of type {type(value).__name__} is not a JSON value."
    return None


def _key_problem(key: object, max_length: int) -> tuple[str, str] | None:
    """Return (code, message) when an object key cannot be stored, else None."""
    if not isinstance(key, str):
        return "INVALID_JSON_VALUE", f"Object has a key of type {type(key).__name__}, not string."
    problem = _string_problem(key, max_length)
    return None if problem is None else (problem[0], f"Object has a key that {problem[1]}.")


_Link = tuple["_Link | None", object]  # a path as a linked list: (parent link, key)


def _path(prefix: tuple[str, ...], link: _Link | None) -> tuple[str, ...]:
    """Turn a linked path (built cheaply while walking) into a path tuple."""
    keys: list[str] = []
    while link is not None:
        link, key = link
        keys.append(str(key))
    return prefix + tuple(reversed(keys))


def check_json_value(
    value: object,
    *,
    max_depth: int,
    max_string_length: int,
    path: tuple[str, ...] = (),
) -> list[Diagnostic]:
    """Return ERROR diagnostics for parts of a value that strict JSON / JSONB cannot store."""
    # Depth counts containers: the value itself is depth 1, its child objects/arrays depth 2.
    # Diagnostics come in document order. A bad object key is reported at the path of the
    # object holding it (the key itself may be unprintable), and its value is not inspected.
    # This is the hot loop of validation, hence the fast paths for plain JSON values.
    out: list[Diagnostic] = []
    too_deep = f"Value is nested deeper than {max_depth} levels."
    if not isinstance(value, dict | list):
        problem = _scalar_problem(value, max_string_length)
        return [] if problem is None else [_error(*problem, path)]
    if max_depth < 1:
        return [_error("TOO_DEEP", too_deep, path)]
    # Each frame: (iterator of (key, child), container path, container depth, check keys?).
    frames: list[tuple[Iterator[tuple[object, Any]], _Link | None, int, bool]] = []
    container: dict[Any, Any] | list[Any] | None = value
    where: _Link | None = None
    depth, limit, isfinite = 1, max_string_length, math.isfinite
    while True:
        if isinstance(container, dict):  # descend into a new object
            try:  # check all keys at once, at C speed; look at each only if that fails
                keys = "".join(dict.keys(container))
                check_keys = not (len(keys) <= limit and keys.isascii() and "\x00" not in keys)
            except TypeError:
                check_keys = True
            frames.append((iter(dict.items(container)), where, depth, check_keys))
        elif container is not None:  # descend into a new array
            frames.append((enumerate(list.__iter__(container)), where, depth, False))
        container = None
        if not frames:
            return out
        items, where, depth, check_keys = frames[-1]
        for key, child in items:
            if check_keys:
                problem = _key_problem(key, limit)
                if problem is not None:
                    out.append(_error(*problem, _path(path, where)))
                    if len(out) >= MAX_JSON_DIAGNOSTICS:
                        return out
                    continue
            kind = type(child)
            if kind is str:
                if len(child) <= limit and child.isascii() and "\x00" not in child:
                    continue
            elif kind is bool or child is None:
                continue
            elif kind is int:
                if -_INT_BOUND < child < _INT_BOUND:
                    continue
            elif kind is float and isfinite(child):
                continue
            link = (where, key)
            if isinstance(child, dict | list):
                if depth < max_depth:
                    container, where, depth = child, link, depth + 1
                    break
                problem = ("TOO_DEEP", too_deep)
            else:
                problem = _scalar_problem(child, limit)
            if problem is not None:
                out.append(_error(*problem, _path(path, link)))
                if len(out) >= MAX_JSON_DIAGNOSTICS:
                    return out
        else:
            frames.pop()


def _label(noun: str, index: int, item_id: str | None) -> str:
    """Name a node/edge in a message by id when known, else by position."""
    return f"{noun} {_quote(item_id)}" if item_id is not None else f"{noun} #{index}"


def _check_id(
    item: dict[str, object], noun: str, index: int, seen: set[str], limits: GraphLimits
) -> tuple[str | None, Diagnostic | None]:
    """Check the "id" of a node or edge; return (id if a non-empty string, problem)."""
    raw = item.get("id")
    section = "nodes" if noun == "Node" else "edges"
    where = (section, str(index), "id")
    if not isinstance(raw, str) or not raw:
        message = f"{noun} #{index} has no id; it must be a non-empty string."
        return None, _error("ID_MISSING", message, where)
    ids = {"node_id": raw} if noun == "Node" else {"edge_id": raw}
    problem = None
    if len(raw) > limits.max_id_length:
        length, maximum = len(raw), limits.max_id_length
        message = f"{noun} #{index} has an id of {length} characters; the maximum is {maximum}."
        problem = _error("ID_TOO_LONG", message, where, **ids)
    elif raw in seen:
        message = f"{noun} id {_quote(raw)} is used by more than one {section[:-1]}."
        problem = _error("ID_DUPLICATE", message, where, **ids)
    seen.add(raw)
    return raw, problem


def _check_nodes(nodes: list[object], limits: GraphLimits, out: list[Diagnostic]) -> set[str]:
    """Check every node; return the set of node ids present."""
    seen: set[str] = set()
    for index, node in enumerate(nodes):
        where = ("nodes", str(index))
        if not isinstance(node, dict):
            message = f"Node #{index} must be an object, got {_kind(node)}."
            out.append(_error("NODE_NOT_OBJECT", message, where))
            continue
        node_id, problem = _check_id(node, "Node", index, seen, limits)
        if problem is not None:
            out.append(problem)
        name = _label("Node", index, node_id)
        node_type = node.get("type")
        if not isinstance(node_type, str) or not node_type:
            message = f"{name} has no type; it must be a non-empty string."
            out.append(_error("NODE_TYPE_MISSING", message, (*where, "type"), node_id=node_id))
        if "data" in node and not isinstance(node["data"], dict):
            message = f'{name} has "data" that is not an object.'
            out.append(_error("NODE_DATA_NOT_OBJECT", message, (*where, "data"), node_id=node_id))
    return seen


def _check_edges(
    edges: list[object], node_ids: set[str] | None, limits: GraphLimits, out: list[Diagnostic]
) -> None:
    """Check every edge; endpoints are only checked when the node list was usable."""
    seen: set[str] = set()
    for index, edge in enumerate(edges):
        where = ("edges", str(index))
        if not isinstance(edge, dict):
            message = f"Edge #{index} must be an object, got {_kind(edge)}."
            out.append(_error("EDGE_NOT_OBJECT", message, where))
            continue
        edge_id, problem = _check_id(edge, "Edge", index, seen, limits)
        if problem is not None:
            out.append(problem)
        name = _label("Edge", index, edge_id)
        for field, code, direction in _ENDPOINTS if node_ids is not None else ():
            end = edge.get(field)
            if isinstance(end, str) and end in (node_ids or ()):
                continue
            message = (
                f"{name} points {direction} node {_quote(end)}, which does not exist."
                if isinstance(end, str)
                else f"{name} has no {field} node id."
            )
            out.append(_error(code, message, (*where, field), edge_id=edge_id))
        for field in ("sourceHandle", "targetHandle"):
            if field in edge and not (edge[field] is None or isinstance(edge[field], str)):
                message = f"{name} has a {field} that is neither a string nor null."
                out.append(_error("HANDLE_NOT_STRING", message, (*where, field), edge_id=edge_id))


def _nodes_on_cycles(successors: list[list[int]]) -> list[bool]:
    """Mark nodes on a directed cycle (iterative Tarjan SCC; self-loops count)."""
    count = len(successors)
    order, low = [-1] * count, [0] * count
    on_stack, on_cycle = [False] * count, [False] * count
    stack: list[int] = []
    counter = 0
    for root in range(count):
        if order[root] != -1:
            continue
        order[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work = [(root, 0)]
        while work:
            vertex, position = work[-1]
            succ = successors[vertex]
            if position < len(succ):
                work[-1] = (vertex, position + 1)
                nxt = succ[position]
                if nxt == vertex:
                    on_cycle[vertex] = True
                if order[nxt] == -1:
                    order[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack[nxt] = True
                    work.append((nxt, 0))
                elif on_stack[nxt] and order[nxt] < low[vertex]:
                    low[vertex] = order[nxt]
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[vertex])
            if low[vertex] == order[vertex]:
                member = stack.pop()
                on_stack[member] = False
                if member != vertex:  # a component of two or more nodes
                    on_cycle[vertex] = on_cycle[member] = True
                    while member != vertex:
                        member = stack.pop()
                        on_stack[member] = False
                        on_cycle[member] = True
    return on_cycle


def _node_warning(code: str, message: str, index: int, node_id: str) -> Diagnostic:
    return Diagnostic(Severity.WARNING, code, message, ("nodes", str(index)), node_id=node_id)


def _warnings(nodes: list[dict[str, object]], edges: list[dict[str, object]]) -> list[Diagnostic]:
    """Compute CYCLE / NO_TRIGGER / UNREACHABLE_NODE warnings for a structurally valid graph."""
    ids = [str(node["id"]) for node in nodes]
    position = {node_id: index for index, node_id in enumerate(ids)}
    successors: list[list[int]] = [[] for _ in nodes]
    for edge in edges:
        successors[position[str(edge["source"])]].append(position[str(edge["target"])])

    out: list[Diagnostic] = []
    for index, on_cycle in enumerate(_nodes_on_cycles(successors)):
        if on_cycle:
            message = f"Node {_quote(ids[index])} is part of a cycle."
            out.append(_node_warning("CYCLE", message, index, ids[index]))

    reached = [node.get("type") == "trigger" for node in nodes]
    pending = [index for index, is_trigger in enumerate(reached) if is_trigger]
    if nodes and not pending:
        message = 'The workflow has no node of type "trigger", so it can never start.'
        out.append(Diagnostic(Severity.WARNING, "NO_TRIGGER", message, ()))
        return out
    while pending:
        for nxt in successors[pending.pop()]:
            if not reached[nxt]:
                reached[nxt] = True
                pending.append(nxt)
    for index, ok in enumerate(reached):
        if not ok:
            message = f"Node {_quote(ids[index])} cannot be reached from any trigger."
            out.append(_node_warning("UNREACHABLE_NODE", message, index, ids[index]))
    return out


def _section(
    graph: dict[object, object], key: str, limit: int
) -> tuple[list[object] | None, Diagnostic | None]:
    """Fetch "nodes"/"edges" as a list within the limit, or the error explaining why not."""
    value = graph.get(key, [])
    if not isinstance(value, list):
        message = f'"{key}" must be an array, got {_kind(value)}.'
        return None, _error(f"{key.upper()}_NOT_LIST", message, (key,))
    if len(value) > limit:
        message = f"The graph has {len(value)} {key}; the maximum is {limit}."
        return None, _error(f"TOO_MANY_{key.upper()}", message, (key,))
    return value, None


def _attach_ids(
    graph: dict[Any, Any], found: list[Diagnostic], limits: GraphLimits
) -> list[Diagnostic]:
    """Set node_id / edge_id on JSON diagnostics found inside a node or edge with a good id."""
    out, max_id_length = [], limits.max_id_length
    for item in found:
        section = item.path[0] if len(item.path) > 1 else None
        entries = graph.get(section) if section in ("nodes", "edges") else None
        index = int(item.path[1]) if isinstance(entries, list) else -1
        entry = entries[index] if entries is not None and 0 <= index < len(entries) else None
        item_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(item_id, str) and item_id and not _string_problem(item_id, max_id_length):
            nodes = section == "nodes"
            item = replace(item, node_id=item_id) if nodes else replace(item, edge_id=item_id)
        out.append(item)
    return out


def validate_graph(graph: object, limits: GraphLimits = GraphLimits()) -> list[Diagnostic]:
    """Validate a builder graph; return ERROR diagnostics, or WARNING ones if it has no errors."""
    if not isinstance(graph, dict):
        message = f"The graph must be an object, got {_kind(graph)}."
        return [_error("GRAPH_NOT_OBJECT", message, ())]
    out = check_json_value(
        graph, max_depth=limits.max_depth, max_string_length=limits.max_string_length
    )
    if out:  # structure checks on values that cannot even be stored would be noise
        return _attach_ids(graph, out, limits)
    nodes, problem = _section(graph, "nodes", limits.max_nodes)
    node_ids = None if nodes is None else _check_nodes(nodes, limits, out)
    if problem is not None:
        out.append(problem)
    edges, problem = _section(graph, "edges", limits.max_edges)
    if edges is not None:
        _check_edges(edges, node_ids, limits, out)
    if problem is not None:
        out.append(problem)
    if out or nodes is None or edges is None:
        return out
    return _warnings(cast("list[dict[str, object]]", nodes), cast("list[dict[str, object]]", edges))


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """Return True when any diagnostic is an ERROR."""
    return any(item.severity is Severity.ERROR for item in diagnostics)
