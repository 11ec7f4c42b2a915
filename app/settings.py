"""Flowdeck's one settings object, read from the environment (prefix ``FLOWDECK_``)."""

from __future__ import annotations

import json
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A worker is judged stalled after at least this many heartbeat intervals of silence.
STALLED_HEARTBEATS = 3


class Environment(StrEnum):
    """Where Flowdeck runs; development turns on GraphiQL and field suggestions."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of Flowdeck, each described; ``flowdeck config`` prints them masked."""

    model_config = SettingsConfigDict(env_prefix="FLOWDECK_", extra="ignore")

    env: Environment = Field(
        Environment.DEVELOPMENT,
        description="development or production; production hides GraphiQL and suggestions.",
    )
    database_url: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "FLOWDECK_DATABASE_URL"),
        description="postgresql:// URL of the server; unset starts an embedded PostgreSQL.",
    )
    data_dir: Path = Field(
        Path(platformdirs.user_data_dir("flowdeck")),
        description="Where the embedded PostgreSQL keeps its data (and generated keys).",
    )
    host: str = Field("127.0.0.1", description="Address `flowdeck serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `flowdeck serve` listens on.")
    public_url: str | None = Field(
        None, description="Base URL clients reach the API at (for printed and webhook URLs)."
    )
    graphiql: bool | None = Field(
        None, description="Serve GraphiQL at /graphql; default: on in development only."
    )
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_json: bool | None = Field(
        None,
        description="Log one JSON object a line (true) or readable lines (false); unset: "
        "JSON in production or when stderr is not a terminal, readable lines on a terminal.",
    )
    shutdown_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="Longest `flowdeck serve` takes to stop after SIGTERM or Ctrl-C; past it, "
        "or at a second signal, it stops the embedded PostgreSQL and exits at once.",
    )
    db_pool_size: int = Field(10, ge=1, le=200, description="Database connections per process.")
    db_pool_overflow: int = Field(10, ge=0, le=200, description="Extra connections under load.")
    db_pool_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Longest a request waits for a free database connection before it is "
        "answered 503 SERVICE_UNAVAILABLE (with Retry-After).",
    )
    db_statement_timeout_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="PostgreSQL statement_timeout of every connection (lock waits included), "
        "so slow statements cannot hold the pool; 0 turns it off. Migrations run without it.",
    )
    retry_after_seconds: int = Field(
        5,
        ge=1,
        le=3600,
        description="Retry-After of a 503 answered while the database is unavailable.",
    )
    metrics_query_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Longest /metrics waits for the database to read the queue; past it the "
        "queue gauges are left out of that scrape.",
    )
    readiness_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=30,
        description="Longest /readyz waits for the database before it answers 503.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest accepted HTTP request body, in bytes."
    )
    max_query_depth: int = Field(12, ge=2, description="Deepest GraphQL selection nesting.")
    max_aliases: int = Field(30, ge=1, description="Most aliases in one GraphQL operation.")
    max_tokens: int = Field(3000, ge=100, description="Most lexer tokens in one GraphQL document.")
    max_graph_nodes: int = Field(500, ge=1, description="Most nodes in a workflow graph.")
    max_graph_edges: int = Field(2000, ge=1, description="Most edges in a workflow graph.")
    max_graph_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest workflow graph, in bytes of compact JSON."
    )
    max_graph_depth: int = Field(32, ge=4, description="Deepest JSON nesting inside a graph.")
    max_string_length: int = Field(
        100_000, ge=100, description="Longest string (characters) inside a graph."
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (https://app.example.com) whose pages may open WebSockets "
        "to the API, besides the API's own origin; comma-separated.",
    )
    max_subscriptions_per_connection: int = Field(
        20, ge=1, description="Subscriptions one WebSocket may hold at once."
    )
    max_connections_per_user: int = Field(
        10, ge=1, description="WebSockets one user may hold open on one API process."
    )
    slow_subscriber_seconds: float = Field(
        30.0,
        gt=0,
        description="A WebSocket whose sends stay blocked this long (its client stopped "
        "reading) is ended; its client resumes with afterSeq.",
    )
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port where `flowdeck worker` serves /metrics and /healthz (on "
        "FLOWDECK_HOST); 0: none. A port in use stops the worker at start.",
    )
    worker_concurrency: int = Field(
        10, ge=1, le=500, description="Runs one worker process drives at the same time."
    )
    worker_heartbeat_seconds: float = Field(
        2.0, gt=0, description="How often a worker says it is alive."
    )
    worker_stalled_seconds: float = Field(
        10.0,
        gt=0,
        description="Silence after which a worker's runs go to another worker; at least "
        "three heartbeats (FLOWDECK_WORKER_HEARTBEAT_SECONDS), so a live worker is not judged "
        "stalled for one late heartbeat.",
    )
    run_timeout_seconds: int = Field(
        3600, ge=1, description="Longest a run may take before it ends FAILED."
    )
    inline_runs: int = Field(
        64,
        ge=0,
        le=10_000,
        description="Runs an API process drives itself, where they were queued (a webhook "
        "delivery, workflowExecute, runRetry); past this they go to the workers. 0: never.",
    )
    run_lease_seconds: float = Field(
        15.0,
        ge=1,
        description="How long a run driven where it was queued stays its process's without a "
        "renewal (renewed every third of it, so two renewals may be late or lost before it "
        "runs out); a process gone longer loses it to a worker.",
    )
    max_run_input_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest run input, in bytes of compact JSON."
    )
    outbound_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts or networks (CIDR) http.request may reach although private, "
        "loopback or link-local; comma-separated or a JSON list.",
    )
    http_timeout_seconds: float = Field(30.0, gt=0, description="Longest an HTTP call may take.")
    http_max_response_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest HTTP response body a node reads."
    )
    http_max_redirects: int = Field(5, ge=0, le=20, description="Redirects an HTTP call follows.")
    secret_key: SecretStr | None = Field(
        None,
        description="Keys that encrypt secrets: base64 of 32 random bytes each, comma-separated; "
        "the first encrypts, the others only decrypt (rotation). Unset: a key generated into "
        "the data directory (development, or the embedded PostgreSQL).",
    )
    schedule_tick_seconds: float = Field(
        1.0, gt=0, le=60, description="How often workers look for due schedules."
    )
    webhook_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest webhook request body, in bytes (else 413)."
    )
    webhook_rate_per_second: float = Field(
        20.0, gt=0, description="Sustained webhook requests per second, per webhook and process."
    )
    webhook_rate_burst: int = Field(
        40, ge=1, description="Webhook requests accepted at once above the sustained rate."
    )
    webhook_signature_tolerance_seconds: int = Field(
        300, ge=1, description="How far a signed webhook's timestamp may be from the clock."
    )
    webhook_wait_seconds: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Longest a waitForResult webhook waits for its run before answering 202.",
    )
    max_step_io_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest input or output of one step that is stored, in bytes of compact "
        "JSON; longer strings and lists are cut and end with a [truncated: …] marker.",
    )
    pdf_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest PDF pdf.extract_text reads, in bytes."
    )
    pdf_max_pages: int = Field(500, ge=1, description="Most pages pdf.extract_text reads.")
    compiled_reads: bool = Field(
        True,
        description="Answer the queries a plan covers (workflows, versions, the workflow list) "
        "without per-field GraphQL execution (schema/compiled/); off: every query is executed "
        "field by field. The answers are the same either way.",
    )
    persisted_queries: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="Automatic persisted queries each API process keeps (an LRU of query "
        "texts by SHA-256); 0 turns them off (answered PersistedQueryNotSupported).",
    )
    persisted_query_max_bytes: int = Field(
        16384,
        ge=1024,
        le=1_048_576,
        description="Longest query text kept as a persisted query, in UTF-8 bytes.",
    )
    token_cache_seconds: float = Field(
        10.0,
        ge=0,
        le=60,
        description="How long an API process keeps a signed-in token's user and roles, so a "
        "request signs in without a query (0: never). A revoked token, a removed member or "
        "a changed role is dropped at once in every process (PostgreSQL NOTIFY); this bounds "
        "the rest.",
    )
    token_recheck_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How often an open subscription (and a socket) signs in again: a revoked "
        "or expired API token stops working on them within this many seconds.",
    )
    run_prune_interval_seconds: float = Field(
        3600.0,
        gt=0,
        description="How often workers delete finished runs older than their workspace's "
        "runRetentionDays (with their steps and events).",
    )
    node_test_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=600,
        description="Longest a nodeTest waits for its node (less when the node's own "
        "timeoutSeconds is shorter).",
    )
    bootstrap_email: str = Field(
        "admin@flowdeck.localhost",
        description="Email of the first user made on an empty embedded database.",
    )
    bootstrap_workspace: str = Field(
        "My workspace",
        description="Name of the first workspace made on an empty embedded database.",
    )

    @field_validator("outbound_allow", "allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("secret_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # An empty variable (as compose passes an unset one) means no key was given.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _liveness_margins(self) -> Settings:
        # A heartbeat is late now and then (a busy machine, a slow statement): a live worker
        # whose runs went to another worker would see its steps with effects run twice.
        floor = STALLED_HEARTBEATS * self.worker_heartbeat_seconds
        if self.worker_stalled_seconds < floor:
            raise ValueError(
                f"FLOWDECK_WORKER_STALLED_SECONDS ({self.worker_stalled_seconds:g}) must be at "
                f"least {STALLED_HEARTBEATS} times FLOWDECK_WORKER_HEARTBEAT_SECONDS "
                f"({self.worker_heartbeat_seconds:g}), that is at least {floor:g}: raise it, or "
                "send heartbeats more often."
            )
        return self

    @property
    def development(self) -> bool:
        """True when running in development."""
        return self.env is Environment.DEVELOPMENT

    @property
    def graphiql_enabled(self) -> bool:
        """Whether /graphql serves GraphiQL to browsers."""
        return self.development if self.graphiql is None else self.graphiql

    @property
    def embedded(self) -> bool:
        """True when no DATABASE_URL is set and Flowdeck runs its own PostgreSQL."""
        return self.database_url is None

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain values, secrets masked."""
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value())
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, StrEnum):
                value = value.value
            values[name] = value
        return values


def mask_url(url: str) -> str:
    """Hide the password of a URL (or the whole value when it is not a URL)."""
    if "://" not in url:
        return "********"
    scheme, rest = url.split("://", 1)
    if "@" not in rest:
        return url
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}" if ":" in credentials else url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
