"""Webhooks: configure a workflow's hook, and turn a delivery into a durable run."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.engine.executor import NewRun
from app.engine.journal import Pool
from app.engine.plan import RunPlan
from app.errors import ErrorCode, InputErrors
from app.keyring import Keyring, Sealed, webhook_aad
from app.models import AuditAction, AuditObjectType, Role, RunStatus, RunTrigger, Webhook, Workflow
from app.services import audit
from app.services.graphs import GraphPolicy
from app.services.queue import RunQueue
from app.services.runs import born_run, input_digest, key_holder, queue_run
from app.services.workflows import get_workflow

SIGNATURE_SCHEME = "sha256"
MAX_DELIVERY_ID = 190  # + "webhook:" fits the 200 characters of an idempotency key
# Where a sender names a delivery, so that its retries are recognised (the first one found).
DELIVERY_HEADERS = ("x-flowdeck-delivery", "idempotency-key")


def new_token() -> str:
    """A webhook URL id: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_signing_secret() -> str:
    """A signing secret for HMAC-SHA256: 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value of a body: ``sha256=<hex HMAC of "timestamp.body">``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_SCHEME}={digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class WebhookUpdate:
    """The webhook after an update, and its signing secret when it was just made."""

    webhook: Webhook
    signing_secret: str | None


async def get_webhook(session: AsyncSession, *, workflow_id: uuid.UUID) -> Webhook | None:
    """The webhook of a workflow the caller has already been allowed to see."""
    return (
        await session.execute(select(Webhook).where(col(Webhook.workflow_id) == workflow_id))
    ).scalar_one_or_none()


async def update_webhook(
    session: AsyncSession,
    *,
    principal: Principal,
    keyring: Keyring,
    workflow_id: uuid.UUID,
    enabled: bool,
    require_signature: bool | None = None,
    wait_for_result: bool | None = None,
    rotate_signing_secret: bool = False,
    rotate_url: bool = False,
) -> WebhookUpdate:
    """Create or change a workflow's webhook (editors); a new signing secret is returned once."""
    workflow = await get_workflow(
        session, principal=principal, workflow_id=workflow_id, role=Role.EDITOR
    )
    # Two first updates may race: the loser's insert waits for the winner's and does nothing,
    # and both then change the one row under its lock.
    await session.execute(
        insert(Webhook)
        .values(
            id=uuid.uuid4(),
            workspace_id=workflow.workspace_id,
            workflow_id=workflow.id,
            token=new_token(),
            enabled=enabled,
            require_signature=False,
            wait_for_result=False,
            created_by_id=principal.user_id,
        )
        .on_conflict_do_nothing(index_elements=["workflow_id"])
    )
    hook = (
        await session.execute(
            select(Webhook)
            .where(col(Webhook.workflow_id) == workflow.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    hook.enabled = enabled
    if wait_for_result is not None:
        hook.wait_for_result = wait_for_result
    if rotate_url:
        hook.token = new_token()
    signing_secret: str | None = None
    signing = hook.require_signature if require_signature is None else require_signature
    if signing and (hook.signing_ciphertext is None or rotate_signing_secret):
        signing_secret = new_signing_secret()
        sealed = keyring.seal(signing_secret, webhook_aad(hook.workspace_id, hook.id))
        hook.signing_key_id = sealed.key_id
        hook.signing_nonce = sealed.nonce
        hook.signing_ciphertext = sealed.ciphertext
    elif not signing:
        # Off means no secret: turning signing on again makes (and shows) a new one.
        hook.signing_key_id = hook.signing_nonce = hook.signing_ciphertext = None
    hook.require_signature = signing
    hook.updated_at = (await session.execute(select(func.clock_timestamp()))).scalar_one()
    await session.flush()
    # Never the URL id or the signing secret: only what was switched, and what was renewed.
    await audit.record(
        session,
        principal=principal,
        workspace_id=workflow.workspace_id,
        action=AuditAction.WEBHOOK_UPDATE,
        object_type=AuditObjectType.WORKFLOW,
        object_id=workflow.id,
        summary={
            "enabled": hook.enabled,
            "requireSignature": hook.require_signature,
            "waitForResult": hook.wait_for_result,
            "rotatedUrl": rotate_url,
            "newSigningSecret": signing_secret is not None,
        },
    )
    return WebhookUpdate(webhook=hook, signing_secret=signing_secret)


# --- deliveries ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """An enabled webhook found by its URL id, with what a delivery needs of it."""

    token: str
    webhook_id: uuid.UUID
    workspace_id: uuid.UUID
    workflow_id: uuid.UUID
    require_signature: bool
    wait_for_result: bool
    signing_key_id: str | None
    signing_nonce: bytes | None
    signing_ciphertext: bytes | None
    # The version a delivery runs: the published one (None: nothing is published).
    version: int | None
    # The version of its workspace's secrets (what the run is given and redacts).
    secrets_version: int


FIND_TARGET = """
SELECT h.token, h.id, h.workspace_id, h.workflow_id, h.require_signature, h.wait_for_result,
       h.signing_key_id, h.signing_nonce, h.signing_ciphertext, w.published_version,
       s.secrets_version
FROM webhooks h JOIN workflows w ON w.id = h.workflow_id
JOIN workspaces s ON s.id = h.workspace_id
WHERE h.token = %s AND h.enabled
"""


async def find_delivery_target(pool: Pool, *, token: str) -> Delivery | None:
    """The enabled webhook with this URL id and its workflow; None when there is none."""
    async with pool.connection() as conn:
        row = await (await conn.execute(FIND_TARGET, (token,))).fetchone()
    return None if row is None else Delivery(*row)


# A delivery's run is written only while its webhook, workflow and secrets are still as the
# target found them: never from a disabled hook, an old signing secret or an old version, nor
# redacted with secrets that changed since.
STILL_TARGET = """EXISTS (
    SELECT 1 FROM webhooks h JOIN workflows w ON w.id = h.workflow_id
    JOIN workspaces s ON s.id = h.workspace_id
    WHERE h.id = %(p_hook)s AND h.token = %(p_token)s AND h.enabled
      AND h.require_signature = %(p_signed)s AND h.wait_for_result = %(p_wait)s
      AND h.signing_nonce IS NOT DISTINCT FROM %(p_nonce)s
      AND w.published_version = %(p_version)s AND s.secrets_version = %(p_secrets)s)"""


def still_target(target: Delivery) -> tuple[str, dict[str, Any]]:
    """The precondition a delivery's run is written under, and its parameters."""
    return STILL_TARGET, {
        "p_hook": target.webhook_id,
        "p_token": target.token,
        "p_signed": target.require_signature,
        "p_wait": target.wait_for_result,
        "p_nonce": target.signing_nonce,
        "p_version": target.version,
        "p_secrets": target.secrets_version,
    }


class DeliveryTargets:
    """Webhook targets by URL id, kept a few seconds per process.

    Safe to be stale: a run from a kept target is written only under ``still_target`` (in
    the same statement), and a target found changed is looked up again. Unknown URL ids are
    not kept (a stranger's guesses would fill the memory).
    """

    def __init__(self, seconds: float = 5.0, size: int = 10_000) -> None:
        self.seconds = seconds
        self.size = size
        self._kept: OrderedDict[str, tuple[float, Delivery]] = OrderedDict()

    async def find(self, pool: Pool, *, token: str, fresh: bool = False) -> Delivery | None:
        """The target of a URL id, from memory when it was found less than ``seconds`` ago."""
        now = time.monotonic()
        kept = None if fresh else self._kept.get(token)
        if kept is not None and now - kept[0] < self.seconds:
            return kept[1]
        target = await find_delivery_target(pool, token=token)
        if target is None or target.version is None:
            # Nothing published is not kept either: a publish takes effect at the next delivery.
            self._kept.pop(token, None)
            return target
        self._kept[token] = (now, target)
        self._kept.move_to_end(token)
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return target


def verify_signature(
    *,
    keyring: Keyring,
    target: Delivery,
    timestamp: str | None,
    given: str | None,
    body: bytes,
    now: float,
    tolerance: int,
) -> str | None:
    """None when the signature is valid and fresh, else why not (for the 401)."""
    if not timestamp or not given:
        return "Missing X-Flowdeck-Timestamp or X-Flowdeck-Signature."
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "X-Flowdeck-Timestamp must be Unix seconds."
    if abs(now - sent_at) > tolerance:
        return f"The timestamp is more than {tolerance} seconds from the server's clock."
    secret = keyring.open(
        Sealed(
            str(target.signing_key_id),
            bytes(target.signing_nonce or b""),
            bytes(target.signing_ciphertext or b""),
        ),
        webhook_aad(target.workspace_id, target.webhook_id),
    )
    expected = signature(secret, timestamp, body).encode()
    # Several signatures may be sent (comma-separated); any valid one will do.
    candidates = [part.strip().encode() for part in given.split(",")[:5]]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        return "The signature does not match the body."
    return None


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The delivery id a sender gave in its headers (None without one); InputErrors if unusable."""
    found = next((headers[name] for name in DELIVERY_HEADERS if name in headers), None)
    if found is None:
        return None
    if not 1 <= len(found) <= MAX_DELIVERY_ID:
        raise InputErrors.single(
            ("deliveryId",),
            ErrorCode.INVALID,
            f"A delivery id is 1 to {MAX_DELIVERY_ID} characters.",
        )
    if "\x00" in found:
        # Not storable in PostgreSQL text; uvicorn refuses it, other servers may not.
        raise InputErrors.single(
            ("deliveryId",), ErrorCode.INVALID, "A delivery id cannot contain NUL."
        )
    return found


def signed_delivery_id(timestamp: str, body: bytes) -> str:
    """The delivery id of a signed delivery sent without one: the digest of what its signature
    covers ("<timestamp>.<body>"), so a replay of it, as it was, is a repeat of it."""
    return "signed:" + hashlib.sha256(timestamp.encode() + b"." + body).hexdigest()


def idempotency_key(delivery: str | None) -> str | None:
    """The run idempotency key of a delivery id."""
    return None if delivery is None else f"webhook:{delivery}"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A delivery's run: new, or the earlier one of a repeated delivery id."""

    run_id: uuid.UUID
    status: RunStatus
    duplicate: bool


def published(target: Delivery) -> int:
    """The version a delivery runs; WORKFLOW_NOT_PUBLISHED when there is none."""
    if target.version is None:
        raise InputErrors.single(
            None,
            ErrorCode.WORKFLOW_NOT_PUBLISHED,
            "No version of this workflow is published; publish one to let its webhook run it.",
        )
    return target.version


async def new_delivery_run(
    session: AsyncSession,
    *,
    target: Delivery,
    input: Any,
    delivery: str | None,
    policy: GraphPolicy,
    max_input_bytes: int,
) -> tuple[NewRun, RunPlan]:
    """A delivery's run, in memory, for a driver here to start (InputErrors: it cannot run)."""
    new, plan = await born_run(
        session,
        precondition=still_target(target),
        workspace_id=target.workspace_id,
        workflow_id=target.workflow_id,
        version=published(target),
        input=input,
        idempotency_key=idempotency_key(delivery),
        policy=policy,
        max_input_bytes=max_input_bytes,
        trigger=RunTrigger.WEBHOOK,
    )
    return dataclasses.replace(new, secrets_version=target.secrets_version), plan


async def earlier_delivery(
    session: AsyncSession, *, target: Delivery, delivery: str, input: Any
) -> Accepted:
    """The run of an earlier delivery with this id (InputErrors when it is not a repeat)."""
    holder = await key_holder(
        session, workflow_id=target.workflow_id, idempotency_key=f"webhook:{delivery}"
    )
    if holder is None:  # taken by a run since deleted with its workflow: not ours to answer
        raise InputErrors.single(
            ("input", "deliveryId"), ErrorCode.IDEMPOTENCY_CONFLICT, "This delivery id is taken."
        )
    if holder.trigger is not RunTrigger.WEBHOOK:
        # A person's run whose idempotency key looks like a delivery's is not that delivery.
        raise InputErrors.single(
            ("input", "deliveryId"),
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "This delivery id was used by a run that no delivery started.",
        )
    if holder.input_hash != input_digest(input):
        raise InputErrors.single(
            ("input", "idempotencyKey"),
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "This idempotency key was used for a run with a different input or version.",
        )
    return Accepted(run_id=holder.id, status=holder.status, duplicate=True)


async def deliver(
    session: AsyncSession,
    *,
    queue: RunQueue,
    target: Delivery,
    input: Any,
    delivery: str | None,
    policy: GraphPolicy,
    max_input_bytes: int,
) -> Accepted:
    """Queue the run of a delivery for a worker (InputErrors when it cannot run, or its id
    was reused); the caller commits."""
    key = idempotency_key(delivery)
    if key is not None:
        # Deliveries of one id wait for each other here, so exactly one is told it was first.
        lock = func.hashtextextended(f"{target.workflow_id}:{key}", 0)
        await session.execute(select(func.pg_advisory_xact_lock(lock)))
        if delivery is not None and await key_holder(
            session, workflow_id=target.workflow_id, idempotency_key=key
        ):
            return await earlier_delivery(session, target=target, delivery=delivery, input=input)
    version = published(target)
    workflow = await session.get_one(Workflow, target.workflow_id)
    run = await queue_run(
        session,
        queue=queue,
        workflow=workflow,
        input=input,
        version=version,
        idempotency_key=key,
        policy=policy,
        max_input_bytes=max_input_bytes,
        trigger=RunTrigger.WEBHOOK,
        created_by_id=None,
    )
    return Accepted(run_id=run.id, status=run.status, duplicate=False)
