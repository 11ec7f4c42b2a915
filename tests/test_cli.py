"""The `flowdeck` command line as real processes: flags, `config`, and `token`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from app.cli import ROLE, main
from app.db import with_database
from app.keyring import generate_key
from app.models import Role
from tests.processes import Served, clean_env, run

VERSION = version("flowdeck")


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path of the CLI: (), ("serve",), ("token", "create"), ..."""
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_version_and_help_as_a_process() -> None:
    env = clean_env()
    for flag in ("--version", "-V"):
        done = run(env, flag)
        assert (done.returncode, done.stdout) == (0, f"flowdeck, version {VERSION}\n")
    done = run(env, "-h")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: flowdeck [OPTIONS] COMMAND [ARGS]...")
    assert "-h, --help" in done.stdout
    assert "-V, --version" in done.stdout


@pytest.mark.parametrize("path", list(commands(main)), ids=lambda p: " ".join(p) or "flowdeck")
def test_every_command_takes_h(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "-h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: {' '.join(('main', *path))}")
    assert "  -h, --help" in result.output


def test_a_stall_threshold_under_three_heartbeats_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    # given a worker told to judge others stalled after less than three heartbeats
    env = clean_env(
        FLOWDECK_DATA_DIR=str(tmp_path),
        FLOWDECK_WORKER_HEARTBEAT_SECONDS="2",
        FLOWDECK_WORKER_STALLED_SECONDS="5",
    )
    # when it starts (and serve, whose embedded worker has the same settings)
    for command in ("worker", "serve"):
        done = run(env, command, timeout=30)
        # then it exits 2 saying why, starts no database, and shows no traceback
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == (
            "error: invalid setting: FLOWDECK_WORKER_STALLED_SECONDS (5) must be at least 3 "
            "times FLOWDECK_WORKER_HEARTBEAT_SECONDS (2), that is at least 6: raise it, or "
            "send heartbeats more often.\n"
        )
    assert list(tmp_path.iterdir()) == []
    # and at three heartbeats the settings are accepted
    accepted = run({**env, "FLOWDECK_WORKER_STALLED_SECONDS": "6"}, "config", "--json")
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["settings"]["worker_stalled_seconds"] == 6


def test_the_role_choices_are_the_roles() -> None:
    assert isinstance(ROLE, click.Choice)
    assert list(ROLE.choices) == [role.value for role in Role]


def test_config_says_embedded_database_and_key_file_without_starting_anything(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(FLOWDECK_DATA_DIR=str(data_dir))
    done = run(env, "config")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        f"Database:   embedded PostgreSQL, data in {data_dir}/pgdata (created at first start; "
        "DATABASE_URL is unset)",
        f"Secret key: the key file {data_dir}/secret.key (generated at first start; "
        "FLOWDECK_SECRET_KEY is unset)",
        "Settings (environment FLOWDECK_<NAME>; secrets masked):",
    ]
    assert "  database_url = (unset)" in lines
    assert '  env = "development"' in lines
    assert not data_dir.exists()  # nothing was started or generated


def test_config_masks_the_database_password_and_the_keys() -> None:
    keys = f"{generate_key()},{generate_key()}"
    env = clean_env(
        DATABASE_URL="postgresql://flowdeck:hunter2@db.internal:5432/flowdeck",
        FLOWDECK_SECRET_KEY=keys,
        FLOWDECK_ENV="production",
    )
    done = run(env, "config", "--json")
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout
    assert keys.split(",")[0] not in done.stdout
    shown = json.loads(done.stdout)
    assert shown["database"] == {
        "source": "DATABASE_URL",
        "url": "postgresql://flowdeck:********@db.internal:5432/flowdeck",
        "summary": "DATABASE_URL postgresql://flowdeck:********@db.internal:5432/flowdeck",
    }
    assert shown["secret_key"] == {
        "source": "FLOWDECK_SECRET_KEY",
        "keys": 2,
        "summary": "FLOWDECK_SECRET_KEY (2 key(s); the first encrypts)",
    }
    assert shown["settings"]["secret_key"] == "********"
    assert shown["settings"]["env"] == "production"
    text = run(env, "config").stdout.splitlines()
    assert text[:2] == [
        "Database:   DATABASE_URL postgresql://flowdeck:********@db.internal:5432/flowdeck",
        "Secret key: FLOWDECK_SECRET_KEY (2 key(s); the first encrypts)",
    ]


@pytest.fixture(scope="module")
def database(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """A database of this module's own, and the environment of commands on it."""
    name = f"flowdeck_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server_url, name)
    yield (
        url,
        clean_env(
            DATABASE_URL=url,
            FLOWDECK_SECRET_KEY=generate_key(),
            FLOWDECK_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        ),
    )
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def counts(url: str) -> tuple[int, int, int, int]:
    """Users, workspaces, memberships and tokens."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM workspaces), "
            "(SELECT count(*) FROM memberships), (SELECT count(*) FROM api_tokens)"
        ).fetchone()
    assert row is not None
    return row


def test_with_database_url_nobody_is_created_and_the_banner_says_how_to_get_a_token(
    database: tuple[str, dict[str, str]],
) -> None:
    url, env = database
    served = Served(env)
    try:
        mint = "flowdeck token create --email you@example.com --workspace 'My workspace'"
        assert served.banner() == [
            f"Flowdeck {VERSION} is ready.",
            f"GraphiQL: http://127.0.0.1:{served.port}/graphql",
            f"A new API token: {mint}",
            "Stop with Ctrl-C.",
        ]
        assert counts(url) == (0, 0, 0, 0)
        created = run(env, "token", "create", "--email", "Ops@Example.com", "--workspace", "Ops")
        assert created.returncode == 0, created.stderr
        assert created.stderr.endswith(
            'Token for ops@example.com (OWNER of "Ops"; new workspace):\n'
        )
        me = served.gql(
            created.stdout.strip(), "{ viewer { email memberships { role workspace { name } } } }"
        )
        assert me["data"]["viewer"] == {
            "email": "ops@example.com",
            "memberships": [{"role": "OWNER", "workspace": {"name": "Ops"}}],
        }
    finally:
        served.stop()


def test_token_create_never_adds_someone_to_a_workspace_unasked(
    database: tuple[str, dict[str, str]],
) -> None:
    url, env = database
    owner = run(env, "token", "create", "--email", "admin@example.com", "--workspace", "Shared")
    assert owner.returncode == 0, owner.stderr
    before = counts(url)

    refused = run(env, "token", "create", "--email", "bob@example.com", "--workspace", "Shared")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.endswith(
        'error: bob@example.com is not a member of the existing workspace "Shared". '
        "Add --add-member to add them (--role sets their role).\n"
    )
    assert counts(url) == before

    wrong_role = run(
        env,
        "token",
        "create",
        "--email",
        "x@example.com",
        "--workspace",
        "Fresh",
        "--role",
        "viewer",
    )
    assert wrong_role.returncode == 2
    assert wrong_role.stderr.endswith(
        'error: No workspace is named "Fresh"; a new one starts with its owner, not a VIEWER.\n'
    )
    assert counts(url) == before

    added = run(
        env, "token", "create", "--email", "bob@example.com", "--workspace", "Shared",
        "--add-member", "--role", "editor", "--name", "laptop",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stderr.endswith(
        'Token for bob@example.com (EDITOR of "Shared"; added as a member):\n'
    )
    assert counts(url) == (before[0] + 1, before[1], before[2] + 1, before[3] + 1)
    with psycopg.connect(url) as conn:
        role = conn.execute(
            "SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id "
            "WHERE u.email = 'bob@example.com'"
        ).fetchone()
    assert role == ("EDITOR",)


def test_token_list_and_revoke(database: tuple[str, dict[str, str]]) -> None:
    url, env = database
    made = [
        run(env, "token", "create", "--email", "carol@example.com", "--workspace", "Carol",
            "--name", name).stdout.strip()
        for name in ("first", "second")
    ]  # fmt: skip
    listed = run(env, "token", "list", "--email", "Carol@Example.com")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "EXPIRES", "LAST", "USED"]
    assert [row.split()[1] for row in rows] == ["second", "first"]
    assert all(row.split()[-1] == "never" for row in rows)
    assert not any(token in listed.stdout for token in made)
    with psycopg.connect(url) as conn:
        hashes = [h for (h,) in conn.execute("SELECT token_hash FROM api_tokens")]
    assert not any(h in listed.stdout for h in hashes)

    second_id = rows[0].split()[0]
    someone_else = run(env, "token", "revoke", "--email", "admin@example.com", second_id)
    assert (someone_else.returncode, someone_else.stderr.splitlines()[-1]) == (
        2,
        "error: API token not found.",
    )
    not_an_id = run(env, "token", "revoke", "--email", "carol@example.com", "nope")
    assert not_an_id.returncode == 2
    assert not_an_id.stderr == "error: 'nope' is not a token id (see `flowdeck token list`).\n"
    unknown = run(env, "token", "list", "--email", "nobody@example.com")
    assert (unknown.returncode, unknown.stderr.splitlines()[-1]) == (
        2,
        "error: User nobody@example.com not found.",
    )
    before = counts(url)

    revoked = run(env, "token", "revoke", "--email", "carol@example.com", second_id)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f'Revoked token {second_id} ("second") of carol@example.com.\n'
    assert counts(url) == (*before[:3], before[3] - 1)
    after = run(env, "token", "list", "--email", "carol@example.com").stdout.splitlines()
    assert [row.split()[1] for row in after[1:]] == ["first"]
