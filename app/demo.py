"""`recon demo`: the whole back office on one simulated day, with nothing to configure.

Embedded Postgres (unless RECON_DATABASE_URL is set) → a fresh demo database migrated to head →
the simulated venue with every break kind injected (and, on request, its faults) → ingest over
real gRPC and websockets on loopback until idle → reconcile against the venue's Report API →
the nightly report → the breaks found judged against the venue's ground truth.

The judgement is exact, with one allowance the product itself makes: the chain feeds have no
replay, so what a feed sent while ingest was disconnected is lost, and ingest records that window
in `gap_window`. An injected break whose evidence the venue sent inside a recorded gap of the
source that carries it cannot be seen; it is counted as unobservable and listed with its gap.
Every other injected break must be found, and nothing else may be.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, Engine, make_url, text

from app.config import Settings
from app.domain.breaks import BreakKind
from app.recon.rules import GAP_EXECUTIONS, GAP_ORDERS_FEED, GAP_TRADES_FEED

if TYPE_CHECKING:
    from app.ingest.worker import IngestWorker
    from app.recon.service import RunSummary
    from app.venue.model import DayConfig
    from app.venue.run import VenueHandle
    from app.venue.store import VenueStore

log = logging.getLogger(__name__)

DEMO_DATABASE = "polyrecon_demo"
TOKEN = "demo-token-0b7e"  # noqa: S105 -- the simulated venue's own token, loopback only
FEED_KEY = "demo-feed-key-5c1d"
# A long phase prints where it is this often when nobody watches a live display.
HEARTBEAT_S = 10.0

BreakKey = tuple[str, str]
# The venue's own record of when the chain confirmed each of some transactions (VenueStore's).
ChainTimes = Callable[[Sequence[str]], Mapping[str, datetime]]


@dataclass(frozen=True, slots=True)
class Gap:
    """A window ingest recorded as possibly lost (`gap_window`)."""

    id: int
    source: str
    start: datetime
    end: datetime
    reason: str
    backfilled: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "reason": self.reason,
            "backfilled": self.backfilled,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """When, and on which sources (`gap_window.source` LIKE patterns), the venue sent what makes
    a break visible; a break is unobservable when a recorded gap of one of them overlaps it."""

    sources: tuple[str, ...]
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class DemoResult:
    injected: frozenset[BreakKey]
    found: frozenset[BreakKey]
    unobservable: Mapping[BreakKey, int]  # injected, not found, evidence inside this gap id
    gaps: tuple[Gap, ...]
    report_html: Path
    database_url: str
    timings: dict[str, float]
    reconcile_timings: dict[str, float]
    events: dict[str, int]  # stored rows per table
    served: dict[str, int]  # events the venue has to serve per stream and feed
    repeat_changes: tuple[str, ...] = ()  # what a second reconcile changed: must be nothing

    @property
    def expected(self) -> frozenset[BreakKey]:
        return self.injected - self.unobservable.keys()

    @property
    def missing(self) -> frozenset[BreakKey]:
        return self.expected - self.found

    @property
    def extra(self) -> frozenset[BreakKey]:
        return self.found - self.injected

    @property
    def passed(self) -> bool:
        return not self.missing and not self.extra and not self.repeat_changes

    def per_kind(self) -> dict[str, dict[str, int]]:
        columns = {
            "injected": self.injected,
            "found": self.found,
            "unobservable": frozenset(self.unobservable),
            "missed": self.missing,
            "extra": self.extra,
        }
        kinds = sorted({kind for kind, _ in self.injected | self.found})
        return {
            kind: {name: sum(1 for k, _ in keys if k == kind) for name, keys in columns.items()}
            for kind in kinds
        }

    def to_json(self) -> dict[str, Any]:
        def listed(keys: Iterable[BreakKey]) -> list[dict[str, str]]:
            return [{"kind": kind, "key": key} for kind, key in sorted(keys)]

        return {
            "passed": self.passed,
            "injected": len(self.injected),
            "found": len(self.found),
            "unobservable": len(self.unobservable),
            "missed": len(self.missing),
            "extra": len(self.extra),
            "per_kind": self.per_kind(),
            "missed_breaks": listed(self.missing),
            "extra_breaks": listed(self.extra),
            "unobservable_breaks": [
                {"kind": kind, "key": key, "gap": gap}
                for (kind, key), gap in sorted(self.unobservable.items())
            ],
            "gaps": [gap.to_json() for gap in self.gaps],
            "repeat_changes": list(self.repeat_changes),
            "served": self.served,
            "stored": self.events,
            "timings": self.timings,
            "reconcile_timings": self.reconcile_timings,
            "database": self.database_url,
            "report": str(self.report_html),
        }


def fresh_database(server_url: str, name: str = DEMO_DATABASE) -> str:
    """Drop and create `name` on the server of `server_url`; returns its URL."""
    from app.db.session import make_engine

    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


# --- the judgement -------------------------------------------------------------------------------


def _found(conn: Connection, business_date: date) -> frozenset[BreakKey]:
    rows = conn.execute(
        text("SELECT kind, key FROM recon_break WHERE business_date = :d AND status <> 'resolved'"),
        {"d": business_date},
    )
    return frozenset((r.kind, r.key) for r in rows)


def _statuses(engine: Engine, business_date: date) -> dict[BreakKey, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind, key, status, occurrences FROM recon_break WHERE business_date = :d"),
            {"d": business_date},
        )
        return {(r.kind, r.key): (r.status, r.occurrences) for r in rows}


def _changes(
    before: Mapping[BreakKey, tuple[str, int]], after: Mapping[BreakKey, tuple[str, int]]
) -> tuple[str, ...]:
    """Breaks whose (status, occurrences) a repeated reconcile of unchanged data moved."""
    return tuple(
        f"{kind} {key}: {before.get((kind, key))} -> {after.get((kind, key))}"
        for kind, key in sorted(before.keys() | after.keys())
        if before.get((kind, key)) != after.get((kind, key))
    )


def _gaps(conn: Connection) -> tuple[Gap, ...]:
    rows = conn.execute(
        text(
            "SELECT id, source, start_time, end_time, reason, backfilled_at IS NOT NULL AS done"
            " FROM gap_window ORDER BY id"
        )
    )
    return tuple(Gap(r.id, r.source, r.start_time, r.end_time, r.reason, r.done) for r in rows)


# Which feeds carry a chain break's evidence, and where its transaction hash is.
_CHAIN_TX: Mapping[BreakKind, tuple[tuple[str, ...], Callable[[Mapping[str, Any]], str]]] = {
    BreakKind.CHAIN_MAKER_TAKER_MISMATCH: ((GAP_ORDERS_FEED,), lambda b: b["key"]),
    BreakKind.CHAIN_TAKER_MISSING: ((GAP_ORDERS_FEED,), lambda b: b["key"]),
    BreakKind.CHAIN_REFUND_ORPHAN: ((GAP_ORDERS_FEED,), lambda b: b["details"]["tx_hash"]),
    BreakKind.CHAIN_REFUND_ARITHMETIC: ((GAP_ORDERS_FEED,), lambda b: b["details"]["tx_hash"]),
    BreakKind.FEED_PROVIDER_MISSING: (
        (GAP_ORDERS_FEED, GAP_TRADES_FEED),
        lambda b: b["key"].partition("|")[0],
    ),
    BreakKind.FEED_PROVIDER_MISMATCH: (
        (GAP_ORDERS_FEED, GAP_TRADES_FEED),
        lambda b: b["key"].partition("|")[0],
    ),
}


def _tx_times(
    conn: Connection, business_date: date, tx_hashes: set[str], chain_times: ChainTimes
) -> dict[str, datetime]:
    """Block time of each transaction: from what ingest stored, else from the venue's own store
    (a transaction the orders feed lost entirely is only there)."""
    times: dict[str, datetime] = {
        row.tx_hash: row.at
        for row in conn.execute(
            text(
                "SELECT tx_hash, min(event_time) AS at FROM ("
                " SELECT tx_hash, event_time FROM order_filled"
                " WHERE business_date = :d AND tx_hash = ANY(:tx)"
                " UNION ALL SELECT tx_hash, event_time FROM feed_trade"
                " WHERE business_date = :d AND tx_hash = ANY(:tx)) AS confirmed"
                " GROUP BY tx_hash"
            ),
            {"d": business_date, "tx": sorted(tx_hashes)},
        )
    }
    lost = sorted(tx_hashes - times.keys())
    if lost:
        times.update(chain_times(lost))
    return times


def _evidence(
    conn: Connection,
    business_date: date,
    absent: list[Mapping[str, Any]],
    chain_times: ChainTimes,
    pending_grace: timedelta,
) -> dict[BreakKey, Evidence]:
    """Evidence of the injected breaks that were not found; kinds whose evidence a gap cannot
    hide have none. DropCopy gaps are backfilled from the Report API, which hides exactly one
    kind: an execution missing from the stream is filled in, not flagged."""
    evidence: dict[BreakKey, Evidence] = {}
    chain = [b for b in absent if BreakKind(b["kind"]) in _CHAIN_TX]
    tx_times = _tx_times(
        conn,
        business_date,
        {_CHAIN_TX[BreakKind(b["kind"])][1](b) for b in chain},
        chain_times,
    )
    for b in chain:
        sources, tx_of = _CHAIN_TX[BreakKind(b["kind"])]
        at = tx_times.get(tx_of(b))
        if at is not None:
            evidence[(b["kind"], b["key"])] = Evidence(sources, at, at)
    for b in absent:
        if b["kind"] == BreakKind.CHAIN_PENDING_UNCONFIRMED:
            # Seen pending, then no confirmation through the grace: a gap anywhere in that
            # span may have swallowed the confirmation.
            seen = datetime.fromtimestamp(b["details"]["seen_at_us"] // 1_000_000, UTC)
            evidence[(b["kind"], b["key"])] = Evidence(
                (GAP_ORDERS_FEED,), seen, seen + pending_grace
            )
    stream_missing = [
        b["key"] for b in absent if b["kind"] == BreakKind.EXECUTION_MISSING_FROM_STREAM
    ]
    for row in conn.execute(
        text(
            "SELECT id, transact_time FROM report_execution"
            " WHERE business_date = :d AND id = ANY(:ids)"
        ),
        {"d": business_date, "ids": stream_missing},
    ):
        evidence[(str(BreakKind.EXECUTION_MISSING_FROM_STREAM), row.id)] = Evidence(
            (GAP_EXECUTIONS,), row.transact_time, row.transact_time
        )
    return evidence


def _gap_of(conn: Connection, evidence: Evidence) -> int | None:
    gap: int | None = conn.execute(
        text(
            "SELECT min(id) FROM gap_window WHERE source LIKE ANY(:sources)"
            " AND start_time <= :end AND end_time >= :start"
        ),
        {"sources": list(evidence.sources), "start": evidence.start, "end": evidence.end},
    ).scalar_one()
    return gap


def unobservable(
    conn: Connection,
    business_date: date,
    *,
    truth: Mapping[str, Any],
    found: frozenset[BreakKey],
    chain_times: ChainTimes,
    pending_grace: timedelta,
) -> dict[BreakKey, int]:
    """Injected breaks not found whose evidence lies inside a recorded gap → that gap's id."""
    absent = [b for b in truth["breaks"] if (b["kind"], b["key"]) not in found]
    out: dict[BreakKey, int] = {}
    for key, evidence in _evidence(conn, business_date, absent, chain_times, pending_grace).items():
        gap = _gap_of(conn, evidence)
        if gap is not None:
            out[key] = gap
    return out


def judge(
    engine: Engine,
    business_date: date,
    truth: Mapping[str, Any],
    chain_times: ChainTimes,
    pending_grace: timedelta,
) -> tuple[frozenset[BreakKey], frozenset[BreakKey], dict[BreakKey, int], tuple[Gap, ...]]:
    """(injected, found, unobservable, gaps) for the day."""
    injected = frozenset((b["kind"], b["key"]) for b in truth["breaks"])
    with engine.connect() as conn:
        found = _found(conn, business_date)
        hidden = unobservable(
            conn,
            business_date,
            truth=truth,
            found=found,
            chain_times=chain_times,
            pending_grace=pending_grace,
        )
        return injected, found, hidden, _gaps(conn)


# --- running it ----------------------------------------------------------------------------------


def _events(engine: Engine) -> dict[str, int]:
    tables = ("execution", "trade_capture", "order_filled", "order_filled_pending", "fee_refund")
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in (*tables, "feed_trade", "dead_letter", "gap_window")
        }


def _served(store: VenueStore) -> dict[str, int]:
    """What ingest has to fetch, per worker source name."""
    from app.venue.model import STREAM_NAMES

    served = {f"dropcopy.{name}": store.stream_length(name) for name in STREAM_NAMES}
    served.update({f"feed.{feed}": store.feed_length(feed) for feed in ("orders", "trades")})
    return served


@contextmanager
def _heartbeat(console: Console, label: str, where: Callable[[], str]) -> Iterator[None]:
    """While the block runs, print `label: where()` every HEARTBEAT_S seconds, so a long phase
    is seen to move in a log as well as on a terminal."""
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            console.print(f"    {label}: {where()} ({time.monotonic() - started:,.0f} s)")

    thread = threading.Thread(target=beat, name=f"heartbeat-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _ingest_where(worker: IngestWorker, served: Mapping[str, int]) -> Callable[[], str]:
    def where() -> str:
        _, health = worker.health()
        parts = []
        for name, status in health["sources"].items():
            total = served.get(name)
            done = status["events"]
            share = f" {min(done / total, 1):.0%}" if total else ""
            parts.append(f"{name.split('.', 1)[1]} {done:,}{share}")
        return ", ".join(parts)

    return where


def breaks_config(spec: str) -> dict[str, int]:
    """`--breaks`: N of each injectable kind, or what `recon venue --breaks` takes."""
    from app.venue.cli import parse_breaks
    from app.venue.model import INJECTABLE_KINDS

    spec = spec.strip()
    if spec.isdigit():
        return dict.fromkeys(map(str, INJECTABLE_KINDS), int(spec))
    return parse_breaks(spec)


class _Laps:
    """Wall-clock seconds per phase, in the order the phases ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - self._started, 2)
        self._started = now


def _open_venue(
    settings: Settings, day: DayConfig, console: Console
) -> tuple[VenueStore, dict[str, int]]:
    from app.venue.run import open_store

    console.print(
        f"[bold]2/6[/] venue: generating {day.business_date} (seed {day.seed}, scale {day.scale},"
        f" {sum(day.breaks.values())} breaks to inject; reused when already built)"
    )
    generated = 0

    def count(n: int) -> None:
        nonlocal generated
        generated = n

    with _heartbeat(console, "venue", lambda: f"{generated:,} events generated"):
        store = open_store(day, settings.data_dir / "venue", count)
    served = _served(store)
    console.print(
        f"    {sum(served.values()):,} events to serve: "
        + ", ".join(f"{name} {n:,}" for name, n in served.items())
    )
    return store, served


def _ingest(
    engine: Engine,
    venue: VenueHandle,
    participant: str,
    served: Mapping[str, int],
    console: Console,
) -> None:
    from app.ingest.auth import StaticToken
    from app.ingest.worker import IngestConfig, IngestWorker

    config = IngestConfig(
        exchange_target=venue.grpc_target,
        exchange_tls=False,
        participant_id=participant,
        orders_url=venue.orders_url,
        trades_url=venue.trades_url,
        exit_when_idle=2.0,
        progress_interval=HEARTBEAT_S,
    )
    worker = IngestWorker(config, engine, StaticToken(TOKEN))
    # On a terminal the worker draws its own live table (on stderr).
    if sys.stderr.isatty():
        code = asyncio.run(worker.run())
    else:
        with _heartbeat(console, "ingest", _ingest_where(worker, served)):
            code = asyncio.run(worker.run())
    if code != 0:
        raise RuntimeError(f"ingest exited with status {code}")


def _reconcile(
    engine: Engine, venue: VenueHandle, participant: str, business_date: date, console: Console
) -> RunSummary:
    from app.ingest.auth import StaticToken
    from app.recon.report_client import ReportClientConfig, ReportEndpoint
    from app.recon.service import reconcile

    endpoint = ReportEndpoint(
        target=venue.grpc_target,
        tls=False,
        allow_insecure=False,
        tokens=StaticToken(TOKEN),
        participant_id=participant,
        config=ReportClientConfig(requests_per_minute=100_000),
    )
    with _heartbeat(console, "reconcile", lambda: "running"):
        return reconcile(engine, business_date, report=endpoint)


def run_demo(
    settings: Settings,
    *,
    seed: int,
    scale: float,
    faults: str,
    out_dir: Path | None,
    console: Console,
    breaks: str = "all",
    database: str = DEMO_DATABASE,
) -> DemoResult:
    from app.db.migrate import upgrade
    from app.db.session import database_url, make_engine
    from app.recon.service import rule_config_from_settings
    from app.reports.build import build_report, default_directory
    from app.venue.faults import FaultSpec
    from app.venue.feeds import FeedOptions
    from app.venue.grpc_server import GrpcOptions
    from app.venue.model import DayConfig
    from app.venue.run import VenueOptions, serve_store

    fault_spec = FaultSpec.parse(faults)
    day = DayConfig(seed=seed, scale=scale, breaks=breaks_config(breaks))
    laps = _Laps()
    console.print(f"[bold]1/6[/] database: a fresh {database!r}, migrated")
    url = fresh_database(database_url(settings), database)
    upgrade(url)
    engine = make_engine(url)
    laps.lap("database")

    store, served = _open_venue(settings, day, console)
    participant = f"firms/{store.firms()[0]}/users/demo"
    options = VenueOptions(
        grpc=GrpcOptions(tokens=frozenset({TOKEN}), report_requests_per_min=100_000),
        feeds=FeedOptions(keys=frozenset({FEED_KEY})),
        faults=fault_spec,
    )
    laps.lap("venue")
    with serve_store(store, options) as venue:
        console.print(
            f"[bold]3/6[/] ingest: DropCopy at {venue.grpc_target}, feeds on loopback,"
            f" faults {fault_spec.describe()}, until idle"
        )
        _ingest(engine, venue, participant, served, console)
        laps.lap("ingest")
        console.print("[bold]4/6[/] reconcile: Report API snapshot, rules, net fees, breaks")
        summary = _reconcile(engine, venue, participant, day.business_date, console)
        laps.lap("reconcile")
        console.print("    reconcile again: a second run must change nothing")
        first = _statuses(engine, day.business_date)
        _reconcile(engine, venue, participant, day.business_date, console)
        repeat_changes = _changes(first, _statuses(engine, day.business_date))
        laps.lap("reconcile again")
    console.print("[bold]5/6[/] report: HTML, CSV and JSON")
    with _heartbeat(console, "report", lambda: "building"):
        built = build_report(
            engine,
            day.business_date,
            out_dir or default_directory(settings.data_dir, day.business_date),
        )
    laps.lap("report")
    console.print("[bold]6/6[/] judge: breaks found vs the venue's ground truth, gaps allowed for")
    injected, found, hidden, gaps = judge(
        engine,
        day.business_date,
        store.truth(),
        store.confirmed_tx_times,
        rule_config_from_settings().pending_grace,
    )
    laps.lap("judge")
    result = DemoResult(
        injected=injected,
        found=found,
        unobservable=hidden,
        gaps=gaps,
        report_html=built.html_path,
        database_url=make_url(url).render_as_string(hide_password=True),
        timings=laps.timings,
        reconcile_timings=summary.timings,
        repeat_changes=repeat_changes,
        events=_events(engine),
        served=served,
    )
    engine.dispose()
    return result


def print_summary(result: DemoResult, console: Console) -> None:
    table = Table(title="Breaks: injected by the venue vs found by polyrecon")
    columns = ("injected", "found", "unobservable", "missed", "extra")
    table.add_column("kind")
    for column in columns:
        table.add_column(column, justify="right")
    for kind, counts in result.per_kind().items():
        table.add_row(kind, *(str(counts[c]) for c in columns))
    console.print(table)
    console.print(f"served by the venue: {sum(result.served.values()):,} events")
    console.print("stored: " + ", ".join(f"{k} {v:,}" for k, v in result.events.items()))
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    slowest = sorted(result.reconcile_timings.items(), key=lambda kv: -kv[1])[:5]
    console.print("reconcile, slowest steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in slowest))
    backfilled = sum(gap.backfilled for gap in result.gaps)
    console.print(
        f"gap windows recorded by ingest: {len(result.gaps)} ({backfilled} backfilled from the"
        " Report API; all are in the report); those that hid injected breaks:"
    )
    hiding = set(result.unobservable.values())
    for gap in result.gaps:
        if gap.id in hiding:
            console.print(
                f"  gap {gap.id}: {gap.source} {gap.start:%Y-%m-%d %H:%M:%S} to"
                f" {gap.end:%Y-%m-%d %H:%M:%S} ({gap.reason})"
            )
    for change in result.repeat_changes:
        console.print(f"  a second reconcile changed: {change}")
    for (kind, key), gap_id in sorted(result.unobservable.items()):
        console.print(f"  unobservable: inside feed gap {gap_id}: {kind} {key}")
    console.print(f"database: {result.database_url}")
    console.print(f"report: {result.report_html}")
    expected = len(result.expected)
    hidden = f" ({len(result.unobservable)} unobservable inside feed gaps)"
    if result.passed:
        console.print(
            f"[bold green]PASS[/]: all {expected} observable injected breaks found"
            f"{hidden if result.unobservable else ''}, nothing else."
        )
        return
    console.print(
        f"[bold red]FAIL[/]: {len(result.missing)} missed, {len(result.extra)} extra,"
        f" {len(result.repeat_changes)} changes on a second reconcile:"
    )
    for kind, key in sorted(result.missing):
        console.print(f"  missed {kind} {key}")
    for kind, key in sorted(result.extra):
        console.print(f"  extra  {kind} {key}")
