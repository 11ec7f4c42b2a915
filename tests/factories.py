"""Factories: real rows through the services, and a GraphQL caller over real HTTP."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import Principal
from app.db import session_factory
from app.models import Membership, Role, User, Workspace
from app.services.api_tokens import create_api_token
from app.services.users import get_or_create_user
from app.services.workspaces import create_workspace
from bench.wire import StatementCounter
from schema.ids import encode_id

_counter = itertools.count(1)


@dataclass
class Account:
    """A user with a token and a role in a workspace."""

    user: User
    token: str
    workspace: Workspace
    role: Role

    @property
    def workspace_id(self) -> str:
        """The workspace's GraphQL ID."""
        return encode_id("Workspace", self.workspace.id)


class Factory:
    """Creates committed data and calls the API as a given token."""

    def __init__(self, engine: AsyncEngine, client: httpx.AsyncClient) -> None:
        self.engine = engine
        self.client = client
        self.sessions = session_factory(engine)

    async def user(self, email: str | None = None) -> User:
        """A committed user."""
        async with self.sessions() as session:
            user = await get_or_create_user(
                session, email=email or f"user{next(_counter)}@example.com"
            )
            await session.commit()
            return user

    async def token(self, user: User) -> str:
        """A committed API token for ``user``."""
        async with self.sessions() as session:
            created = await create_api_token(session, user=user, name="test", expires_at=None)
            await session.commit()
            return created.token

    async def owner(self, workspace_name: str = "Acme") -> Account:
        """A new user owning a new workspace."""
        user = await self.user()
        async with self.sessions() as session:
            workspace = await create_workspace(
                session, principal=Principal(user=user), name=workspace_name
            )
            await session.commit()
        return Account(user, await self.token(user), workspace, Role.OWNER)

    async def member(self, of: Account, role: Role) -> Account:
        """A new user with ``role`` in the workspace of ``of``."""
        user = await self.user()
        async with self.sessions() as session:
            session.add(Membership(workspace_id=of.workspace.id, user_id=user.id, role=role))
            await session.commit()
        return Account(user, await self.token(user), of.workspace, role)

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """POST a GraphQL operation; returns the decoded response body (status 200 asserted)."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def scalar(self, statement: str, **params: Any) -> Any:
        """One value from SQL, for asserting what was (not) written."""
        async with self.engine.connect() as conn:
            return await conn.scalar(text(statement), params)

    async def rows(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        """Rows from SQL as dicts, for asserting what was (not) written."""
        async with self.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(text(statement), params)).mappings()]

    async def execute(self, statement: str, **params: Any) -> None:
        """Run and commit SQL (to set up states the API cannot reach directly)."""
        async with self.engine.begin() as conn:
            await conn.execute(text(statement), params)

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        """The SQL statements the engine sends while the block runs (to count them)."""
        sent: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(statement)

        event.listen(self.engine.sync_engine, "before_cursor_execute", record)
        try:
            yield sent
        finally:
            event.remove(self.engine.sync_engine, "before_cursor_execute", record)

    async def snapshot(self) -> dict[str, int | str]:
        """Row counts of every table, and digests of the mutable ones' contents, to assert
        that a refused call wrote nothing."""
        tables = [
            "users",
            "api_tokens",
            "workspaces",
            "memberships",
            "workflows",
            "workflow_versions",
            "runs",
            "run_steps",
            "run_events",
            "procrastinate_jobs",
            "secrets",
            "webhooks",
            "schedule_fires",
            "audit_events",
        ]
        digested = ["workflows", "secrets", "webhooks", "workspaces", "memberships"]
        async with self.engine.connect() as conn:
            counts: dict[str, int | str] = {
                t: int(await conn.scalar(text(f"SELECT count(*) FROM {t}"))) for t in tables
            }
            for t in digested:
                counts[f"{t} digest"] = str(
                    await conn.scalar(
                        text(
                            f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {t} t"
                        )
                    )
                )
            return counts


def gid(kind: str, key: uuid.UUID | str) -> str:
    """A GraphQL ID, as the API would give it."""
    return encode_id(kind, key)


@dataclass
class Wire:
    """GraphQL calls to an app whose database connections pass through ``counter``."""

    factory: Factory
    counter: StatementCounter

    async def statements(
        self, query: str, variables: dict[str, Any], *, token: str
    ) -> tuple[int, dict[str, Any]]:
        """The SQL statements one call sent (on the wire, whichever library sent them), and
        its answer."""
        with self.counter.counting() as sent:
            body = await self.factory.gql(query, variables, token=token)
        assert "errors" not in body, body
        return sent[0], body
