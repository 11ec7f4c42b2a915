"""Helpers for webhook tests: configure a workflow's webhook through GraphQL, sign deliveries."""

from __future__ import annotations

import time

from app.services.webhooks import signature
from tests.factories import Account, Factory
from tests.runs import create_workflow, flow, node

UPDATE = """mutation($i: WorkflowWebhookUpdateInput!) { workflowWebhookUpdate(input: $i) {
  webhook { enabled url requireSignature waitForResult signingSecret }
  userErrors { field code message } } }"""
READ = """query($id: ID!) { workflow(id: $id) { id webhook {
  enabled url requireSignature waitForResult signingSecret } } }"""

GREETING = flow(
    node("start", "trigger"),
    node("hello", "text.format", template="Hello {{ input.name }}!"),
    node("out", "output", value="{{ input }}"),
)
ECHO = flow(node("start", "trigger"), node("out", "output", value="{{ input }}"))
NOT_FOUND = {"error": {"code": "NOT_FOUND", "message": "No such webhook."}}


async def update(factory: Factory, account: Account, workflow_id: str, **options: object) -> dict:
    """The raw workflowWebhookUpdate response body (the webhook enabled unless ``options``
    say otherwise)."""
    variables = {"i": {"workflowId": workflow_id, "enabled": True, **options}}
    return await factory.gql(UPDATE, variables, token=account.token)


async def enable(factory: Factory, account: Account, workflow_id: str, **options: object) -> dict:
    """The webhook after a workflowWebhookUpdate that must succeed."""
    body = await update(factory, account, workflow_id, **options)
    assert "errors" not in body, body
    payload = body["data"]["workflowWebhookUpdate"]
    assert payload["userErrors"] == []
    return payload["webhook"]


async def hooked_workflow(
    factory: Factory, graph: dict, **options: object
) -> tuple[Account, str, dict]:
    """A new owner, their workflow of ``graph``, and its webhook enabled with ``options``."""
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, graph)
    hook = await enable(factory, owner, workflow_id, **options)
    return owner, workflow_id, hook


def path_of(url: str) -> str:
    """The path of a webhook URL on the in-process test client."""
    return url.removeprefix("http://flowdeck.test")


def signed(secret: str, body: bytes, at: int | None = None) -> dict[str, str]:
    """Headers of a JSON delivery of ``body`` signed with ``secret`` (now, or at ``at``)."""
    timestamp = str(int(time.time()) if at is None else at)
    return {
        "content-type": "application/json",
        "x-flowdeck-timestamp": timestamp,
        "x-flowdeck-signature": signature(secret, timestamp, body),
    }
