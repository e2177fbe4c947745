from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from croniter import croniter
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that must never sign production tokens (copied from examples and templates).
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "development", "test"})
MIN_SECRET_LENGTH = 32
# Where production serves /metrics unless METRICS_PORT says otherwise: OpenTelemetry's Prometheus
# exporter port, free of the usual API and Prometheus ports.
PRODUCTION_METRICS_PORT = 9464
# Budgets that never run out, for callers that are not clients: `taskql seed` (the server's own
# calls), the benchmarks and the tests (one user, thousands of requests, one address).
UNLIMITED_RATE = {"rate_limit_user_points": 1_000_000_000, "rate_limit_ip_points": 1_000_000_000}


LOCAL_ORIGINS = r"http://(localhost|127\.0\.0\.1)(:[0-9]{1,5})?"


class Settings(BaseSettings):
    """Every knob of the server, read from the environment (and `.env`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    taskql_env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1, description="server processes `taskql serve` starts")
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: JSON in production, text otherwise
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_timeout_seconds: float = Field(
        30, gt=0, description="on SIGTERM: how long in-flight requests may take before the process exits anyway"
    )
    data_dir: Path = Path(".data")

    # Traces (tracing.py). The OTLP exporters read the standard OTEL_EXPORTER_OTLP_* variables.
    tracing_exporter: Literal["none", "console", "otlp-http", "otlp-grpc"] = "none"
    otel_service_name: str = Field("taskql", min_length=1, description="service.name of the spans")

    # Prometheus metrics (metrics.py) at GET /metrics; false: no such route, no per-operation timing.
    metrics_enabled: bool = True
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="/metrics on this port of HOST, not the API's (production default: 9464)",
    )
    metrics_resolver_sample_rate: float = Field(
        0.1, ge=0, le=1, description="share of root-field resolutions timed (timing every one costs CPU)"
    )

    # MongoDB. No URI: `taskql serve` starts an embedded SecantusDB server under data_dir.
    mongodb_uri: str | None = None
    mongodb_database: str = "taskql"
    mongodb_max_pool_size: int = Field(100, ge=1)
    mongodb_min_pool_size: int = Field(0, ge=0)
    mongodb_timeout_ms: int = Field(10_000, ge=100)
    mongodb_server_selection_timeout_ms: int = Field(
        2_000, ge=100, description="how long a request waits for a usable server before SERVICE_UNAVAILABLE"
    )
    mongodb_read_preference: Literal["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"] = (
        "primary"
    )
    mongodb_write_concern: str = "majority"

    # Redis: the cache, event streams, rate limits and persisted queries, shared by all instances.
    # No URL: `taskql serve` starts an embedded Valkey server under data_dir.
    redis_url: str | None = None
    redis_timeout_seconds: float = Field(0.25, gt=0, description="per command; an outage must not stall requests")
    cache_enabled: bool = True
    cache_user_ttl_seconds: int = Field(300, ge=1)
    cache_project_ttl_seconds: int = Field(300, ge=1)
    cache_task_ttl_seconds: int = Field(60, ge=1)
    cache_retry_seconds: float = Field(1.0, gt=0, description="pause before retrying an unreachable Redis")
    loader_max_batch_size: int = Field(100, ge=1, le=1000)

    # Live task events (subscriptions).
    events_max_length: int = Field(10_000, ge=100, description="events kept per project for resuming")
    events_max_age_seconds: int = Field(86_400, ge=60, description="and for at most this long")
    subscription_buffer_size: int = Field(100, ge=1, description="events a slow subscriber may lag behind")
    ws_max_connections_per_user: int = Field(20, ge=1, description="open WebSocket connections, per instance")
    ws_max_subscriptions_per_connection: int = Field(100, ge=1, description="operations running at once on one socket")
    ws_keep_alive_seconds: float = Field(15, gt=0)
    ws_per_message_deflate: bool = Field(
        False, description="compress WebSocket messages when the client offers it (memory and CPU per socket)"
    )
    ws_send_buffer_bytes: int = Field(
        262_144, ge=8_192, description="bytes a WebSocket may hold unsent before its client counts as not reading"
    )
    ws_stalled_seconds: float = Field(
        3, gt=0, description="how long that buffer may stay full before the connection is dropped"
    )
    ws_connection_init_timeout_seconds: float = Field(
        10, gt=0, description="a new WebSocket must send connection_init within this long (then 4408)"
    )

    # What one request may ask for (GraphQL documents over HTTP and WebSocket).
    max_query_depth: int = Field(10, ge=1)
    max_query_aliases: int = Field(15, ge=0, description="including aliases of __typename")
    max_query_tokens: int = Field(2_000, ge=10)
    max_query_directives: int = Field(20, ge=0)
    max_field_repeats: int = Field(5, ge=1, description="copies of one field side by side in one selection")
    max_query_selections: int = Field(
        5_000, ge=1, description="fields one document selects once its fragments are expanded"
    )
    max_query_cost: int = Field(50_000, ge=1, description="nodes the connections of one operation may return")
    max_body_bytes: int = Field(100_000, ge=1_000, description="an HTTP request body")
    max_header_bytes: int = Field(
        16_384, ge=1_024, description="an HTTP request's line and headers together (431 beyond)"
    )
    http_read_timeout_seconds: float = Field(
        10, gt=0, description="a connection's request (headers and body) must arrive within this long"
    )
    max_response_bytes: int = Field(
        10_000_000, ge=10_000, description="one encoded response (or WebSocket message); over it, an error instead"
    )
    batch_max_operations: int = Field(0, ge=0, le=100, description="operations in one JSON array body; 0: no batching")

    # Rate limits, shared by all instances through Redis. An operation costs 1 point plus 1 per 100
    # nodes its connections may return (see max_query_cost).
    rate_limit_window_seconds: int = Field(3_600, ge=1)
    rate_limit_user_points: int = Field(5_000, ge=1, description="per signed-in user and window")
    rate_limit_ip_points: int = Field(
        10_000, ge=1, description="per client IP and window (users behind one NAT share it)"
    )
    login_max_failures: int = Field(
        5, ge=1, description="failed logins/registrations per account from one IP, and per IP across accounts"
    )
    login_max_account_failures: int = Field(
        100, ge=1, description="failed logins/registrations per account from all IPs together"
    )
    login_failure_window_seconds: int = Field(900, ge=1)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses or networks whose X-Forwarded-For is believed"
    )

    # Persisted operations (persisted_queries.py): Apollo's automatic persisted queries, and an
    # optional allowlist (a JSON object of SHA-256 -> document) that only lets those run.
    apq_ttl_seconds: int = Field(86_400, ge=60, description="how long a registered document is kept")
    persisted_operations_file: Path | None = None

    # Browsers: the origins (scheme://host[:port]) whose pages may call the API, over HTTP and
    # WebSocket alike. Empty: same origin only (in development, also localhost: local_origins).
    cors_allow_origins: list[str] = Field(default_factory=list)

    # Tokens. An empty secret outside production is generated once and kept under data_dir.
    jwt_secret: str = ""
    jwt_issuer: str = "taskql"
    jwt_audience: str = "taskql-api"
    access_token_ttl_seconds: int = Field(15 * 60, ge=60, le=3600)
    refresh_token_ttl_days: int = Field(30, ge=1, le=365)
    # A refresh token presented again this soon after its use gets the same successor (two tabs
    # refreshing together), as Auth0's reuse interval and Okta's grace period; later, or at 0, its
    # reuse ends the login.
    refresh_reuse_grace_seconds: int = Field(10, ge=0, le=300)

    # Background jobs (jobs/): notifications, email, reminders, cleanup, on a queue in Redis.
    jobs_in_process: bool | None = Field(
        None, description="run a job worker inside each server process (default: true outside production)"
    )
    jobs_queue: str = Field(
        "taskql", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="the queue's name in Redis"
    )
    jobs_concurrency: int = Field(10, ge=1, le=1000, description="jobs one worker runs at once")
    job_timeout_seconds: int = Field(
        60, ge=1, description="a job running longer is cancelled and retried (also how soon a killed worker's job is)"
    )
    job_max_attempts: int = Field(8, ge=1, le=100, description="attempts of a failing job before it is recorded failed")
    job_retry_delay_seconds: float = Field(
        2, gt=0, description="the first retry's delay; each next one doubles, with jitter, up to an hour"
    )
    reminder_lead_minutes: int = Field(1440, ge=1, description="how long before dueAt its assignee is reminded")
    reminder_schedule: str = Field("* * * * *", description="when due dates are checked: cron, in UTC")
    cleanup_schedule: str = Field("0 * * * *", description="when expired data is deleted: cron, in UTC")
    notification_retention_days: int = Field(90, ge=1, description="read notifications are deleted after this long")

    export_ttl_hours: int = Field(24, ge=1, le=24 * 30, description="an export's file is kept this long")

    # Email. No SMTP_URL: each email is written to DATA_DIR/mail/ as an .eml file (development).
    smtp_url: str | None = Field(
        None, description="smtp://user:password@host:587 (STARTTLS) or smtps://user:password@host:465 (TLS)"
    )
    smtp_timeout_seconds: float = Field(30, gt=0)
    mail_from: str = "TaskQL <no-reply@localhost>"
    public_url: str = Field("http://localhost:8000", description="where links in emails point: the frontend's URL")
    public_api_url: str | None = Field(
        None, description="the API's public URL (export download links); unset: the URL a request came to"
    )

    # Webhooks (jobs/webhooks.py): where they may point, and how deliveries are retried.
    webhook_timeout_seconds: float = Field(10, gt=0, description="a delivery's request, from connecting to the answer")
    webhook_max_attempts: int = Field(8, ge=1, le=20, description="attempts of one delivery before it fails")
    webhook_retry_delay_seconds: float = Field(
        60, gt=0, description="before the second attempt; tripled before each next one, with jitter (~18 h in all)"
    )
    webhook_allow_http: bool = Field(False, description="allow http:// webhook URLs (https:// only otherwise)")
    webhook_allow_private_addresses: bool = Field(
        False, description="allow webhooks to loopback, private, link-local and metadata addresses (SSRF)"
    )
    webhook_delivery_retention_days: int = Field(
        30, ge=1, description="a webhook's finished deliveries are kept this long (its history)"
    )
    webhook_secret_key: str = Field(
        "", description="derives each webhook's signing secret; empty: derived from JWT_SECRET"
    )

    @property
    def runs_jobs_in_process(self) -> bool:
        return (not self.is_production) if self.jobs_in_process is None else self.jobs_in_process

    @property
    def is_production(self) -> bool:
        return self.taskql_env == "production"

    @property
    def local_origins(self) -> str | None:
        """Origins allowed beside CORS_ALLOW_ORIGINS, as a pattern: in development any port of
        localhost, so that a dev server (Vite, Next.js, or its proxy) works with `make run` as is;
        never in production."""
        return None if self.is_production else LOCAL_ORIGINS

    @property
    def separate_metrics_port(self) -> int | None:
        """Where `taskql serve` answers /metrics when not on the API's port: in production, never on it."""
        if not self.metrics_enabled:
            return None
        return self.metrics_port or (PRODUCTION_METRICS_PORT if self.is_production else None)

    @property
    def worker_metrics_port(self) -> int | None:
        """Where `taskql worker` answers /metrics: METRICS_PORT, else 9464 (it has no API port)."""
        return (self.metrics_port or PRODUCTION_METRICS_PORT) if self.metrics_enabled else None

    @property
    def uses_json_logs(self) -> bool:
        return self.log_format == "json" or (self.log_format == "auto" and self.is_production)

    @property
    def access_token_ttl(self) -> timedelta:
        return timedelta(seconds=self.access_token_ttl_seconds)

    @property
    def refresh_token_ttl(self) -> timedelta:
        return timedelta(days=self.refresh_token_ttl_days)

    @property
    def refresh_reuse_grace(self) -> timedelta:
        return timedelta(seconds=self.refresh_reuse_grace_seconds)

    @field_validator("mongodb_uri", "redis_url", "smtp_url", "public_api_url", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value  # `MONGODB_URI=` in a .env or compose file: the embedded server

    @field_validator("reminder_schedule", "cleanup_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError("must be a cron expression: minute hour day month weekday (and seconds, optionally)")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("smtp", "smtps"):
            raise ValueError("SMTP_URL must start with smtp:// (STARTTLS) or smtps:// (TLS from the start)")
        return value

    @model_validator(mode="after")
    def _require_strong_secret_in_production(self) -> Settings:
        if self.is_production and (
            self.jwt_secret.strip().lower() in PLACEHOLDER_SECRETS or len(self.jwt_secret) < MIN_SECRET_LENGTH
        ):
            raise ValueError(
                f"TASKQL_ENV=production needs JWT_SECRET: a random string of at least "
                f"{MIN_SECRET_LENGTH} characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return self

    @model_validator(mode="after")
    def _metrics_port_is_not_the_api_port(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("METRICS_PORT must differ from PORT: it keeps /metrics off the API's port")
        return self

    @model_validator(mode="after")
    def _list_origins_in_production(self) -> Settings:
        if self.is_production and "*" in self.cors_allow_origins:
            raise ValueError('TASKQL_ENV=production needs CORS_ALLOW_ORIGINS to list origins, not "*"')
        return self

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or a development secret generated once and kept in data_dir."""
        return self.jwt_secret or stored_secret(self.data_dir / "jwt-secret")

    def derived_key(self, purpose: str) -> bytes:
        """A key for one purpose only, derived from the JWT secret: none of them signs what another does."""
        return hmac.new(self.resolved_jwt_secret().encode(), f"taskql {purpose}".encode(), hashlib.sha256).digest()

    def resolved_webhook_key(self) -> bytes:
        """WEBHOOK_SECRET_KEY, or a key derived from the JWT secret."""
        return self.webhook_secret_key.encode() if self.webhook_secret_key else self.derived_key("webhook secrets")


def stored_secret(path: Path) -> str:
    """A random secret kept in `path` (readable by this user only), generated by the first caller."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together agree on one secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
