"""Workspace secrets: set, delete and list (names only); open them for a run; rotate keys."""

from __future__ import annotations

import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.auth.principal import Principal
from app.errors import ErrorCode, FieldError, InputErrors
from app.keyring import DecryptError, Keyring, KeyringError, Sealed, secret_aad, webhook_aad
from app.models import AuditAction, AuditObjectType, Role, Secret, Webhook, Workspace
from app.services import audit

log = logging.getLogger(__name__)

# An identifier, so that `{{ secrets.NAME }}` works in CEL.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME = 100
MAX_VALUE = 64 * 1024
# A shorter value would be redacted wherever its characters happen to appear in outputs.
MIN_VALUE = 4
# Every claim of a run decrypts all of a workspace's secrets and builds their redaction on a
# worker shared with other workspaces: these keep that to a fraction of a second.
MAX_SECRETS = 1000
MAX_TOTAL_BYTES = 1024 * 1024
GCM_TAG_BYTES = 16


# CEL's reserved words that cannot follow a dot: ``secrets.in`` does not parse.
RESERVED_NAMES = frozenset({"in", "true", "false", "null"})


def _check_name(name: str) -> list[FieldError]:
    if not 1 <= len(name) <= MAX_NAME or not NAME.fullmatch(name):
        return [
            FieldError(
                ("input", "name"),
                ErrorCode.INVALID,
                f"A secret's name is 1 to {MAX_NAME} letters, digits and underscores, not "
                "starting with a digit (it is used as secrets.NAME in expressions).",
            )
        ]
    if name in RESERVED_NAMES:
        return [
            FieldError(
                ("input", "name"),
                ErrorCode.INVALID,
                f'A secret cannot be named "{name}": secrets.{name} is not a valid expression.',
            )
        ]
    return []


def _check_value(value: str) -> list[FieldError]:
    if not MIN_VALUE <= len(value) <= MAX_VALUE:
        return [
            FieldError(
                ("input", "value"),
                ErrorCode.INVALID,
                f"A secret's value is {MIN_VALUE} to {MAX_VALUE} characters (shorter values "
                "cannot be redacted from outputs reliably).",
            )
        ]
    if not value.strip():
        return [
            FieldError(
                ("input", "value"),
                ErrorCode.INVALID,
                # It would be redacted from every output wherever that much whitespace appears.
                "A secret's value cannot be only whitespace.",
            )
        ]
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        return [
            FieldError(
                ("input", "value"),
                ErrorCode.INVALID,
                "A secret's value cannot contain NUL characters or lone surrogates.",
            )
        ]
    return []


async def _check_room(
    session: AsyncSession, *, workspace_id: uuid.UUID, name: str, value: str
) -> None:
    others, others_bytes = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(func.octet_length(col(Secret.ciphertext)) - GCM_TAG_BYTES), 0
                ),
            ).where(
                col(Secret.workspace_id) == workspace_id,
                col(Secret.name) != name,
            )
        )
    ).one()
    if others >= MAX_SECRETS:
        raise InputErrors.single(
            ("input", "name"),
            ErrorCode.INVALID,
            f"A workspace holds at most {MAX_SECRETS} secrets; delete one first.",
        )
    total = int(others_bytes) + len(value.encode())
    if total > MAX_TOTAL_BYTES:
        raise InputErrors.single(
            ("input", "value"),
            ErrorCode.INVALID,
            f"A workspace's secrets take at most {MAX_TOTAL_BYTES} bytes together (UTF-8); "
            f"with this value they would take {total}.",
        )


async def list_secrets(
    session: AsyncSession, *, principal: Principal, workspace_id: uuid.UUID
) -> list[Secret]:
    """The workspace's secrets by name (editors and owners; values are never read)."""
    principal.require(workspace_id, Role.EDITOR, "Workspace")
    rows = await session.execute(
        select(Secret).where(col(Secret.workspace_id) == workspace_id).order_by(col(Secret.name))
    )
    return list(rows.scalars())


async def set_secret(
    session: AsyncSession,
    *,
    principal: Principal,
    keyring: Keyring,
    workspace_id: uuid.UUID,
    name: str,
    value: str,
) -> Secret:
    """Create or replace a secret (owners only); the value is sealed, never stored in clear."""
    principal.require(workspace_id, Role.OWNER, "Workspace")
    errors = _check_name(name) + _check_value(value)
    if errors:
        raise InputErrors(errors)
    await _check_room(session, workspace_id=workspace_id, name=name, value=value)
    sealed = keyring.seal(value, secret_aad(workspace_id, name))
    statement = (
        insert(Secret)
        .values(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            name=name,
            key_id=sealed.key_id,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
            created_by_id=principal.user_id,
        )
        .on_conflict_do_update(
            index_elements=["workspace_id", "name"],
            set_={
                "key_id": sealed.key_id,
                "nonce": sealed.nonce,
                "ciphertext": sealed.ciphertext,
                "updated_at": func.clock_timestamp(),
            },
        )
        .returning(Secret)
    )
    secret = (await session.execute(statement)).scalar_one()
    await _changed(session, workspace_id)
    # The name only: the value never leaves the keyring.
    await audit.record(
        session,
        principal=principal,
        workspace_id=workspace_id,
        action=AuditAction.SECRET_SET,
        object_type=AuditObjectType.SECRET,
        object_id=name,
        summary={"name": name},
    )
    return secret


async def delete_secret(
    session: AsyncSession, *, principal: Principal, workspace_id: uuid.UUID, name: str
) -> str:
    """Delete a secret by name (owners only); NOT_FOUND when it does not exist."""
    principal.require(workspace_id, Role.OWNER, "Workspace")
    # Built apart: inline, mypy matches scalar()'s untyped overload and loses the str.
    statement = (
        delete(Secret)
        .where(col(Secret.workspace_id) == workspace_id, col(Secret.name) == name)
        .returning(col(Secret.name))
    )
    deleted = await session.scalar(statement)
    if deleted is None:
        raise InputErrors.single(
            ("input", "name"), ErrorCode.NOT_FOUND, f'No secret "{name}" in this workspace.'
        )
    await _changed(session, workspace_id)
    await audit.record(
        session,
        principal=principal,
        workspace_id=workspace_id,
        action=AuditAction.SECRET_DELETE,
        object_type=AuditObjectType.SECRET,
        object_id=deleted,
        summary={"name": deleted},
    )
    return deleted


async def open_secrets(
    session: AsyncSession, *, keyring: Keyring, workspace_id: uuid.UUID
) -> dict[str, str]:
    """Every secret of one workspace, decrypted (for a run of that workspace only)."""
    rows = await session.execute(
        select(
            col(Secret.name), col(Secret.key_id), col(Secret.nonce), col(Secret.ciphertext)
        ).where(col(Secret.workspace_id) == workspace_id)
    )
    values: dict[str, str] = {}
    for name, key_id, nonce, ciphertext in rows:
        try:
            values[name] = keyring.open(
                Sealed(key_id, nonce, ciphertext), secret_aad(workspace_id, name)
            )
        except DecryptError as error:
            # Left out: a node using it fails with "not set", and the log says why.
            log.error(
                "secret cannot be decrypted",
                extra={"workspace_id": str(workspace_id), "secret": name, "reason": str(error)},
            )
    return values


class WorkspaceSecrets:
    """The decrypted secrets of workspaces, kept per process until they change.

    A workspace's ``secrets_version`` goes up with every set and delete; what is kept is
    keyed by it, so a run never sees secrets older than the version it was given (or read).
    """

    def __init__(self, keyring: Keyring, size: int = 256) -> None:
        self.keyring = keyring
        self.size = size
        self._kept: OrderedDict[uuid.UUID, tuple[int, dict[str, str]]] = OrderedDict()

    async def __call__(
        self, session: AsyncSession, workspace_id: uuid.UUID, version: int | None = None
    ) -> Mapping[str, str]:
        """The secrets of a workspace, as of ``version`` when given, else the latest."""
        kept = self._kept.get(workspace_id)
        if kept is not None and version is not None and kept[0] == version:
            self._kept.move_to_end(workspace_id)
            return kept[1]
        if version is None:
            version = await session.scalar(
                select(col(Workspace.secrets_version)).where(col(Workspace.id) == workspace_id)
            )
            if kept is not None and kept[0] == version:
                return kept[1]
        values = await open_secrets(session, keyring=self.keyring, workspace_id=workspace_id)
        # Read in another statement than the version: keep them only if still that version.
        now = await session.scalar(
            select(col(Workspace.secrets_version)).where(col(Workspace.id) == workspace_id)
        )
        if now is not None and now == version:
            self._kept[workspace_id] = (now, values)
            if len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return values


async def _changed(session: AsyncSession, workspace_id: uuid.UUID) -> None:
    # What every process keeps of the workspace's secrets is from now on out of date.
    await session.execute(
        update(Workspace)
        .where(col(Workspace.id) == workspace_id)
        .values(secrets_version=col(Workspace.secrets_version) + 1)
    )


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What a rotation did."""

    secrets: int
    webhooks: int
    key_id: str


async def rotate(session: AsyncSession, *, keyring: Keyring) -> RotationResult:
    """Re-encrypt every secret and webhook signing secret not under the current key."""
    current = keyring.current_id
    secrets = (
        await session.execute(select(Secret).where(col(Secret.key_id) != current).with_for_update())
    ).scalars()
    secret_count = 0
    for row in secrets:
        aad = secret_aad(row.workspace_id, row.name)
        value = keyring.open(Sealed(row.key_id, row.nonce, row.ciphertext), aad)
        sealed = keyring.seal(value, aad)
        await session.execute(
            update(Secret)
            .where(col(Secret.id) == row.id)
            .values(key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext)
        )
        secret_count += 1
    hooks = (
        await session.execute(
            select(Webhook)
            .where(col(Webhook.signing_key_id).is_not(None), col(Webhook.signing_key_id) != current)
            .with_for_update()
        )
    ).scalars()
    hook_count = 0
    for hook in hooks:
        aad = webhook_aad(hook.workspace_id, hook.id)
        value = keyring.open(
            Sealed(
                str(hook.signing_key_id),
                bytes(hook.signing_nonce or b""),
                bytes(hook.signing_ciphertext or b""),
            ),
            aad,
        )
        sealed = keyring.seal(value, aad)
        await session.execute(
            update(Webhook)
            .where(col(Webhook.id) == hook.id)
            .values(
                signing_key_id=sealed.key_id,
                signing_nonce=sealed.nonce,
                signing_ciphertext=sealed.ciphertext,
            )
        )
        hook_count += 1
    return RotationResult(secrets=secret_count, webhooks=hook_count, key_id=current)


async def key_ids_in_use(session: AsyncSession) -> dict[str, int]:
    """How many secrets and signing secrets each key id seals."""
    counts: dict[str, int] = {}
    for key_id, count in await session.execute(
        select(col(Secret.key_id), func.count()).group_by(col(Secret.key_id))
    ):
        counts[key_id] = counts.get(key_id, 0) + count
    for signing_key_id, count in await session.execute(
        select(col(Webhook.signing_key_id), func.count())
        .where(col(Webhook.signing_key_id).is_not(None))
        .group_by(col(Webhook.signing_key_id))
    ):
        assert signing_key_id is not None  # the query leaves out webhooks without one
        counts[signing_key_id] = counts.get(signing_key_id, 0) + count
    return counts


async def check_keyring(session: AsyncSession, *, keyring: Keyring) -> None:
    """Refuse (KeyringError) a keyring that cannot open the stored secrets; one probe per key."""
    configured = set(keyring.key_ids)
    for key_id in await key_ids_in_use(session):
        if key_id not in configured:
            raise KeyringError(
                f"Secrets in the database are encrypted with key {key_id}, which is not among "
                f"the configured keys ({', '.join(keyring.key_ids)}). Set FLOWDECK_SECRET_KEY "
                "to the key they were written with (after a new key, to rotate: "
                "`FLOWDECK_SECRET_KEY=<new>,<old> flowdeck secrets rotate`)."
            )
        probe = (
            await session.execute(
                select(
                    col(Secret.workspace_id),
                    col(Secret.name),
                    col(Secret.nonce),
                    col(Secret.ciphertext),
                )
                .where(col(Secret.key_id) == key_id)
                .limit(1)
            )
        ).first()
        if probe is None:
            continue
        workspace_id, name, nonce, ciphertext = probe
        try:
            keyring.open(Sealed(key_id, nonce, ciphertext), secret_aad(workspace_id, name))
        except DecryptError as error:
            raise KeyringError(
                f'Key {key_id} cannot decrypt secret "{name}" of workspace {workspace_id}: {error}.'
            ) from error
