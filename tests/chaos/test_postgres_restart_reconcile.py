"""Postgres restarted under a running reconciliation — once while it pages through the Report API,
once inside its one transaction: the run fails cleanly (an error, its record marked failed,
nothing half-written) and the next run gives exactly the injected breaks, each opened and
alerted once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, text

from app.db.session import make_engine
from app.domain.breaks import RuleConfig
from app.recon.report_client import ReportEndpoint
from app.recon.service import reconcile
from app.venue.model import DayConfig
from app.venue.run import VenueHandle, open_store
from app.venue.store import VenueStore
from tests.guarantees import Record
from tests.integration.test_recon_venue import ingest

from ._support import (
    assert_whole_runs_only,
    injected_breaks,
    open_breaks,
    private_postgres,
    report_endpoint,
    restart_postgres,
)

DAY = DayConfig(seed=37, business_date=date(2026, 5, 6), scale=0.005)


@pytest.fixture
def store(tmp_path: Path) -> VenueStore:
    return open_store(DAY, tmp_path / "venue")


def _wait(engine: Engine, sql: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(text(sql)).scalar_one():
                return
        time.sleep(0.05)
    raise AssertionError(f"never true within {timeout} s: {sql}")


def _cut_mid_run(
    engine: Engine, endpoint: ReportEndpoint, when: Callable[[], None], server: Any
) -> BaseException | None:
    """Reconcile in a thread, restart Postgres once `when` returns; what the run raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            reconcile(engine, DAY.business_date, report=endpoint, rules=RuleConfig())
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    when()
    restart_postgres(server)
    thread.join(timeout=120)
    assert not thread.is_alive()
    return raised[0] if raised else None


def _runs(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT job, status FROM recon_run"))]  # type: ignore[misc]


@pytest.mark.slow
def test_postgres_restart_mid_reconcile_fails_cleanly_then_next_run_is_exact(
    store: VenueStore, venue: VenueHandle, tmp_path: Path, guarantee: Record
) -> None:
    with private_postgres(tmp_path) as (url, server):
        restarts = _restart_mid_runs(url, server, store, venue)
    guarantee(
        "Chaos",
        "Postgres restarted mid-reconcile (Report API paging, rules transaction)",
        restarts,
        "run fails cleanly, nothing half-written; next run finds exactly the injected breaks",
    )


def _restart_mid_runs(url: str, server: Any, store: VenueStore, venue: VenueHandle) -> int:
    engine = make_engine(url)
    blocker = make_engine(url)
    restarts = 0
    try:
        ingest(engine, store)

        # 1. Inside the run's transaction: the date's merge lock is held elsewhere, so the run
        #    waits there with its rules' transaction open when the server goes away.
        holder = blocker.connect()
        holder.execute(
            text("SELECT pg_advisory_lock(hashtext(:k))"),
            {"k": f"recon.merge:{DAY.business_date.isoformat()}"},
        )
        holder.commit()
        error = _cut_mid_run(
            engine,
            report_endpoint(venue),
            lambda: _wait(
                engine,
                "SELECT count(*) > 0 FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'",
            ),
            server,
        )
        restarts += 1
        holder.invalidate()
        assert isinstance(error, sqlalchemy.exc.DBAPIError), error
        assert open_breaks(engine) == frozenset(), "a cut run left breaks behind"

        # 2. While it pages through the Report API (50 rows a page, ten calls a second).
        with engine.connect() as conn:
            reported = conn.execute(text("SELECT count(*) FROM report_execution")).scalar_one()
        error = _cut_mid_run(
            engine,
            report_endpoint(venue, page_size=50, requests_per_minute=600),
            lambda: _wait(
                engine,
                "SELECT count(*) > 0 FROM recon_run"
                " WHERE job = 'report_snapshot' AND status = 'running'"
                " AND started_at < now() - interval '1 second'",
            ),
            server,
        )
        restarts += 1
        assert error is not None, "the run did not notice the restart"
        with engine.connect() as conn:
            after = conn.execute(text("SELECT count(*) FROM report_execution")).scalar_one()
        assert after == reported > 0, "a cut snapshot replaced the previous one"

        # Both cut runs say so; none claims to be still running.
        cut = _runs(engine)
        assert ("reconcile", "running") not in cut
        assert ("report_snapshot", "running") not in cut
        assert cut.count(("reconcile", "failed")) == 2, cut

        summary = reconcile(engine, DAY.business_date, report=report_endpoint(venue))
        assert summary.snapshot is not None
        with engine.connect() as conn:
            took = conn.execute(
                text(
                    "SELECT extract(epoch FROM finished_at - started_at) FROM recon_run"
                    " WHERE id = :id"
                ),
                {"id": summary.run_id},
            ).scalar_one()
        # The run's record spans the run: at least the steps it timed.
        assert float(took) >= sum(summary.timings.values()) - 0.01, (took, summary.timings)
        expected = injected_breaks(store)
        assert len(expected) >= 16
        assert open_breaks(engine) == expected
        assert_whole_runs_only(engine)
    finally:
        blocker.dispose()
        engine.dispose()
    return restarts
