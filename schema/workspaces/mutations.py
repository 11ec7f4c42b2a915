"""Workspace administration: workspaces, members, API tokens."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models
from app.services import api_tokens as token_service
from app.services import workspaces as workspace_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id, encode_id
from schema.workspaces.inputs import ApiTokenCreateInput, MemberSetInput, WorkspaceCreateInput
from schema.workspaces.types import Membership, Workspace


@strawberry.type(description="An API token (its value is shown only when created).")
class ApiToken:
    row: strawberry.Private[models.ApiToken]

    @strawberry.field(description="Opaque ID.")
    def id(self) -> strawberry.ID:
        return strawberry.ID(encode_id("ApiToken", self.row.id))

    @strawberry.field(description="What it is for.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="When it was created.")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="When it stops working; never when null.")
    def expires_at(self) -> datetime | None:
        return self.row.expires_at


@strawberry.type(description="The new workspace, or why not.")
class WorkspaceCreatePayload:
    workspace: Workspace | None = strawberry.field(description="Null when there are user errors.")
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


@strawberry.type
class WorkspaceMutations:
    @strawberry.mutation(description="A new workspace; you become its OWNER.")
    async def workspace_create(
        self, info: Info, input: WorkspaceCreateInput
    ) -> WorkspaceCreatePayload:
        outcome = await info.context.transact(
            lambda session, principal: workspace_service.create_workspace(
                session, principal=principal, name=input.name
            )
        )
        workspace = Workspace.from_model(outcome.value) if outcome.value else None
        return WorkspaceCreatePayload(workspace=workspace, user_errors=outcome.user_errors)

    @strawberry.mutation(description="Give a person (created when unknown) a role; owners only.")
    async def member_set(self, info: Info, input: MemberSetInput) -> MemberSetPayload:
        workspace_id = decode_id("Workspace", input.workspace_id)
        outcome = await info.context.transact(
            lambda session, principal: workspace_service.set_member(
                session,
                principal=principal,
                workspace_id=workspace_id,
                email=input.email,
                role=input.role,
            )
        )
        if outcome.value is None:
            return MemberSetPayload(membership=None, user_errors=outcome.user_errors)
        membership, user = outcome.value
        info.context.loaders.user_by_id.prime(user.id, user)
        return MemberSetPayload(membership=Membership.from_model(membership), user_errors=[])

    @strawberry.mutation(description="A new API token for yourself, shown once.")
    async def api_token_create(
        self, info: Info, input: ApiTokenCreateInput
    ) -> ApiTokenCreatePayload:
        outcome = await info.context.transact(
            lambda session, principal: token_service.create_api_token(
                session, user=principal.user, name=input.name, expires_at=input.expires_at
            )
        )
        if outcome.value is None:
            return ApiTokenCreatePayload(
                api_token=None, token=None, user_errors=outcome.user_errors
            )
        return ApiTokenCreatePayload(
            api_token=ApiToken(row=outcome.value.api_token),
            token=outcome.value.token,
            user_errors=[],
        )
