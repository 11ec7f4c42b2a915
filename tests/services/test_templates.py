"""The template gallery as the service ships it: every built-in template is sound."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.engine.graph import Severity, validate_graph
from app.engine.validation import secret_uses, validate_workflow_graph
from app.services.templates import builtin_template, builtin_templates
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


def _hosts(graph: dict) -> set[str]:
    """The literal hosts a graph's nodes call (URLs that are not expressions throughout)."""
    found = set()
    for node in graph["nodes"]:
        for field in ("url", "baseUrl"):
            url = node.get("data", {}).get(field)
            if isinstance(url, str) and not url.startswith("{{"):
                found.add(urlsplit(url).hostname)
    return found


def test_each_template_says_what_to_configure() -> None:
    # A clone of a template runs only once its secrets are set and its placeholder hosts
    # replaced: the description names each; one that needs neither says so
    for template in builtin_templates():
        secrets, hosts = set(secret_uses(template.graph)), _hosts(template.graph)
        for name in secrets | hosts:
            assert name in template.description, (template.key, name)
        if secrets:
            assert "an owner sets the secret" in template.description, template.key
        if hosts:
            assert "replaces the placeholder host" in template.description, template.key
        if not secrets and not hosts:
            assert "Needs no secret and no outside host" in template.description, template.key
    hello = builtin_template("hello")
    assert hello is not None
    assert (hello.name, set(secret_uses(hello.graph)), _hosts(hello.graph)) == (
        "Hello",
        set(),
        set(),
    )
    assert (
        sum(1 for t in builtin_templates() if not secret_uses(t.graph) and not _hosts(t.graph)) == 1
    )
