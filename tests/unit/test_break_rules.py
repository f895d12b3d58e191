"""The pure break rules: kinds, severities, age buckets, tolerance, manual transitions, pacing."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.db.base import BreakStatus, Severity
from app.domain.breaks import (
    AgeBucket,
    BreakKind,
    ManualAction,
    RuleConfig,
    age_bucket,
    age_days,
    bucket_days,
    exceeds_tolerance,
    manual_transition,
    severity_map,
    severity_of,
)
from app.recon.report_client import TokenBucket, report_window
from app.recon.rules import RULES
from app.venue.model import INJECTABLE_KINDS


def test_every_kind_the_venue_injects_is_one_we_know() -> None:
    assert set(INJECTABLE_KINDS) <= set(BreakKind)
    # The one kind the venue never injects is drift beyond tolerance (it stays within 1%).
    assert set(BreakKind) - set(INJECTABLE_KINDS) == {BreakKind.CHAIN_PENDING_DRIFT}


def test_every_kind_has_a_severity_and_a_rule_that_finds_it() -> None:
    assert set(severity_map()) == {str(k) for k in BreakKind}
    assert {kind for rule in RULES for kind in rule.kinds} == set(BreakKind)
    assert len([kind for rule in RULES for kind in rule.kinds]) == len(BreakKind)


@pytest.mark.parametrize(
    ("kind", "severity"),
    [
        (BreakKind.POSITION_MISMATCH, Severity.CRITICAL),
        (BreakKind.TRADE_LEG_MISSING, Severity.CRITICAL),
        (BreakKind.EXECUTION_QUANTITY_MISMATCH, Severity.HIGH),
        (BreakKind.CHAIN_REFUND_ARITHMETIC, Severity.MEDIUM),
        (BreakKind.TRADE_BUSTED, Severity.LOW),
    ],
)
def test_severity_ranks_money_and_positions_first(kind: BreakKind, severity: Severity) -> None:
    assert severity_of(kind) is severity


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (0, AgeBucket.DAYS_0_1),
        (1, AgeBucket.DAYS_0_1),
        (2, AgeBucket.DAYS_2_7),
        (7, AgeBucket.DAYS_2_7),
        (8, AgeBucket.DAYS_8_30),
        (30, AgeBucket.DAYS_8_30),
        (31, AgeBucket.OVER_30),
        (10_000, AgeBucket.OVER_30),
    ],
)
def test_age_buckets_have_inclusive_edges(days: int, bucket: AgeBucket) -> None:
    assert age_bucket(days) is bucket


@given(st.integers(min_value=0, max_value=100_000))
def test_every_age_falls_in_exactly_the_bucket_whose_range_holds_it(days: int) -> None:
    holding = [
        b
        for b in AgeBucket
        if bucket_days(b).first <= days and (bucket_days(b).last or days) >= days
    ]
    assert holding == [age_bucket(days)]


def test_a_negative_age_is_refused() -> None:
    with pytest.raises(ValueError, match="age"):
        age_bucket(-1)


def test_age_counts_whole_days_and_never_goes_negative() -> None:
    seen = datetime(2026, 5, 4, 12, tzinfo=UTC)
    assert age_days(seen, seen + timedelta(days=1, hours=23)) == 1
    assert age_days(seen, seen + timedelta(days=2)) == 2
    assert age_days(seen, seen - timedelta(hours=3)) == 0


@pytest.mark.parametrize(
    ("expected", "actual", "exceeds"),
    [
        ("0.40", "0.404", False),  # exactly 1%: within
        ("0.40", "0.4041", True),
        ("2000000", "1980000", False),
        ("2000000", "1979999", True),
        ("0", "0", False),
        ("0", "0.000001", True),  # nothing to take a fraction of
    ],
)
def test_tolerance_is_a_fraction_of_the_expected_value(
    expected: str, actual: str, exceeds: bool
) -> None:
    assert exceeds_tolerance(Decimal(expected), Decimal(actual), Decimal("0.01")) is exceeds


@given(
    st.decimals(min_value=-(10**9), max_value=10**9, places=6),
    st.decimals(min_value=0, max_value=Decimal("0.99"), places=4),
)
def test_a_value_is_always_within_tolerance_of_itself(value: Decimal, tolerance: Decimal) -> None:
    assert not exceeds_tolerance(value, value, tolerance)


def test_tolerance_and_grace_must_make_sense() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        exceeds_tolerance(Decimal(1), Decimal(1), Decimal("-0.1"))
    with pytest.raises(ValueError, match="drift_tolerance"):
        RuleConfig(drift_tolerance=Decimal(1))
    with pytest.raises(ValueError, match="pending_grace"):
        RuleConfig(pending_grace=timedelta(seconds=-1))
    assert RuleConfig().pending_grace == timedelta(minutes=10)


@pytest.mark.parametrize(
    ("action", "current", "to_status", "audit_action"),
    [
        (ManualAction.ACKNOWLEDGE, BreakStatus.OPEN, BreakStatus.ACKNOWLEDGED, "acknowledged"),
        (ManualAction.RESOLVE, BreakStatus.OPEN, BreakStatus.RESOLVED, "resolved"),
        (ManualAction.RESOLVE, BreakStatus.ACKNOWLEDGED, BreakStatus.RESOLVED, "resolved"),
    ],
)
def test_people_move_breaks_forward(
    action: ManualAction, current: BreakStatus, to_status: BreakStatus, audit_action: str
) -> None:
    move = manual_transition(action, current)
    assert (move.to_status, move.audit_action) == (to_status, audit_action)


@pytest.mark.parametrize(
    ("action", "current"),
    [
        (ManualAction.ACKNOWLEDGE, BreakStatus.ACKNOWLEDGED),
        (ManualAction.ACKNOWLEDGE, BreakStatus.RESOLVED),
        (ManualAction.RESOLVE, BreakStatus.RESOLVED),
    ],
)
def test_people_cannot_repeat_or_undo_a_move(action: ManualAction, current: BreakStatus) -> None:
    with pytest.raises(ValueError, match=f"cannot {action}"):
        manual_transition(action, current)


def test_the_report_window_covers_the_trade_date_with_a_margin() -> None:
    start, end = report_window(date(2026, 5, 4), timedelta(hours=6))
    assert start == datetime(2026, 5, 3, 18, tzinfo=UTC)
    assert end == datetime(2026, 5, 5, 6, tzinfo=UTC)


def test_the_token_bucket_spaces_calls_evenly_at_the_rate() -> None:
    clock = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    async def calls() -> list[float]:
        bucket = TokenBucket(12, clock=lambda: clock[0], sleep=sleep)
        times = []
        for _ in range(13):
            await bucket.acquire()
            times.append(clock[0])
        return times

    times = asyncio.run(calls())
    assert times[0] == 100.0
    assert all(b - a == pytest.approx(5.0) for a, b in pairwise(times))
    # 13 calls span exactly 60 s: never more than 12 inside any one-minute window.
    assert times[-1] - times[0] == pytest.approx(60.0)


def test_the_token_bucket_does_not_bank_idle_time() -> None:
    clock = [0.0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    async def calls() -> float:
        bucket = TokenBucket(60, clock=lambda: clock[0], sleep=sleep)
        await bucket.acquire()
        clock[0] += 600  # idle for ten minutes
        await bucket.acquire()
        started = clock[0]
        await bucket.acquire()
        return clock[0] - started

    assert asyncio.run(calls()) == pytest.approx(1.0)
