"""One reconciliation run for one business date: snapshot → rules → net fees → lifecycle.

The Report API snapshot (when a Report API is configured) commits on its own, because it is
slow and paced. Everything after it — rules, gap backfill, net fees, the break merge, the
alerts and the run's own record — is ONE transaction: a run either lands whole or not at all,
and two runs of the same date queue behind a transaction-level advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, text

from app.config import get_settings
from app.db.session import write_through_outage
from app.domain.breaks import RuleConfig
from app.recon.fees import store_net_fees
from app.recon.lifecycle import DEFAULT_NOTIFIERS, merge
from app.recon.report_client import ReportEndpoint, latest_snapshot, snapshot_from
from app.recon.rules import (
    GAP_EXECUTIONS,
    GAP_ORDERS_FEED,
    GAP_TRADES_FEED,
    RULES,
    Horizon,
    comparison_horizon,
    read_watermarks,
    run_rules,
)

log = logging.getLogger(__name__)

JOB = "reconcile"
# Sorts and hashes of a day's 5M chain rows stay in memory instead of spilling to disk.
WORK_MEM = "256MB"
# A day's partitions fill up while the day runs, and until something analyzes them (autovacuum
# comes late to a busy partition, or is off) the planner takes a partition of 100k rows for a
# few and joins it by nested loops: one intraday refunds rule took 80 s that way. So a run first
# analyzes the date's partitions with this many rows changed since (and over a tenth of them).
STALE_ROWS = 10_000
STALE_PARTITIONS = r"""
SELECT format('%I.%I', s.schemaname, s.relname)
FROM pg_stat_user_tables AS s
JOIN pg_class AS c ON c.oid = s.relid
WHERE c.relispartition AND s.relname LIKE '%\_p' || to_char(CAST(:d AS date), 'YYYYMMDD')
  AND s.n_mod_since_analyze >= :stale_rows AND s.n_mod_since_analyze > s.n_live_tup / 10
ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: int
    business_date: date
    as_of: datetime
    has_report: bool
    found: dict[str, int]
    lifecycle: dict[str, int]
    fees: dict[str, int]
    snapshot: dict[str, Any] | None
    timings: dict[str, float]

    @property
    def breaks_found(self) -> int:
        return sum(self.found.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "business_date": self.business_date.isoformat(),
            "as_of": self.as_of.isoformat(),
            "has_report": self.has_report,
            "breaks_found": self.breaks_found,
            "found": self.found,
            "lifecycle": self.lifecycle,
            "fees": self.fees,
            "snapshot": self.snapshot,
            "timings": self.timings,
        }


def rule_config_from_settings() -> RuleConfig:
    settings = get_settings()
    return RuleConfig(
        pending_grace=timedelta(seconds=settings.recon_pending_grace_seconds),
        drift_tolerance=settings.recon_drift_tolerance,
        stream_grace=timedelta(seconds=settings.recon_stream_grace_seconds),
    )


def _as_of(conn: Connection, business_date: date) -> datetime | None:
    """The newest chain event of the date: "now" for a date that is over."""
    value: datetime | None = conn.execute(
        text(
            "SELECT greatest("
            " (SELECT max(event_time) FROM order_filled WHERE business_date = :d),"
            " (SELECT max(event_time) FROM order_filled_pending WHERE business_date = :d))"
        ),
        {"d": business_date},
    ).scalar_one()
    return value


def _analyze_changed_partitions(engine: Engine, business_date: date) -> None:
    """ANALYZE (its own short transaction) the date's partitions that changed much; see
    STALE_PARTITIONS."""
    with engine.begin() as conn:
        stale = conn.execute(
            text(STALE_PARTITIONS), {"d": business_date, "stale_rows": STALE_ROWS}
        ).scalars()
        tables = ", ".join(stale)  # quoted by format('%I') from the catalog, not from input
        if tables:
            conn.execute(text(f"ANALYZE {tables}"))


def _horizons(
    conn: Connection, params: dict[str, Any], config: RuleConfig, now: datetime
) -> dict[str, Horizon]:
    """Each rule's horizon, from the watermarks of the sources it compares."""
    watermarks = read_watermarks(conn, params)
    return {
        rule.name: comparison_horizon(
            rule.horizon,
            watermarks,
            business_date=params["business_date"],
            now=now,
            grace=config.stream_grace,
        )
        for rule in RULES
        if rule.horizon
    }


def _describe(horizon: Horizon) -> str | None:
    """For the run's record: a time, "not_yet" (the rule waited), or None (no bound)."""
    if not horizon.ready:
        return "not_yet"
    return None if horizon.until is None else horizon.until.isoformat()


def _finish(
    conn: Connection,
    run_id: int,
    *,
    status: str,
    counts: dict[str, Any],
    timings: dict[str, float],
    error: str | None,
) -> None:
    conn.execute(
        text(
            "UPDATE recon_run SET status = :status, finished_at = clock_timestamp(),"
            " counts = CAST(:counts AS jsonb), timings = CAST(:timings AS jsonb), error = :error"
            " WHERE id = :id"
        ),
        {
            "id": run_id,
            "status": status,
            "counts": orjson.dumps(counts).decode(),
            "timings": orjson.dumps(timings).decode(),
            "error": error,
        },
    )


def reconcile(
    engine: Engine,
    business_date: date,
    *,
    report: ReportEndpoint | Literal["settings"] | None = "settings",
    as_of: datetime | None = None,
    rules: RuleConfig | None = None,
    notifiers: tuple[str, ...] = DEFAULT_NOTIFIERS,
    now: datetime | None = None,
) -> RunSummary:
    """Reconcile `business_date`; idempotent. `report="settings"` takes the Report API from the
    settings (none if no exchange credentials are configured); None skips the snapshot, and the
    report rules then use the date's previous snapshot if there is one. `now` (the wall clock)
    tells whether the day may still be in progress, when sources are compared only up to their
    horizons."""
    endpoint = ReportEndpoint.from_settings(get_settings()) if report == "settings" else report
    config = rules or rule_config_from_settings()
    with engine.begin() as conn:
        run_id: int = conn.execute(
            text("INSERT INTO recon_run (job, business_date) VALUES (:job, :d) RETURNING id"),
            {"job": JOB, "d": business_date},
        ).scalar_one()
    timings: dict[str, float] = {}
    try:
        step = time.perf_counter()
        _analyze_changed_partitions(engine, business_date)
        timings["analyze"] = round(time.perf_counter() - step, 3)
        snapshot = None
        if endpoint is not None:
            started = time.perf_counter()
            snapshot = asyncio.run(snapshot_from(engine, endpoint, business_date)).as_dict()
            timings["snapshot"] = round(time.perf_counter() - started, 3)
        summary = _run(
            engine,
            run_id,
            business_date,
            as_of=as_of,
            config=config,
            notifiers=notifiers,
            timings=timings,
            now=now or datetime.now(UTC),
        )
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        write_through_outage(
            engine,
            lambda conn: _finish(
                conn, run_id, status="failed", counts={}, timings=timings, error=error
            ),
        )
        raise
    log.info(
        "reconciled %s (run %d): %d breaks found, %s",
        business_date,
        run_id,
        summary.breaks_found,
        summary.lifecycle,
    )
    return replace(summary, snapshot=snapshot)


def _run(
    engine: Engine,
    run_id: int,
    business_date: date,
    *,
    as_of: datetime | None,
    config: RuleConfig,
    notifiers: tuple[str, ...],
    timings: dict[str, float],
    now: datetime,
) -> RunSummary:
    with engine.begin() as conn:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": f"recon.merge:{business_date.isoformat()}"},
        )
        conn.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
        # Each rule runs once per date: compiling it costs more than it saves.
        conn.execute(text("SET LOCAL jit = off"))
        step = time.perf_counter()
        ref = latest_snapshot(conn, business_date)
        run_as_of = as_of or _as_of(conn, business_date) or datetime.now(UTC)
        timings["as_of"] = round(time.perf_counter() - step, 3)
        params: dict[str, Any] = {
            "business_date": business_date,
            "as_of": run_as_of,
            "pending_grace": config.pending_grace,
            "drift_tolerance": config.drift_tolerance,
            "has_report": ref is not None,
            "report_as_of": ref.as_of if ref else None,
            "gap_executions": GAP_EXECUTIONS,
            "gap_orders": GAP_ORDERS_FEED,
            "gap_trades": GAP_TRADES_FEED,
        }
        horizons = _horizons(conn, params, config, now)
        outcome = run_rules(conn, params, RULES, horizons)
        for result in outcome.results:
            timings[f"rule.{result.name}"] = round(result.seconds, 3)
        if ref is not None:
            # The Report API was consulted for every execution-stream gap inside its window.
            conn.execute(
                text(
                    "UPDATE gap_window SET backfilled_at = now()"
                    " WHERE source LIKE :gap AND backfilled_at IS NULL"
                    " AND start_time >= :start AND end_time <= :end"
                ),
                {"gap": GAP_EXECUTIONS, "start": ref.window_start, "end": ref.window_end},
            )
        step = time.perf_counter()
        fees = store_net_fees(conn, business_date).as_dict()
        timings["fees"] = round(time.perf_counter() - step, 3)
        step = time.perf_counter()
        merged = merge(
            conn,
            business_date=business_date,
            kinds=outcome.evaluated,
            run_id=run_id,
            now=datetime.now(UTC),
            notifiers=notifiers,
        ).as_dict()
        timings["lifecycle"] = round(time.perf_counter() - step, 3)
        found = outcome.found
        counts = {
            "found": found,
            "lifecycle": merged,
            "fees": fees,
            "has_report": ref is not None,
            "report_snapshot_run": ref.run_id if ref else None,
            "as_of": run_as_of.isoformat(),
            "horizons": {name: _describe(h) for name, h in horizons.items()},
            "deferred": {r.name: r.deferred for r in outcome.results if r.deferred},
        }
        _finish(conn, run_id, status="succeeded", counts=counts, timings=timings, error=None)
    return RunSummary(
        run_id=run_id,
        business_date=business_date,
        as_of=run_as_of,
        has_report=ref is not None,
        found=found,
        lifecycle=merged,
        fees=fees,
        snapshot=None,
        timings=timings,
    )
