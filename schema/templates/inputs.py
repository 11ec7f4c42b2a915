"""Inputs of the template mutations."""

from __future__ import annotations

import strawberry


@strawberry.input(description="Start a workflow from a template.")
class TemplateCloneInput:
    template_id: strawberry.ID = strawberry.field(description="A template's ID.")
    workspace_id: strawberry.ID = strawberry.field(description="Where the new workflow goes.")
    name: str | None = strawberry.field(
        default=None, description="The new workflow's name; default the template's (made unique)."
    )
