"""Where CEL programs run: in this process, or in a sandbox process that can be stopped.

CEL (the ``cel`` package, a Rust core) has no side effects and sees only the variables it is
given, but it holds the GIL while it evaluates, so a runaway expression would freeze the
event loop even in a thread. ``app.engine.expressions`` decides which programs are provably
cheap and runs those here (``run_programs``); the rest go to ``sandbox_call``: a sandbox
process (a fresh interpreter, memory-capped, one request at a time) awaited from a thread,
killed and replaced when it overruns its time. Either way each value is made plain JSON
(timestamps RFC 3339 strings, durations ``"<seconds>s"``, bytes base64, map keys strings,
NaN and infinities null) and capped at 1 MB.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import queue
import resource
import signal
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from multiprocessing.connection import Connection
from typing import Any

import cel
import orjson

MAX_RESULT_BYTES = 1_000_000
SANDBOX_PROCESSES = 2
SANDBOX_MEMORY_BYTES = 1 << 30

_SANDBOX_START_SECONDS = 60.0
_SANDBOX_GRACE_SECONDS = 1.0
_CACHE_SIZE = 256
SHOWN_CHARS = 80

Request = tuple[list[str], dict[str, Any], float]  # sources, variables, seconds allowed
Answer = tuple[bool, Any]  # (True, {source: value}) or (False, error message)


class ExpressionError(Exception):
    """An expression that does not compile, or that fails or overruns when evaluated."""


def shown(source: str) -> str:
    """Show an expression in a message, shortened when long."""
    text = source if len(source) <= SHOWN_CHARS else source[:SHOWN_CHARS] + "..."
    return f"{{{{ {text} }}}}"


_compiled = functools.lru_cache(maxsize=_CACHE_SIZE)(cel.compile)


def _json_default(value: object) -> object:
    """Turn the CEL values JSON has no type for into strings."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, timedelta):
        return f"{value.total_seconds():f}".rstrip("0").rstrip(".") + "s"
    raise TypeError(f"a value of type {type(value).__name__}")


def _to_json(value: object, source: str) -> object:
    """The value as plain JSON, refused when it is over the size cap."""
    try:
        data = orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ExpressionError(f"{shown(source)} gave a value JSON cannot hold: {exc}.") from None
    if len(data) > MAX_RESULT_BYTES:
        raise ExpressionError(
            f"{shown(source)} gave {len(data):,} bytes of JSON; "
            f"the maximum is {MAX_RESULT_BYTES:,}."
        )
    return orjson.loads(data)


def run_programs(
    programs: Iterable[tuple[str, cel.Program]], variables: dict[str, Any]
) -> dict[str, object]:
    """Evaluate programs against the variables; their JSON values by source."""
    try:
        context = cel.Context(variables)
    except Exception as exc:  # a value CEL cannot represent
        raise ExpressionError(f"The data given to expressions is not usable: {exc}") from None
    results: dict[str, object] = {}
    for source, program in programs:
        try:
            value = program.execute(context)
        except Exception as exc:  # CEL's message; a missing key's is only the key
            missing = isinstance(exc, KeyError) and exc.args
            detail = f"no such key {exc.args[0]!r}" if missing else exc
            raise ExpressionError(f"{shown(source)} failed: {detail}") from None
        results[source] = _to_json(value, source)
    return results


def _sandbox_main(read_fd: int, write_fd: int) -> None:
    """The sandbox process: cap its memory, then answer requests until the pipe closes."""
    requests, answers = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    unlimited = hard == resource.RLIM_INFINITY
    soft = SANDBOX_MEMORY_BYTES if unlimited else min(hard, SANDBOX_MEMORY_BYTES)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    answers.send(True)
    while True:
        try:
            sources, variables, seconds = requests.recv()
        except EOFError:
            return
        # A backstop should the parent be gone: SIGALRM's default action ends the process,
        # even while the Rust core holds the GIL.
        signal.setitimer(signal.ITIMER_REAL, seconds + _SANDBOX_GRACE_SECONDS)
        try:
            answer: Answer = (True, run_programs(((s, _compiled(s)) for s in sources), variables))
        except ExpressionError as exc:
            answer = (False, str(exc))
        signal.setitimer(signal.ITIMER_REAL, 0)
        answers.send(answer)


_BOOT = (
    f"import sys; sys.path[:] = sys.argv[3:]; from {__name__} import _sandbox_main; "
    "_sandbox_main(int(sys.argv[1]), int(sys.argv[2]))"
)


class _SandboxProcess:
    """One sandbox process, used by one thread at a time."""

    def __init__(self) -> None:
        child_read, parent_write = os.pipe()
        parent_read, child_write = os.pipe()
        # A fresh interpreter: fork is unsafe with threads, and multiprocessing's spawn would
        # re-run the parent's main module. No output: out of memory, the Rust core aborts
        # with a backtrace on stderr.
        command = [sys.executable, "-c", _BOOT, str(child_read), str(child_write), *sys.path]
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
                command,
                pass_fds=(child_read, child_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            os.close(child_read)
            os.close(child_write)
        self._requests = Connection(parent_write, readable=False)
        self._answers = Connection(parent_read, writable=False)
        self._started = False

    def call(self, request: Request) -> Answer:
        """Send one request and wait for its answer; on overrun or crash, kill and raise."""
        sources, seconds = request[0], request[2]
        what = shown(sources[0]) if len(sources) == 1 else f"{len(sources)} expressions"
        what = f"Evaluating {what}"
        try:
            if not self._started:  # wait for its first message: it has started
                if not self._answers.poll(_SANDBOX_START_SECONDS):
                    raise ExpressionError("The expression sandbox process did not start.")
                self._started = self._answers.recv()
            self._requests.send(request)
            if not self._answers.poll(seconds):
                raise ExpressionError(f"{what} took longer than {seconds:.1f} s and was stopped.")
            answer: Answer = self._answers.recv()
        except (EOFError, OSError):
            self.kill()
            message = f"{what} used more than {SANDBOX_MEMORY_BYTES >> 20} MB and was stopped."
            raise ExpressionError(message) from None
        except BaseException:
            self.kill()
            raise
        return answer

    def kill(self) -> None:
        """End the process at once and release its pipes."""
        self._process.kill()
        self._process.wait()
        self._requests.close()
        self._answers.close()


def _sandbox_call(request: Request) -> dict[str, Any]:
    """Run a request in an idle sandbox process (or a new one); called in a sandbox thread."""
    try:
        process = _IDLE_PROCESSES.get_nowait()
    except queue.Empty:
        process = _SandboxProcess()
    ok, answer = process.call(request)
    _IDLE_PROCESSES.put(process)
    if not ok:
        raise ExpressionError(answer)
    return dict(answer)


# One thread per process: the thread waits on its process, the event loop stays free.
_SANDBOX_THREADS = ThreadPoolExecutor(SANDBOX_PROCESSES, thread_name_prefix="cel-sandbox")
_IDLE_PROCESSES: queue.SimpleQueue[_SandboxProcess] = queue.SimpleQueue()


async def run_in_sandbox(
    sources: list[str], variables: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """Evaluate expressions in a sandbox process within ``seconds``; their JSON values by source."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _SANDBOX_THREADS, _sandbox_call, (sources, variables, seconds)
    )
