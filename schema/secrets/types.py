"""GraphQL types of secrets (never their values)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from app import models


@strawberry.type(description="A workspace secret: its value goes in and never comes out.")
class Secret:
    row: strawberry.Private[models.Secret]
    name: str = strawberry.field(description="Its name; use it as {{ secrets.NAME }}.")
    created_at: datetime = strawberry.field(description="When it was first set.")
    updated_at: datetime = strawberry.field(description="When its value was last set.")

    @classmethod
    def from_model(cls, row: models.Secret) -> Secret:
        """The type of a row."""
        return cls(row=row, name=row.name, created_at=row.created_at, updated_at=row.updated_at)
