"""The template gallery as the service ships it: every built-in template is sound."""

from __future__ import annotations

from app.engine.graph import Severity, validate_graph
from app.engine.validation import validate_workflow_graph
from app.services.templates import builtin_templates
from tests.runs import NODE_TYPES


def test_the_gallery_ships_at_least_eight_sound_templates() -> None:
    templates = builtin_templates()

    assert len(templates) >= 8
    assert len({t.key for t in templates}) == len(templates)
    for template in templates:
        assert template.name
        assert template.description
        assert template.category
        # Checked against the catalogue: every node's config matches its type, no warning.
        assert validate_workflow_graph(template.graph) == [], template.key
        types = {node["type"] for node in template.graph["nodes"]}
        assert types <= NODE_TYPES, template.key
    used = {node["type"] for t in templates for node in t.graph["nodes"]}
    assert used == NODE_TYPES
    assert all(d.severity is not Severity.ERROR for t in templates for d in validate_graph(t.graph))
