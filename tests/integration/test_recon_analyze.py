"""A reconciliation run analyzes the date's partitions that filled up since they were last
analyzed: intraday, a partition the planner believes nearly empty is joined by nested loops that
scan it once per row (80 s for one rule at 100k chain rows, with autovacuum off)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, text

from app.domain.breaks import RuleConfig
from app.recon import service

from ._recon_day import NOON, D, clean_day, load


def _changed_since_analyze(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = :t"),
            {"t": table},
        ).scalar_one()
        return int(value)


def test_a_run_analyzes_the_dates_partitions_that_changed_much(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clean day has five executions and two position changes: call three rows "much".
    monkeypatch.setattr(service, "STALE_ROWS", 3)
    with engine.begin() as conn:
        load(conn, clean_day())
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
    deadline = time.monotonic() + 10
    while _changed_since_analyze(engine, "execution_p20260504") < 5:
        assert time.monotonic() < deadline, "the inserts never reached the statistics"
        time.sleep(0.05)

    service.reconcile(engine, D, report=None, as_of=NOON, rules=RuleConfig())

    assert _changed_since_analyze(engine, "execution_p20260504") == 0
    assert _changed_since_analyze(engine, "order_filled_p20260504") == 0
    assert _changed_since_analyze(engine, "position_change_p20260504") == 2  # below three
