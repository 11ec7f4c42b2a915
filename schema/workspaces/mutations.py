"""Workspace administration: workspaces, members, API tokens."""

from __future__ import annotations

import strawberry

from app import models
from app.services import api_tokens as token_service
from app.services import workspaces as workspace_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id, encode_id
from schema.payloads import mutate
from schema.workspaces.inputs import (
    ApiTokenCreateInput,
    MemberRemoveInput,
    MemberSetInput,
    WorkspaceCreateInput,
    WorkspaceUpdateInput,
)
from schema.workspaces.types import ApiToken, Membership, Workspace


@strawberry.type(description="The new workspace, or why not.")
class WorkspaceCreatePayload:
    workspace: Workspace | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The workspace as it is now, or why not.")
class WorkspaceUpdatePayload:
    workspace: Workspace | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The id of the person taken out of the workspace, or why not.")
class MemberRemovePayload:
    removed_user_id: strawberry.ID | None = strawberry.field(description="Null on user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The membership as it is now, or why not.")
class MemberSetPayload:
    membership: Membership | None = strawberry.field(description="Null on user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The new token; `token` is its value, shown only here, once.")
class ApiTokenCreatePayload:
    api_token: ApiToken | None = strawberry.field(description="Null on user errors.")
    token: str | None = strawberry.field(description="Send as `Authorization: Bearer <token>`.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The id of the revoked token, or why not.")
class ApiTokenRevokePayload:
    revoked_id: strawberry.ID | None = strawberry.field(description="Null on user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type
class WorkspaceMutations:
    @strawberry.mutation(description="A new workspace; you become its OWNER.")
    async def workspace_create(
        self, info: Info, input: WorkspaceCreateInput
    ) -> WorkspaceCreatePayload:
        return await mutate(
            info,
            WorkspaceCreatePayload,
            lambda session, principal: workspace_service.create_workspace(
                session, principal=principal, name=input.name
            ),
            lambda workspace: {"workspace": Workspace.from_model(workspace)},
        )

    @strawberry.mutation(description="Give a person (created when unknown) a role; owners only.")
    async def member_set(self, info: Info, input: MemberSetInput) -> MemberSetPayload:
        workspace_id = decode_id("Workspace", input.workspace_id)

        def present(value: tuple[models.Membership, models.User]) -> dict[str, Membership]:
            membership, user = value
            info.context.loaders.user_by_id.prime(user.id, user)
            return {"membership": Membership.from_model(membership)}

        return await mutate(
            info,
            MemberSetPayload,
            lambda session, principal: workspace_service.set_member(
                session,
                principal=principal,
                workspace_id=workspace_id,
                email=input.email,
                role=input.role,
            ),
            present,
        )

    @strawberry.mutation(description="Rename a workspace or set its run retention; owners only.")
    async def workspace_update(
        self, info: Info, input: WorkspaceUpdateInput
    ) -> WorkspaceUpdatePayload:
        workspace_id = decode_id("Workspace", input.workspace_id)
        return await mutate(
            info,
            WorkspaceUpdatePayload,
            lambda session, principal: workspace_service.update_workspace(
                session,
                principal=principal,
                workspace_id=workspace_id,
                name=input.name,
                run_retention_days=input.run_retention_days,
            ),
            lambda workspace: {"workspace": Workspace.from_model(workspace)},
        )

    @strawberry.mutation(
        description="Take a person out of a workspace; owners only, and its last owner stays."
    )
    async def member_remove(self, info: Info, input: MemberRemoveInput) -> MemberRemovePayload:
        workspace_id = decode_id("Workspace", input.workspace_id)
        user_id = decode_id("User", input.user_id, "Member")
        return await mutate(
            info,
            MemberRemovePayload,
            lambda session, principal: workspace_service.remove_member(
                session, principal=principal, workspace_id=workspace_id, user_id=user_id
            ),
            lambda removed: {"removed_user_id": strawberry.ID(encode_id("User", removed))},
        )

    @strawberry.mutation(description="A new API token for yourself, shown once.")
    async def api_token_create(
        self, info: Info, input: ApiTokenCreateInput
    ) -> ApiTokenCreatePayload:
        return await mutate(
            info,
            ApiTokenCreatePayload,
            lambda session, principal: token_service.create_api_token(
                session,
                user=principal.user,
                name=input.name,
                expires_at=input.expires_at,
                principal=principal,
            ),
            lambda created: {
                "api_token": ApiToken.from_model(created.api_token),
                "token": created.token,
            },
        )

    @strawberry.mutation(
        description="Revoke one of your API tokens: it stops working on the next request, and "
        "open subscriptions signed in with it end within seconds."
    )
    async def api_token_revoke(self, info: Info, id: strawberry.ID) -> ApiTokenRevokePayload:
        token_id = decode_id("ApiToken", id, "API token")
        return await mutate(
            info,
            ApiTokenRevokePayload,
            lambda session, principal: token_service.revoke_api_token(
                session, user_id=principal.user_id, token_id=token_id, principal=principal
            ),
            lambda revoked: {"revoked_id": strawberry.ID(encode_id("ApiToken", revoked.id))},
        )
