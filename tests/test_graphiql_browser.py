"""GraphiQL in a real browser, offline: Debian's Chromium against a `flowdeck serve` process.

The browser may reach nothing but loopback (every other host name resolves to nothing and
every other address goes to a dead proxy), and every URL it requests is recorded through the
DevTools protocol: the test fails if one leaves loopback. Through the page itself it signs
in with a token in the Headers tab, runs the Viewer example, then runs the RunProgress
subscription from another tab (the token carried over) and reads every event of a run.

Skipped only when Chromium is not installed outside CI; in CI (.ci/run installs it) its
absence is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import TEST_SECRET_KEY
from tests.factories import Factory
from tests.runs import create_workflow, edge, execute, node, wait_for

PLACEHOLDER_HEADERS = '{"Authorization": "Bearer fdk_…"}'
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
TOOL_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"
RESULT = ".graphiql-response .CodeMirror"


@pytest.fixture
def chromium() -> str:
    """Chromium's path; a skip when it is absent outside CI, a failure in CI."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail("Chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """`flowdeck serve` (API and embedded worker) on a free loopback port; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "FLOWDECK_ENV": "development",
        "FLOWDECK_SECRET_KEY": TEST_SECRET_KEY,
        "FLOWDECK_DATA_DIR": str(tmp_path / "data"),
        "FLOWDECK_LOG_JSON": "false",
    }
    command = [sys.executable, "-c", "from app.cli import main; main()", "serve"]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "flowdeck serve did not start within 60 s"
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class DevTools:
    """A DevTools protocol session with one page; events are kept as they arrive."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command; its result."""
        self.last_id += 1
        sent = self.last_id
        await self.socket.send(json.dumps({"id": sent, "method": method, "params": params}))
        while True:
            message = json.loads(await self.socket.recv())
            if message.get("id") == sent:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            self.events.append(message)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        while True:
            value = await self.evaluate(guarded)
            if value:
                return value
            assert asyncio.get_running_loop().time() < deadline, f"never true: {expression}"
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> None:
        """A PNG of the page."""
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    def requested_urls(self) -> list[str]:
        """Every URL the page requested or opened a WebSocket to."""
        urls = []
        for event in self.events:
            if event.get("method") == "Network.requestWillBeSent":
                urls.append(event["params"]["request"]["url"])
            elif event.get("method") == "Network.webSocketCreated":
                urls.append(event["params"]["url"])
        return urls

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors and browser-logged errors (CSP, SRI, network)."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:500])
            elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(json.dumps(params["args"])[:500])
            elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found


@contextlib.asynccontextmanager
async def browser(chromium: str, tmp_path: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium, fresh profile, loopback only; a DevTools session with its page."""
    profile = tmp_path / "chromium-profile"
    process = await asyncio.create_subprocess_exec(
        *[
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            # Addresses need no resolver: send them to a dead proxy (loopback bypasses it).
            "--proxy-server=http://127.0.0.1:9",
            "--remote-debugging-port=0",
            "--window-size=1400,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        for _ in range(300):
            if active.exists() and len(active.read_text().split()) == 2:
                break
            await asyncio.sleep(0.1)
        port = active.read_text().split()[0]
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            devtools = DevTools(socket)
            for domain in ("Network", "Page", "Runtime", "Log"):
                await devtools.call(f"{domain}.enable")
            yield devtools
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def editor(selector: str) -> str:
    """JavaScript for the CodeMirror instance under ``selector``."""
    return f"document.querySelector({json.dumps(selector)}).CodeMirror"


def click_tool(label: str) -> str:
    """JavaScript clicking the Variables or Headers button under the editor."""
    return (
        "Array.from(document.querySelectorAll('.graphiql-editor-tools button'))"
        f".find(b => b.textContent.trim() === {json.dumps(label)}).click()"
    )


async def run_in_page(devtools: DevTools) -> None:
    """Press GraphiQL's execute button."""
    await devtools.evaluate("document.querySelector('.graphiql-execute-button').click()")


async def result(devtools: DevTools, condition: str, timeout: float = 30) -> Any:
    """The result pane's JSON once ``condition`` (JavaScript over ``r``) holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        shown = await devtools.evaluate(f"{editor(RESULT)}.getValue()")
        holds = f"(r => Boolean({condition}))(JSON.parse({json.dumps(shown)}))"
        if shown and await devtools.evaluate(
            f"(() => {{ try {{ return {holds}; }} catch (e) {{ return false; }} }})()"
        ):
            return json.loads(shown)
        assert asyncio.get_running_loop().time() < deadline, f"the result pane shows: {shown}"
        await asyncio.sleep(0.1)


def hello_graph() -> dict[str, Any]:
    """trigger → text.format → output: a run of a few events, needing nothing outside."""
    return {
        "nodes": [
            node("t", "trigger"),
            node("greet", "text.format", template="Hello {{ trigger.name }}"),
            node("out", "output", value="{{ input }}"),
        ],
        "edges": [edge("t", "greet", "out"), edge("greet", "out", "out")],
    }


async def test_graphiql_renders_offline_runs_a_query_and_lists_every_subscription_event(
    chromium: str, server: str, factory: Factory, tmp_path: Path
) -> None:
    # Given an owner, and a run that the server's own worker drove to its end
    owner = await factory.owner()
    workflow_id = await create_workflow(factory, owner, hello_graph(), name="Hello")
    run_id = (await execute(factory, owner, workflow_id, {"name": "Ada"}))["run"]["id"]
    assert (await wait_for(factory, owner, run_id))["status"] == "SUCCEEDED"
    async with factory.engine.connect() as conn:
        events = (await conn.execute(text("SELECT seq, type FROM run_events ORDER BY seq"))).all()
    screenshot = os.environ.get("FLOWDECK_GRAPHIQL_SCREENSHOT")

    async with asyncio.timeout(120), browser(chromium, tmp_path) as devtools:
        # When GraphiQL is opened
        await devtools.call("Page.navigate", url=f"{server}/graphql")
        # Then the editor renders with the first example, the token's place shown
        await devtools.wait_for(f"{editor(QUERY_EDITOR)}.getValue().includes('query Viewer')")
        await devtools.evaluate(click_tool("Headers"))
        assert await devtools.evaluate(f"{editor(TOOL_EDITOR)}.getValue()") == PLACEHOLDER_HEADERS

        # When the token goes into the Headers tab and the example runs
        token_headers = json.dumps({"Authorization": f"Bearer {owner.token}"})
        await devtools.evaluate(f"{editor(TOOL_EDITOR)}.setValue({json.dumps(token_headers)})")
        await run_in_page(devtools)
        # Then the result is the signed-in viewer
        viewer = await result(devtools, "r.data && r.data.viewer")
        assert viewer["data"]["viewer"]["email"] == owner.user.email
        assert viewer["data"]["viewer"]["memberships"] == [
            {"role": "OWNER", "workspace": {"id": owner.workspace_id, "name": "Acme"}}
        ]
        await devtools.screenshot(tmp_path / "graphiql.png")
        if screenshot:
            await devtools.screenshot(Path(screenshot))

        # When the RunProgress tab (no headers of its own) subscribes to the finished run
        await devtools.evaluate("document.querySelector('#graphiql-session-tab-4').click()")
        await devtools.wait_for(
            f"{editor(QUERY_EDITOR)}.getValue().includes('subscription RunProgress')"
        )
        # GraphiQL takes the operation's name from the editor after a debounce: until then
        # a click would send the previous tab's name.
        await devtools.wait_for("localStorage.getItem('graphiql:operationName') === 'RunProgress'")
        await devtools.evaluate(click_tool("Variables"))
        variables = json.dumps({"runId": run_id})
        await devtools.evaluate(f"{editor(TOOL_EDITOR)}.setValue({json.dumps(variables)})")
        await run_in_page(devtools)
        # Then every event of the run is listed, in order, not only the last
        listed = await result(devtools, f"r.payloads && r.payloads.length >= {len(events)}")
        assert [p["data"]["runProgress"]["seq"] for p in listed["payloads"]] == [
            seq for seq, _ in events
        ]
        assert [p["data"]["runProgress"]["type"] for p in listed["payloads"]] == [
            kind for _, kind in events
        ]
        assert listed["payloads"][-1]["data"]["runProgress"]["type"] == "RUN_SUCCEEDED"
        await devtools.screenshot(tmp_path / "graphiql-subscription.png")
        if screenshot:
            await devtools.screenshot(Path(screenshot).with_name("graphiql-subscription.png"))

        # And nothing left loopback, nothing failed in the page
        await devtools.evaluate("1")  # collect the events still in flight
        urls = devtools.requested_urls()
        origin = server.removeprefix("http://")
        assert [
            url
            for url in urls
            if not url.startswith((f"http://{origin}/", f"ws://{origin}/", "data:"))
        ] == []
        assert f"{server}/graphiql/vendor/graphiql-3.9.0.min.js" in urls
        assert f"ws://{origin}/graphql" in urls
        assert devtools.problems() == []
