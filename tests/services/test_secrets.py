"""The secrets service: a value opens only in the row and workspace it was sealed for."""

from __future__ import annotations

from starlette.applications import Starlette

from app.services.secrets import open_secrets
from tests.factories import Factory
from tests.secrets import owner_with_secrets

API_KEY = "sk-live-4f9a7c1e2b8d6f30"


async def test_ciphertext_moved_to_another_row_or_workspace_does_not_open(
    factory: Factory, app: Starlette
) -> None:
    keyring = app.state.runtime.keyring
    acme = await owner_with_secrets(factory, "Acme", API_KEY=API_KEY, OTHER="other-value")
    globex = await owner_with_secrets(factory, "Globex", API_KEY="globex-value")
    # Copy Acme's API_KEY ciphertext over Acme's OTHER and over Globex's API_KEY
    await factory.execute(
        """UPDATE secrets s SET nonce = src.nonce, ciphertext = src.ciphertext, key_id = src.key_id
           FROM secrets src
           WHERE src.name = 'API_KEY' AND src.workspace_id = :acme
             AND ((s.workspace_id = :acme AND s.name = 'OTHER') OR s.workspace_id = :globex)""",
        acme=acme.workspace.id,
        globex=globex.workspace.id,
    )
    async with app.state.runtime.sessions() as session:
        acme_values = await open_secrets(session, keyring=keyring, workspace_id=acme.workspace.id)
        globex_values = await open_secrets(
            session, keyring=keyring, workspace_id=globex.workspace.id
        )
    assert acme_values == {"API_KEY": API_KEY}
    assert globex_values == {}
