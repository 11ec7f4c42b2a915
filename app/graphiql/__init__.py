"""GraphiQL served from Flowdeck's own package: the page, its pinned assets, and the SDL.

The page loads nothing from another origin: React and GraphiQL are vendored (pinned, with
their licences, by ``scripts/vendor_graphiql.py``) and served under ``/graphiql/``, each
with the Subresource Integrity digest recorded when it was vendored, and a
Content-Security-Policy keeps every load and connection on this origin.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.graphiql.examples import TABS, TOKEN_HEADERS

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
ASSET_PATH = "/graphiql/"
PAGE_SCRIPT = "flowdeck-graphiql.js"
# Load order matters: GraphiQL's bundle expects React and ReactDOM as globals.
SCRIPTS = (
    "vendor/react-18.3.1.production.min.js",
    "vendor/react-dom-18.3.1.production.min.js",
    "vendor/graphiql-3.9.0.min.js",
    PAGE_SCRIPT,
)
STYLESHEETS = ("vendor/graphiql-3.9.0.min.css",)
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# GraphiQL sets style attributes and embeds its fonts as data: URLs; 'self' also allows
# WebSockets to this host (CSP level 3).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "font-src data:; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Asset:
    """A file the page loads: its bytes, media type and Subresource Integrity digest."""

    body: bytes
    media_type: str
    integrity: str
    immutable: bool  # a versioned file name: browsers may keep it for good


def sri(data: bytes) -> str:
    """The ``sha384-…`` Subresource Integrity value of ``data``."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@lru_cache(maxsize=1)
def assets() -> dict[str, Asset]:
    """Every servable asset by its path under /graphiql/, read once."""
    manifest = json.loads((VENDOR / "manifest.json").read_text(encoding="utf-8"))["files"]
    table = {}
    for name in (*SCRIPTS, *STYLESHEETS):
        path = STATIC / name
        body = path.read_bytes()
        vendored = name.startswith("vendor/")
        # Vendored files carry the digest pinned when they were vendored, not one computed
        # now: a file that drifted since is refused by the browser instead of run.
        integrity = manifest[path.name]["integrity"] if vendored else sri(body)
        table[name] = Asset(body, MEDIA_TYPES[path.suffix], integrity, immutable=vendored)
    return table


def _script_json(value: object) -> str:
    # Inside <script>, "</" would end the element early: escape every "<".
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


@lru_cache(maxsize=1)
def page() -> str:
    """The GraphiQL page's HTML, opening with the example tabs."""
    table = assets()
    stylesheets = "\n".join(
        f'<link rel="stylesheet" href="{ASSET_PATH}{name}" integrity="{table[name].integrity}">'
        for name in STYLESHEETS
    )
    scripts = "\n".join(
        f'<script src="{ASSET_PATH}{name}" integrity="{table[name].integrity}"></script>'
        for name in SCRIPTS
    )
    config = {
        "endpoint": "/graphql",
        "tabs": [tab.as_graphiql() for tab in TABS],
        "tokenHeaders": TOKEN_HEADERS,
    }
    template = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
    return (
        template.replace("{{stylesheets}}", stylesheets)
        .replace("{{scripts}}", scripts)
        .replace("{{config}}", _script_json(config))
    )


def page_response() -> Response:
    """The GraphiQL page, with a policy that keeps it on this origin."""
    return HTMLResponse(
        page(),
        headers={
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "cache-control": "no-cache",
        },
    )


async def asset(request: Request) -> Response:
    """One vendored or page asset; 404 for any other name."""
    found = assets().get(request.path_params["name"])
    if found is None:
        return PlainTextResponse("Not Found", status_code=404)
    caching = "public, max-age=31536000, immutable" if found.immutable else "no-cache"
    return Response(
        found.body,
        media_type=found.media_type,
        headers={"cache-control": caching, "x-content-type-options": "nosniff"},
    )


def routes(sdl: str, *, graphiql_enabled: bool) -> list[Route]:
    """``/schema.graphql`` (the schema's SDL), and GraphiQL's assets when GraphiQL is on."""

    text = sdl.rstrip("\n") + "\n"  # as `python -m schema` exports it

    async def schema_sdl(request: Request) -> Response:
        return PlainTextResponse(text)  # text/plain; charset=utf-8

    served = [Route("/schema.graphql", schema_sdl, methods=["GET"])]
    if graphiql_enabled:
        served.append(Route(ASSET_PATH + "{name:path}", asset, methods=["GET"]))
    return served
