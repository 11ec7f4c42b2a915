"""Benchmark data: a realistic React Flow graph of about 22 KB."""

from __future__ import annotations

import json
from typing import Any


def react_flow_graph(nodes: int = 40) -> dict[str, Any]:
    """A builder-sized graph: a trigger, a chain of HTTP/format/branch nodes, UI keys."""
    kinds = ["http.request", "text.format", "transform.set", "logic.if"]
    graph_nodes: list[dict[str, Any]] = [
        {
            "id": "trigger",
            "type": "trigger",
            "position": {"x": 0, "y": 0},
            "data": {"label": "Start", "inputSchema": {"type": "object", "properties": {}}},
            "measured": {"width": 180, "height": 48},
        }
    ]
    edges: list[dict[str, Any]] = []
    for i in range(1, nodes):
        kind = kinds[i % len(kinds)]
        graph_nodes.append(
            {
                "id": f"n{i}",
                "type": kind,
                "position": {"x": 280 * i, "y": (i % 3) * 120},
                "data": {
                    "label": f"Step {i}: {kind}",
                    "method": "POST",
                    "url": f"https://api.example.com/v1/items/{{{{ trigger.id }}}}/step/{i}",
                    "headers": {"Authorization": "Bearer {{ secrets.API_KEY }}", "X-Step": str(i)},
                    "template": "Item {{ input.name }} is {{ input.status }} after step " + str(i),
                    "retry": {"maxAttempts": 3, "backoffSeconds": 1.5, "backoffMultiplier": 2},
                },
                "measured": {"width": 220, "height": 72},
                "selected": False,
                "style": {"borderColor": "#5b8def"},
            }
        )
        edges.append(
            {
                "id": f"e{i}",
                "source": "trigger" if i == 1 else f"n{i - 1}",
                "target": f"n{i}",
                "sourceHandle": "out",
                "targetHandle": "in",
                "markerEnd": {"type": "arrowclosed"},
                "animated": False,
            }
        )
    return {"nodes": graph_nodes, "edges": edges, "viewport": {"x": 12, "y": -40, "zoom": 0.85}}


def graph_size(graph: dict[str, Any]) -> int:
    """Bytes of the compact JSON of a graph."""
    return len(json.dumps(graph, separators=(",", ":")).encode())
