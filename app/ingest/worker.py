"""`recon ingest`: every DropCopy stream and chain feed of one shard, in one asyncio process.

gRPC (grpc.aio, one channel, four streams) and the websockets share the event loop; each source
writes through its own `SourceSink` thread, so sources never wait on each other while each one
stays in order. Shutdown (SIGTERM/SIGINT, or `exit_when_idle`) stops reading, flushes what was
read, commits and returns 0. A fatal problem (credentials, configuration, an unexpected error)
still flushes the other sources, then returns 1 so a supervisor notices.

Operations: Prometheus metrics and `/healthz` on `metrics_port`; a progress line with rows/s per
source every `progress_interval` seconds (a live table instead when stderr is a terminal).

One process for all sources: on the 2-core reference machine, with the venue and Postgres on
it too, splitting DropCopy and the feeds into two worker processes measured no faster
(scripts/bench_ingest.py, run "split") — the machine, not the GIL, is the limit. On a bigger
host, run several `recon ingest --source ...` processes; checkpoints are per source and shard,
so any split is safe.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from app.ingest.auth import AuthError, TokenSource
from app.ingest.backoff import BackoffPolicy
from app.ingest.dropcopy import STREAMS, DropCopyConsumer, IngestFatal, StreamSettings, open_channel
from app.ingest.feeds import ORDERS, TRADES, FeedConsumer, FeedSettings, FeedSpec
from app.ingest.pipeline import SourceSink, SourceStatus, WriteAbandoned
from app.ingest.writer import BatchWriter
from app.observability import IngestMetrics, MetricsServer

log = logging.getLogger(__name__)

DROPCOPY_SOURCES = tuple(spec.source for spec in STREAMS)
FEED_SOURCES = (ORDERS.source, TRADES.source)
ALL_SOURCES = DROPCOPY_SOURCES + FEED_SOURCES
# A source that has been neither connected nor active this long makes the worker unhealthy.
UNHEALTHY_AFTER_S = 60.0
# For --exit-when-idle, a stream the venue has not answered at all is not "quiet" but slow to
# start (a loaded venue, a long TLS handshake); it counts as idle only after this long.
UNANSWERED_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class IngestConfig:
    exchange_target: str | None = None
    exchange_tls: bool = True
    exchange_allow_insecure: bool = False
    participant_id: str | None = None
    symbols: tuple[str, ...] = ()
    firms: tuple[str, ...] = ()
    orders_url: str | None = None
    trades_url: str | None = None
    sources: tuple[str, ...] = ALL_SOURCES
    batch_max_rows: int = 5000
    batch_max_delay: float = 0.05
    resume_overlap: timedelta = timedelta(seconds=60)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    feed: FeedSettings = field(default_factory=FeedSettings)
    progress_interval: float = 10.0
    exit_when_idle: float | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    shutdown_deadline: float = 30.0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        sources: Sequence[str] = (),
        exit_when_idle: float | None = None,
        metrics_port: int | None = None,
    ) -> IngestConfig:
        unknown = set(sources) - set(ALL_SOURCES)
        if unknown:
            raise ValueError(
                f"unknown source(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL_SOURCES)}"
            )
        backoff = BackoffPolicy(cap=settings.ingest_backoff_cap_seconds)
        return cls(
            exchange_target=settings.exchange_target,
            exchange_tls=settings.exchange_tls,
            exchange_allow_insecure=settings.exchange_allow_insecure,
            participant_id=settings.participant_id,
            symbols=tuple(settings.symbols),
            firms=tuple(settings.firms),
            orders_url=_secret(settings.feed_orders_url),
            trades_url=_secret(settings.feed_trades_url),
            sources=tuple(sources) or ALL_SOURCES,
            batch_max_rows=settings.ingest_batch_max_rows,
            batch_max_delay=settings.ingest_batch_max_ms / 1000.0,
            resume_overlap=timedelta(seconds=settings.ingest_resume_overlap_seconds),
            backoff=backoff,
            feed=FeedSettings(backoff=backoff),
            progress_interval=settings.ingest_progress_seconds,
            exit_when_idle=exit_when_idle,
            metrics_host=settings.metrics_host,
            metrics_port=metrics_port if metrics_port is not None else settings.metrics_port,
        )

    @property
    def dropcopy_sources(self) -> tuple[str, ...]:
        return tuple(s for s in DROPCOPY_SOURCES if s in self.sources)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


@dataclass(slots=True)
class _Source:
    status: SourceStatus
    sink: SourceSink
    consumer: DropCopyConsumer | FeedConsumer
    task: asyncio.Task[None] | None = None


class IngestWorker:
    """Owns the sources of one worker process and their lifecycle."""

    def __init__(
        self,
        config: IngestConfig,
        engine: Engine,
        tokens: TokenSource | None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.config = config
        self._engine = engine
        self._tokens = tokens
        self.metrics = metrics or IngestMetrics()
        self.sources: dict[str, _Source] = {}
        self.stop = asyncio.Event()
        self.idle_exit = False
        self._fatal: BaseException | None = None
        self._started = time.monotonic()
        self.metrics_port: int | None = None

    # -- building -----------------------------------------------------------------------------

    def _sink(self, name: str) -> SourceSink:
        return SourceSink(
            SourceStatus(name),
            BatchWriter(self._engine),
            self.metrics,
            max_rows=self.config.batch_max_rows,
            max_delay=self.config.batch_max_delay,
        )

    def _build(self) -> grpc.aio.Channel | None:
        """Create the sources; returns the gRPC channel (or None) for closing later."""
        config = self.config
        channel: grpc.aio.Channel | None = None
        if config.dropcopy_sources:
            if not config.exchange_target or self._tokens is None:
                raise IngestFatal("DropCopy sources need RECON_EXCHANGE_TARGET and credentials")
            channel = open_channel(
                config.exchange_target,
                tls=config.exchange_tls,
                allow_insecure=config.exchange_allow_insecure,
            )
            settings = StreamSettings(
                symbols=config.symbols,
                firms=config.firms,
                participant_id=config.participant_id,
                resume_overlap=config.resume_overlap,
                backoff=config.backoff,
            )
            for spec in STREAMS:
                if spec.source not in config.sources:
                    continue
                sink = self._sink(spec.source)
                consumer = DropCopyConsumer(
                    spec,
                    channel=channel,
                    tokens=self._tokens,
                    sink=sink,
                    settings=settings,
                    metrics=self.metrics,
                    rng=random.Random(),
                )
                self.sources[spec.source] = _Source(sink.status, sink, consumer)
        feeds: tuple[tuple[FeedSpec, str | None], ...] = (
            (ORDERS, config.orders_url),
            (TRADES, config.trades_url),
        )
        for feed, url in feeds:
            if feed.source not in config.sources:
                continue
            if not url:
                log.info(
                    "%s: no URL configured (RECON_FEED_%s_URL); skipped",
                    feed.source,
                    feed.kind.upper(),
                )
                continue
            sink = self._sink(feed.source)
            consumer_feed = FeedConsumer(
                feed, url=url, sink=sink, settings=config.feed, metrics=self.metrics
            )
            self.sources[feed.source] = _Source(sink.status, sink, consumer_feed)
        if not self.sources:
            raise IngestFatal("nothing to ingest: no source is configured")
        return channel

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Ingest until `stop` is set (or every source is idle); 0 when clean, 1 after a fatal."""
        channel = self._build()
        background: list[asyncio.Task[Any]] = []
        with ExitStack() as stack:
            if self.config.metrics_port is not None:
                server = stack.enter_context(
                    MetricsServer(
                        self.config.metrics_host,
                        self.config.metrics_port,
                        self.metrics.registry,
                        self.health,
                    )
                )
                self.metrics_port = server.port
                log.info("metrics and /healthz on %s:%d", self.config.metrics_host, server.port)
            try:
                if channel is not None and self._tokens is not None:
                    await self._tokens.start()
                    background.append(asyncio.create_task(self._tokens.run(self.stop)))
                for name, source in self.sources.items():
                    source.sink.start()
                    source.task = asyncio.create_task(source.consumer.run(), name=name)
                    source.task.add_done_callback(self._on_consumer_done)
                background.append(asyncio.create_task(self._supervise()))
                log.info("ingest started", extra={"sources": ",".join(self.sources)})
                await self.stop.wait()
            except (IngestFatal, AuthError) as exc:
                self._fatal = exc
                log.error("ingest cannot start: %s", exc)
            finally:
                await self._shutdown(background)
                if channel is not None:
                    await channel.close(grace=None)
        return 1 if self._fatal is not None else 0

    def _on_consumer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self._fatal is None:
            self._fatal = exc
        if isinstance(exc, IngestFatal):
            log.error("%s", exc)
        else:
            log.error("source %s failed", task.get_name(), exc_info=exc)
        status = self.sources[task.get_name()].status
        status.failure = str(exc) or type(exc).__name__
        self.stop.set()

    async def _shutdown(self, background: list[asyncio.Task[Any]]) -> None:
        self.stop.set()
        tasks = [s.task for s in self.sources.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for source in self.sources.values():
            try:
                if source.status.failure is None:
                    await asyncio.wait_for(
                        source.consumer.finish(), timeout=self.config.shutdown_deadline
                    )
                await source.sink.close(self.config.shutdown_deadline)
            except WriteAbandoned as exc:
                log.error("%s", exc)
                self._fatal = self._fatal or exc
            except Exception as exc:
                log.exception("flushing %s failed", source.status.name)
                self._fatal = self._fatal or exc
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        self._log_totals()

    # -- supervision: idle exit, progress, health ---------------------------------------------

    def _totals(self) -> dict[str, int]:
        return {name: s.status.events_committed for name, s in self.sources.items()}

    async def _supervise(self) -> None:
        config = self.config
        tick = 0.25 if config.exit_when_idle is None else min(0.25, config.exit_when_idle / 4)
        last_log, last_totals = time.monotonic(), self._totals()
        with _live_progress(list(self.sources)) as live:
            while not self.stop.is_set():
                await asyncio.sleep(tick)
                now = time.monotonic()
                self._update_health_metrics()
                live.update(self._totals())
                if now - last_log >= config.progress_interval:
                    totals = self._totals()
                    log.info(
                        "ingest progress",
                        extra={
                            _field_name(k) + "_per_s": round(
                                (v - last_totals[k]) / (now - last_log)
                            )
                            for k, v in totals.items()
                        },
                    )
                    last_log, last_totals = now, totals
                if config.exit_when_idle is not None and self._idle(now, config.exit_when_idle):
                    log.info(
                        "every source quiet for %.1f s: stopping (--exit-when-idle)",
                        config.exit_when_idle,
                    )
                    self.idle_exit = True
                    self.stop.set()

    def _idle(self, now: float, quiet_for: float) -> bool:
        for source in self.sources.values():
            quiet = now - source.status.last_activity
            needed = quiet_for if source.status.heard else max(quiet_for, UNANSWERED_GRACE_S)
            if quiet < needed or not source.sink.drained:
                return False
        return True

    def _log_totals(self) -> None:
        statuses = [s.status for s in self.sources.values()]
        extra: dict[str, Any] = {_field_name(s.name): s.events_committed for s in statuses}
        extra["elapsed_s"] = round(time.monotonic() - self._started, 1)
        extra["dead_letters"] = sum(s.dead_committed for s in statuses)
        extra["gaps"] = sum(s.gaps for s in statuses)
        extra["reconnects"] = sum(s.reconnects for s in statuses)
        log.info("ingest stopped", extra=extra)

    def _update_health_metrics(self) -> None:
        ok, _ = self.health()
        self.metrics.healthy.set(1 if ok else 0)
        now = datetime.now(UTC)
        for name, source in self.sources.items():
            last = source.status.last_event_time
            if last is not None:
                self.metrics.lag_seconds.labels(name).set(max((now - last).total_seconds(), 0.0))

    def health(self) -> tuple[bool, Mapping[str, Any]]:
        now = time.monotonic()
        details: dict[str, Any] = {}
        ok = self._fatal is None
        for name, source in self.sources.items():
            status = source.status
            quiet = now - status.last_activity
            healthy = (
                status.failure is None
                and not status.db_retrying
                and (status.connected or quiet < UNHEALTHY_AFTER_S)
            )
            ok = ok and healthy
            details[name] = {
                "healthy": healthy,
                "connected": status.connected,
                "quiet_s": round(quiet, 1),
                "events": status.events_committed,
                "dead_letters": status.dead_committed,
                "reconnects": status.reconnects,
                "gaps": status.gaps,
                "last_event_time": (
                    status.last_event_time.isoformat() if status.last_event_time else None
                ),
                "database_retrying": status.db_retrying,
                "database_retries": status.db_retries,
                "failure": status.failure,
            }
        return ok, {"sources": details}


def _field_name(source: str) -> str:
    return source.replace(".", "_")


class _NoProgress:
    def update(self, totals: Mapping[str, int]) -> None:
        return None

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _RichProgress(_NoProgress):
    """Committed events and rate per source, live, for a person watching a catch-up."""

    def __init__(self, names: Sequence[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            TextColumn("{task.completed:>12,.0f} events"),
            TextColumn("{task.fields[rate]:>10,.0f}/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self._tasks = {n: self._progress.add_task(n, total=None, rate=0.0) for n in names}
        self._window: dict[str, tuple[float, int]] = {}

    def update(self, totals: Mapping[str, int]) -> None:
        now = time.monotonic()
        for name, done in totals.items():
            then, before = self._window.setdefault(name, (now, done))
            if now - then >= 1.0:
                self._progress.update(self._tasks[name], rate=(done - before) / (now - then))
                self._window[name] = (now, done)
            self._progress.update(self._tasks[name], completed=done)

    def __enter__(self) -> _RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _live_progress(names: Sequence[str]) -> _NoProgress:
    return _RichProgress(names) if sys.stderr.isatty() else _NoProgress()
