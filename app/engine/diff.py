"""Differences between two versions of a builder graph, by node id and edge id.

Both graphs may be anything (old versions may have been saved with warnings only, or be
corrupt): a non-object graph or non-array "nodes"/"edges" count as empty, and items that are
not objects or have no string "id" are ignored.  When an id occurs more than once, its first
occurrence is used.  Values are compared with strict JSON equality (see :func:`_same`), so
``True`` and ``1`` differ while ``1`` and ``1.0`` (the same JSON number) do not.

Inside a node or edge present in both graphs, each changed value is named by its JSON path
(``["data", "url"]``; array positions as strings), with the values before and after when
they are scalars. Strings are shown as written in the graph: a config holds
``{{ secrets.NAME }}``, never a secret's value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["ChangeKind", "EdgeChange", "GraphDiff", "NodeChange", "ValueChange", "diff_graphs"]

# Changes listed per node or edge at most (a 1 MiB graph of tiny values has ~100k of them).
MAX_CHANGES = 100
# Deeper than a stored graph may be (FLOWDECK_MAX_GRAPH_DEPTH): compared as one value there.
MAX_PATH_DEPTH = 64


class ChangeKind(StrEnum):
    """How a value at a path changed."""

    ADDED = "ADDED"
    REMOVED = "REMOVED"
    CHANGED = "CHANGED"


@dataclass(frozen=True, slots=True)
class ValueChange:
    """One changed value inside a node or an edge."""

    path: tuple[str, ...]
    kind: ChangeKind
    before: object = None  # the scalar before (None for an object, array or absent value)
    after: object = None  # the scalar after (likewise)


@dataclass(frozen=True, slots=True)
class NodeChange:
    """A node present in both graphs whose content differs."""

    node_id: str
    fields: list[str]  # top-level keys that were added, removed or changed, sorted
    changes: list[ValueChange] = field(default_factory=list)  # in path order
    truncated: bool = False  # more than MAX_CHANGES changed


@dataclass(frozen=True, slots=True)
class EdgeChange:
    """An edge present in both graphs whose content differs."""

    edge_id: str
    fields: list[str]
    changes: list[ValueChange] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class GraphDiff:
    """What changed between two graphs; ids are listed in graph order."""

    nodes_added: list[str]
    nodes_removed: list[str]
    nodes_changed: list[NodeChange]
    edges_added: list[str]
    edges_removed: list[str]
    edges_changed: list[str]
    edge_changes: list[EdgeChange] = field(default_factory=list)


def _json_kind(value: object) -> str:
    """Classify a value by JSON type; anything that is not JSON is "other"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "other"


def _same(left: object, right: object) -> bool:
    """Deep, strict JSON equality: values of different JSON types are never equal.

    Iterative (safe on deeply nested data) and safe on self-referencing containers; NaN
    equals NaN so that an unchanged value is never reported as a change.
    """
    pending: list[tuple[object, object]] = [(left, right)]
    compared: set[tuple[int, int]] = set()
    while pending:
        a, b = pending.pop()
        if a is b:
            continue
        kind = _json_kind(a)
        if kind != _json_kind(b):
            return False
        if kind in ("object", "array"):
            pair = (id(a), id(b))
            if pair in compared:
                continue
            compared.add(pair)
        if isinstance(a, dict) and isinstance(b, dict):
            if len(a) != len(b):
                return False
            for key, value in a.items():
                if key not in b:
                    return False
                pending.append((value, b[key]))
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif kind == "number":
            if a != b and (a == a or b == b):  # equal unless both are NaN
                return False
        elif kind == "other":
            try:
                if type(a) is not type(b) or not bool(a == b):
                    return False
            except Exception:  # arbitrary objects may fail to compare
                return False
        elif a != b:
            return False
    return True


def _by_id(graph: object, key: str) -> dict[str, dict[object, object]]:
    """Map each usable item id of graph[key] to its item, in graph order."""
    if not isinstance(graph, dict):
        return {}
    items = graph.get(key)
    if not isinstance(items, list):
        return {}
    found: dict[str, dict[object, object]] = {}
    for item in items:
        if isinstance(item, dict):
            item_id = item.get("id")
            if isinstance(item_id, str) and item_id not in found:
                found[item_id] = item
    return found


def _changed_fields(old: dict[object, object], new: dict[object, object]) -> list[str]:
    """Return the sorted string keys whose values were added, removed or changed."""
    keys = {key for key in (*old, *new) if isinstance(key, str)}
    return sorted(
        key for key in keys if key not in old or key not in new or not _same(old[key], new[key])
    )


def _scalar(value: object) -> object:
    return value if _json_kind(value) in ("null", "boolean", "number", "string") else None


_ABSENT = object()


def _walk_changes(old: object, new: object) -> Iterator[ValueChange]:
    """Every changed value between two JSON values, in path order (keys sorted)."""
    pending: list[tuple[tuple[str, ...], object, object]] = [((), old, new)]
    while pending:
        path, a, b = pending.pop()
        if a is _ABSENT:
            yield ValueChange(path, ChangeKind.ADDED, None, _scalar(b))
            continue
        if b is _ABSENT:
            yield ValueChange(path, ChangeKind.REMOVED, _scalar(a), None)
            continue
        kind = _json_kind(a)
        if kind != _json_kind(b) or kind not in ("object", "array") or len(path) >= MAX_PATH_DEPTH:
            if not _same(a, b):
                yield ValueChange(path, ChangeKind.CHANGED, _scalar(a), _scalar(b))
            continue
        children: list[tuple[tuple[str, ...], object, object]] = []
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted({k for k in (*a, *b) if isinstance(k, str)}):
                children.append(((*path, key), a.get(key, _ABSENT), b.get(key, _ABSENT)))
        elif isinstance(a, list) and isinstance(b, list):
            for index in range(max(len(a), len(b))):
                children.append(
                    (
                        (*path, str(index)),
                        a[index] if index < len(a) else _ABSENT,
                        b[index] if index < len(b) else _ABSENT,
                    )
                )
        pending.extend(reversed(children))


def _value_changes(old: object, new: object) -> tuple[list[ValueChange], bool]:
    """At most MAX_CHANGES changes between two items, and whether there were more."""
    changes: list[ValueChange] = []
    for change in _walk_changes(old, new):
        if len(changes) == MAX_CHANGES:
            return changes, True
        changes.append(change)
    return changes, False


def diff_graphs(old: object, new: object) -> GraphDiff:
    """Compare two graphs by node and edge id, down to the values inside them."""
    old_nodes, new_nodes = _by_id(old, "nodes"), _by_id(new, "nodes")
    old_edges, new_edges = _by_id(old, "edges"), _by_id(new, "edges")
    nodes_changed = []
    for node_id, node in new_nodes.items():
        if node_id in old_nodes:
            fields = _changed_fields(old_nodes[node_id], node)
            if fields:
                changes, truncated = _value_changes(old_nodes[node_id], node)
                nodes_changed.append(NodeChange(node_id, fields, changes, truncated))
    edge_changes = []
    for edge_id, edge in new_edges.items():
        if edge_id in old_edges:
            fields = _changed_fields(old_edges[edge_id], edge)
            if fields:
                changes, truncated = _value_changes(old_edges[edge_id], edge)
                edge_changes.append(EdgeChange(edge_id, fields, changes, truncated))
    return GraphDiff(
        nodes_added=[node_id for node_id in new_nodes if node_id not in old_nodes],
        nodes_removed=[node_id for node_id in old_nodes if node_id not in new_nodes],
        nodes_changed=nodes_changed,
        edges_added=[edge_id for edge_id in new_edges if edge_id not in old_edges],
        edges_removed=[edge_id for edge_id in old_edges if edge_id not in new_edges],
        edges_changed=[change.edge_id for change in edge_changes],
        edge_changes=edge_changes,
    )
