"""SQLModel tables; importing this package registers all of them on the metadata."""

from app.models.audit import AuditAction, AuditEvent, AuditObjectType
from app.models.base import utcnow
from app.models.event import TERMINAL_EVENTS, RunEvent, RunEventType
from app.models.run import Run, RunStatus, RunStep, RunTrigger, StepStatus
from app.models.schedule import FireOutcome, ScheduleFire, ScheduleOverlap
from app.models.secret import Secret
from app.models.user import ApiToken, User
from app.models.webhook import Webhook
from app.models.workflow import Workflow, WorkflowVersion
from app.models.workspace import DEFAULT_RUN_RETENTION_DAYS, Membership, Role, Workspace

__all__ = [
    "DEFAULT_RUN_RETENTION_DAYS",
    "TERMINAL_EVENTS",
    "ApiToken",
    "AuditAction",
    "AuditEvent",
    "AuditObjectType",
    "FireOutcome",
    "Membership",
    "Role",
    "Run",
    "RunEvent",
    "RunEventType",
    "RunStatus",
    "RunStep",
    "RunTrigger",
    "ScheduleFire",
    "ScheduleOverlap",
    "Secret",
    "StepStatus",
    "User",
    "Webhook",
    "Workflow",
    "WorkflowVersion",
    "Workspace",
    "utcnow",
]
