"""`recon demo`: the whole back office on one simulated day, with nothing to configure.

Embedded Postgres (unless RECON_DATABASE_URL is set) → a fresh `polyrecon_demo` database migrated
to head → the simulated venue with every break kind injected → ingest over real gRPC and
websockets on loopback until idle → reconcile against the venue's Report API → the nightly report.
It passes only if the breaks found are exactly the breaks the venue injected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, make_url, text

from app.config import Settings

log = logging.getLogger(__name__)

DEMO_DATABASE = "polyrecon_demo"
TOKEN = "demo-token-0b7e"  # noqa: S105 -- the simulated venue's own token, loopback only
FEED_KEY = "demo-feed-key-5c1d"

BreakKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class DemoResult:
    expected: frozenset[BreakKey]
    found: frozenset[BreakKey]
    report_html: Path
    database_url: str
    timings: dict[str, float]
    events: dict[str, int]

    @property
    def missing(self) -> frozenset[BreakKey]:
        return self.expected - self.found

    @property
    def extra(self) -> frozenset[BreakKey]:
        return self.found - self.expected

    @property
    def passed(self) -> bool:
        return self.expected == self.found


def fresh_database(server_url: str, name: str = DEMO_DATABASE) -> str:
    """Drop and create `name` on the server of `server_url`; returns its URL."""
    from app.db.session import make_engine

    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _expected(truth: dict[str, Any]) -> frozenset[BreakKey]:
    return frozenset((b["kind"], b["key"]) for b in truth["breaks"])


def _found(engine: Engine, business_date: date) -> frozenset[BreakKey]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT kind, key FROM recon_break"
                " WHERE business_date = :d AND status <> 'resolved'"
            ),
            {"d": business_date},
        )
        return frozenset((r.kind, r.key) for r in rows)


def _events(engine: Engine) -> dict[str, int]:
    tables = ("execution", "trade_capture", "order_filled", "order_filled_pending", "fee_refund")
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in (*tables, "feed_trade", "dead_letter")
        }


def run_demo(
    settings: Settings,
    *,
    seed: int,
    scale: float,
    faults: str,
    out_dir: Path | None,
    console: Console,
) -> DemoResult:
    from app.db.migrate import upgrade
    from app.db.session import database_url, make_engine
    from app.ingest.auth import StaticToken
    from app.ingest.worker import IngestConfig, IngestWorker
    from app.recon.report_client import ReportClientConfig, ReportEndpoint
    from app.recon.service import reconcile
    from app.reports.build import build_report, default_directory
    from app.venue.faults import FaultSpec
    from app.venue.feeds import FeedOptions
    from app.venue.grpc_server import GrpcOptions
    from app.venue.model import DayConfig
    from app.venue.run import VenueOptions, open_store, serve_store

    timings: dict[str, float] = {}
    started = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal started
        now = time.perf_counter()
        timings[step] = round(now - started, 2)
        started = now

    console.print("[bold]1/5[/] database: starting Postgres and migrating a fresh demo database")
    url = fresh_database(database_url(settings))
    upgrade(url)
    engine = make_engine(url)
    lap("database")

    day = DayConfig(seed=seed, scale=scale)
    console.print(
        f"[bold]2/5[/] venue: generating {day.business_date} (seed {seed}, scale {scale})"
    )
    with _progress(console) as progress:
        task = progress.add_task("generating the day", total=None)
        store = open_store(
            day, settings.data_dir / "venue", lambda n: progress.update(task, completed=n)
        )
    truth = store.truth()
    participant = f"firms/{store.firms()[0]}/users/demo"
    options = VenueOptions(
        grpc=GrpcOptions(tokens=frozenset({TOKEN}), report_requests_per_min=100_000),
        feeds=FeedOptions(keys=frozenset({FEED_KEY})),
        faults=FaultSpec.parse(faults) if faults else FaultSpec(),
    )
    lap("venue")
    with serve_store(store, options) as venue:
        console.print(
            f"[bold]3/5[/] ingest: DropCopy at {venue.grpc_target}, feeds on loopback, until idle"
        )
        config = IngestConfig(
            exchange_target=venue.grpc_target,
            exchange_tls=False,
            participant_id=participant,
            orders_url=venue.orders_url,
            trades_url=venue.trades_url,
            exit_when_idle=2.0,
            progress_interval=5.0,
        )
        code = asyncio.run(IngestWorker(config, engine, StaticToken(TOKEN)).run())
        if code != 0:
            raise RuntimeError(f"ingest exited with status {code}")
        lap("ingest")
        console.print("[bold]4/5[/] reconcile: Report API snapshot, rules, net fees, breaks")
        endpoint = ReportEndpoint(
            target=venue.grpc_target,
            tls=False,
            allow_insecure=False,
            tokens=StaticToken(TOKEN),
            participant_id=participant,
            config=ReportClientConfig(requests_per_minute=100_000),
        )
        reconcile(engine, day.business_date, report=endpoint)
        lap("reconcile")
    console.print("[bold]5/5[/] report: HTML, CSV and JSON")
    built = build_report(
        engine,
        day.business_date,
        out_dir or default_directory(settings.data_dir, day.business_date),
    )
    lap("report")
    result = DemoResult(
        expected=_expected(truth),
        found=_found(engine, day.business_date),
        report_html=built.html_path,
        database_url=make_url(url).render_as_string(hide_password=True),
        timings=timings,
        events=_events(engine),
    )
    engine.dispose()
    return result


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def print_summary(result: DemoResult, console: Console) -> None:
    expected = Counter(kind for kind, _ in result.expected)
    found = Counter(kind for kind, _ in result.found)
    table = Table(title="Breaks: injected by the venue vs found by polyrecon")
    for column in ("kind", "injected", "found", "missed", "extra"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind in sorted(expected | found):
        missed = sum(1 for k, _ in result.missing if k == kind)
        extra = sum(1 for k, _ in result.extra if k == kind)
        table.add_row(kind, str(expected[kind]), str(found[kind]), str(missed), str(extra))
    console.print(table)
    events = ", ".join(f"{k} {v:,}" for k, v in result.events.items())
    console.print(f"stored: {events}")
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    console.print(f"timings: {steps}")
    console.print(f"database: {result.database_url}")
    console.print(f"report: {result.report_html}")
    if result.passed:
        console.print(
            f"[bold green]PASS[/]: all {len(result.expected)} injected breaks found, nothing else."
        )
    else:
        console.print(
            f"[bold red]FAIL[/]: {len(result.missing)} missed, {len(result.extra)} extra:"
        )
        for kind, key in sorted(result.missing):
            console.print(f"  missed {kind} {key}")
        for kind, key in sorted(result.extra):
            console.print(f"  extra  {kind} {key}")
