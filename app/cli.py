"""The `flowdeck` command line: serve, worker, migrate, config, secrets, token, bench."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from app.db import DatabaseTarget

# Everything heavier than the settings is imported where it is used: `serve` takes its port,
# and `--version`, `-h` and `config` answer, before SQLAlchemy, Alembic or the app load.


def _settings() -> Settings:
    """The settings, or exit 2 saying which ones are wrong (no traceback)."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as error:
        for problem in error.errors():
            where = "".join(f"FLOWDECK_{str(part).upper()}: " for part in problem["loc"][:1])
            message = str(problem["msg"]).removeprefix("Value error, ")
            click.echo(f"error: invalid setting: {where}{message}", err=True)
        sys.exit(2)


def _logging(settings: Settings) -> None:
    from app.logs import configure_logging

    configure_logging(settings.log_level, settings.log_json, production=not settings.development)


@contextlib.contextmanager
def _shared_metrics() -> Iterator[None]:
    """Processes sharing a port share their metrics: each writes them into a directory that a
    scrape of any of them reads whole (prometheus_client's multiprocess mode; one made for
    this run unless PROMETHEUS_MULTIPROC_DIR names one)."""
    import os
    import shutil
    import tempfile

    from app.metrics import MULTIPROCESS_DIR

    if os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    directory = tempfile.mkdtemp(prefix="flowdeck-metrics-")
    os.environ[MULTIPROCESS_DIR] = directory  # read by the processes as they start
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(directory, ignore_errors=True)


def _tracing(service: str) -> bool:
    """Switch traces on when the OTEL_* variables ask (nothing is loaded otherwise)."""
    from app.tracing import configure

    return configure(service)


def _database(settings: Settings) -> DatabaseTarget:
    from app.db import embedded_pgdata, needs_initdb, resolve_database

    if settings.embedded and needs_initdb(embedded_pgdata(settings)):
        click.echo(
            f"Embedded PostgreSQL: first start, creating its database in "
            f"{embedded_pgdata(settings)} (about 15 seconds)...",
            err=True,
        )
    target = resolve_database(settings)
    if target.embedded:
        click.echo(f"Embedded PostgreSQL: data in {target.data_dir}", err=True)
    return target


async def _migrate(settings: Settings, url: str) -> None:
    from app.db import create_engine
    from app.migrate import migrate as apply_migrations

    engine = create_engine(url, settings, statement_timeout=False)
    try:
        await apply_migrations(engine)
    finally:
        await engine.dispose()


async def _bootstrap(settings: Settings, url: str, *, embedded: bool) -> tuple[str | None, str]:
    """The first user's token on an empty embedded database, and how to mint another."""
    import shlex

    from app.db import create_engine, session_factory
    from app.services.bootstrap import first_owner, has_users, issue_token

    engine = create_engine(url, settings)
    try:
        async with session_factory(engine)() as session:
            token = None
            if embedded and not await has_users(session):
                issued = await issue_token(
                    session,
                    email=settings.bootstrap_email,
                    workspace_name=settings.bootstrap_workspace,
                    token_name="first token",
                )
                await session.commit()
                token = issued.created.token
            owner = await first_owner(session)
    finally:
        await engine.dispose()
    email, workspace = owner or ("you@example.com", "My workspace")
    mint = (
        f"flowdeck token create --email {shlex.quote(email)} --workspace {shlex.quote(workspace)}"
    )
    return token, mint


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version("flowdeck"), "-V", "--version", prog_name="flowdeck")
def main() -> None:
    """Flowdeck: the backend of a visual workflow builder."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default FLOWDECK_HOST).")
@click.option("--port", default=None, type=int, help="Port to listen on (default FLOWDECK_PORT).")
@click.option("--no-worker", is_flag=True, help="Serve the API only; run `flowdeck worker` apart.")
@click.option(
    "--processes",
    default=1,
    type=click.IntRange(1, 64),
    help="API processes sharing the port (default 1; about one per core, see the README).",
)
def serve(host: str | None, port: int | None, no_worker: bool, processes: int) -> None:
    """Migrate the database, then serve the API (GraphiQL at /graphql) and a worker."""
    from app.serving import PortUnavailable, bind_port

    settings = _settings()
    host = host or settings.host
    port = settings.port if port is None else port
    try:
        sock = bind_port(host, port)  # first: a taken port fails before any other work
    except PortUnavailable as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(1)
    import uvicorn

    from app.db import create_engine
    from app.main import create_app
    from app.serving import (
        HTTP,
        LOOP,
        FlowdeckProcesses,
        FlowdeckServer,
        banner,
        browser_url,
        processes_config,
    )

    port = sock.getsockname()[1]
    _logging(settings)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    asyncio.run(_check_keys(settings, target.url))
    token, mint = asyncio.run(_bootstrap(settings, target.url, embedded=target.embedded))
    base = settings.public_url or browser_url(host, port)
    graceful_seconds = max(1, int(settings.shutdown_timeout_seconds / 2))

    def ready() -> None:
        lines = banner(settings, base, token, mint, embedded=target.embedded)
        click.echo("\n".join(lines), err=True)

    if processes > 1:
        config = processes_config(
            target.url,
            processes=processes,
            embedded_worker=not no_worker,
            graceful_seconds=graceful_seconds,
        )
        # The supervisor stops its processes on SIGTERM/SIGINT and returns: the exit handlers
        # run (the embedded PostgreSQL stops with its last user).
        with _shared_metrics():
            FlowdeckProcesses(config, [sock], on_ready=ready).run()
        return
    app = create_app(
        settings, create_engine(target.url, settings), target.url, embedded_worker=not no_worker
    )
    config = uvicorn.Config(
        app,
        loop=LOOP,
        http=HTTP,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
    )
    deadline = settings.shutdown_timeout_seconds
    server = FlowdeckServer(config, on_ready=ready, deadline_seconds=deadline)
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again to these
    # handlers: a requested stop exits 0, through the exit handlers (the embedded
    # PostgreSQL stops with its last user).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    traced = _tracing("flowdeck-api" if no_worker else "flowdeck")
    try:
        server.run(sockets=[sock])
    finally:
        if traced:
            from app.tracing import shutdown

            shutdown()


@main.command()
@click.option("--concurrency", default=None, type=int, help="Runs driven at once (default 10).")
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve /metrics and /healthz on this port (default FLOWDECK_WORKER_METRICS_PORT; "
    "0: none).",
)
def worker(concurrency: int | None, metrics_port: int | None) -> None:
    """Run a worker: drive queued runs until SIGTERM/SIGINT (start as many as needed)."""
    from app.serving import PortUnavailable, bind_port, worker_port_hint

    settings = _settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    if metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": metrics_port})
    sock = None
    if settings.worker_metrics_port:
        try:  # first: a taken port fails before any other work
            sock = bind_port(settings.host, settings.worker_metrics_port, worker_port_hint)
        except PortUnavailable as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
    _logging(settings)
    target = _database(settings)
    # A worker started while the database is away waits for it (logged once).
    asyncio.run(_when_reachable(lambda: _migrate(settings, target.url)))
    asyncio.run(_when_reachable(lambda: _check_keys(settings, target.url)))
    started = f"Worker started (concurrency {settings.worker_concurrency})"
    if sock is not None:
        from app.serving import browser_url

        port = sock.getsockname()[1]
        started += f"; /metrics and /healthz at {browser_url(settings.host, port)}"
    # Until the worker's own handlers are in place (it stops gracefully from then on), a
    # SIGTERM/SIGINT stops the start-up cleanly instead of killing the process.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _StartUpSignal.received)
    click.echo(f"{started}.", err=True)
    traced = _tracing("flowdeck-worker")
    try:
        asyncio.run(_work(settings, target.url, sock))
    finally:
        if traced:
            from app.tracing import shutdown

            shutdown()


class _StartUpSignal:
    """A SIGTERM/SIGINT during a worker's start-up: it exits (SystemExit), and it is noted,
    since Python drops an exception raised where a signal handler happens to run inside a
    finalizer or weakref callback ("Exception ignored in …"): the worker then stops as soon as
    its own handlers are in place."""

    noted = False

    @classmethod
    def received(cls, *_: object) -> None:
        cls.noted = True
        raise SystemExit(0)

    @classmethod
    def came(cls) -> bool:
        return cls.noted


async def _when_reachable(work: Callable[[], Awaitable[None]]) -> None:
    """``work()``, repeated while the database is unavailable."""
    from app.outage import ride_out

    await ride_out(work)


async def _work(settings: Settings, url: str, sock: socket.socket | None) -> None:
    """A worker until SIGTERM/SIGINT, with its endpoints on ``sock`` when given."""
    from app.db import create_engine
    from app.metrics import watch_event_loop
    from app.runtime import Runtime
    from app.serving import worker_endpoints
    from app.worker.runner import run_worker

    engine = create_engine(url, settings)
    runtime = Runtime.build(settings, engine, url)
    loop_watch = asyncio.create_task(watch_event_loop())
    try:
        async with runtime.opened():
            endpoints = (
                worker_endpoints(runtime, sock) if sock is not None else contextlib.nullcontext()
            )
            async with endpoints:
                await run_worker(
                    runtime, install_signal_handlers=True, stop_requested=_StartUpSignal.came
                )
    finally:
        loop_watch.cancel()
        await engine.dispose()


@main.command()
def migrate() -> None:
    """Apply the database migrations (under an advisory lock)."""
    settings = _settings()
    _logging(settings)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    click.echo("Database is at the newest migration.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def config(as_json: bool) -> None:
    """Say which database and secret key are in use, and every setting (secrets masked)."""
    from app.db import describe_database

    settings = _settings()
    database, key = describe_database(settings), describe_secret_key(settings)
    values = settings.masked()
    if as_json:
        click.echo(
            json.dumps(
                {"database": database, "secret_key": key, "settings": values}, indent=2, default=str
            )
        )
        return
    click.echo(f"Database:   {database['summary']}")
    click.echo(f"Secret key: {key['summary']}")
    click.echo("Settings (environment FLOWDECK_<NAME>; secrets masked):")
    for name, value in values.items():
        shown = "(unset)" if value is None else json.dumps(value, default=str)
        click.echo(f"  {name} = {shown}")


def describe_secret_key(settings: Settings) -> dict[str, Any]:
    """Where the keys that encrypt secrets come from: FLOWDECK_SECRET_KEY or the key file."""
    from app.keyring import KEY_FILE, KeyringError, parse_keys

    if settings.secret_key is not None:
        try:
            count = len(
                parse_keys(settings.secret_key.get_secret_value(), source="FLOWDECK_SECRET_KEY")
            )
        except KeyringError as error:
            return {
                "source": "FLOWDECK_SECRET_KEY",
                "summary": f"FLOWDECK_SECRET_KEY, invalid: {error}",
            }
        return {
            "source": "FLOWDECK_SECRET_KEY",
            "keys": count,
            "summary": f"FLOWDECK_SECRET_KEY ({count} key(s); the first encrypts)",
        }
    if not (settings.development or settings.embedded):
        return {
            "source": None,
            "summary": "none: FLOWDECK_SECRET_KEY is required in production with DATABASE_URL",
        }
    path = Path(settings.data_dir).expanduser() / KEY_FILE
    state = "exists" if path.exists() else "generated at first start"
    return {
        "source": "key file",
        "path": str(path),
        "summary": f"the key file {path} ({state}; FLOWDECK_SECRET_KEY is unset)",
    }


@main.command()
def bench() -> None:
    """Run the performance suite and print its table (same as `python -m bench`)."""
    from bench.suite import main as run_bench

    run_bench()


async def _check_keys(settings: Settings, url: str) -> None:
    """Exit with a clear message when the secret keys cannot open the stored secrets."""
    from app.db import create_engine, session_factory
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

    from app.db import create_engine, session_factory
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

    settings = _settings()
    _logging(settings)
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
    """API tokens: create, list, revoke."""


# app.models.Role's values, weakest first (a test keeps them equal; importing the models
# here would load SQLAlchemy for every command).
ROLE = click.Choice(["VIEWER", "MEMBER", "EDITOR", "OWNER"], case_sensitive=False)


@token.command("create")
@click.option("--email", required=True, help="The user; created when unknown.")
@click.option("--workspace", required=True, help="Workspace name; created (owned) when missing.")
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@click.option(
    "--role",
    type=ROLE,
    default=None,
    help="The role to give: OWNER of a new workspace; with --add-member, default MEMBER. "
    "A member keeps the role they have (a different --role is refused).",
)
@click.option(
    "--add-member",
    is_flag=True,
    help="Add EMAIL to an existing workspace it is not a member of (refused otherwise).",
)
def token_create(email: str, workspace: str, name: str, role: str | None, add_member: bool) -> None:
    """Create an API token for EMAIL in WORKSPACE; prints it once (on stdout)."""
    from app.errors import InputErrors
    from app.models import Role
    from app.services.bootstrap import IssuedToken, issue_token

    settings, target = _open_database()

    async def create(session: Any) -> IssuedToken:
        issued = await issue_token(
            session,
            email=email,
            workspace_name=workspace,
            token_name=name,
            role=Role(role.upper()) if role else None,
            add_member=add_member,
        )
        await session.commit()
        return issued

    try:
        issued = _with_session(settings, target, create)
    except InputErrors as error:
        hints: dict[tuple[str, ...], str] = {
            ("add_member",): " Add --add-member to add them (--role sets their role)."
        }
        click.echo(
            f"error: {error}{''.join(hints.get(e.field or (), '') for e in error.errors)}", err=True
        )
        sys.exit(2)
    what = [f'{issued.role.value} of "{issued.workspace.name}"']
    if issued.new_workspace:
        what.append("new workspace")
    elif issued.new_member:
        what.append("added as a member")
    click.echo(f"Token for {issued.user.email} ({'; '.join(what)}):", err=True)
    click.echo(issued.created.token)


@token.command("list")
@click.option("--email", required=True, help="Whose tokens.")
def token_list(email: str) -> None:
    """List EMAIL's tokens: id, name, created, expires, last used (never the token)."""
    from app.services.api_tokens import list_api_tokens

    settings, target = _open_database()

    async def listing(session: Any) -> list[Any]:
        user = await _user(session, email)
        return await list_api_tokens(session, user_id=user.id)

    tokens = _with_session(settings, target, listing)
    rows = [("ID", "NAME", "CREATED", "EXPIRES", "LAST USED")] + [
        (
            str(t.id),
            t.name,
            _when(t.created_at),
            _when(t.expires_at, "never"),
            _when(t.last_used_at, "never"),
        )
        for t in tokens
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@token.command("revoke")
@click.option("--email", required=True, help="Whose token.")
@click.argument("token_id")
def token_revoke(email: str, token_id: str) -> None:
    """Revoke (delete) EMAIL's token TOKEN_ID (an id from `flowdeck token list`)."""
    import uuid

    from app.services.api_tokens import ApiTokenInfo, revoke_api_token

    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        click.echo(f"error: {token_id!r} is not a token id (see `flowdeck token list`).", err=True)
        sys.exit(2)
    settings, target = _open_database()

    async def revoke(session: Any) -> ApiTokenInfo:
        user = await _user(session, email)
        revoked = await revoke_api_token(session, user_id=user.id, token_id=parsed)
        await session.commit()
        return revoked

    revoked = _with_session(settings, target, revoke)
    click.echo(f'Revoked token {revoked.id} ("{revoked.name}") of {email.strip().lower()}.')


def _open_database() -> tuple[Settings, DatabaseTarget]:
    settings = _settings()
    _logging(settings)
    target = _database(settings)
    asyncio.run(_migrate(settings, target.url))
    return settings, target


def _with_session(settings: Settings, target: DatabaseTarget, work: Any) -> Any:
    """Run ``work(session)``; a missing user or token exits 2 with its message."""
    from app.db import create_engine, session_factory
    from app.errors import NotFound

    async def run() -> Any:
        engine = create_engine(target.url, settings)
        try:
            async with session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except NotFound as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


async def _user(session: Any, email: str) -> Any:
    from sqlalchemy import func, select

    from app.errors import NotFound
    from app.models import User

    user = (
        await session.execute(select(User).where(func.lower(User.email) == email.strip().lower()))
    ).scalar_one_or_none()
    if user is None:
        raise NotFound(f"User {email.strip().lower()}")
    return user


def _when(moment: datetime | None, missing: str = "") -> str:
    return missing if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")
