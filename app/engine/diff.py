"""Differences between two versions of a builder graph, by node id and edge id.

Both graphs may be anything (old versions may have been saved with warnings only, or be
corrupt): a non-object graph or non-array "nodes"/"edges" count as empty, and items that are
not objects or have no string "id" are ignored.  When an id occurs more than once, its first
occurrence is used.  Values are compared with strict JSON equality (see :func:`_same`), so
``True`` and ``1`` differ while ``1`` and ``1.0`` (the same JSON number) do not.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GraphDiff", "NodeChange", "diff_graphs"]


@dataclass(frozen=True, slots=True)
class NodeChange:
    """A node present in both graphs whose content differs."""

    node_id: str
    fields: list[str]  # top-level keys that were added, removed or changed, sorted


@dataclass(frozen=True, slots=True)
class GraphDiff:
    """What changed between two graphs; ids are listed in graph order."""

    nodes_added: list[str]
    nodes_removed: list[str]
    nodes_changed: list[NodeChange]
    edges_added: list[str]
    edges_removed: list[str]
    edges_changed: list[str]


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


def diff_graphs(old: object, new: object) -> GraphDiff:
    """Compare two graphs by node and edge id."""
    old_nodes, new_nodes = _by_id(old, "nodes"), _by_id(new, "nodes")
    old_edges, new_edges = _by_id(old, "edges"), _by_id(new, "edges")
    nodes_changed = []
    for node_id, node in new_nodes.items():
        if node_id in old_nodes:
            fields = _changed_fields(old_nodes[node_id], node)
            if fields:
                nodes_changed.append(NodeChange(node_id, fields))
    return GraphDiff(
        nodes_added=[node_id for node_id in new_nodes if node_id not in old_nodes],
        nodes_removed=[node_id for node_id in old_nodes if node_id not in new_nodes],
        nodes_changed=nodes_changed,
        edges_added=[edge_id for edge_id in new_edges if edge_id not in old_edges],
        edges_removed=[edge_id for edge_id in old_edges if edge_id not in new_edges],
        edges_changed=[
            edge_id
            for edge_id, edge in new_edges.items()
            if edge_id in old_edges and _changed_fields(old_edges[edge_id], edge)
        ],
    )
