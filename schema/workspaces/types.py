"""GraphQL types of workspaces, users and memberships."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import strawberry
from psycopg_pool import AsyncConnectionPool

from app import models
from app.models import Role as RoleModel
from app.services import reads
from app.services import secrets as secret_service
from app.services.api_tokens import ApiTokenInfo
from app.services.records import UserRecord, WorkspaceRecord
from schema.context import Info
from schema.ids import encode_id
from schema.pagination import Connection, connection
from schema.selection import columns_for, selected_names

if TYPE_CHECKING:
    from schema.audit.inputs import AuditEventFilter
    from schema.audit.types import AuditEvent
    from schema.runs.inputs import RunFilter
    from schema.runs.types import Run
    from schema.secrets.types import Secret
    from schema.workflows.types import Workflow

# What a lean row's unread timestamp column reads as; never shown (its field was not asked).
NEVER = datetime.min.replace(tzinfo=UTC)

Role: TypeAlias = RoleModel
strawberry.enum(Role, description="A member's role, weakest first.")


@strawberry.type(description="A person.")
class User:
    row: strawberry.Private[models.User | UserRecord]
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    email: str = strawberry.field(description="Email address (lower case).")
    name: str = strawberry.field(description="Display name.")

    @classmethod
    def from_model(cls, row: models.User | UserRecord) -> User:
        """The type of a row."""
        return cls(
            row=row, id=strawberry.ID(encode_id("User", row.id)), email=row.email, name=row.name
        )


@strawberry.type(description="A tenant: workflows, runs and secrets belong to one workspace.")
class Workspace:
    row: strawberry.Private[models.Workspace | WorkspaceRecord]
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    name: str = strawberry.field(description="Display name.")
    created_at: datetime = strawberry.field(description="When it was created.")
    run_retention_days: int = strawberry.field(
        description="Finished runs older than this many days are deleted with their steps and "
        "events (default 90; runs still queued or running are kept)."
    )

    @strawberry.field(description="Your role in this workspace.")
    async def viewer_role(self, info: Info) -> Role:
        principal = await info.context.principal()
        role = principal.role_in(self.row.id)
        assert role is not None
        return role

    @strawberry.field(description="Workflows, newest-updated first; `search` matches names.")
    async def workflows(
        self, info: Info, first: int = 20, after: str | None = None, search: str | None = None
    ) -> Connection[Annotated[Workflow, strawberry.lazy("schema.workflows.types")]]:
        from schema.workflows.types import Workflow, workflow_columns

        ctx = info.context
        principal = await ctx.principal()
        columns = workflow_columns(info, ("edges", "node"))
        async with ctx.runtime.pool.connection() as conn:
            page = await reads.read_workflow_page(
                conn,
                principal=principal,
                workspace_id=self.row.id,
                first=first,
                after=after,
                search=search,
                columns=columns,
            )
        return connection(
            page,
            Workflow.from_model,
            lambda: _count_workflows(ctx.runtime.pool, self.row.id, search),
        )

    @strawberry.field(description="Its secrets by name (editors and owners; never values).")
    async def secrets(
        self, info: Info
    ) -> list[Annotated[Secret, strawberry.lazy("schema.secrets.types")]]:
        from schema.secrets.types import Secret

        ctx = info.context
        rows = await secret_service.list_secrets(
            ctx.session, principal=await ctx.principal(), workspace_id=self.row.id
        )
        return [Secret.from_model(row) for row in rows]

    @strawberry.field(
        description="Runs of every workflow, newest queued first; `filter` narrows by status, "
        "workflow, trigger and time (each filter index-backed)."
    )
    async def runs(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        filter: Annotated[RunFilter, strawberry.lazy("schema.runs.inputs")] | None = None,
    ) -> Connection[Annotated[Run, strawberry.lazy("schema.runs.types")]]:
        from app.services import run_search
        from schema.runs.inputs import run_filter
        from schema.runs.types import Run

        ctx = info.context
        where = run_filter(filter)
        page = await run_search.search_runs(
            ctx.session,
            principal=await ctx.principal(),
            workspace_id=self.row.id,
            first=first,
            after=after,
            where=where,
        )
        workspace_id = self.row.id
        return connection(
            page,
            Run.from_model,
            lambda: run_search.count_runs(ctx.session, workspace_id=workspace_id, where=where),
        )

    @strawberry.field(description="What changed in this workspace, newest first (owners only).")
    async def audit_events(
        self,
        info: Info,
        first: int = 20,
        after: str | None = None,
        filter: Annotated[AuditEventFilter, strawberry.lazy("schema.audit.inputs")] | None = None,
    ) -> Connection[Annotated[AuditEvent, strawberry.lazy("schema.audit.types")]]:
        from app.services import audit
        from schema.audit.inputs import audit_filter
        from schema.audit.types import AuditEvent

        ctx = info.context
        where = audit_filter(filter)
        page = await audit.list_audit_events(
            ctx.session,
            principal=await ctx.principal(),
            workspace_id=self.row.id,
            first=first,
            after=after,
            where=where,
        )
        workspace_id = self.row.id
        return connection(
            page,
            AuditEvent.from_model,
            lambda: audit.count_audit_events(ctx.session, workspace_id=workspace_id, where=where),
        )

    @classmethod
    def from_model(cls, row: models.Workspace | WorkspaceRecord) -> Workspace:
        """The type of a row. A lean row holds only the columns its selection needs: the
        others are never shown."""
        return cls(
            row=row,
            id=strawberry.ID(encode_id("Workspace", row.id)),
            name=getattr(row, "name", ""),
            created_at=getattr(row, "created_at", NEVER),
            run_retention_days=getattr(row, "run_retention_days", 0),
        )


async def _count_workflows(
    pool: AsyncConnectionPool[Any], workspace_id: uuid.UUID, search: str | None
) -> int:
    async with pool.connection() as conn:
        return await reads.count_workflows(conn, workspace_id=workspace_id, search=search)


# The columns each field of a workspace needs besides its id.
WORKSPACE_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": (),
    "name": ("name",),
    "createdAt": ("created_at",),
    "runRetentionDays": ("run_retention_days",),
    "viewerRole": (),
    "workflows": (),
    "secrets": (),
    "runs": (),
    "auditEvents": (),
}


def workspace_columns(info: Info) -> frozenset[str]:
    """The workspace columns the selection under the current field needs."""
    return columns_for(selected_names(info), WORKSPACE_COLUMNS, WorkspaceRecord.selectable())


@strawberry.type(description="A user's role in a workspace.")
class Membership:
    row: strawberry.Private[models.Membership]

    @strawberry.field(description="The role.")
    def role(self) -> Role:
        return self.row.role

    @strawberry.field(description="The workspace.")
    async def workspace(self, info: Info) -> Workspace:
        row = await info.context.loaders.workspace_by_id.load(self.row.workspace_id)
        assert row is not None
        return Workspace.from_model(row)

    @strawberry.field(description="The member.")
    async def user(self, info: Info) -> User:
        row = await info.context.loaders.user_by_id.load(self.row.user_id)
        assert row is not None
        return User.from_model(row)

    @classmethod
    def from_model(cls, row: models.Membership) -> Membership:
        """The type of a row."""
        return cls(row=row)


@strawberry.type(description="An API token: its name and dates (its value is shown only once).")
class ApiToken:
    id: strawberry.ID = strawberry.field(description="Opaque ID.")
    name: str = strawberry.field(description="What it is for.")
    created_at: datetime = strawberry.field(description="When it was created.")
    expires_at: datetime | None = strawberry.field(
        description="When it stops working; never when null."
    )
    last_used_at: datetime | None = strawberry.field(
        description="When it last signed a request in (to within five minutes); null if never."
    )

    @classmethod
    def from_model(cls, row: models.ApiToken | ApiTokenInfo) -> ApiToken:
        """The type of a token row, or of what may be shown of one."""
        return cls(
            id=strawberry.ID(encode_id("ApiToken", row.id)),
            name=row.name,
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
        )


@strawberry.type(description="The signed-in user.")
class Viewer(User):
    @strawberry.field(description="Your API tokens, newest first (never their values).")
    async def api_tokens(self, info: Info) -> list[ApiToken]:
        from app.services.api_tokens import list_api_tokens

        rows = await list_api_tokens(info.context.session, user_id=self.row.id)
        return [ApiToken.from_model(row) for row in rows]

    @strawberry.field(description="Your workspaces and your role in each.")
    async def memberships(self, info: Info) -> list[Membership]:
        from app.services.workspaces import list_memberships

        rows = await list_memberships(info.context.session, user_id=self.row.id)
        return [Membership.from_model(row) for row in rows]

    @classmethod
    def from_model(cls, row: models.User | UserRecord) -> Viewer:
        """The type of a row."""
        return cls(
            row=row, id=strawberry.ID(encode_id("User", row.id)), email=row.email, name=row.name
        )
