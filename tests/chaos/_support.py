"""Shared by the chaos runs: a private Postgres to restart, and what must hold after any fault."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from app.db.session import sqlalchemy_url
from app.ingest.auth import StaticToken
from app.recon.report_client import ReportClientConfig, ReportEndpoint
from app.venue.run import VenueHandle
from app.venue.store import VenueStore
from tests.e2e._ingest_support import (
    EXCHANGE_TABLES,
    FEED_TABLES,
    PARTICIPANT,
    TOKEN,
    Truth,
    db_rows,
    gap_windows,
)

BreakKey = tuple[str, str]


@contextmanager
def private_postgres(directory: Path) -> Iterator[tuple[str, Any]]:
    """A Postgres of the caller's own in `directory` (never the machine's shared cluster),
    migrated to head: its URL and pgserver's handle, for `restart_postgres`."""
    from app.db.migrate import upgrade

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(directory / "pg", cleanup_mode="delete")
    try:
        url = sqlalchemy_url(server.get_uri())
        upgrade(url)
        yield url, server
    finally:
        server.cleanup()


def restart_postgres(server: Any) -> None:
    """`pg_ctl restart -m fast`: every session is cut, as in a failover or a crash-restart."""
    from pgserver import pg_ctl

    pg_ctl(
        ["-w", "-m", "fast", "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=60,
    )


def injected_breaks(store: VenueStore) -> frozenset[BreakKey]:
    truth: Any = store.truth()
    return frozenset((b["kind"], b["key"]) for b in truth["breaks"])


def report_endpoint(venue: VenueHandle, **config: Any) -> ReportEndpoint:
    return ReportEndpoint(
        target=venue.grpc_target,
        tls=False,
        allow_insecure=False,
        tokens=StaticToken(TOKEN),
        participant_id=PARTICIPANT,
        config=replace(ReportClientConfig(), **{"requests_per_minute": 100_000, **config}),
    )


def open_breaks(engine: Engine) -> frozenset[BreakKey]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, key FROM recon_break WHERE status = 'open'"))
        return frozenset((row.kind, row.key) for row in rows)


def assert_whole_runs_only(engine: Engine) -> None:
    """What a crashed or cut run may not leave behind: a break opened twice, a second alert for
    one occurrence, or break state written by a run that did not succeed."""
    with engine.connect() as conn:
        audit = Counter(
            (row.break_id, row.action)
            for row in conn.execute(text("SELECT break_id, action FROM break_audit"))
        )
        breaks = conn.execute(text("SELECT count(*) FROM recon_break")).scalar_one()
        alerts = Counter(
            conn.execute(
                text("SELECT break_id, occurrence FROM alert_outbox WHERE notifier = 'default'")
            ).all()
        )
        orphaned = conn.execute(
            text(
                "SELECT count(*) FROM recon_break AS b LEFT JOIN recon_run AS r"
                " ON r.id = b.last_run_id WHERE r.status IS DISTINCT FROM 'succeeded'"
            )
        ).scalar_one()
    assert set(audit.values()) <= {1}, "a break event was recorded twice"
    assert {action for _, action in audit} <= {"opened"}, audit
    assert sum(audit.values()) == breaks
    assert set(alerts.values()) <= {1}, "an occurrence was queued twice"
    assert len(alerts) == breaks
    assert orphaned == 0, "break state from a run that did not succeed"


def assert_events_equal_truth(engine: Engine, truth: Truth) -> None:
    """Exchange tables hold exactly the truth, each row once (resume tokens and replay cover every
    fault); feeds have no replay, so a row may be missing, but only inside a recorded gap."""
    rows = db_rows(engine)
    for table, got in rows.items():
        assert len(got) == len(set(got)), f"{table} has duplicates"
    for table in EXCHANGE_TABLES:
        assert set(rows[table]) == truth.rows[table], table
    gaps = gap_windows(engine)
    for table, source in FEED_TABLES.items():
        got = set(rows[table])
        assert got <= truth.rows[table], f"{table} has rows the venue never sent"
        lost = truth.rows[table] - got
        assert len(lost) < len(truth.rows[table]) // 2, f"{table}: too much lost"
        for key in lost:
            assert _in_gap(truth.times[table][key], gaps.get(source, [])), (table, key)


def _in_gap(when: datetime | None, windows: list[tuple[datetime, datetime]]) -> bool:
    return when is not None and any(start <= when <= end for start, end in windows)
