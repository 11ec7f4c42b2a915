"""Inputs of the webhook mutation."""

from __future__ import annotations

import strawberry


@strawberry.input(description="Turn a workflow's webhook on or off and set how it behaves.")
class WorkflowWebhookUpdateInput:
    workflow_id: strawberry.ID = strawberry.field(description="The workflow.")
    enabled: bool = strawberry.field(description="Whether deliveries start runs.")
    require_signature: bool | None = strawberry.field(
        default=None,
        description="Require an HMAC signature; turning it on returns a new signingSecret "
        "once. Unchanged when null.",
    )
    wait_for_result: bool | None = strawberry.field(
        default=None,
        description="Answer with the run's output when it ends in time. Unchanged when null.",
    )
    rotate_signing_secret: bool = strawberry.field(
        default=False, description="Make (and return once) a new signing secret."
    )
    rotate_url: bool = strawberry.field(
        default=False, description="Give the webhook a new URL; the old one stops working."
    )
