"""GraphQL type of a webhook."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models
from app.models import Role
from schema.context import Info


@strawberry.type(description="A workflow's webhook: POST JSON to its URL to start a run.")
class Webhook:
    row: strawberry.Private[models.Webhook]
    signing_secret: str | None = strawberry.field(
        default=None,
        description="The HMAC signing secret: only in the payload of the workflowWebhookUpdate "
        "that made it (when signing was turned on, or the secret rotated); null elsewhere.",
    )

    @strawberry.field(description="Whether deliveries start runs (else they get 404).")
    def enabled(self) -> bool:
        return self.row.enabled

    @strawberry.field(
        description="Where to POST (its id is the credential); null for roles that cannot run "
        "the workflow."
    )
    async def url(self, info: Info) -> str | None:
        principal = await info.context.principal()
        role = principal.role_in(self.row.workspace_id)
        if role is None or role.rank < Role.MEMBER.rank:
            return None
        return f"{info.context.public_base_url()}/hooks/{self.row.token}"

    @strawberry.field(
        description="Deliveries must carry X-Flowdeck-Timestamp and X-Flowdeck-Signature: "
        "sha256=<hex HMAC-SHA256 of '<timestamp>.<raw body>'>; else 401."
    )
    def require_signature(self) -> bool:
        return self.row.require_signature

    @strawberry.field(
        description="Answer with the run's output when it ends within the server's bound "
        "(200), instead of 202 at once."
    )
    def wait_for_result(self) -> bool:
        return self.row.wait_for_result

    @strawberry.field(description="When it was made.")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="When it was last changed.")
    def updated_at(self) -> datetime:
        return self.row.updated_at

    @classmethod
    def from_model(cls, row: models.Webhook, signing_secret: str | None = None) -> Webhook:
        """The type of a row."""
        return cls(row=row, signing_secret=signing_secret)
