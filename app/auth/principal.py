"""The signed-in caller and the role checks every service applies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from app.errors import Forbidden, NotFound
from app.models import Role, User


@dataclass(slots=True)
class Principal:
    """A signed-in user with their role in each of their workspaces."""

    user: User
    roles: dict[uuid.UUID, Role] = field(default_factory=dict)
    # The API token the caller signed in with (None from the command line): the audit
    # trail records it beside the user.
    token_id: uuid.UUID | None = None
    # When that token stops working (None: never, or no token).
    expires_at: datetime | None = None

    @property
    def user_id(self) -> uuid.UUID:
        """The user's id."""
        return self.user.id

    def role_in(self, workspace_id: uuid.UUID) -> Role | None:
        """The caller's role in a workspace, or None when not a member."""
        return self.roles.get(workspace_id)

    def require(self, workspace_id: uuid.UUID, needed: Role, what: str = "Workspace") -> Role:
        """Check access: outsiders get NotFound (never a hint), weaker roles get Forbidden."""
        role = self.roles.get(workspace_id)
        if role is None:
            raise NotFound(what)
        if not role.allows(needed):
            raise Forbidden(
                f"This needs the {needed.value} role in the workspace; you are {role.value}."
            )
        return role
