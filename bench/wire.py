"""Counting the SQL statements a process sends, on the wire, whatever library sends them.

``StatementCounter`` is a TCP relay in front of PostgreSQL: give a process its URL
(``counter.url(database_url)``) and it counts the frontend messages that run a statement,
``Q`` (simple query) and ``E`` (execute a bound statement, extended protocol), on every
connection, SQLAlchemy's and plain psycopg's alike, and keeps each one's SQL. It needs no
server extension (pg_stat_statements needs a preload and a restart) and it sees statements of
every database client in the process. The relayed connections are asked not to use TLS
(``sslmode=disable``), since an encrypted stream could not be read.

An empty statement is not counted: it runs nothing, it is a pool's check that a connection
that sat idle still answers (``app.db.IdleCheck``), a round trip but not a request's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
# A process's LISTEN connection checks itself now and then when quiet: not a request's work.
LISTENERS = ("flowdeck-listener",)


class StatementCounter:
    """A relay to ``host:port`` that counts statements; run in a thread of its own."""

    def __init__(self, host: str, port: int, *, ignore: tuple[str, ...] = LISTENERS) -> None:
        # A host that is a directory is where the server's Unix socket is (the embedded one).
        self.target = (host, port)
        # Connections of these application_names are relayed but not counted.
        self.ignore = ignore
        self.counts: Counter[str] = Counter()
        self.texts: list[str] = []  # each statement's SQL, in the order sent
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @classmethod
    def for_url(cls, url: str) -> StatementCounter:
        """A counter in front of the server of a ``postgresql://`` URL."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        host = query.get("host") or parts.hostname or "127.0.0.1"
        return cls(host, int(query.get("port") or parts.port or 5432))

    def url(self, url: str) -> str:
        """``url`` pointed at this relay, without TLS."""
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        query = dict(parse_qsl(parts.query)) | {"sslmode": "disable"}
        query.pop("host", None)
        query.pop("port", None)
        location = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
        return urlunsplit(parts._replace(netloc=location, query=urlencode(query)))

    @property
    def statements(self) -> int:
        """Statements sent so far (simple queries and executes)."""
        with self._lock:
            return self.counts["Q"] + self.counts["E"]

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[int]]:
        """The statements sent while the block runs, as ``[n]`` once it ends."""
        start = self.statements
        result: list[int] = []
        yield result
        result.append(self.statements - start)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        """The SQL of the statements sent while the block runs, once it ends."""
        with self._lock:
            start = len(self.texts)
        result: list[str] = []
        yield result
        with self._lock:
            result += self.texts[start:]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
            sock: socket.socket = self._server.sockets[0]
            self.port = int(sock.getsockname()[1])
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def __enter__(self) -> StatementCounter:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        host, port = self.target
        try:
            if host.startswith("/"):
                server, to_server = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
            else:
                server, to_server = await asyncio.open_connection(host, port)
        except OSError:
            to_client.close()
            return
        back = asyncio.ensure_future(_pipe(server, to_client))
        try:
            await self._frontend(client, to_server, to_client)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            to_server.close()
            back.cancel()
            to_client.close()

    async def _frontend(
        self,
        client: asyncio.StreamReader,
        to_server: asyncio.StreamWriter,
        to_client: asyncio.StreamWriter,
    ) -> None:
        # The startup phase: messages without a type byte, TLS and GSS requests refused here.
        while True:
            head = await client.readexactly(8)
            length, code = struct.unpack("!ii", head)
            if code in (SSL_REQUEST, GSS_REQUEST):
                to_client.write(b"N")
                await to_client.drain()
                continue
            startup = await client.readexactly(length - 8)
            to_server.write(head + startup)
            await to_server.drain()
            break
        words = startup.split(b"\0")
        settings = dict(zip(words[::2], words[1::2], strict=False))
        counted = settings.get(b"application_name", b"").decode() not in self.ignore
        prepared: dict[bytes, str] = {}  # statement name → SQL (Parse)
        portals: dict[bytes, bytes] = {}  # portal name → statement name (Bind)
        while True:
            head = await client.readexactly(5)
            kind = head[:1].decode("latin-1")
            (length,) = struct.unpack("!i", head[1:])
            body = await client.readexactly(length - 4)
            if kind == "P":
                name, _, rest = body.partition(b"\0")
                prepared[name] = rest.partition(b"\0")[0].decode("utf-8", "replace")
            elif kind == "B":
                portal, _, rest = body.partition(b"\0")
                portals[portal] = rest.partition(b"\0")[0]
            elif kind in ("Q", "E") and counted:
                if kind == "Q":
                    text = body.rstrip(b"\0").decode("utf-8", "replace")
                else:
                    statement = portals.get(body.partition(b"\0")[0], b"")
                    text = prepared.get(statement, "")
                if text.strip():  # an empty one checks the connection (module docstring)
                    with self._lock:
                        self.counts[kind] += 1
                        self.texts.append(text)
            to_server.write(head + body)
            await to_server.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()
