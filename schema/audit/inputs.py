"""The audit trail's filter."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from app.errors import ErrorCode, InputErrors
from app.services.audit import AuditFilter
from schema.audit.types import OBJECT_KINDS, AuditAction
from schema.ids import decode_any


@strawberry.input(description="Which audit events to list; every given condition must hold.")
class AuditEventFilter:
    action: AuditAction | None = strawberry.field(
        default=None, description="Only this kind of change."
    )
    actor_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only changes by this user."
    )
    object_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Only changes to this object (a workflow, run, member, token, workspace or "
        "secret id; a deleted workflow's id still finds its history).",
    )
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="At or after this time (with a time zone)."
    )
    to: datetime | None = strawberry.field(
        default=None, description="Before this time (with a time zone)."
    )


def audit_filter(given: AuditEventFilter | None) -> AuditFilter:
    """The service's filter; ids that are not ids are INVALID (unknown ones match nothing)."""
    if given is None:
        return AuditFilter()
    actor_id = None
    if given.actor_id is not None:
        decoded = decode_any(given.actor_id)
        if decoded is None or decoded[0] != "User":
            raise InputErrors.single(("filter", "actorId"), ErrorCode.INVALID, "Not a user id.")
        try:
            actor_id = uuid.UUID(decoded[1])
        except ValueError as error:
            raise InputErrors.single(
                ("filter", "actorId"), ErrorCode.INVALID, "Not a user id."
            ) from error
    object_id = None
    if given.object_id is not None:
        decoded = decode_any(given.object_id)
        if decoded is None or decoded[0] not in OBJECT_KINDS.values():
            raise InputErrors.single(
                ("filter", "objectId"), ErrorCode.INVALID, "Not the id of an audited object."
            )
        object_id = decoded[1]
    return AuditFilter(
        action=given.action,
        actor_id=actor_id,
        object_id=object_id,
        since=given.from_,
        until=given.to,
    )
