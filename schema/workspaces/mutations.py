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
from schema.payloads import mutate
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

    @strawberry.mutation(description="A new API token for yourself, shown once.")
    async def api_token_create(
        self, info: Info, input: ApiTokenCreateInput
    ) -> ApiTokenCreatePayload:
        return await mutate(
            info,
            ApiTokenCreatePayload,
            lambda session, principal: token_service.create_api_token(
                session, user=principal.user, name=input.name, expires_at=input.expires_at
            ),
            lambda created: {"api_token": ApiToken(row=created.api_token), "token": created.token},
        )
