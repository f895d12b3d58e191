"""Which window a websocket feed interruption may have lost (feeds have no replay)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.ingest.feeds import LowWaterMark, gap_window

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SLACK = timedelta(seconds=10)


def test_window_runs_from_the_mark_to_the_first_event_after() -> None:
    first = T0 + timedelta(minutes=5)
    assert gap_window(T0, first, timedelta(seconds=3), SLACK) == (T0 - SLACK, first + SLACK)


def test_a_feed_that_replays_from_earlier_lost_nothing() -> None:
    assert gap_window(T0, T0 - timedelta(hours=1), None, SLACK) is None


def test_events_in_the_same_second_still_count_as_a_gap() -> None:
    # One-second timestamps: the next event may carry the very same second as the mark.
    assert gap_window(T0, T0, None, SLACK) == (T0 - SLACK, T0 + SLACK)


def test_without_a_mark_the_outage_length_bounds_the_window() -> None:
    first = T0 + timedelta(minutes=5)
    outage = timedelta(seconds=30)
    assert gap_window(None, first, outage, SLACK) == (first - outage - SLACK, first + SLACK)
    assert gap_window(None, first, None, SLACK) is None


def test_mark_starts_from_the_stored_checkpoint() -> None:
    assert LowWaterMark().value is None
    assert LowWaterMark(T0).value == T0
    mark = LowWaterMark(T0)
    mark.add(T0 + timedelta(hours=1))
    assert mark.value == T0 + timedelta(hours=1)


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300),
    block=st.integers(min_value=1, max_value=40),
)
def test_mark_is_at_most_the_oldest_of_the_last_block(offsets: list[int], block: int) -> None:
    mark = LowWaterMark(block=block)
    times = [T0 + timedelta(seconds=o) for o in offsets]
    for when in times:
        mark.add(when)
    value = mark.value
    assert value is not None
    # Never newer than anything among the last `block` events (a reordered frame lost at the
    # cut is at least that old), and never older than what was seen at all.
    assert value <= min(times[-block:])
    assert value >= min(times)
