"""GraphQL types of the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import strawberry
from strawberry.scalars import JSON

from app import models
from app.models import AuditAction as AuditActionModel
from app.models import AuditObjectType as AuditObjectTypeModel
from schema.context import Info
from schema.ids import encode_id
from schema.workspaces.types import User

AuditAction: TypeAlias = AuditActionModel
strawberry.enum(AuditAction, description="What kind of change it was.")
AuditObjectType: TypeAlias = AuditObjectTypeModel
strawberry.enum(AuditObjectType, description="What kind of object was changed.")

# The GraphQL kind of each object type's id (a member is a User; a secret is named).
OBJECT_KINDS = {
    AuditObjectTypeModel.WORKSPACE: "Workspace",
    AuditObjectTypeModel.MEMBER: "User",
    AuditObjectTypeModel.API_TOKEN: "ApiToken",
    AuditObjectTypeModel.WORKFLOW: "Workflow",
    AuditObjectTypeModel.SECRET: "Secret",
    AuditObjectTypeModel.RUN: "Run",
}


@strawberry.type(description="One change in a workspace: who, what, which object, when.")
class AuditEvent:
    row: strawberry.Private[models.AuditEvent]
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    at: datetime = strawberry.field(
        description="When the change was made (its transaction's start)."
    )
    action: AuditAction = strawberry.field(description="What kind of change.")
    object_type: AuditObjectType = strawberry.field(description="What kind of object.")
    object_id: strawberry.ID = strawberry.field(
        description="The object's id (it may no longer exist, e.g. a deleted workflow)."
    )
    summary: JSON = strawberry.field(
        description="A small description of the change (a save: its diff counts); never a "
        "secret's value."
    )
    actor_token_id: strawberry.ID | None = strawberry.field(
        description="The API token the change was made with (null from the command line)."
    )

    @strawberry.field(description="Who made the change (null when that user is gone).")
    async def actor(self, info: Info) -> User | None:
        if self.row.actor_user_id is None:
            return None
        row = await info.context.loaders.user_by_id.load(self.row.actor_user_id)
        return User.from_model(row) if row else None

    @classmethod
    def from_model(cls, row: models.AuditEvent) -> AuditEvent:
        """The type of a row."""
        token = row.actor_token_id
        return cls(
            row=row,
            id=strawberry.ID(encode_id("AuditEvent", row.id)),
            at=row.at,
            action=row.action,
            object_type=row.object_type,
            object_id=strawberry.ID(encode_id(OBJECT_KINDS[row.object_type], row.object_id)),
            summary=row.summary,
            actor_token_id=strawberry.ID(encode_id("ApiToken", token)) if token else None,
        )
