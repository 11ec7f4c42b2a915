"""The webhook mutation."""

from __future__ import annotations

import strawberry

from app.services import webhooks as webhook_service
from schema.context import Info
from schema.errors import UserError
from schema.ids import decode_id
from schema.payloads import mutate
from schema.webhooks.inputs import WorkflowWebhookUpdateInput
from schema.webhooks.types import Webhook


@strawberry.type(description="The webhook as it is now, or why not.")
class WorkflowWebhookUpdatePayload:
    webhook: Webhook | None = strawberry.field(description="Null when there are user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(description="Create or change a workflow's webhook (editors).")
    async def workflow_webhook_update(
        self, info: Info, input: WorkflowWebhookUpdateInput
    ) -> WorkflowWebhookUpdatePayload:
        workflow_id = decode_id("Workflow", input.workflow_id)
        return await mutate(
            info,
            WorkflowWebhookUpdatePayload,
            lambda session, principal: webhook_service.update_webhook(
                session,
                principal=principal,
                keyring=info.context.runtime.keyring,
                workflow_id=workflow_id,
                enabled=input.enabled,
                require_signature=input.require_signature,
                wait_for_result=input.wait_for_result,
                rotate_signing_secret=input.rotate_signing_secret,
                rotate_url=input.rotate_url,
            ),
            lambda update: {"webhook": Webhook.from_model(update.webhook, update.signing_secret)},
        )
