"""How `flowdeck serve` runs: its port taken first, a banner once it listens, a stop that
cannot hang, and with ``--processes N`` several API processes on that one port.

Every process serves with uvloop and httptools (the event loop and HTTP parser in C).
With several, uvicorn's supervisor spawns them on the socket taken here (the kernel spreads
the connections), replaces one that dies, and stops them all on SIGTERM/SIGINT; each builds
its own app (``process_app``) over the database the parent resolved and migrated.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from importlib.metadata import version as package_version
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors.multiprocess import Multiprocess

from app.settings import Settings, get_settings

# uvloop and httptools: about a quarter less CPU a request than asyncio and h11.
LOOP = "uvloop"
HTTP = "httptools"
# How the parent tells the processes it spawns what it resolved (not settings: internal).
PROCESS_URL_ENV = "_FLOWDECK_PROCESS_DATABASE_URL"
PROCESS_WORKER_ENV = "_FLOWDECK_PROCESS_WORKER"
READY_SECONDS = 90.0

if TYPE_CHECKING:
    from app.runtime import Runtime


class PortUnavailable(Exception):
    """The address cannot be listened on; the message says why and what to do."""


def serve_port_hint(port: int) -> str:
    """What to do when `flowdeck serve`'s port is taken."""
    return (
        f"Choose another port: flowdeck serve --port {port}, or set "
        f"FLOWDECK_PORT={port} (and FLOWDECK_HOST / --host for another address)."
    )


def worker_port_hint(port: int) -> str:
    """What to do when a worker's metrics port is taken."""
    return (
        f"Choose another port for this worker's /metrics: flowdeck worker --metrics-port "
        f"{port}, or set FLOWDECK_WORKER_METRICS_PORT={port} (0 turns it off)."
    )


def bind_port(host: str, port: int, hint: Callable[[int], str] = serve_port_hint) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), taken before anything else runs.

    Binding first means a port in use is found in milliseconds, before the database is
    started or migrated, and the URL printed later is certainly this process's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart may take the port over from connections in TIME_WAIT
    # (Linux still refuses a port another socket is listening on).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        where = f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            reason = f"{where} is already in use (another Flowdeck, or another program)."
        elif error.errno == errno.EACCES:
            reason = f"{where} needs privileges this user does not have."
        else:
            reason = f"cannot listen on {where}: {error.strerror or error}."
        suggested = port + 1 if 0 < port < 65535 else 8000
        raise PortUnavailable(f"{reason}\n{hint(suggested)}") from error
    return sock


def browser_url(host: str, port: int) -> str:
    """The URL a person on this machine opens for ``host:port``."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (the wildcard is compared, not bound)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def banner(
    settings: Settings, base: str, token: str | None, mint: str, *, embedded: bool
) -> list[str]:
    """What a person reads once serve listens: plain lines, the token only on first start."""
    lines = ["", f"Flowdeck {package_version('flowdeck')} is ready.", f"GraphiQL: {base}/graphql"]
    if token is not None:
        lines += [
            f"First start: created {settings.bootstrap_email}, owner of "
            f'"{settings.bootstrap_workspace}".',
            f"API token (shown once, keep it): {token}",
            f"Send it as the header  Authorization: Bearer {token}  (GraphiQL: Headers tab)",
        ]
    else:
        lines.append(f"A new API token: {mint}")
    stop = "Stop with Ctrl-C"
    lines.append(f"{stop}; the embedded PostgreSQL stops with it." if embedded else f"{stop}.")
    return lines


class EndpointServer(uvicorn.Server):
    """uvicorn serving beside the process's main work, which owns the signals (a worker)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave SIGTERM and SIGINT to the worker: it stops, then this server."""
        yield


@contextlib.asynccontextmanager
async def worker_endpoints(runtime: Runtime, sock: socket.socket) -> AsyncIterator[None]:
    """Serve a worker's /metrics and /healthz on ``sock`` while the block runs."""
    from app.ops import endpoints_app  # the runtime's weight, only once a worker starts

    config = uvicorn.Config(
        endpoints_app(runtime), lifespan="off", log_config=None, access_log=False
    )
    server = EndpointServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield
    finally:
        server.should_exit = True
        await task


class FlowdeckServer(uvicorn.Server):
    """uvicorn's server, with a banner once it listens and a deadline on stopping.

    Stopping waits for open connections (up to half the deadline), then for the
    application's shutdown (the embedded worker). Whatever is still running when the
    deadline passes, or when a second SIGTERM/SIGINT comes, the embedded PostgreSQL is
    stopped and the process exits: a stop signal is never ignored.
    """

    def __init__(
        self, config: uvicorn.Config, *, on_ready: Callable[[], None], deadline_seconds: float
    ) -> None:
        super().__init__(config)
        self.on_ready = on_ready
        self.deadline_seconds = deadline_seconds
        self._deadline: threading.Timer | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start, then print the banner (only once the socket listens)."""
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop, under the deadline."""
        self.arm_deadline()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: stop gracefully within the deadline; second: exit now."""
        if self.should_exit:
            force_exit(f"second {signal.Signals(sig).name}: exiting without waiting", 128 + sig)
        super().handle_exit(sig, frame)
        self.arm_deadline()

    def arm_deadline(self) -> None:
        """Exit anyway ``deadline_seconds`` from the first call."""
        if self._deadline is not None:
            return
        seconds = self.deadline_seconds
        message = f"not stopped after {seconds:g} s (FLOWDECK_SHUTDOWN_TIMEOUT_SECONDS): exiting"
        self._deadline = threading.Timer(seconds, force_exit, (message, 1))
        self._deadline.daemon = True
        self._deadline.start()


def force_exit(message: str, code: int) -> None:
    """Stop the embedded PostgreSQL (by its pid) and end the process now."""
    from app.db import stop_embedded_postgres

    sys.stderr.write(f"flowdeck serve: {message}\n")
    sys.stderr.flush()
    try:
        stop_embedded_postgres()
    finally:
        os._exit(code)


def process_app() -> Starlette:
    """The app of one of several API processes (uvicorn's factory, in a spawned process)."""
    from app.db import create_engine
    from app.logs import configure_logging
    from app.main import create_app

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json, production=not settings.development)
    from app import tracing
    from app.metrics import process_stopped

    url = os.environ[PROCESS_URL_ENV]
    worker = os.environ.get(PROCESS_WORKER_ENV) == "1"
    if tracing.configure("flowdeck" if worker else "flowdeck-api"):
        atexit.register(tracing.shutdown)
    atexit.register(process_stopped)
    return create_app(settings, create_engine(url, settings), url, embedded_worker=worker)


class FlowdeckProcesses(Multiprocess):
    """uvicorn's supervisor of several API processes, with the banner once all of them
    serve (the stop deadline is each process's own graceful shutdown)."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], *, on_ready: Callable[[], None]
    ) -> None:
        super().__init__(config, sockets)
        self.on_ready = on_ready

    def init_processes(self) -> None:
        """Start the processes; print the banner when every one of them serves."""
        super().init_processes()
        if all(
            process.wait_until_ready(READY_SECONDS, self.should_exit) for process in self.processes
        ):
            self.on_ready()


def processes_config(
    url: str, *, processes: int, embedded_worker: bool, graceful_seconds: int
) -> uvicorn.Config:
    """The uvicorn configuration of ``processes`` API processes over the database at ``url``."""
    os.environ[PROCESS_URL_ENV] = url
    os.environ[PROCESS_WORKER_ENV] = "1" if embedded_worker else "0"
    return uvicorn.Config(
        "app.serving:process_app",
        factory=True,
        workers=processes,
        loop=LOOP,
        http=HTTP,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=graceful_seconds,
    )
