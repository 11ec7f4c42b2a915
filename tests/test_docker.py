"""docker-compose.yml and the Dockerfile, checked without Docker: the compose file's
structure, pgAdmin's registration files, and the image's health check run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.processes import free_port

ROOT = Path(__file__).resolve().parent.parent


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default} and ${NAME}, from ``env``."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3) or ""
        return env.get(name) or default

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", value, text)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as Compose reads it: YAML first, then variables in its strings."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return interpolate(node, env or {}) if isinstance(node, str) else node

    return walk(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_pgadmin_is_pinned_local_only_dev_only_and_has_the_database_registered() -> None:
    spec = compose()
    pgadmin = spec["services"]["pgadmin"]
    assert re.fullmatch(r"dpage/pgadmin4:\d+\.\d+", pgadmin["image"]), pgadmin["image"]
    assert pgadmin["profiles"] == ["dev"]
    assert pgadmin["ports"] == ["127.0.0.1:5050:80"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in pgadmin["volumes"][:2])
    assert mounts == {
        "./deploy/pgadmin/servers.json": "/pgadmin4/servers.json",
        "./deploy/pgadmin/pgpass": pgadmin["environment"]["PGPASS_FILE"],
    }
    # The registered server is compose's PostgreSQL, with its database and credentials
    postgres = spec["services"]["postgres"]["environment"]
    [server] = json.loads((ROOT / "deploy/pgadmin/servers.json").read_text())["Servers"].values()
    assert (server["Host"], server["Port"]) == ("postgres", 5432)
    assert server["MaintenanceDB"] == postgres["POSTGRES_DB"]
    assert server["Username"] == postgres["POSTGRES_USER"]
    # pgAdmin's entrypoint copies PGPASS_FILE to the user's storage directory, which a
    # PassFile starting with "/" is relative to in server mode
    assert server["PassFile"] == "/.pgpass"
    assert (ROOT / "deploy/pgadmin/pgpass").read_text() == (
        f"postgres:5432:*:{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}\n"
    )
    # The API reaches the same database
    api = spec["services"]["api"]
    assert api["environment"]["DATABASE_URL"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}"
    )


@pytest.mark.parametrize("port", [None, "8123"])
def test_the_api_listens_publishes_and_is_probed_on_one_port(port: str | None) -> None:
    spec = compose({"FLOWDECK_PORT": port} if port else {})
    api = spec["services"]["api"]
    expected = port or "8000"
    assert api["environment"]["FLOWDECK_PORT"] == expected
    assert api["ports"] == [f"127.0.0.1:{expected}:{expected}"]
    # serve takes its port from FLOWDECK_PORT, as the health check does
    assert api["command"] == ["flowdeck", "serve", "--no-worker"]
    assert "healthcheck" not in api  # the image's own
    worker = spec["services"]["worker"]
    # A worker serves /healthz beside its /metrics, and is probed there.
    assert worker["environment"] == {**api["environment"], "FLOWDECK_WORKER_METRICS_PORT": "9100"}
    assert worker["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-c",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)",
    ]


def healthcheck_argv() -> list[str]:
    """The exec form of the Dockerfile's HEALTHCHECK CMD."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("HEALTHCHECK")]
    return json.loads(line.split(" CMD ", 1)[1])


def test_the_image_health_check_probes_the_configured_port() -> None:
    argv = healthcheck_argv()
    assert argv[0] == "python"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["flowdeck", "serve", "--no-worker"]' in dockerfile
    assert "FLOWDECK_PORT=8000" in dockerfile
    # A real HTTP server answering /healthz on one port, nothing on another
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", HEALTHZ_SERVER, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "listening\n"

        def probe(configured: int) -> int:
            env = {**os.environ, "FLOWDECK_PORT": str(configured)}
            return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=30).returncode

        assert probe(port) == 0
        assert probe(free_port()) != 0
    finally:
        server.terminate()
        server.wait(timeout=10)


HEALTHZ_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", flush=True)
server.serve_forever()
"""
