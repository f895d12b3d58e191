"""Structured logs that never carry a secret, and the Prometheus metrics of the ingest workers."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

if TYPE_CHECKING:
    from app.config import Settings

REDACTED = "[REDACTED]"

# Patterns for secrets we may not know by value: a bearer token or JWT in an error message,
# the api key that the feed URLs carry in their path, a password inside a database URL.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Six characters at least, as for register_secret: "invalid bearer token)" is prose.
    (re.compile(r"(?i)(bearer\s+)[^\s'\",;()\[\]]{6,}"), r"\1" + REDACTED),
    (re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"), REDACTED),
    (re.compile(r"(/ws/)[^/\s?#'\"]+"), r"\1" + REDACTED),
    (re.compile(r"(://[^:/\s@]+:)[^@\s/]+(@)"), r"\1" + REDACTED + r"\2"),
    (
        re.compile(
            r"(?i)\b((?:password|passwd|secret|access_token|client_assertion|api_?key|token)"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s&\"',;}]+"
        ),
        r"\1" + REDACTED,
    ),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        REDACTED,
    ),
)

_known_secrets: set[str] = set()
# Refreshed access tokens keep arriving: only the newest are kept (older ones have expired and
# are worth nothing), so a long-running worker's list stays short.
_rotating_secrets: dict[str, None] = {}
_ROTATING_MAX = 16
_known_lock = threading.Lock()


def register_secret(value: str | None, *, rotating: bool = False) -> None:
    """Redact this exact value wherever it appears in a log record from now on."""
    # Very short values would shred ordinary words; such a secret would be worthless anyway.
    if not value or len(value) < 6:
        return
    with _known_lock:
        if not rotating:
            _known_secrets.add(value)
            return
        _rotating_secrets[value] = None
        while len(_rotating_secrets) > _ROTATING_MAX:
            del _rotating_secrets[next(iter(_rotating_secrets))]


def register_settings_secrets(settings: Settings, database_url: str | None = None) -> None:
    """Register every credential the configuration holds, before anything can log it.

    `database_url` is the URL in use when it is not the configured one (embedded Postgres).
    """
    for secret in (settings.exchange_token, settings.alert_smtp_password):
        if secret is not None:
            register_secret(secret.get_secret_value())
    configured = settings.database_url.get_secret_value() if settings.database_url else None
    for url in (configured, database_url):
        if url is not None:
            _register_password(url)
    endpoints = [
        u.get_secret_value() for u in (settings.feed_orders_url, settings.feed_trades_url) if u
    ]
    endpoints += settings.alert_urls.get_secret_value().split(",")
    for url in (u.strip() for u in endpoints):
        # A feed's API key is the last segment of its path, and so is a webhook's token (or it
        # is in the query); an SMTP URL may carry a password.
        parts = urllib.parse.urlsplit(url)
        for part in (url, parts.path.rstrip("/").rpartition("/")[2], parts.query):
            register_secret(part)
        _register_password(url)


def _register_password(url: str) -> None:
    password = urllib.parse.urlsplit(url).password
    if password is not None:
        register_secret(password)
        register_secret(urllib.parse.unquote(password))


def redact(text: str) -> str:
    with _known_lock:
        known = sorted(_known_secrets.union(_rotating_secrets), key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class RedactingFilter(logging.Filter):
    """Rewrites every record a handler emits: message, arguments, traceback and extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str)


class KeyValueFormatter(logging.Formatter):
    """Human-readable lines with `extra=` fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        fields = " ".join(f"{k}={v}" for k, v in extras.items())
        return f"{head} {fields}{sep}{tail}"


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time, so a live progress display that
    redirects stderr keeps log lines above itself instead of being torn by them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Replace the root handlers with one stderr handler behind the redaction filter."""
    handler = _StderrHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # grpc and websockets log connection details (URLs with keys) at DEBUG; keep them behind
    # the same handler but not chatty.
    logging.getLogger("websockets").setLevel(max(logging.INFO, root.level))


class IngestMetrics:
    """The ingest worker's Prometheus series, on a registry of its own (tests build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "recon_ingest_events", "Events committed, per source", ["source"], registry=r
        )
        self.dead_letters = Counter(
            "recon_ingest_dead_letters",
            "Inputs sent to the dead-letter table",
            ["source"],
            registry=r,
        )
        self.reconnects = Counter(
            "recon_ingest_reconnects",
            "Stream or feed reconnects",
            ["source", "reason"],
            registry=r,
        )
        self.gaps = Counter(
            "recon_ingest_gaps",
            "Windows recorded for Report API backfill",
            ["source"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "recon_ingest_batch_seconds",
            "Time to commit one batch (COPY + merge + checkpoint)",
            ["source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.lag_seconds = Gauge(
            "recon_ingest_lag_seconds",
            "Now minus the newest committed event time",
            ["source"],
            registry=r,
        )
        self.last_event_time = Gauge(
            "recon_ingest_last_event_timestamp_seconds",
            "Newest committed event time",
            ["source"],
            registry=r,
        )
        self.connected = Gauge(
            "recon_ingest_connected",
            "1 while the source's stream or feed is open",
            ["source"],
            registry=r,
        )
        self.healthy = Gauge("recon_ingest_healthy", "1 while the worker is healthy", registry=r)


HealthCheck = Callable[[], tuple[bool, Mapping[str, Any]]]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


class MetricsServer:
    """`/metrics` (Prometheus text format) and `/healthz` (200 or 503 with a JSON body)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: HealthCheck):
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                ok, details = health()
                # Failure texts may quote what a peer answered, and a peer may echo a credential.
                doc = {"status": "ok" if ok else "unhealthy", **details}
                body = redact(json.dumps(doc)).encode()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [body]
            result: Iterable[bytes] = metrics_app(environ, start_response)
            return result

        self._server = make_server(
            host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="metrics-http", daemon=True
        )

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
