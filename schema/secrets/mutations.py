"""Secret mutations: set and delete (owners only)."""

from __future__ import annotations

import strawberry

from app.services import secrets as secret_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id
from schema.payloads import mutate
from schema.secrets.inputs import SecretDeleteInput, SecretSetInput
from schema.secrets.types import Secret


@strawberry.type(description="The secret as it is now (without its value), or why not.")
class SecretSetPayload:
    secret: Secret | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type(description="The name of the deleted secret, or why not.")
class SecretDeletePayload:
    deleted_name: str | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type
class SecretMutations:
    @strawberry.mutation(description="Create or replace a secret; its value is encrypted.")
    async def secret_set(self, info: Info, input: SecretSetInput) -> SecretSetPayload:
        workspace_id = decode_id("Workspace", input.workspace_id)
        return await mutate(
            info,
            SecretSetPayload,
            lambda session, principal: secret_service.set_secret(
                session,
                principal=principal,
                keyring=info.context.runtime.keyring,
                workspace_id=workspace_id,
                name=input.name,
                value=input.value,
            ),
            lambda secret: {"secret": Secret.from_model(secret)},
        )

    @strawberry.mutation(description="Delete a secret; nodes using it then fail to find it.")
    async def secret_delete(self, info: Info, input: SecretDeleteInput) -> SecretDeletePayload:
        workspace_id = decode_id("Workspace", input.workspace_id)
        return await mutate(
            info,
            SecretDeletePayload,
            lambda session, principal: secret_service.delete_secret(
                session, principal=principal, workspace_id=workspace_id, name=input.name
            ),
            lambda name: {"deleted_name": name},
        )
