"""Inputs of the secret mutations."""

from __future__ import annotations

import strawberry


@strawberry.input(description="Create or replace a workspace secret (owners only).")
class SecretSetInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    name: str = strawberry.field(
        description="Letters, digits and underscores, not starting with a digit; at most 100."
    )
    value: str = strawberry.field(description="The value, 4 to 65,536 characters; never returned.")


@strawberry.input(description="Delete a workspace secret (owners only).")
class SecretDeleteInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    name: str = strawberry.field(description="The secret's name.")
