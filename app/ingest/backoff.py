"""Reconnect pacing: exponential backoff with full jitter, reset once a connection proved healthy.

Pure: the caller passes the clock and the random draw, so tests need neither sleep nor seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base: float = 0.1
    cap: float = 30.0
    # A connection that stayed up this long, or delivered data, was healthy: the next failure
    # starts again from `base` instead of growing the delay further.
    healthy_after: float = 5.0


@dataclass(frozen=True, slots=True)
class BackoffState:
    attempt: int = 0
    connected_at: float | None = None
    delivered: bool = False


def connected(state: BackoffState, now: float) -> BackoffState:
    return replace(state, connected_at=now, delivered=False)


def delivered(state: BackoffState) -> BackoffState:
    return state if state.delivered else replace(state, delivered=True)


def failed(
    policy: BackoffPolicy, state: BackoffState, now: float, draw: float
) -> tuple[float, BackoffState]:
    """The delay before the next attempt (`draw` uniform in [0, 1)) and the new state.

    Full jitter (delay uniform in [0, min(cap, base * 2**attempt)]) spreads the reconnects of
    many workers after a venue outage instead of synchronising them.
    """
    healthy = state.connected_at is not None and (
        state.delivered or now - state.connected_at >= policy.healthy_after
    )
    attempt = 0 if healthy else state.attempt
    ceiling = min(policy.cap, policy.base * 2.0 ** min(attempt, 62))
    return draw * ceiling, BackoffState(attempt=attempt + 1)
