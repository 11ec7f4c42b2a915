"""The builder's contract validates against the schema, and schema.graphql is current."""

from __future__ import annotations

from pathlib import Path

from graphql import DocumentNode, parse, validate
from strawberry.printer import print_schema

from schema import schema

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "tests" / "contract" / "builder.graphql"
SHARED_CONTRACT = ROOT.parent / "shared" / "contract" / "builder.graphql"

# The operations this code serves in full: every operation of the contract.
COVERED = {
    "Viewer",
    "WorkflowList",
    "WorkflowEditor",
    "WorkflowHistory",
    "WorkflowVersion",
    "WorkflowDiff",
    "ValidateGraph",
    "WorkflowCreate",
    "WorkflowSave",
    "WorkflowRollback",
    "WorkflowDelete",
    "Templates",
    "TemplateClone",
    "WorkflowSetTemplate",
    "WorkspaceCreate",
    "MemberSet",
    "ApiTokenCreate",
    "WorkflowExecute",
    "RunCancel",
    "RunRetry",
    "RunList",
    "RunDetail",
    "RunProgress",
    "WorkflowRuns",
    "WorkflowWebhookUpdate",
    "Secrets",
    "SecretSet",
    "SecretDelete",
    "WorkflowScheduleUpdate",
    "WorkflowPublish",
    "WorkflowUnpublish",
    "NodeTest",
    "WorkspaceRuns",
    "AuditEvents",
    "MemberRemove",
    "ApiTokens",
    "ApiTokenRevoke",
}


def covered_document() -> DocumentNode:
    document = parse(CONTRACT.read_text())
    operations = [
        d
        for d in document.definitions
        if d.kind != "operation_definition" or (d.name and d.name.value in COVERED)  # type: ignore[attr-defined]
    ]
    return DocumentNode(definitions=tuple(operations))


def test_the_contract_copy_is_current() -> None:
    if SHARED_CONTRACT.exists():
        assert CONTRACT.read_text() == SHARED_CONTRACT.read_text()


def test_every_covered_operation_exists_in_the_contract() -> None:
    names = {
        d.name.value  # type: ignore[attr-defined]
        for d in parse(CONTRACT.read_text()).definitions
        if d.kind == "operation_definition"
    }
    assert names >= COVERED


def test_the_covered_contract_operations_validate_against_the_schema() -> None:
    document = covered_document()

    errors = validate(schema._schema, document)

    assert [e.message for e in errors] == []
    assert len([d for d in document.definitions if d.kind == "operation_definition"]) == len(
        COVERED
    )


def test_schema_graphql_is_the_current_export() -> None:
    exported = (ROOT / "schema.graphql").read_text()

    assert exported == print_schema(schema) + "\n", "run: python -m schema > schema.graphql"
