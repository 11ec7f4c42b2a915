"""Tests for app.engine.diff: node and edge differences between two graph versions."""

from __future__ import annotations

import copy

import pytest

from app.engine.diff import (
    MAX_CHANGES,
    ChangeKind,
    EdgeChange,
    GraphDiff,
    NodeChange,
    ValueChange,
    diff_graphs,
)

EMPTY = GraphDiff([], [], [], [], [], [])
ADDED, REMOVED, CHANGED = ChangeKind.ADDED, ChangeKind.REMOVED, ChangeKind.CHANGED
NAN = float("nan")


def vc(path: str, kind: ChangeKind, before: object = None, after: object = None) -> ValueChange:
    """A value change at a dotted path."""
    return ValueChange(tuple(path.split(".")), kind, before, after)


def node(node_id: str, **extra: object) -> dict[str, object]:
    return {"id": node_id, "type": "action", "position": {"x": 0, "y": 0}, "data": {}, **extra}


def edge(edge_id: str, source: str, target: str, **extra: object) -> dict[str, object]:
    return {"id": edge_id, "source": source, "target": target, **extra}


BASE: dict[str, object] = {
    "nodes": [
        node("t", type="trigger", data={"label": "Start", "config": {"every": [1, 2]}}),
        node("a", data={"label": "A", "retries": 1, "flag": True}),
        node("b"),
    ],
    "edges": [edge("e1", "t", "a"), edge("e2", "a", "b", sourceHandle=None)],
    "viewport": {"x": 0, "y": 0, "zoom": 1},
}


def test_identical_graphs_have_no_differences() -> None:
    # given two equal but distinct copies
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    # when / then
    assert diff_graphs(old, new) == EMPTY


def test_viewport_and_other_top_level_keys_are_ignored() -> None:
    # given only the viewport and an unknown key differ
    new = copy.deepcopy(BASE)
    new["viewport"] = {"x": 100, "y": 5, "zoom": 2}
    new["extra"] = [1]
    # when / then
    assert diff_graphs(BASE, new) == EMPTY


def test_added_removed_and_changed_nodes_and_edges() -> None:
    # given nodes and edges added, removed and changed
    old = {
        "nodes": [node("x"), node("keep"), node("y"), node("mod", data={"v": 1})],
        "edges": [edge("ex", "x", "keep"), edge("ey", "y", "keep"), edge("em", "keep", "mod")],
    }
    new = {
        "nodes": [node("n2"), node("mod", data={"v": 2}), node("keep"), node("n1")],
        "edges": [edge("em", "keep", "n1"), edge("e-new", "n1", "n2")],
    }
    # when
    diff = diff_graphs(old, new)
    # then added/changed follow the new order, removed the old order
    assert diff == GraphDiff(
        nodes_added=["n2", "n1"],
        nodes_removed=["x", "y"],
        nodes_changed=[NodeChange("mod", ["data"], [vc("data.v", CHANGED, 1, 2)])],
        edges_added=["e-new"],
        edges_removed=["ex", "ey"],
        edges_changed=["em"],
        edge_changes=[EdgeChange("em", ["target"], [vc("target", CHANGED, "mod", "n1")])],
    )


def test_changed_fields_are_sorted_and_include_added_and_removed_keys() -> None:
    # given a node whose position changed, "selected" was added and "style" removed
    old = {"nodes": [node("a", style={"color": "red"}, zIndex=1)]}
    new = {"nodes": [node("a", position={"x": 1, "y": 0}, selected=True, zIndex=1)]}
    # when / then
    assert diff_graphs(old, new).nodes_changed == [
        NodeChange(
            "a",
            ["position", "selected", "style"],
            [
                vc("position.x", CHANGED, 0, 1),
                vc("selected", ADDED, None, True),
                vc("style", REMOVED),  # an object: its value is not shown
            ],
        )
    ]


def test_nested_data_changes_are_detected() -> None:
    # given changes deep inside node data
    new = copy.deepcopy(BASE)
    new["nodes"][0]["data"]["config"]["every"][1] = 3  # type: ignore[index]
    new["nodes"][1]["data"]["extra"] = {}  # type: ignore[index]
    # when / then
    assert diff_graphs(BASE, new) == GraphDiff(
        [],
        [],
        [
            NodeChange("t", ["data"], [vc("data.config.every.1", CHANGED, 2, 3)]),
            NodeChange("a", ["data"], [vc("data.extra", ADDED)]),
        ],
        [],
        [],
        [],
    )


@pytest.mark.parametrize(
    ("before", "after", "changes"),
    [
        (True, 1, [("", CHANGED, True, 1)]),
        (1, True, [("", CHANGED, 1, True)]),
        (False, 0, [("", CHANGED, False, 0)]),
        (0, None, [("", CHANGED, 0, None)]),
        ("1", 1, [("", CHANGED, "1", 1)]),
        ("", None, [("", CHANGED, "", None)]),
        ([], {}, [("", CHANGED, None, None)]),
        ([1, 2], [2, 1], [(".0", CHANGED, 1, 2), (".1", CHANGED, 2, 1)]),
        ([1], [1, 1], [(".1", ADDED, None, 1)]),
        ({"a": 1}, {"a": 1, "b": None}, [(".b", ADDED, None, None)]),
        ({"a": 1}, {"b": 1}, [(".a", REMOVED, 1, None), (".b", ADDED, None, 1)]),
        ({"a": [True]}, {"a": [1]}, [(".a.0", CHANGED, True, 1)]),
        (NAN, 1.0, [("", CHANGED, NAN, 1.0)]),
        (0.5, 0.25, [("", CHANGED, 0.5, 0.25)]),
    ],
)
def test_values_of_different_json_type_or_content_are_changes(
    before: object, after: object, changes: list[tuple[str, ChangeKind, object, object]]
) -> None:
    # given a field that went from `before` to `after`
    old = {"nodes": [node("a", data={"v": before})], "edges": [edge("e", "a", "a", w=before)]}
    new = {"nodes": [node("a", data={"v": after})], "edges": [edge("e", "a", "a", w=after)]}
    # when
    diff = diff_graphs(old, new)
    # then each changed path is named, with the scalars before and after
    in_node = [vc("data.v" + suffix, kind, b, a) for suffix, kind, b, a in changes]
    in_edge = [vc("w" + suffix, kind, b, a) for suffix, kind, b, a in changes]
    assert diff == GraphDiff(
        [],
        [],
        [NodeChange("a", ["data"], in_node)],
        [],
        [],
        ["e"],
        [EdgeChange("e", ["w"], in_edge)],
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1, 1.0),  # the same JSON number
        (float("nan"), float("nan")),  # an unchanged NaN is not a change
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # key order does not matter
        ([{"x": [None, "s"]}], [{"x": [None, "s"]}]),
    ],
)
def test_equal_json_values_are_not_changes(before: object, after: object) -> None:
    # given a field whose value is the same JSON value
    old = {"nodes": [node("a", data={"v": before})], "edges": [edge("e", "a", "a", w=before)]}
    new = {"nodes": [node("a", data={"v": after})], "edges": [edge("e", "a", "a", w=after)]}
    # when / then
    assert diff_graphs(old, new) == EMPTY


def test_edge_handle_change_is_an_edge_change() -> None:
    # given an edge whose sourceHandle went from null to a string
    new = copy.deepcopy(BASE)
    new["edges"][1]["sourceHandle"] = "out"  # type: ignore[index]
    # when / then
    assert diff_graphs(BASE, new) == GraphDiff(
        [],
        [],
        [],
        [],
        [],
        ["e2"],
        [EdgeChange("e2", ["sourceHandle"], [vc("sourceHandle", CHANGED, None, "out")])],
    )


@pytest.mark.parametrize("bad", [None, [], "graph", 5, {"nodes": "x", "edges": {"a": 1}}])
def test_unusable_graphs_count_as_empty(bad: object) -> None:
    # when / then
    assert diff_graphs(bad, BASE) == GraphDiff(["t", "a", "b"], [], [], ["e1", "e2"], [], [])
    assert diff_graphs(BASE, bad) == GraphDiff([], ["t", "a", "b"], [], [], ["e1", "e2"], [])
    assert diff_graphs(bad, bad) == EMPTY


def test_items_without_a_string_id_are_ignored() -> None:
    # given junk items in both versions
    junk: list[object] = [None, 3, "n", [], {}, {"id": 5}, {"id": None}, {"id": ["a"]}]
    old = {"nodes": [*junk, node("a")], "edges": junk}
    new = {"nodes": [node("a"), *reversed(junk)], "edges": [*junk, edge("e", "a", "a")]}
    # when / then
    assert diff_graphs(old, new) == GraphDiff([], [], [], ["e"], [], [])


def test_first_occurrence_of_a_duplicate_id_wins() -> None:
    # given duplicate ids (possible in graphs saved with errors long ago)
    old = {"nodes": [node("a", data={"v": 1}), node("a", data={"v": 2})]}
    new = {"nodes": [node("a", data={"v": 1}), node("a", data={"v": 3}), node("a")]}
    # when / then
    assert diff_graphs(old, new) == EMPTY


def test_order_of_node_keys_does_not_matter() -> None:
    # given the same node with its keys in a different order
    old = {"nodes": [{"id": "a", "type": "x", "data": {"p": 1, "q": 2}}]}
    new = {"nodes": [{"data": {"q": 2, "p": 1}, "type": "x", "id": "a"}]}
    # when / then
    assert diff_graphs(old, new) == EMPTY


def test_non_json_values_in_old_data_do_not_crash() -> None:
    # given odd Python values that JSON would never produce
    class Exploding:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("boom")

        __hash__ = object.__hash__

    old = {"nodes": [node("a", data=(1, 2)), node("b", data=Exploding()), node("c", data={1})]}
    new = {"nodes": [node("a", data=(1, 2)), node("b", data=Exploding()), node("c", data={1})]}
    # when
    diff = diff_graphs(old, new)
    # then equal odd values compare equal and failing comparisons count as changes
    assert diff == GraphDiff([], [], [NodeChange("b", ["data"], [vc("data", CHANGED)])], [], [], [])


def test_deeply_nested_and_self_referencing_data_do_not_crash() -> None:
    # given data nested 100,000 deep, and lists that contain themselves
    def deep(leaf: object) -> list[object]:
        value: list[object] = [leaf]
        for _ in range(100_000):
            value = [value]
        return value

    loop_old: list[object] = []
    loop_old.append(loop_old)
    loop_new: list[object] = []
    loop_new.append(loop_new)
    old = {"nodes": [node("deep", data=deep(1)), node("loop", data=loop_old)]}
    new = {"nodes": [node("deep", data=deep(2)), node("loop", data=loop_new)]}
    # when
    diff = diff_graphs(old, new)
    # then the path stops at 64 steps, where the rest is compared as one value
    path = ("data", *["0"] * 63)
    assert diff == GraphDiff(
        [],
        [],
        [NodeChange("deep", ["data"], [ValueChange(path, CHANGED, None, None)])],
        [],
        [],
        [],
    )


def test_changes_inside_one_node_are_capped() -> None:
    # given a node where 150 config values changed
    old = {"nodes": [node("a", data={f"k{i:03}": i for i in range(150)})]}
    new = {"nodes": [node("a", data={f"k{i:03}": -i - 1 for i in range(150)})]}
    # when
    (change,) = diff_graphs(old, new).nodes_changed
    # then the first 100 are listed, in path order, and the cut is said
    assert len(change.changes) == MAX_CHANGES == 100
    assert change.changes[0] == vc("data.k000", CHANGED, 0, -1)
    assert change.changes[-1] == vc("data.k099", CHANGED, 99, -100)
    assert change.truncated is True


def test_config_strings_are_shown_as_written() -> None:
    # given a url that moved from one secret reference to another
    old = {"nodes": [node("h", data={"url": "https://api.test/{{ secrets.OLD }}"})]}
    new = {"nodes": [node("h", data={"url": "https://api.test/{{ secrets.NEW }}"})]}
    # when / then the expressions are shown, as the graph holds them
    assert diff_graphs(old, new).nodes_changed == [
        NodeChange(
            "h",
            ["data"],
            [
                vc(
                    "data.url",
                    CHANGED,
                    "https://api.test/{{ secrets.OLD }}",
                    "https://api.test/{{ secrets.NEW }}",
                )
            ],
        )
    ]
