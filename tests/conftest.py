"""Test fixtures: a real PostgreSQL (TEST_DATABASE_URL, DATABASE_URL, else embedded)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from app import tracing
from app.db import create_engine, libpq_url, start_embedded_postgres
from app.keyring import generate_key
from app.main import create_app
from app.migrate import migrate
from app.runtime import Runtime
from app.settings import Settings
from app.worker.runner import run_worker
from bench.wire import StatementCounter
from tests.databases import scratch_database
from tests.factories import Factory, Wire


def _server_url() -> str:
    for name in ("TEST_DATABASE_URL", "DATABASE_URL"):
        if os.environ.get(name):
            return libpq_url(os.environ[name])
    # Not under pytest's tmp dirs: another pytest session on the machine prunes old ones,
    # which would pull the data from under this server. Deleted with the server at exit.
    pgdata = Path(tempfile.mkdtemp(prefix="flowdeck-test-pg-"))
    return start_embedded_postgres(pgdata, delete_at_exit=True)


@pytest.fixture(scope="session")
def server_url() -> str:
    """A PostgreSQL server for the whole run (its maintenance database URL)."""
    return _server_url()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A fresh database for this run, migrated to head, dropped at the end."""
    with scratch_database(server_url, "flowdeck_test") as url:
        yield url


# A fixed key for the run (tests of the key file and of rotation make their own).
TEST_SECRET_KEY = generate_key()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """Development settings on the test database."""
    return Settings(  # type: ignore[call-arg]
        database_url=database_url,  # type: ignore[arg-type]
        env="development",
        log_json=False,
        outbound_allow=["127.0.0.1/32"],
        data_dir=Path(tempfile.mkdtemp(prefix="flowdeck-test-data-")),
        secret_key=TEST_SECRET_KEY,
        worker_heartbeat_seconds=0.3,
        worker_stalled_seconds=1.5,
        # The suite drives runs on workers (the `worker` fixture); the tests of runs driven
        # where they were queued make their own app (tests/worker/test_inline.py).
        inline_runs=0,
        token_recheck_seconds=1.0,
    )


@pytest.fixture(scope="session")
async def engine(settings: Settings, database_url: str) -> AsyncIterator[AsyncEngine]:
    """The engine of the run, on a migrated database."""
    engine = create_engine(database_url, settings)
    await migrate(engine)
    yield engine
    await engine.dispose()


TABLES = [
    "audit_events",
    "schedule_fires",
    "webhooks",
    "secrets",
    "run_events",
    "run_steps",
    "runs",
    "api_tokens",
    "memberships",
    "workflow_versions",
    "workflows",
    "workspaces",
    "users",
    "procrastinate_jobs",
]


@pytest.fixture(autouse=True)
async def clean_db(request: pytest.FixtureRequest) -> None:
    """Every test starts from empty tables (committed data, as real clients see it)."""
    if "engine" not in request.fixturenames:
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))


@pytest.fixture(scope="session")
async def app(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[Starlette]:
    """The ASGI app over the test engine, its lifespan running (no worker: see `worker`)."""
    application = create_app(settings, engine, database_url, own_engine=False)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def inline_app(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[Starlette]:
    """An API app that drives the runs it queues itself (8 at once), as `serve` does."""
    application = create_app(
        settings.model_copy(update={"inline_runs": 8}), engine, database_url, own_engine=False
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def here(inline_app: Starlette, engine: AsyncEngine) -> AsyncIterator[Factory]:
    """A factory whose GraphQL and webhook calls go to ``inline_app``."""
    transport = httpx.ASGITransport(app=inline_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield Factory(engine, c)


@pytest.fixture(scope="session")
async def wired_app(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[tuple[Starlette, StatementCounter]]:
    """A second app whose every database connection (the engine's, the lean reads' pool,
    the job queue's) passes through a statement counter. It keeps a signed-in principal for
    an hour: a count must not depend on how long a loaded machine took to get there."""
    kept = settings.model_copy(update={"token_cache_seconds": 3600.0})
    with StatementCounter.for_url(database_url) as counter:
        url = counter.url(database_url)
        application = create_app(kept, create_engine(url, kept), url)
        async with application.router.lifespan_context(application):
            yield application, counter


@pytest.fixture
async def wire(
    wired_app: tuple[Starlette, StatementCounter], engine: AsyncEngine
) -> AsyncIterator[Wire]:
    """Calls to the counted app, and the counter (for statements per request)."""
    application, counter = wired_app
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield Wire(Factory(engine, c), counter)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield c


@pytest.fixture
async def raw_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client that gets a 500 response where the app raises (for asserting there is none)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as c:
        yield c


@pytest.fixture
def runtime(app: Starlette) -> Runtime:
    """The app's runtime: what a worker ticks with."""
    return app.state.runtime


@pytest.fixture
async def worker(app: Starlette) -> AsyncIterator[None]:
    """A worker in this process (its schedule tick included), driving runs while the test
    lasts."""
    runtime = app.state.runtime
    task = asyncio.create_task(run_worker(runtime, install_signal_handlers=False))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def factory(engine: AsyncEngine, client: httpx.AsyncClient) -> Factory:
    """Builds users, workspaces and tokens, and sends GraphQL as them."""
    return Factory(engine, client)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Traces on in this process (the API), into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()
