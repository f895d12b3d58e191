"""Reconnect pacing: exponential growth, full jitter, cap, reset after a healthy connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.ingest.backoff import BackoffPolicy, BackoffState, connected, delivered, failed

POLICY = BackoffPolicy(base=0.1, cap=5.0, healthy_after=10.0)


def _ceilings(failures: int) -> list[float]:
    state = BackoffState()
    out = []
    for _ in range(failures):
        delay, state = failed(POLICY, state, now=0.0, draw=1.0)
        out.append(delay)
    return out


def test_delay_ceiling_doubles_up_to_the_cap() -> None:
    assert _ceilings(8) == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]


@given(
    failures=st.integers(min_value=1, max_value=200),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_full_jitter_stays_within_zero_and_cap(failures: int, draw: float) -> None:
    state = BackoffState()
    for _ in range(failures):
        delay, state = failed(POLICY, state, now=0.0, draw=draw)
        assert 0.0 <= delay < POLICY.cap
    assert state.attempt == failures


def test_jitter_scales_with_the_draw() -> None:
    state = BackoffState(attempt=3)
    low, _ = failed(POLICY, state, now=0.0, draw=0.25)
    high, _ = failed(POLICY, state, now=0.0, draw=0.75)
    assert (low, high) == (0.2, 0.6000000000000001)


def test_short_silent_connection_keeps_growing() -> None:
    state = BackoffState(attempt=4)
    state = connected(state, now=100.0)
    delay, state = failed(POLICY, state, now=101.0, draw=1.0)
    assert delay == 1.6
    assert state.attempt == 5


def test_connection_up_long_enough_resets() -> None:
    state = connected(BackoffState(attempt=6), now=100.0)
    delay, state = failed(POLICY, state, now=110.0, draw=1.0)
    assert delay == 0.1
    assert state.attempt == 1


def test_connection_that_delivered_data_resets() -> None:
    state = delivered(connected(BackoffState(attempt=6), now=100.0))
    delay, state = failed(POLICY, state, now=100.5, draw=1.0)
    assert delay == 0.1
    # the next failure without a connection in between grows again
    delay, state = failed(POLICY, state, now=100.6, draw=1.0)
    assert delay == 0.2


def test_delivered_before_connect_does_not_count() -> None:
    state = delivered(BackoffState(attempt=3))
    delay, _ = failed(POLICY, state, now=0.0, draw=1.0)
    assert delay == 0.8
