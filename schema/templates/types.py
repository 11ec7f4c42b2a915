"""GraphQL type of a template."""

from __future__ import annotations

from typing import TypeAlias

import strawberry
from strawberry.scalars import JSON

from app.services.templates import Template as TemplateModel
from app.services.templates import TemplateSource as TemplateSourceModel
from schema.ids import encode_id

TemplateSource: TypeAlias = TemplateSourceModel
strawberry.enum(TemplateSource, description="Where a template comes from.")


def template_id(template: TemplateModel) -> str:
    """Gallery templates have their own IDs; workspace templates are their workflow's ID."""
    if template.source is TemplateSourceModel.BUILTIN:
        return encode_id("Template", template.key)
    return encode_id("Workflow", template.key)


@strawberry.type(description="A graph to start a workflow from.")
class Template:
    row: strawberry.Private[TemplateModel]

    @strawberry.field(description="Opaque ID; a workspace template's ID is its workflow's ID.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(template_id(self.row))

    @strawberry.field(description="Name.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="What it does.")
    def description(self) -> str:
        return self.row.description

    @strawberry.field(description="Gallery category.")
    def category(self) -> str | None:
        return self.row.category

    @strawberry.field(description="BUILTIN gallery or WORKSPACE template.")
    def source(self) -> TemplateSource:
        return self.row.source

    @strawberry.field(description="The graph a clone starts with.")
    def graph(self) -> JSON:
        return JSON(self.row.graph)
