"""The intraday comparison horizon: the oldest of a rule's sources, a live stream's less the
grace; no bound once the day is over; nothing at all while a source has delivered nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from app.recon.rules import Horizon, Watermark, comparison_horizon

DAY = date(2026, 5, 4)
NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)
GRACE = timedelta(minutes=1)
SOURCES = ("dropcopy.executions", "report.executions")


def horizon(marks: dict[str, Watermark], now: datetime = NOON) -> Horizon:
    return comparison_horizon(SOURCES, marks, business_date=DAY, now=now, grace=GRACE)


def test_the_oldest_source_bounds_it_and_only_a_stream_gets_the_grace() -> None:
    stream = Watermark(NOON - timedelta(minutes=5), lags=True)
    report = Watermark(NOON - timedelta(minutes=3), lags=False)
    assert horizon({SOURCES[0]: stream, SOURCES[1]: report}) == Horizon(NOON - timedelta(minutes=6))
    early_report = Watermark(NOON - timedelta(minutes=10), lags=False)
    assert horizon({SOURCES[0]: stream, SOURCES[1]: early_report}).until == early_report.at


def test_a_source_that_delivered_nothing_yet_holds_the_rule_back() -> None:
    assert horizon({SOURCES[0]: Watermark(None, lags=True)}) == Horizon(ready=False)


def test_a_source_never_seen_does_not_bound_it() -> None:
    assert horizon({}) == Horizon()
    assert horizon({"feed.orders": Watermark(NOON, lags=True)}) == Horizon()


def test_once_the_day_is_over_everything_is_compared() -> None:
    stuck = {SOURCES[0]: Watermark(NOON, lags=True)}
    day_end = datetime(2026, 5, 5, tzinfo=UTC)
    assert horizon(stuck, now=day_end + GRACE) == Horizon()
    assert horizon(stuck, now=day_end).until == NOON - GRACE
    past = {SOURCES[0]: Watermark(day_end + GRACE, lags=True)}
    assert horizon(past) == Horizon()
