"""Inputs of workspace administration."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schema.workspaces.types import Role


@strawberry.input(description="A new workspace; you become its owner.")
class WorkspaceCreateInput:
    name: str = strawberry.field(description="Display name.")


@strawberry.input(description="Give someone a role in a workspace (owners only).")
class MemberSetInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    email: str = strawberry.field(description="The person; created when unknown.")
    role: Role = strawberry.field(description="Their new role.")


@strawberry.input(description="Change a workspace's settings (owners only).")
class WorkspaceUpdateInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    name: str | None = strawberry.field(default=None, description="A new display name.")
    run_retention_days: int | None = strawberry.field(
        default=None,
        description="Keep finished runs this many days (1 to 3650; the default is 90).",
    )


@strawberry.input(description="Take a person out of a workspace (owners only).")
class MemberRemoveInput:
    workspace_id: strawberry.ID = strawberry.field(description="The workspace.")
    user_id: strawberry.ID = strawberry.field(description="The member to remove.")


@strawberry.input(description="A new API token for yourself.")
class ApiTokenCreateInput:
    name: str = strawberry.field(description="What it is for, e.g. 'CI deploy script'.")
    expires_at: datetime | None = strawberry.field(
        default=None, description="When it stops working (with a time zone); never when null."
    )
