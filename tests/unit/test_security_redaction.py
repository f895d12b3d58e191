"""Every credential the configuration holds is known to the redaction before anything logs, and
what the worker serves on /healthz is redacted too."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from app.config import Settings
from app.observability import REDACTED, MetricsServer, redact, register_settings_secrets


def test_every_configured_credential_is_redacted() -> None:
    settings = Settings(
        database_url="postgresql://recon:p%40ss-w0rd-Zq9@127.0.0.1:5432/recon",
        exchange_token="settings-token-8c1d",
        feed_orders_url="wss://feeds.example.com/ws/orders-key-77aa",
        feed_trades_url="wss://feeds.example.com/v1/trades?apikey=trades-key-99bb",
        alert_urls="https://hooks.example.com/services/T0/B0/hook-secret-5e5e,"
        "smtp://mailer:smtp-url-pw-4f4f@mail.example.com:587?starttls=1&to=ops@x.test",
        alert_smtp_password="smtp-password-3c3c",
    )
    secrets = [
        "p%40ss-w0rd-Zq9",  # as in the URL
        "p@ss-w0rd-Zq9",  # as the server and libpq see it
        "settings-token-8c1d",
        "orders-key-77aa",
        "apikey=trades-key-99bb",
        "hook-secret-5e5e",
        "smtp-url-pw-4f4f",
        "smtp-password-3c3c",
    ]
    register_settings_secrets(settings)
    for secret in secrets:
        assert redact(f"failed: {secret}!") == f"failed: {REDACTED}!", secret
    # What is not a secret stays readable: the database name, hosts, the feed path.
    assert redact("db recon on 127.0.0.1, feeds.example.com/ws/") == (
        "db recon on 127.0.0.1, feeds.example.com/ws/"
    )


def test_healthz_body_is_redacted() -> None:
    register_settings_secrets(Settings(exchange_token="healthz-token-6d6d"))

    def health() -> tuple[bool, Mapping[str, Any]]:
        # A source failed on what the venue answered, and the venue quoted our token back.
        return False, {"failure": "UNAUTHENTICATED token healthz-token-6d6d is not valid here"}

    with MetricsServer("127.0.0.1", 0, CollectorRegistry(), health) as server:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
    assert status == 503
    assert "healthz-token-6d6d" not in body
    assert json.loads(body)["failure"] == f"UNAUTHENTICATED token {REDACTED} is not valid here"


def test_bearer_prose_stays_readable() -> None:
    assert redact("refuses our credentials (invalid bearer token)") == (
        "refuses our credentials (invalid bearer token)"
    )
    assert redact("(authorization: Bearer abcdef123456)") == f"(authorization: Bearer {REDACTED})"
