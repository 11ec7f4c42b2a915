"""GraphiQL from Flowdeck's own package: the page, its pinned assets, the examples, the SDL.

The real-browser check (rendered offline, a query run with a token, a subscription's every
event) is tests/test_graphiql_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest
from graphql import OperationDefinitionNode, parse, print_ast, validate
from sqlalchemy.ext.asyncio import AsyncEngine

from app.graphiql import STATIC, VENDOR
from app.graphiql.examples import TABS
from app.main import create_app
from app.settings import Settings
from schema import schema

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "tests" / "contract" / "builder.graphql"
SRC = re.compile(r'<(?:script|link)[^>]*?(?:src|href)="([^"]+)"[^>]*?integrity="([^"]+)"')


def sri(data: bytes) -> str:
    """A sha384 Subresource Integrity value."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def manifest() -> dict[str, dict[str, str]]:
    """The vendored files as scripts/vendor_graphiql.py recorded them."""
    return json.loads((VENDOR / "manifest.json").read_text())["files"]


async def page(client: httpx.AsyncClient) -> httpx.Response:
    """GET /graphql as a browser does."""
    return await client.get("/graphql", headers={"accept": "text/html,*/*;q=0.8"})


# --- the page -----------------------------------------------------------------------------


async def test_the_page_loads_only_its_own_assets_each_with_the_pinned_digest(client):
    response = await page(client)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    loaded = SRC.findall(response.text)
    assert [url for url, _ in loaded] == [
        "/graphiql/vendor/graphiql-3.9.0.min.css",
        "/graphiql/vendor/react-18.3.1.production.min.js",
        "/graphiql/vendor/react-dom-18.3.1.production.min.js",
        "/graphiql/vendor/graphiql-3.9.0.min.js",
        "/graphiql/flowdeck-graphiql.js",
    ]
    pinned = manifest()
    for url, integrity in loaded:
        served = await client.get(url)
        assert served.status_code == 200
        # The digest a browser checks is the bytes' digest, and for a vendored file the one
        # recorded when it was vendored.
        assert integrity == sri(served.content), url
        if "/vendor/" in url:
            assert integrity == pinned[url.rsplit("/", 1)[1]]["integrity"], url
    assert "unpkg" not in response.text
    assert re.findall(r'(?:src|href)="(https?:)?//', response.text) == []


async def test_a_content_security_policy_keeps_the_page_on_its_origin(client):
    response = await page(client)

    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert "<script>" not in response.text  # no inline script: the config is inert JSON


async def test_the_page_says_how_to_add_the_token(client):
    response = await page(client)

    assert "Headers" in response.text
    assert '<code>{"Authorization": "Bearer fdk_…"}</code>' in response.text
    assert "flowdeck token create" in response.text


async def test_the_page_opens_with_the_example_tabs(client):
    response = await page(client)

    config = json.loads(
        re.search(
            r'<script id="flowdeck-graphiql-config" type="application/json">(.*?)</script>',
            response.text,
            re.S,
        ).group(1)
    )
    assert config["endpoint"] == "/graphql"
    assert [tab["query"] for tab in config["tabs"]] == [tab.query for tab in TABS]
    assert config["tabs"][0]["headers"] == '{"Authorization": "Bearer fdk_…"}'
    assert [operation_names(tab["query"]) for tab in config["tabs"]] == [
        ["Viewer"],
        ["Templates"],
        ["TemplateClone"],
        ["WorkflowExecute"],
        ["RunProgress"],
        ["RunDetail"],
        ["WorkflowList"],
    ]


# --- assets -------------------------------------------------------------------------------


async def test_vendored_assets_are_immutable_and_the_page_script_is_revalidated(client):
    vendored = await client.get("/graphiql/vendor/graphiql-3.9.0.min.js")
    own = await client.get("/graphiql/flowdeck-graphiql.js")
    css = await client.get("/graphiql/vendor/graphiql-3.9.0.min.css")

    assert vendored.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert vendored.headers["content-type"] == "text/javascript; charset=utf-8"
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert own.headers["cache-control"] == "no-cache"
    assert own.content == (STATIC / "flowdeck-graphiql.js").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/vendor/manifest.json",
        "/graphiql/vendor/react-18.3.1.LICENSE.txt",
        "/graphiql/../main.py",
        "/graphiql/%2e%2e/__init__.py",
        "/graphiql/vendor/../../__init__.py",
        "/graphiql/nope.js",
    ],
)
async def test_only_the_page_assets_are_served(client, path):
    response = await client.get(path)

    assert response.status_code == 404


def test_every_vendored_file_matches_its_manifest_and_carries_a_licence():
    pinned = manifest()
    on_disk = {p.name for p in VENDOR.iterdir()} - {"manifest.json"}

    assert on_disk == set(pinned)
    for name, entry in pinned.items():
        assert sri((VENDOR / name).read_bytes()) == entry["integrity"], name
    packages = {(e["package"], e["version"]) for e in pinned.values()}
    assert packages == {("react", "18.3.1"), ("react-dom", "18.3.1"), ("graphiql", "3.9.0")}
    for package, version in packages:
        licence = (VENDOR / f"{package}-{version}.LICENSE.txt").read_text()
        assert licence.startswith("MIT License"), package


def test_the_package_data_ships_every_graphiql_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["app"]
    package = ROOT / "app"
    files = [
        p.relative_to(package).as_posix()
        for p in (package / "graphiql").rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]

    unshipped = [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert unshipped == []
    assert {"graphiql/page.html", "graphiql/static/vendor/graphiql-3.9.0.min.js"} <= set(files)


# --- the examples -------------------------------------------------------------------------


def operation_names(document: str) -> list[str]:
    """The names of a document's operations, in order."""
    return [
        d.name.value
        for d in parse(document).definitions
        if isinstance(d, OperationDefinitionNode) and d.name
    ]


def definitions(document: str) -> dict[str, str]:
    """Each named definition (operation or fragment) of a document, printed."""
    return {d.name.value: print_ast(d) for d in parse(document).definitions if d.name}


def test_each_example_is_the_contracts_operation_and_validates():
    contract = definitions(CONTRACT.read_text())

    for tab in TABS:
        document = parse(tab.query)
        assert [e.message for e in validate(schema._schema, document)] == [], tab.query
        for name, printed in definitions(tab.query).items():
            assert printed == contract[name], name
        if tab.variables:
            json.loads(tab.variables)


# --- the SDL ------------------------------------------------------------------------------


async def test_schema_graphql_serves_the_sdl(client):
    response = await client.get("/schema.graphql")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == (ROOT / "schema.graphql").read_text()


# --- GraphiQL switched off ----------------------------------------------------------------


@pytest.fixture
async def production_client(
    settings: Settings, engine: AsyncEngine, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app with GraphiQL off, as in production."""
    app = create_app(
        settings.model_copy(update={"graphiql": False}), engine, database_url, own_engine=False
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://flowdeck.test") as client:
        yield client


async def test_with_graphiql_off_the_page_and_its_assets_are_not_served(production_client):
    html = await page(production_client)
    script = await production_client.get("/graphiql/flowdeck-graphiql.js")
    sdl = await production_client.get("/schema.graphql")

    assert (html.status_code, html.headers["content-type"], html.text) == (
        404,
        "text/plain; charset=utf-8",
        "Not Found",
    )
    assert script.status_code == 404
    assert sdl.status_code == 200
    assert sdl.text == (ROOT / "schema.graphql").read_text()
