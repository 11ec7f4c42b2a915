"""Tests for app.engine.graph: JSON safety checks, structural errors and graph warnings."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest

from app.engine.graph import (
    MAX_JSON_DIAGNOSTICS,
    Diagnostic,
    GraphLimits,
    Severity,
    check_json_value,
    has_errors,
    validate_graph,
)

ERROR = Severity.ERROR
WARNING = Severity.WARNING
NAN_MSG = "Number is NaN or infinite, which JSON cannot store."
BIG_INT_MSG = "Integer does not fit in 64 bits."
NUL_MSG = "String contains a NUL character, which JSONB cannot store."
SURROGATE_MSG = "String contains a lone surrogate, which is not valid UTF-8."
NUL_KEY_MSG = "Object has a key that contains a NUL character, which JSONB cannot store."
SURROGATE_KEY_MSG = "Object has a key that contains a lone surrogate, which is not valid UTF-8."


def err(
    code: str,
    message: str,
    path: tuple[str, ...],
    node_id: str | None = None,
    edge_id: str | None = None,
) -> Diagnostic:
    return Diagnostic(ERROR, code, message, path, node_id, edge_id)


def warn(code: str, message: str, path: tuple[str, ...], node_id: str | None = None) -> Diagnostic:
    return Diagnostic(WARNING, code, message, path, node_id)


def check(value: object, max_depth: int = 32, max_string_length: int = 100) -> list[Diagnostic]:
    return check_json_value(value, max_depth=max_depth, max_string_length=max_string_length)


def node(node_id: str, node_type: str = "action", **extra: object) -> dict[str, object]:
    return {"id": node_id, "type": node_type, "position": {"x": 0, "y": 0}, "data": {}, **extra}


def edge(edge_id: str, source: str, target: str, **extra: object) -> dict[str, object]:
    return {"id": edge_id, "source": source, "target": target, **extra}


def nested_lists(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


REACT_FLOW_GRAPH: dict[str, object] = {
    "nodes": [
        {
            "id": "trigger-1",
            "type": "trigger",
            "position": {"x": 0, "y": 0},
            "data": {"label": "When a webhook arrives", "config": {"path": "/hooks/a"}},
            "measured": {"width": 180, "height": 42},
            "selected": False,
            "dragging": False,
        },
        {
            "id": "http-1",
            "type": "http",
            "position": {"x": 250.5, "y": -40.25},
            "data": {"label": "Call API ✓", "headers": {"X-Token": None}, "retries": 3},
            "style": {"border": "1px solid #777", "opacity": 0.9},
            "measured": {"width": 180, "height": 42},
            "selected": True,
            "width": 180,
            "height": 42,
        },
        {
            "id": "end-1",
            "type": "end",
            "position": {"x": 500, "y": 0},
            "data": {"label": "Done 😀", "tags": ["a", "b"], "empty": {}},
            "parentId": None,
        },
    ],
    "edges": [
        {
            "id": "xy-edge__trigger-1-http-1",
            "source": "trigger-1",
            "target": "http-1",
            "sourceHandle": None,
            "targetHandle": None,
            "type": "smoothstep",
            "animated": True,
            "markerEnd": {"type": "arrowclosed", "width": 20, "height": 20},
            "style": {"strokeWidth": 2},
            "selected": False,
        },
        {
            "id": "xy-edge__http-1out-end-1",
            "source": "http-1",
            "target": "end-1",
            "sourceHandle": "out",
            "targetHandle": "in",
            "label": "ok",
        },
    ],
    "viewport": {"x": 12.5, "y": -3, "zoom": 0.75},
    "version": 3,
}


# --- check_json_value --------------------------------------------------------------------


def test_plain_json_values_have_no_diagnostics() -> None:
    # given every kind of storable JSON value, including the int64 and length boundaries
    value: dict[str, object] = {
        "null": None,
        "bools": [True, False],
        "ints": [0, -1, 2**63 - 1, -(2**63) + 1],
        "floats": [0.5, -1e308, 1e-300],
        "strings": ["", "plain", "ünïcödé", "😀", "x" * 100],
        "x" * 100: {"nested": [[{}]]},
    }
    # when / then
    assert check(value) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (float("nan"), NAN_MSG),
        (float("inf"), NAN_MSG),
        (float("-inf"), NAN_MSG),
        (2**63, BIG_INT_MSG),
        (-(2**63), BIG_INT_MSG),
        # more digits than Python's int-to-str limit allows (so give the case a readable id)
        pytest.param(10**5000, BIG_INT_MSG, id="10**5000"),
        ("a\x00b", NUL_MSG),
        ("\ud800", SURROGATE_MSG),
        ("ok \udfff", SURROGATE_MSG),
        ("\ud83d\ude00", SURROGATE_MSG),  # a UTF-16 pair is two lone surrogates in Python
        ((1, 2), "Value of type tuple is not a JSON value."),
        ({1}, "Value of type set is not a JSON value."),
        (b"bytes", "Value of type bytes is not a JSON value."),
        (object(), "Value of type object is not a JSON value."),
    ],
)
def test_unstorable_value_is_reported_at_its_path(bad: object, message: str) -> None:
    # given an unstorable value deep inside objects and arrays
    value = {"a": [1, {"b": bad}], "c": "fine"}
    # when
    diagnostics = check(value)
    # then
    assert diagnostics == [err("INVALID_JSON_VALUE", message, ("a", "1", "b"))]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("a\x00", NUL_KEY_MSG),
        ("\ud800", SURROGATE_KEY_MSG),
        (1, "Object has a key of type int, not string."),
        (None, "Object has a key of type NoneType, not string."),
        (True, "Object has a key of type bool, not string."),
        ((1, 2), "Object has a key of type tuple, not string."),
    ],
)
def test_bad_key_is_reported_at_its_object_and_its_value_is_skipped(
    key: object, message: str
) -> None:
    # given an object with one bad key whose value is also bad
    value = {"list": [{"ok": 1, key: float("nan")}]}
    # when
    diagnostics = check(value)
    # then the key is reported once, at the object holding it
    assert diagnostics == [err("INVALID_JSON_VALUE", message, ("list", "0"))]


def test_string_length_limit_applies_to_values_and_keys() -> None:
    # given strings and keys just at and just over the limit
    value = {"ok": "x" * 10, "long": "x" * 11, "y" * 11: "v", "z" * 10: 1}
    # when
    diagnostics = check(value, max_string_length=10)
    # then
    assert diagnostics == [
        err("STRING_TOO_LONG", "String is 11 characters long; the maximum is 10.", ("long",)),
        err(
            "STRING_TOO_LONG", "Object has a key that is 11 characters long; the maximum is 10.", ()
        ),
    ]


def test_root_scalar_is_checked_with_the_given_path() -> None:
    # when / then
    assert check_json_value(
        float("nan"), max_depth=5, max_string_length=5, path=("nodes", "2")
    ) == [err("INVALID_JSON_VALUE", NAN_MSG, ("nodes", "2"))]
    assert check_json_value("abcdef", max_depth=5, max_string_length=5) == [
        err("STRING_TOO_LONG", "String is 6 characters long; the maximum is 5.", ())
    ]
    assert check_json_value(7, max_depth=5, max_string_length=5) == []


def test_path_prefix_is_prepended() -> None:
    # when
    diagnostics = check_json_value(
        {"a": [None, "\x00"]}, max_depth=5, max_string_length=5, path=("nodes", "0", "data")
    )
    # then
    assert diagnostics == [err("INVALID_JSON_VALUE", NUL_MSG, ("nodes", "0", "data", "a", "1"))]


def test_booleans_are_not_treated_as_integers() -> None:
    # when / then
    assert check({"t": True, "f": False, "list": [True] * 3}) == []


def test_depth_counts_containers_starting_at_one() -> None:
    # given containers nested exactly 3 deep (the root is depth 1), holding scalars
    value = {"a": [{"b": 1, "c": "s"}]}
    # when / then it fits max_depth=3 and not max_depth=2
    assert check(value, max_depth=3) == []
    assert check(value, max_depth=2) == [
        err("TOO_DEEP", "Value is nested deeper than 2 levels.", ("a", "0"))
    ]
    assert check({}, max_depth=0) == [err("TOO_DEEP", "Value is nested deeper than 0 levels.", ())]


def test_hundred_thousand_deep_list_is_reported_once_without_recursion_error() -> None:
    # given a hostile value nested 100,000 deep
    value = nested_lists(100_000)
    # when
    diagnostics = check(value, max_depth=32)
    # then it is reported once, where depth 33 starts
    assert diagnostics == [err("TOO_DEEP", "Value is nested deeper than 32 levels.", ("0",) * 32)]


def test_each_too_deep_branch_is_reported_once() -> None:
    # given two sibling branches that are both too deep, and a bad value after them
    value = {"a": nested_lists(50), "b": {"c": nested_lists(50)}, "d": float("inf")}
    # when
    diagnostics = check(value, max_depth=3)
    # then
    too_deep = "Value is nested deeper than 3 levels."
    assert diagnostics == [
        err("TOO_DEEP", too_deep, ("a", "0", "0")),
        err("TOO_DEEP", too_deep, ("b", "c", "0")),
        err("INVALID_JSON_VALUE", NAN_MSG, ("d",)),
    ]


def test_diagnostics_come_in_document_order() -> None:
    # given problems before, inside and after a nested container
    value = {"a": "\x00", "b": [float("nan"), {"c": 2**64}, "\ud800"], "d": {1: 1}}
    # when
    diagnostics = check(value)
    # then
    assert diagnostics == [
        err("INVALID_JSON_VALUE", NUL_MSG, ("a",)),
        err("INVALID_JSON_VALUE", NAN_MSG, ("b", "0")),
        err("INVALID_JSON_VALUE", BIG_INT_MSG, ("b", "1", "c")),
        err("INVALID_JSON_VALUE", SURROGATE_MSG, ("b", "2")),
        err("INVALID_JSON_VALUE", "Object has a key of type int, not string.", ("d",)),
    ]


def test_diagnostics_stop_at_fifty() -> None:
    # given a hostile value with thousands of problems
    value = [float("nan")] * 10_000
    # when
    diagnostics = check(value)
    # then
    assert MAX_JSON_DIAGNOSTICS == 50
    assert diagnostics == [err("INVALID_JSON_VALUE", NAN_MSG, (str(i),)) for i in range(50)]


def test_dict_and_list_subclasses_are_accepted() -> None:
    # given containers that json.dumps can store (e.g. from an ORM's mutable JSON types)
    value = OrderedDict(a=[1, OrderedDict(b="c")])
    # when / then
    assert check(value) == []


# --- validate_graph: errors ------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "kind"),
    [
        (None, "null"),
        ([], "array"),
        ("graph", "string"),
        (3, "number"),
        (True, "boolean"),
        ((), "Python tuple"),
    ],
)
def test_graph_must_be_an_object(graph: object, kind: str) -> None:
    # when / then
    assert validate_graph(graph) == [
        err("GRAPH_NOT_OBJECT", f"The graph must be an object, got {kind}.", ())
    ]


def test_react_flow_to_object_graph_is_clean() -> None:
    # given what React Flow's toObject() produces, with its extra keys
    graph = copy.deepcopy(REACT_FLOW_GRAPH)
    # when / then
    assert validate_graph(graph) == []
    assert graph == REACT_FLOW_GRAPH  # validation does not modify the graph


def test_blank_canvas_is_clean() -> None:
    # given graphs with no nodes or edges (missing keys count as empty lists)
    # when / then
    assert validate_graph({}) == []
    assert validate_graph({"nodes": [], "edges": [], "viewport": {"x": 0, "y": 0, "zoom": 1}}) == []


def test_unstorable_values_are_the_only_errors_reported() -> None:
    # given a graph with both a NaN (and a NUL key) and structural problems
    graph = {
        "nodes": [{"type": "trigger", "data": {"x": float("nan")}}, "not a node"],
        "edges": [{"id": "e1", "source": "nowhere", "target": "n1", "style": {"\x00": 1}}],
    }
    # when
    diagnostics = validate_graph(graph)
    # then structure checks did not run on the poisoned data; the edge's id is attached
    assert diagnostics == [
        err("INVALID_JSON_VALUE", NAN_MSG, ("nodes", "0", "data", "x")),
        err("INVALID_JSON_VALUE", NUL_KEY_MSG, ("edges", "0", "style"), edge_id="e1"),
    ]


def test_json_errors_name_the_node_or_edge_only_when_its_id_is_usable() -> None:
    # given bad values inside items with good, poisoned, too long and non-string ids
    limits = GraphLimits(max_id_length=5)
    graph = {
        "nodes": [
            node("good", data={"v": float("inf")}),
            node("bad\x00", data={"v": 2**70}),
            node("toolong", data={"v": float("nan")}),
            {"id": 5, "v": b""},
            (1,),
        ],
        "edges": [edge("e\ud800", "a", "b"), edge("ok", "a", "b", w=[{1: 2}])],
        "viewport": {"x": float("nan")},
    }
    # when
    diagnostics = validate_graph(graph, limits)
    # then
    assert diagnostics == [
        err("INVALID_JSON_VALUE", NAN_MSG, ("nodes", "0", "data", "v"), node_id="good"),
        err("INVALID_JSON_VALUE", NUL_MSG, ("nodes", "1", "id")),
        err("INVALID_JSON_VALUE", BIG_INT_MSG, ("nodes", "1", "data", "v")),
        err("INVALID_JSON_VALUE", NAN_MSG, ("nodes", "2", "data", "v")),
        err("INVALID_JSON_VALUE", "Value of type bytes is not a JSON value.", ("nodes", "3", "v")),
        err("INVALID_JSON_VALUE", "Value of type tuple is not a JSON value.", ("nodes", "4")),
        err("INVALID_JSON_VALUE", SURROGATE_MSG, ("edges", "0", "id")),
        err(
            "INVALID_JSON_VALUE",
            "Object has a key of type int, not string.",
            ("edges", "1", "w", "0"),
            edge_id="ok",
        ),
        err("INVALID_JSON_VALUE", NAN_MSG, ("viewport", "x")),
    ]


def test_hostile_deep_nesting_in_node_data() -> None:
    # given node data nested 100,000 deep
    graph = {"nodes": [node("n1", "trigger", data={"x": nested_lists(100_000)})]}
    # when
    diagnostics = validate_graph(graph)
    # then the graph itself is depth 1, so the list starting at depth 5 is cut at depth 33
    assert diagnostics == [
        err(
            "TOO_DEEP",
            "Value is nested deeper than 32 levels.",
            ("nodes", "0", "data", "x") + ("0",) * 28,
            node_id="n1",
        )
    ]


def test_limits_apply_to_whole_graph() -> None:
    # given a long string in a node's data and a graph deeper than a custom limit
    graph = {"nodes": [node("n1", "trigger", data={"note": "x" * 101})]}
    # when / then
    assert validate_graph(graph, GraphLimits(max_string_length=100)) == [
        err(
            "STRING_TOO_LONG",
            "String is 101 characters long; the maximum is 100.",
            ("nodes", "0", "data", "note"),
            node_id="n1",
        )
    ]
    too_deep = "Value is nested deeper than 3 levels."
    assert validate_graph(graph, GraphLimits(max_depth=3)) == [
        err("TOO_DEEP", too_deep, ("nodes", "0", "position"), node_id="n1"),
        err("TOO_DEEP", too_deep, ("nodes", "0", "data"), node_id="n1"),
    ]


def test_nodes_and_edges_must_be_lists() -> None:
    # given "nodes" and "edges" that are not arrays
    graph = {"nodes": {"n1": node("n1")}, "edges": "e1"}
    # when / then
    assert validate_graph(graph) == [
        err("NODES_NOT_LIST", '"nodes" must be an array, got object.', ("nodes",)),
        err("EDGES_NOT_LIST", '"edges" must be an array, got string.', ("edges",)),
    ]


def test_edge_endpoints_are_not_checked_when_nodes_are_unusable() -> None:
    # given nodes that are not a list and an edge to nowhere
    graph = {"nodes": None, "edges": [edge("e1", "a", "b", sourceHandle=1)]}
    # when / then only the node list and the handle are reported
    assert validate_graph(graph) == [
        err("NODES_NOT_LIST", '"nodes" must be an array, got null.', ("nodes",)),
        err(
            "HANDLE_NOT_STRING",
            'Edge "e1" has a sourceHandle that is neither a string nor null.',
            ("edges", "0", "sourceHandle"),
            edge_id="e1",
        ),
    ]


def test_items_must_be_objects() -> None:
    # given list items that are not objects
    graph = {"nodes": [node("t", "trigger"), 5, None], "edges": [["t", "t"]]}
    # when / then
    assert validate_graph(graph) == [
        err("NODE_NOT_OBJECT", "Node #1 must be an object, got number.", ("nodes", "1")),
        err("NODE_NOT_OBJECT", "Node #2 must be an object, got null.", ("nodes", "2")),
        err("EDGE_NOT_OBJECT", "Edge #0 must be an object, got array.", ("edges", "0")),
    ]


def test_missing_and_invalid_ids() -> None:
    # given nodes and edges without a usable id
    graph = {
        "nodes": [
            node("t", "trigger"),
            {"type": "a"},
            {"id": "", "type": "a"},
            {"id": 7, "type": "a"},
        ],
        "edges": [{"source": "t", "target": "t"}, {"id": None, "source": "t", "target": "t"}],
    }
    # when / then no node_id / edge_id is set, and the rest of each item is still checked
    assert validate_graph(graph) == [
        err(
            "ID_MISSING", "Node #1 has no id; it must be a non-empty string.", ("nodes", "1", "id")
        ),
        err(
            "ID_MISSING", "Node #2 has no id; it must be a non-empty string.", ("nodes", "2", "id")
        ),
        err(
            "ID_MISSING", "Node #3 has no id; it must be a non-empty string.", ("nodes", "3", "id")
        ),
        err(
            "ID_MISSING", "Edge #0 has no id; it must be a non-empty string.", ("edges", "0", "id")
        ),
        err(
            "ID_MISSING", "Edge #1 has no id; it must be a non-empty string.", ("edges", "1", "id")
        ),
    ]


def test_ids_that_are_too_long() -> None:
    # given ids one character over a custom limit (and one exactly at it)
    limits = GraphLimits(max_id_length=5)
    graph = {
        "nodes": [node("12345", "trigger"), node("123456")],
        "edges": [edge("abcdef", "12345", "123456")],
    }
    # when / then
    assert validate_graph(graph, limits) == [
        err(
            "ID_TOO_LONG",
            "Node #1 has an id of 6 characters; the maximum is 5.",
            ("nodes", "1", "id"),
            node_id="123456",
        ),
        err(
            "ID_TOO_LONG",
            "Edge #0 has an id of 6 characters; the maximum is 5.",
            ("edges", "0", "id"),
            edge_id="abcdef",
        ),
    ]


def test_duplicate_ids_are_reported_from_the_second_occurrence() -> None:
    # given repeated node ids and edge ids; "x" is both a node id and an edge id
    graph = {
        "nodes": [node("x", "trigger"), node("n"), node("x"), node("n"), node("x")],
        "edges": [edge("x", "x", "n"), edge("e", "x", "n"), edge("e", "n", "x")],
    }
    # when / then node ids and edge ids are separate namespaces
    assert validate_graph(graph) == [
        err(
            "ID_DUPLICATE", 'Node id "x" is used by more than one node.', ("nodes", "2", "id"), "x"
        ),
        err(
            "ID_DUPLICATE", 'Node id "n" is used by more than one node.', ("nodes", "3", "id"), "n"
        ),
        err(
            "ID_DUPLICATE", 'Node id "x" is used by more than one node.', ("nodes", "4", "id"), "x"
        ),
        err(
            "ID_DUPLICATE",
            'Edge id "e" is used by more than one edge.',
            ("edges", "2", "id"),
            edge_id="e",
        ),
    ]


def test_node_type_and_data() -> None:
    # given nodes with a missing/empty/non-string type and non-object data
    graph = {
        "nodes": [
            node("t", "trigger"),
            {"id": "a", "data": {}},
            {"id": "b", "type": ""},
            {"id": "c", "type": 3, "data": []},
            {"type": None, "data": None},
            {"id": "d", "type": "x", "data": "text"},
            {"id": "e", "type": "x"},  # no data at all is fine
        ]
    }
    # when / then
    no_type = "has no type; it must be a non-empty string."
    assert validate_graph(graph) == [
        err("NODE_TYPE_MISSING", f'Node "a" {no_type}', ("nodes", "1", "type"), "a"),
        err("NODE_TYPE_MISSING", f'Node "b" {no_type}', ("nodes", "2", "type"), "b"),
        err("NODE_TYPE_MISSING", f'Node "c" {no_type}', ("nodes", "3", "type"), "c"),
        err(
            "NODE_DATA_NOT_OBJECT",
            'Node "c" has "data" that is not an object.',
            ("nodes", "3", "data"),
            "c",
        ),
        err(
            "ID_MISSING", "Node #4 has no id; it must be a non-empty string.", ("nodes", "4", "id")
        ),
        err("NODE_TYPE_MISSING", f"Node #4 {no_type}", ("nodes", "4", "type")),
        err(
            "NODE_DATA_NOT_OBJECT",
            'Node #4 has "data" that is not an object.',
            ("nodes", "4", "data"),
        ),
        err(
            "NODE_DATA_NOT_OBJECT",
            'Node "d" has "data" that is not an object.',
            ("nodes", "5", "data"),
            "d",
        ),
    ]


def test_edge_endpoints_must_be_existing_nodes() -> None:
    # given edges with unknown, missing and non-string endpoints
    graph = {
        "nodes": [node("t", "trigger"), node("n1")],
        "edges": [
            edge("e1", "t", "n1"),
            edge("e2", "t", "n9"),
            edge("e3", "ghost", "n1"),
            {"id": "e4"},
            {"id": "e5", "source": 1, "target": ["n1"]},
            {"source": "x" * 200, "target": "t"},
        ],
    }
    # when / then unknown ids are quoted (and shortened when long)
    assert validate_graph(graph) == [
        err(
            "EDGE_TARGET_UNKNOWN",
            'Edge "e2" points to node "n9", which does not exist.',
            ("edges", "1", "target"),
            edge_id="e2",
        ),
        err(
            "EDGE_SOURCE_UNKNOWN",
            'Edge "e3" points from node "ghost", which does not exist.',
            ("edges", "2", "source"),
            edge_id="e3",
        ),
        err(
            "EDGE_SOURCE_UNKNOWN",
            'Edge "e4" has no source node id.',
            ("edges", "3", "source"),
            edge_id="e4",
        ),
        err(
            "EDGE_TARGET_UNKNOWN",
            'Edge "e4" has no target node id.',
            ("edges", "3", "target"),
            edge_id="e4",
        ),
        err(
            "EDGE_SOURCE_UNKNOWN",
            'Edge "e5" has no source node id.',
            ("edges", "4", "source"),
            edge_id="e5",
        ),
        err(
            "EDGE_TARGET_UNKNOWN",
            'Edge "e5" has no target node id.',
            ("edges", "4", "target"),
            edge_id="e5",
        ),
        err(
            "ID_MISSING", "Edge #5 has no id; it must be a non-empty string.", ("edges", "5", "id")
        ),
        err(
            "EDGE_SOURCE_UNKNOWN",
            f'Edge #5 points from node "{"x" * 80}...", which does not exist.',
            ("edges", "5", "source"),
        ),
    ]


def test_handles_must_be_strings_or_null() -> None:
    # given edges with good and bad handles
    graph = {
        "nodes": [node("t", "trigger")],
        "edges": [
            edge("ok", "t", "t", sourceHandle="out", targetHandle=None),
            edge("bad", "t", "t", sourceHandle=0, targetHandle={"id": "in"}),
            edge("half", "t", "t", targetHandle=False),
        ],
    }
    # when / then
    assert validate_graph(graph) == [
        err(
            "HANDLE_NOT_STRING",
            'Edge "bad" has a sourceHandle that is neither a string nor null.',
            ("edges", "1", "sourceHandle"),
            edge_id="bad",
        ),
        err(
            "HANDLE_NOT_STRING",
            'Edge "bad" has a targetHandle that is neither a string nor null.',
            ("edges", "1", "targetHandle"),
            edge_id="bad",
        ),
        err(
            "HANDLE_NOT_STRING",
            'Edge "half" has a targetHandle that is neither a string nor null.',
            ("edges", "2", "targetHandle"),
            edge_id="half",
        ),
    ]


def test_too_many_nodes_skips_node_and_endpoint_checks() -> None:
    # given more nodes than allowed, some of them broken, and an edge to nowhere
    graph = {"nodes": [node("t", "trigger"), 1, {}], "edges": [edge("e1", "t", "zz"), "x"]}
    # when
    diagnostics = validate_graph(graph, GraphLimits(max_nodes=2))
    # then
    assert diagnostics == [
        err("TOO_MANY_NODES", "The graph has 3 nodes; the maximum is 2.", ("nodes",)),
        err("EDGE_NOT_OBJECT", "Edge #1 must be an object, got string.", ("edges", "1")),
    ]


def test_too_many_edges_skips_edge_checks() -> None:
    # given more edges than allowed, some of them broken
    graph = {"nodes": [node("t", "trigger"), {}], "edges": [edge("e", "t", "zz"), 5, None]}
    # when
    diagnostics = validate_graph(graph, GraphLimits(max_edges=2))
    # then
    assert diagnostics == [
        err(
            "ID_MISSING", "Node #1 has no id; it must be a non-empty string.", ("nodes", "1", "id")
        ),
        err(
            "NODE_TYPE_MISSING",
            "Node #1 has no type; it must be a non-empty string.",
            ("nodes", "1", "type"),
        ),
        err("TOO_MANY_EDGES", "The graph has 3 edges; the maximum is 2.", ("edges",)),
    ]


def test_limits_are_inclusive() -> None:
    # given exactly the maximum number of nodes and edges
    graph = {"nodes": [node("t", "trigger"), node("a")], "edges": [edge("e1", "t", "a")] * 1}
    # when / then
    assert validate_graph(graph, GraphLimits(max_nodes=2, max_edges=1)) == []


def test_errors_suppress_warnings() -> None:
    # given a graph with a cycle, no trigger and one error
    graph = {"nodes": [node("a"), node("b", data=[])], "edges": [edge("e", "a", "a")]}
    # when / then
    assert validate_graph(graph) == [
        err(
            "NODE_DATA_NOT_OBJECT",
            'Node "b" has "data" that is not an object.',
            ("nodes", "1", "data"),
            "b",
        )
    ]


# --- validate_graph: warnings ------------------------------------------------------------


def test_cycles_self_loop_and_two_disjoint_cycles() -> None:
    # given a self-loop on "s", cycles a→b→a and c→d→e→c, and nodes downstream of cycles
    graph = {
        "nodes": [
            node("t", "trigger"),
            node("s"),
            node("a"),
            node("b"),
            node("after"),
            node("c"),
            node("d"),
            node("e"),
        ],
        "edges": [
            edge("1", "t", "s"),
            edge("2", "s", "s"),
            edge("3", "t", "a"),
            edge("4", "a", "b"),
            edge("5", "b", "a"),
            edge("6", "b", "after"),
            edge("7", "t", "c"),
            edge("8", "c", "d"),
            edge("9", "d", "e"),
            edge("10", "e", "c"),
            edge("11", "e", "after"),
        ],
    }
    # when
    diagnostics = validate_graph(graph)
    # then one warning per node on a cycle, in node order; "t" and "after" are not on one
    assert diagnostics == [
        warn("CYCLE", f'Node "{node_id}" is part of a cycle.', ("nodes", str(index)), node_id)
        for index, node_id in [(1, "s"), (2, "a"), (3, "b"), (5, "c"), (6, "d"), (7, "e")]
    ]
    assert not has_errors(diagnostics)


def test_diamond_is_not_a_cycle() -> None:
    # given a DAG where two paths meet, plus a duplicate edge
    graph = {
        "nodes": [node("t", "trigger"), node("l"), node("r"), node("j")],
        "edges": [
            edge("1", "t", "l"),
            edge("2", "t", "r"),
            edge("3", "l", "j"),
            edge("4", "r", "j"),
            edge("5", "r", "j"),
        ],
    }
    # when / then
    assert validate_graph(graph) == []


def test_no_trigger() -> None:
    # given nodes, none of which is a trigger, one of them on a cycle
    graph = {"nodes": [node("a"), node("b")], "edges": [edge("e", "b", "b")]}
    # when / then unreachability is not reported without a trigger
    assert validate_graph(graph) == [
        warn("CYCLE", 'Node "b" is part of a cycle.', ("nodes", "1"), "b"),
        warn(
            "NO_TRIGGER", 'The workflow has no node of type "trigger", so it can never start.', ()
        ),
    ]


def test_unreachable_nodes() -> None:
    # given two triggers, nodes reachable from either, and nodes reachable from neither
    graph = {
        "nodes": [
            node("t1", "trigger"),
            node("island"),
            node("a"),
            node("t2", "trigger"),
            node("b"),
            node("orphan-source"),
            node("c"),
        ],
        "edges": [
            edge("1", "t1", "a"),
            edge("2", "t2", "b"),
            edge("3", "orphan-source", "c"),
            edge("4", "b", "t1"),
        ],
    }
    # when / then
    assert validate_graph(graph) == [
        warn(
            "UNREACHABLE_NODE",
            f'Node "{node_id}" cannot be reached from any trigger.',
            ("nodes", str(index)),
            node_id,
        )
        for index, node_id in [(1, "island"), (5, "orphan-source"), (6, "c")]
    ]


def test_cycle_and_unreachable_warnings_together() -> None:
    # given an unreachable cycle
    graph = {
        "nodes": [node("t", "trigger"), node("x"), node("y")],
        "edges": [edge("1", "x", "y"), edge("2", "y", "x")],
    }
    # when / then cycles come first, then unreachable nodes
    assert validate_graph(graph) == [
        warn("CYCLE", 'Node "x" is part of a cycle.', ("nodes", "1"), "x"),
        warn("CYCLE", 'Node "y" is part of a cycle.', ("nodes", "2"), "y"),
        warn(
            "UNREACHABLE_NODE", 'Node "x" cannot be reached from any trigger.', ("nodes", "1"), "x"
        ),
        warn(
            "UNREACHABLE_NODE", 'Node "y" cannot be reached from any trigger.', ("nodes", "2"), "y"
        ),
    ]


def test_long_chain_and_big_cycle_do_not_recurse() -> None:
    # given 20,000 nodes in one big cycle (above the default limits, so raise them)
    count = 20_000
    graph = {
        "nodes": [node("n0", "trigger")] + [node(f"n{i}") for i in range(1, count)],
        "edges": [edge(f"e{i}", f"n{i}", f"n{(i + 1) % count}") for i in range(count)],
    }
    # when
    diagnostics = validate_graph(graph, GraphLimits(max_nodes=count, max_edges=count))
    # then every node is on the cycle, and all are reachable
    assert [d.node_id for d in diagnostics] == [f"n{i}" for i in range(count)]
    assert {d.code for d in diagnostics} == {"CYCLE"}


# --- has_errors and performance ----------------------------------------------------------


def test_has_errors() -> None:
    # given
    warning = warn("NO_TRIGGER", "x", ())
    error = err("ID_MISSING", "y", ("nodes", "0", "id"))
    # when / then
    assert has_errors([]) is False
    assert has_errors([warning]) is False
    assert has_errors([warning, error]) is True
    assert has_errors(iter([error])) is True


def test_diagnostics_are_immutable_values() -> None:
    # given
    diagnostic = err("ID_MISSING", "y", ("nodes", "0", "id"))
    # when / then
    with pytest.raises(AttributeError):
        diagnostic.code = "OTHER"  # type: ignore[misc]
    assert Severity.ERROR == "ERROR"
    assert GraphLimits() == GraphLimits(500, 2000, 32, 100_000, 200)


def test_a_full_size_graph_at_the_limits_is_sound() -> None:
    # given 500 nodes with realistic data and 1,000 edges (a chain plus extra edges forward)
    nodes = [
        node(
            f"n{i}",
            "trigger" if i == 0 else "action",
            data={"label": f"Step {i}", "config": {"url": "https://x.test", "retries": 3}},
            measured={"width": 150, "height": 40},
        )
        for i in range(500)
    ]
    edges = [edge(f"c{i}", f"n{i}", f"n{i + 1}") for i in range(499)]
    edges += [edge(f"f{i}", f"n{i % 250}", f"n{250 + i % 250}") for i in range(501)]
    graph = {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 1}}
    # when (its speed is measured by bench/, never in a unit test)
    diagnostics = validate_graph(graph)
    # then
    assert diagnostics == []
