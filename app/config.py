"""One typed settings object, read once from RECON_* environment variables."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from platformdirs import user_data_path
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything polyrecon can be told; each field is `RECON_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RECON_", extra="ignore", frozen=True)

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
    ingest_resume_overlap_seconds: float = Field(
        default=60.0, ge=0, description="re-read this much before the last event on token expiry"
    )
    ingest_batch_max_rows: int = Field(default=5000, ge=1, description="rows per write, at most")
    ingest_batch_max_ms: int = Field(default=50, ge=0, description="wait this long to fill a batch")
    ingest_backoff_cap_seconds: float = Field(default=30.0, gt=0)
    ingest_progress_seconds: float = Field(default=10.0, gt=0, description="progress log period")
    metrics_host: str = "127.0.0.1"

    intraday_minutes: int = Field(default=15, ge=1, description="intraday reconcile interval")
    eod_time: str = Field(default="18:30", pattern=r"^\d{2}:\d{2}$", description="end-of-day HH:MM")
    timezone: str = Field(default="America/New_York", description="time zone of eod_time")
    misfire_grace_seconds: int = Field(default=600, ge=1)

    recon_pending_grace_seconds: float = Field(
        default=600.0, ge=0, description="a pending chain event older than this is a dropped tx"
    )
    recon_drift_tolerance: Decimal = Field(
        default=Decimal("0.01"), ge=0, lt=1, description="pending vs confirmed, as a fraction"
    )
    report_requests_per_minute: float = Field(
        default=12.0, gt=0, description="Report API search calls per minute (venue limit: ~12)"
    )
    report_page_size: int = Field(default=10_000, ge=1, description="Report API page size")
    report_max_pages: int = Field(default=10_000, ge=1, description="give up beyond this many")

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
