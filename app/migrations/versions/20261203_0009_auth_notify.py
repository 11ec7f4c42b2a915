"""Announce every change of who may do what: NOTIFY flowdeck_auth in the changing transaction

API processes keep signed-in principals for a few seconds (FLOWDECK_TOKEN_CACHE_SECONDS) and
drop a user's as soon as this channel names them. Triggers rather than calls in each service,
so that no path can forget: a membership added, changed or removed, a token deleted or its
expiry changed, a user changed or deleted (cascades included), and any TRUNCATE ('*':
everyone) announce it, delivered at commit. last_used_at, which sign-in itself writes, does
not. A token's INSERT announces nothing: a new token is in no cache.

Revision ID: 0009_auth_notify
Revises: 0008_publish_audit
Create Date: 2026-12-03 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0009_auth_notify'
down_revision: str | None = '0008_publish_audit'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION flowdeck_announce_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('flowdeck_auth', '*');
    ELSIF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('flowdeck_auth', OLD.id::text);
    ELSE
        IF TG_OP <> 'INSERT' THEN
            PERFORM pg_notify('flowdeck_auth', OLD.user_id::text);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM pg_notify('flowdeck_auth', NEW.user_id::text);
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""

TRIGGERS = {
    "memberships": "AFTER INSERT OR UPDATE OR DELETE",
    "api_tokens": "AFTER UPDATE OF user_id, token_hash, expires_at OR DELETE",
    "users": "AFTER UPDATE OR DELETE",
}


def upgrade() -> None:
    op.execute(FUNCTION)
    for table, when in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER {table}_announce_access {when} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION flowdeck_announce_access()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_announce_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION flowdeck_announce_access()"
        )


def downgrade() -> None:
    for table in TRIGGERS:
        op.execute(f"DROP TRIGGER {table}_announce_truncate ON {table}")
        op.execute(f"DROP TRIGGER {table}_announce_access ON {table}")
    op.execute("DROP FUNCTION flowdeck_announce_access()")
