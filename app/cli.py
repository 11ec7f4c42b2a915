"""The `flowdeck` command line: serve, worker, migrate, config, secrets, token, bench."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import click

from app.db import DatabaseTarget, create_engine, resolve_database
from app.errors import InputErrors
from app.logs import configure_logging
from app.migrate import migrate as apply_migrations
from app.settings import Settings, get_settings


def _database(settings: Settings) -> DatabaseTarget:
    target = resolve_database(settings)
    if target.embedded:
        click.echo(f"Embedded PostgreSQL: data in {target.data_dir}", err=True)
    return target


async def _migrate(settings: Settings, url: str) -> None:
    engine = create_engine(url, settings)
    try:
        await apply_migrations(engine)
    finally:
        await engine.dispose()


async def _bootstrap(settings: Settings, url: str) -> str | None:
    """On an empty database, the first user's token; None when users exist."""
    from app.services.bootstrap import has_users, issue_owner_token

    engine = create_engine(url, settings)
    try:
        from app.db import session_factory

        async with session_factory(engine)() as session:
            if await has_users(session):
                return None
            _, _, created = await issue_owner_token(
                session,
                email=settings.bootstrap_email,
                workspace_name=settings.bootstrap_workspace,
                token_name="first token",
            )
            await session.commit()
            return created.token
    finally:
        await engine.dispose()


@click.group()
def main() -> None:
    """Flowdeck: the backend of a visual workflow builder."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default FLOWDECK_HOST).")
@click.option("--port", default=None, type=int, help="Port to listen on (default FLOWDECK_PORT).")
@click.option("--no-worker", is_flag=True, help="Serve the API only; run `flowdeck worker` apart.")
def serve(host: str | None, port: int | None, no_worker: bool) -> None:
    """Migrate the database, then serve the API (GraphiQL at /graphql) and a worker."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    asyncio.run(_check_keys(settings, target.url))
    token = asyncio.run(_bootstrap(settings, target.url)) if target.embedded else None
    host = host or settings.host
    port = settings.port if port is None else port
    base = settings.public_url or f"http://{host}:{port}"
    if token:
        click.echo(
            f"First start: created {settings.bootstrap_email}, owner of "
            f'"{settings.bootstrap_workspace}".\n'
            f"API token (shown once, keep it): {token}\n"
            f"Use it as the header  Authorization: Bearer {token}",
            err=True,
        )
    click.echo(f"GraphiQL: {base}/graphql", err=True)
    app = create_app(
        settings, create_engine(target.url, settings), target.url, embedded_worker=not no_worker
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to this handler: exit
    # normally so exit handlers run (the embedded PostgreSQL stops with its last user).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


@main.command()
@click.option("--concurrency", default=None, type=int, help="Runs driven at once (default 10).")
def worker(concurrency: int | None) -> None:
    """Run a worker: drive queued runs until SIGTERM/SIGINT (start as many as needed)."""
    from app.runtime import Runtime
    from app.worker.runner import run_worker

    settings = get_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    configure_logging(settings.log_level, settings.log_json)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    asyncio.run(_check_keys(settings, target.url))

    async def work() -> None:
        engine = create_engine(target.url, settings)
        runtime = Runtime.build(settings, engine, target.url)
        try:
            async with runtime.opened():
                await run_worker(runtime, install_signal_handlers=True)
        finally:
            await engine.dispose()

    click.echo(f"Worker started (concurrency {settings.worker_concurrency}).", err=True)
    asyncio.run(work())


@main.command()
def migrate() -> None:
    """Apply the database migrations (under an advisory lock)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    click.echo("Database is at the newest migration.")


@main.command()
def config() -> None:
    """Print the effective settings as JSON, secrets masked."""
    click.echo(json.dumps(get_settings().masked(), indent=2, default=str))


@main.command()
def bench() -> None:
    """Run the performance suite and print its table (same as `python -m bench`)."""
    from bench.suite import main as run_bench

    run_bench()


async def _check_keys(settings: Settings, url: str) -> None:
    """Exit with a clear message when the secret keys cannot open the stored secrets."""
    from app.db import session_factory
    from app.keyring import Keyring, KeyringError
    from app.services.secrets import check_keyring

    engine = create_engine(url, settings)
    try:
        keyring = Keyring.from_settings(settings)
        async with session_factory(engine)() as session:
            await check_keyring(session, keyring=keyring)
    except KeyringError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(3)
    finally:
        await engine.dispose()


@main.group()
def secrets() -> None:
    """The keys that encrypt workspace secrets: generate and rotate."""


@secrets.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new random key for FLOWDECK_SECRET_KEY."""
    from app.keyring import generate_key

    click.echo(generate_key())


@secrets.command("rotate")
@click.option(
    "--prune",
    is_flag=True,
    help="Key file only: afterwards drop the keys no stored secret uses any more.",
)
def secrets_rotate(prune: bool) -> None:
    """Re-encrypt every secret under the current key.

    With FLOWDECK_SECRET_KEY: put the new key first and keep the old ones after it
    (new,old), roll that out to every process, then run this. With the key file of the
    data directory: a new key is generated and put first, the old ones stay readable.
    """
    from pathlib import Path

    from app.db import session_factory
    from app.keyring import (
        KEY_FILE,
        Keyring,
        KeyringError,
        create_key_file,
        generate_key,
        read_key_file,
        write_key_file,
    )
    from app.services.secrets import key_ids_in_use, rotate

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    key_file = None if settings.secret_key is not None else Path(settings.data_dir) / KEY_FILE
    try:
        if key_file is not None:
            if not key_file.exists():
                create_key_file(key_file)
            write_key_file(key_file, [generate_key(), *read_key_file(key_file)])
        keyring = Keyring.from_settings(settings)
    except KeyringError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(3)

    async def run() -> tuple[Any, dict[str, int]]:
        engine = create_engine(target.url, settings)
        try:
            async with session_factory(engine)() as session:
                async with session.begin():
                    result = await rotate(session, keyring=keyring)
                return result, await key_ids_in_use(session)
        finally:
            await engine.dispose()

    try:
        result, in_use = asyncio.run(run())
    except Exception as error:  # a key is missing for some row: nothing was changed
        click.echo(f"error: rotation failed, nothing changed: {error}", err=True)
        sys.exit(3)
    click.echo(
        f"Re-encrypted {result.secrets} secrets and {result.webhooks} webhook signing secrets "
        f"under key {result.key_id}."
    )
    click.echo(f"Key ids in use: {json.dumps(in_use, sort_keys=True)}")
    if key_file is not None and prune:
        used = set(in_use) | {keyring.current_id}
        kept = [k for k in read_key_file(key_file) if _key_id(k) in used]
        write_key_file(key_file, kept)
        click.echo(f"Key file {key_file} keeps {len(kept)} key(s).")
    elif key_file is None:
        click.echo("Every secret is under the first key: the others can leave FLOWDECK_SECRET_KEY.")


def _key_id(text: str) -> str:
    from app.keyring import key_id_of, parse_keys

    return key_id_of(parse_keys(text, source="key file")[0])


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--email", required=True, help="The user; created when unknown.")
@click.option("--workspace", required=True, help="Workspace name; created (owned) when missing.")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
def token_create(email: str, workspace: str, name: str) -> None:
    """Create an API token for EMAIL as owner of WORKSPACE; prints it once."""
    from app.db import session_factory
    from app.services.bootstrap import issue_owner_token

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))

    async def create() -> Any:
        engine = create_engine(target.url, settings)
        try:
            async with session_factory(engine)() as session:
                result = await issue_owner_token(
                    session, email=email, workspace_name=workspace, token_name=name
                )
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        _, created_workspace, created = asyncio.run(create())
    except InputErrors as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    click.echo(
        f'Token for {email.strip().lower()} (owner of "{created_workspace.name}"):', err=True
    )
    click.echo(created.token)
