"""Tests for app.engine.validation: the catalogue-aware warnings on top of the graph checks."""

from __future__ import annotations

from typing import Any

from app.engine.graph import Diagnostic, GraphLimits, Severity, validate_graph
from app.engine.validation import executable_problems, validate_workflow_graph

LIMITS = GraphLimits()


def node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "position": {"x": 0, "y": 0}, "data": data}


def edge(edge_id: str, source: str, target: str, **handles: Any) -> dict[str, Any]:
    return {"id": edge_id, "source": source, "target": target, **handles}


def warn(code: str, message: str, path: tuple[str, ...], **ids: str) -> Diagnostic:
    return Diagnostic(Severity.WARNING, code, message, path, **ids)


def sound_graph() -> dict[str, Any]:
    return {
        "nodes": [
            node("start", "trigger", label="Start"),
            node("check", "logic.if", condition="{{ input.total > 100 }}"),
            node("route", "logic.switch", cases=[{"handle": "vip", "condition": "{{ true }}"}]),
            node("wait", "flow.delay", seconds="{{ input.wait }}"),
            node("join", "logic.merge", mode="list"),
            node("done", "output", value="{{ input }}"),
            node("stop", "flow.fail", message="Total {{ input.total }} is too small"),
        ],
        "edges": [
            edge("e1", "start", "check"),
            edge("e2", "check", "route", sourceHandle="true", targetHandle="in"),
            edge("e3", "check", "stop", sourceHandle="false"),
            edge("e4", "route", "wait", sourceHandle="vip"),
            edge("e5", "route", "join", sourceHandle="default"),
            edge("e6", "wait", "join", sourceHandle=None, targetHandle=None),
            edge("e7", "join", "done"),
        ],
        "viewport": {"x": 0, "y": 0, "zoom": 1},
    }


def test_a_sound_graph_has_no_diagnostics() -> None:
    assert validate_workflow_graph(sound_graph(), LIMITS) == []


def test_errors_of_the_structural_checks_are_returned_alone() -> None:
    # Given a graph with a structural error and a node of an unknown type
    graph = {"nodes": [node("a", "magic.box"), node("a", "trigger")], "edges": []}

    # When it is validated, then only the structural error is reported
    assert validate_workflow_graph(graph, LIMITS) == validate_graph(graph, LIMITS)
    assert [item.code for item in validate_workflow_graph(graph, LIMITS)] == ["ID_DUPLICATE"]


def test_an_unknown_node_type_is_a_warning() -> None:
    graph = sound_graph()
    graph["nodes"][3] = node("wait", "magic.box", seconds="oops")
    assert validate_workflow_graph(graph, LIMITS) == [
        warn(
            "UNKNOWN_NODE_TYPE",
            'Node "wait" has type "magic.box", which is not a known node type.',
            ("nodes", "3", "type"),
            node_id="wait",
        )
    ]


def test_config_errors_are_reported_at_their_fields() -> None:
    # Given nodes with a value out of range, a missing field and a bad nested value
    graph = sound_graph()
    graph["nodes"][3]["data"] = {"seconds": -1, "retry": {"maxAttempts": 0}}
    graph["nodes"][5]["data"] = {"label": "Done"}

    # When the graph is validated
    found = validate_workflow_graph(graph, LIMITS)

    # Then each error is a warning at the path of its field, with pydantic's message
    assert found == [
        warn(
            "INVALID_CONFIG",
            'Node "wait": retry.maxAttempts: Input should be greater than or equal to 1.',
            ("nodes", "3", "data", "retry", "maxAttempts"),
            node_id="wait",
        ),
        warn(
            "INVALID_CONFIG",
            'Node "wait": seconds: Input should be greater than 0.',
            ("nodes", "3", "data", "seconds"),
            node_id="wait",
        ),
        warn(
            "INVALID_CONFIG",
            'Node "done": value: Field required.',
            ("nodes", "5", "data", "value"),
            node_id="done",
        ),
    ]


def test_a_field_holding_an_expression_may_have_any_type() -> None:
    # Given expressions where an object, a number and a mode are expected
    graph = sound_graph()
    graph["nodes"][4]["data"] = {"mode": "{{ input.mode }}", "retry": "{{ input.retry }}"}
    graph["nodes"][3]["data"] = {"seconds": "wait {{ input.wait }} s"}

    # When the graph is validated, then nothing is reported
    assert validate_workflow_graph(graph, LIMITS) == []


def test_a_config_error_beside_an_expression_is_still_reported() -> None:
    graph = sound_graph()
    graph["nodes"][2]["data"] = {
        "cases": [
            {"handle": "vip", "condition": "{{ input.vip }}"},
            {"handle": "vip", "condition": "{{ true }}"},
        ]
    }
    assert validate_workflow_graph(graph, LIMITS) == [
        warn(
            "INVALID_CONFIG",
            "Node \"route\": cases: Value error, the case handle 'vip' is used twice.",
            ("nodes", "2", "data", "cases"),
            node_id="route",
        )
    ]


def test_expression_syntax_errors_are_reported_at_their_strings() -> None:
    # Given a node with a bad expression nested in its data
    graph = sound_graph()
    graph["nodes"][5]["data"] = {"value": {"items": ["ok", "{{ input.total + }}"]}}

    # When the graph is validated
    found = validate_workflow_graph(graph, LIMITS)

    # Then the syntax error is a warning at the string's path
    assert [(item.code, item.path, item.node_id) for item in found] == [
        ("EXPRESSION_SYNTAX", ("nodes", "5", "data", "value", "items", "1"), "done")
    ]
    assert found[0].message.startswith(
        'Node "done": Syntax error in {{ input.total + }}: ERROR: <input>:1:14: Syntax error:'
    )


def test_unknown_handles_are_reported_per_edge() -> None:
    # Given edges by handles their nodes do not have, out of nodes without outputs, into a trigger
    graph = sound_graph()
    graph["edges"][1]["sourceHandle"] = "maybe"
    graph["edges"][3]["sourceHandle"] = "gold"
    graph["edges"][5]["targetHandle"] = "side"
    graph["edges"].append(edge("e8", "done", "stop"))
    graph["edges"].append(edge("e9", "stop", "start", sourceHandle="out"))

    # When the graph is validated (after the graph checks' own warnings: now there is a cycle)
    found = validate_workflow_graph(graph, LIMITS)

    # Then each bad end of an edge is reported, in edge order
    assert [item.code for item in found[:7]] == ["CYCLE"] * 7
    assert found[7:] == [
        warn(
            "UNKNOWN_HANDLE",
            'Edge "e2": node "check" has no handle "maybe"; its outputs are "true", "false".',
            ("edges", "1", "sourceHandle"),
            edge_id="e2",
        ),
        warn(
            "UNKNOWN_HANDLE",
            'Edge "e4": node "route" has no handle "gold"; its outputs are "vip", "default".',
            ("edges", "3", "sourceHandle"),
            edge_id="e4",
        ),
        warn(
            "UNKNOWN_HANDLE",
            'Edge "e6": node "join" has no handle "side"; its inputs are "in".',
            ("edges", "5", "targetHandle"),
            edge_id="e6",
        ),
        warn(
            "UNKNOWN_HANDLE",
            'Edge "e8": node "done" has no outputs: a node of type "output" has none.',
            ("edges", "7", "sourceHandle"),
            edge_id="e8",
        ),
        warn(
            "UNKNOWN_HANDLE",
            'Edge "e9": node "stop" has no outputs: a node of type "flow.fail" has none.',
            ("edges", "8", "sourceHandle"),
            edge_id="e9",
        ),
        warn(
            "UNKNOWN_HANDLE",
            'Edge "e9": node "start" has no inputs: a node of type "trigger" has none.',
            ("edges", "8", "targetHandle"),
            edge_id="e9",
        ),
    ]


def test_node_warnings_come_before_edge_warnings_after_the_graph_checks() -> None:
    # Given an unreachable node of an unknown type and an edge by an unknown handle
    graph = sound_graph()
    graph["nodes"].append(node("lost", "magic.box"))
    graph["edges"][2]["sourceHandle"] = "nope"

    # When the graph is validated
    found = validate_workflow_graph(graph, LIMITS)

    # Then the graph checks' warning comes first, then the node's, then the edge's
    assert [(item.code, item.node_id, item.edge_id) for item in found] == [
        ("UNREACHABLE_NODE", "lost", None),
        ("UNKNOWN_NODE_TYPE", "lost", None),
        ("UNKNOWN_HANDLE", None, "e3"),
    ]


def test_edges_of_nodes_of_unknown_types_are_not_checked_for_handles() -> None:
    graph = sound_graph()
    graph["nodes"][6]["type"] = "magic.box"
    graph["edges"][2]["sourceHandle"] = "false"
    graph["edges"].append(edge("e8", "stop", "done", sourceHandle="anything"))
    codes = [item.code for item in validate_workflow_graph(graph, LIMITS)]
    assert codes == ["UNKNOWN_NODE_TYPE"]


def test_every_diagnostic_blocks_execution() -> None:
    # Given an error and a warning
    error = Diagnostic(Severity.ERROR, "ID_MISSING", "Node #0 has no id.", ("nodes", "0", "id"))
    warning = warn("CYCLE", 'Node "a" is part of a cycle.', ("nodes", "0"), node_id="a")

    # When the problems blocking execution are picked, then both are
    assert executable_problems([error, warning]) == [error, warning]
    assert executable_problems([]) == []
