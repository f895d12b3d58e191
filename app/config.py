"""One typed settings object, read once from RECON_* environment variables."""

from __future__ import annotations

import ipaddress
import urllib.parse
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from platformdirs import user_data_path
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

CommaList = Annotated[list[str], NoDecode]

# libpq modes that refuse to talk without TLS (`prefer`, the default, falls back to plaintext).
_DATABASE_TLS_MODES = frozenset({"require", "verify-ca", "verify-full"})
# Schemes that send what they carry in the clear, and their TLS counterparts.
_PLAINTEXT_SCHEMES = {"ws": "wss", "http": "https"}


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1; anything else (names included) may leave the machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_flag(query: str, key: str) -> bool:
    """A switch in a URL's query string (`?starttls=1`): its last value, true if 1/true/yes/on."""
    values = urllib.parse.parse_qs(query).get(key, ["0"])
    return values[-1].lower() in {"1", "true", "yes", "on"}


def grpc_target_host(target: str) -> str:
    """The host of a gRPC target: `host:port`, `[::1]:port` or `dns:///host:port`."""
    address = target.rsplit("/", 1)[-1]
    return address.rpartition(":")[0] or address


class Settings(BaseSettings):
    """Everything polyrecon can be told; each field is `RECON_<NAME>` in the environment."""

    # hide_input_in_errors: a validation error must not print the tokens and URLs it was given.
    model_config = SettingsConfigDict(
        env_prefix="RECON_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: SecretStr | None = Field(
        default=None, description="Postgres URL; unset starts the embedded Postgres"
    )
    data_dir: Path = Field(
        default_factory=lambda: user_data_path("polyrecon", appauthor=False),
        description="where the embedded Postgres, reports and venue files live",
    )

    exchange_target: str = "grpc-api.preprod.polymarketexchange.com:443"
    exchange_tls: bool = True
    exchange_token: SecretStr | None = None
    participant_id: str | None = Field(default=None, description="firms/<FIRM>/users/<USER>")
    auth0_token_url: str | None = None
    auth0_client_id: str | None = None
    auth0_audience: str | None = None
    auth0_private_key_file: Path | None = None
    symbols: CommaList = Field(default_factory=list, description="symbol shard; empty = all")
    firms: CommaList = Field(default_factory=list)

    feed_orders_url: SecretStr | None = None
    feed_trades_url: SecretStr | None = None

    exchange_allow_insecure: bool = Field(
        default=False, description="allow plaintext gRPC to a non-loopback host (never in prod)"
    )
    allow_insecure_nonloopback: bool = Field(
        default=False,
        description="allow ws:// feeds, http:// webhooks, smtp:// without starttls and a database"
        " without sslmode=require to non-loopback hosts (never in prod; gRPC has"
        " RECON_EXCHANGE_ALLOW_INSECURE)",
    )
    ingest_resume_overlap_seconds: float = Field(
        default=60.0, ge=0, description="re-read this much before the last event on token expiry"
    )
    ingest_batch_max_rows: int = Field(default=5000, ge=1, description="rows per write, at most")
    ingest_batch_max_ms: int = Field(default=50, ge=0, description="wait this long to fill a batch")
    ingest_backoff_cap_seconds: float = Field(default=30.0, gt=0)
    ingest_progress_seconds: float = Field(default=10.0, gt=0, description="progress log period")
    metrics_host: str = "127.0.0.1"

    # A float so that tests and soak runs can tick every few seconds (0.05 = 3 s).
    intraday_minutes: float = Field(default=15, gt=0, description="intraday reconcile interval")
    eod_time: str = Field(default="18:30", pattern=r"^\d{2}:\d{2}$", description="end-of-day HH:MM")
    timezone: str = Field(default="America/New_York", description="time zone of eod_time")
    misfire_grace_seconds: int = Field(default=600, ge=1)

    recon_pending_grace_seconds: float = Field(
        default=600.0, ge=0, description="a pending chain event older than this is a dropped tx"
    )
    recon_stream_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="intraday, compare only up to each stream's newest event less this much",
    )
    recon_drift_tolerance: Decimal = Field(
        default=Decimal("0.01"), ge=0, lt=1, description="pending vs confirmed, as a fraction"
    )
    report_requests_per_minute: float = Field(
        default=12.0, gt=0, description="Report API search calls per minute (venue limit: ~12)"
    )
    report_page_size: int = Field(default=10_000, ge=1, description="Report API page size")
    # 1,000 pages of 10,000 rows is 10M rows (a busy day is ~1M executions); at 12 calls a
    # minute a server that paginates forever is refused after ~85 min, not ~14 h.
    report_max_pages: int = Field(default=1_000, ge=1, description="give up beyond this many")

    alert_urls: SecretStr = Field(
        default=SecretStr(""),
        description="comma-separated notifier URLs: https://… webhook, smtp://host:port?from=…&to=…"
        "[&starttls=1], log: — secret because webhook URLs carry their token",
    )
    alert_smtp_username: str | None = None
    alert_smtp_password: SecretStr | None = None
    alert_timeout_seconds: float = Field(default=10.0, gt=0, description="per send, per notifier")
    alert_backoff_base_seconds: float = Field(default=30.0, gt=0)
    alert_backoff_cap_seconds: float = Field(default=3600.0, gt=0)

    log_level: str = "INFO"
    log_json: bool = False
    metrics_port: int | None = None

    @field_validator("symbols", "firms", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _tls_beyond_loopback(self) -> Settings:
        problems = self.plaintext_endpoints()
        if problems:
            raise PydanticCustomError(
                "plaintext_endpoint", "{problems}", {"problems": "\n".join(problems)}
            )
        return self

    def plaintext_endpoints(self) -> list[str]:
        """Why each configured non-loopback endpoint would be reached without TLS.

        Messages name the variable and the host only: the URLs themselves carry keys.
        """
        problems = []
        target_host = grpc_target_host(self.exchange_target)
        if not (self.exchange_tls or self.exchange_allow_insecure or is_loopback_host(target_host)):
            problems.append(
                f"RECON_EXCHANGE_TARGET: plaintext gRPC (RECON_EXCHANGE_TLS=false) to"
                f" {target_host}; turn TLS on, or set RECON_EXCHANGE_ALLOW_INSECURE=true if you"
                " really mean it"
            )
        if self.allow_insecure_nonloopback:
            return problems
        alert_urls = self.alert_urls.get_secret_value().split(",")
        urls = [
            ("RECON_FEED_ORDERS_URL", self.feed_orders_url),
            ("RECON_FEED_TRADES_URL", self.feed_trades_url),
            *(("RECON_ALERT_URLS", SecretStr(url)) for url in alert_urls),
        ]
        for name, url in urls:
            parts = urllib.parse.urlsplit(url.get_secret_value().strip() if url else "")
            host = parts.hostname or ""
            if parts.scheme in _PLAINTEXT_SCHEMES and not is_loopback_host(host):
                problems.append(
                    f"{name}: {parts.scheme}:// to {host} is plaintext and the URL carries its key;"
                    f" use {_PLAINTEXT_SCHEMES[parts.scheme]}://, or set"
                    " RECON_ALLOW_INSECURE_NONLOOPBACK=true"
                )
            # smtp:// is TLS only when asked to upgrade; without it the login goes in the clear.
            if parts.scheme == "smtp" and not (
                url_flag(parts.query, "starttls") or is_loopback_host(host)
            ):
                problems.append(
                    f"{name}: smtp:// to {host} without starttls=true sends the mail and the SMTP"
                    " password in the clear; add starttls=true, use smtps://, or set"
                    " RECON_ALLOW_INSECURE_NONLOOPBACK=true"
                )
        remote = _remote_database_hosts(self.database_url)
        if remote:
            problems.append(
                f"RECON_DATABASE_URL: {','.join(remote)} without TLS; add ?sslmode=require"
                " (or verify-full), or set RECON_ALLOW_INSECURE_NONLOOPBACK=true"
            )
        return problems


def _remote_database_hosts(database_url: SecretStr | None) -> list[str]:
    """The non-loopback hosts a database URL reaches without a TLS-only sslmode.

    Hosts are the URL's and any `?host=` (libpq's multi-host form); a host that is a directory
    is a Unix socket, local like no host at all.
    """
    if database_url is None:
        return []
    try:
        url = make_url(database_url.get_secret_value())
    except (ArgumentError, ValueError):
        return []  # cannot connect either: the connection attempt will say so
    if url.query.get("sslmode") in _DATABASE_TLS_MODES:
        return []
    extra = url.query.get("host", ())
    hosts = [url.host or "", *([extra] if isinstance(extra, str) else extra)]
    names = [h.rpartition(":")[0] if h.count(":") == 1 else h for h in hosts]
    return [h for h in names if h and not h.startswith("/") and not is_loopback_host(h)]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
