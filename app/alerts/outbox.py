"""Deliver the alert outbox: claim, digest, send, mark — retried with backoff, never lost.

The break lifecycle writes `alert_outbox` rows in the same transaction as the break, with the
notifier `default` (`ALL_NOTIFIERS`: "every configured notifier" — recon knows nothing of
notifier URLs). A delivery run first fans each such row out into one row per configured
notifier; the unique key (break_id, occurrence, notifier) makes that idempotent, so no
occurrence is queued twice for a notifier however often or concurrently fan-out runs. The
`default` row is then marked delivered (its job, handing the occurrence on, is done). A row
written for one named notifier is delivered by that notifier only.

Then, per notifier, one transaction: claim every due row with `FOR UPDATE SKIP LOCKED` (a
concurrent run skips them instead of sending them again), send them as ONE digest, and mark them
delivered in the same transaction. Send-then-commit leaves one residual risk: if the commit fails
after the notifier accepted the message, the rows stay pending and the next run sends them again.
Notifiers have no idempotency key to stop that; the claim makes it the only way to duplicate.

A failed send increments `attempts`, records `last_error` and pushes `next_attempt_at` out with
exponential backoff and jitter; while a notifier is backing off, new alerts for it wait too, so
when it comes back the whole backlog goes out as one digest.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from app.alerts.notifiers import AlertItem, DeliveryError, Notifier, build_digest, describe_payload
from app.config import Settings

log = logging.getLogger(__name__)

# Must equal what app.recon.lifecycle queues alerts under (its DEFAULT_NOTIFIERS).
ALL_NOTIFIERS = "default"
DEFAULT_MAX_DIGEST = 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            base=timedelta(seconds=settings.alert_backoff_base_seconds),
            cap=timedelta(seconds=settings.alert_backoff_cap_seconds),
        )


def retry_delay(policy: RetryPolicy, attempts: int, draw: float) -> timedelta:
    """Delay after the `attempts`-th failure (>= 1); `draw` is uniform in [0, 1).

    Equal jitter: half the exponential delay is fixed so a retry never fires at once, the other
    half is random so many deliverers recovering together do not hit the notifier in step.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    ceiling = min(policy.cap, policy.base * (1 << min(attempts - 1, 30)))
    return ceiling / 2 + ceiling / 2 * draw


@dataclass(frozen=True, slots=True)
class NotifierOutcome:
    notifier: str
    alerts: int
    delivered: bool
    error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    fanned_out: int
    outcomes: tuple[NotifierOutcome, ...]
    backing_off: tuple[str, ...]

    @property
    def messages_sent(self) -> int:
        return sum(1 for o in self.outcomes if o.delivered)

    @property
    def alerts_delivered(self) -> int:
        return sum(o.alerts for o in self.outcomes if o.delivered)

    @property
    def failures(self) -> int:
        return sum(1 for o in self.outcomes if not o.delivered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fanned_out": self.fanned_out,
            "messages_sent": self.messages_sent,
            "alerts_delivered": self.alerts_delivered,
            "failures": self.failures,
            "backing_off": list(self.backing_off),
            "outcomes": [
                {
                    "notifier": o.notifier,
                    "alerts": o.alerts,
                    "delivered": o.delivered,
                    "error": o.error,
                    "next_attempt_at": o.next_attempt_at.isoformat() if o.next_attempt_at else None,
                }
                for o in self.outcomes
            ],
        }


_FAN_OUT = text(
    """
    WITH src AS (
        SELECT id, break_id, occurrence, payload, created_at
        FROM alert_outbox
        WHERE notifier = :all AND delivered_at IS NULL
        ORDER BY id
        FOR UPDATE SKIP LOCKED
    ), fanned AS (
        INSERT INTO alert_outbox (break_id, occurrence, notifier, payload, created_at,
                                  next_attempt_at)
        SELECT src.break_id, src.occurrence, n.name, src.payload, src.created_at, :now
        FROM src CROSS JOIN unnest(CAST(:names AS text[])) AS n(name)
        ON CONFLICT (break_id, occurrence, notifier) DO NOTHING
        RETURNING 1
    ), handed AS (
        UPDATE alert_outbox AS o SET delivered_at = :now
        FROM src WHERE o.id = src.id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM fanned) AS fanned, (SELECT count(*) FROM handed) AS handed
    """
)

_BACKING_OFF_UNTIL = text(
    """
    SELECT max(next_attempt_at) FROM alert_outbox
    WHERE notifier = :notifier AND delivered_at IS NULL AND attempts > 0
    """
)

_CLAIM = text(
    """
    SELECT o.id, o.break_id, o.occurrence, o.payload, o.attempts,
           b.kind, b.key, b.business_date, b.severity, b.expected, b.actual, b.details
    FROM alert_outbox AS o
    JOIN recon_break AS b ON b.id = o.break_id
    WHERE o.notifier = :notifier AND o.delivered_at IS NULL AND o.next_attempt_at <= :now
    ORDER BY o.id
    LIMIT :limit
    FOR UPDATE OF o SKIP LOCKED
    """
)

_MARK_DELIVERED = text(
    """
    UPDATE alert_outbox
    SET delivered_at = :now, attempts = attempts + 1, last_error = NULL
    WHERE id = ANY(:ids)
    """
)

_MARK_FAILED = text(
    """
    UPDATE alert_outbox
    SET attempts = attempts + 1, next_attempt_at = :next, last_error = :error
    WHERE id = ANY(:ids)
    """
)


def fan_out(conn: Connection, names: Sequence[str], now: datetime) -> int:
    """Queue every `default` occurrence for each notifier in `names`; returns rows queued."""
    row = conn.execute(_FAN_OUT, {"all": ALL_NOTIFIERS, "names": list(names), "now": now}).one()
    return int(row.fanned)


def _item(row: Any) -> AlertItem:
    facts = describe_payload(row.payload or {}) or describe_payload(
        {"expected": row.expected, "actual": row.actual, "details": row.details}
    )
    return AlertItem(
        outbox_id=row.id,
        break_id=row.break_id,
        occurrence=row.occurrence,
        kind=row.kind,
        key=row.key,
        business_date=row.business_date,
        severity=row.severity,
        facts=facts,
    )


def _deliver_batch(
    conn: Connection,
    notifier: Notifier,
    now: datetime,
    *,
    policy: RetryPolicy,
    draw: Callable[[], float],
    limit: int,
) -> NotifierOutcome | None:
    rows = conn.execute(_CLAIM, {"notifier": notifier.name, "now": now, "limit": limit}).all()
    if not rows:
        return None
    ids = [row.id for row in rows]
    digest = build_digest([_item(row) for row in rows])
    try:
        notifier.send(digest)
    except Exception as exc:  # any failure is retried, never lost
        # A DeliveryError's text is safe to keep; anything else might quote the URL.
        error = str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__
        attempts = max(row.attempts for row in rows) + 1
        next_at = now + retry_delay(policy, attempts, draw())
        conn.execute(_MARK_FAILED, {"ids": ids, "next": next_at, "error": error})
        log.warning(
            "alert delivery via %s failed (%d alerts, attempt %d), retry at %s: %s",
            notifier.name,
            len(ids),
            attempts,
            next_at.isoformat(),
            error,
        )
        return NotifierOutcome(notifier.name, len(ids), False, error, next_at)
    conn.execute(_MARK_DELIVERED, {"ids": ids, "now": now})
    return NotifierOutcome(notifier.name, len(ids), True)


def deliver_pending(
    engine: Engine,
    notifiers: Sequence[Notifier],
    now: datetime | None = None,
    *,
    policy: RetryPolicy | None = None,
    draw: Callable[[], float] = random.random,
    max_digest: int = DEFAULT_MAX_DIGEST,
) -> DeliveryReport:
    """Deliver every due alert: one digest per notifier (per `max_digest` alerts)."""
    if not notifiers:
        # Fan-out would hand the occurrences to nobody and mark them done: refuse instead.
        raise ValueError("deliver_pending needs at least one notifier")
    now = now or datetime.now(UTC)
    policy = policy or RetryPolicy()
    with engine.begin() as conn:
        fanned = fan_out(conn, [n.name for n in notifiers], now)
    outcomes: list[NotifierOutcome] = []
    backing_off: list[str] = []
    for notifier in notifiers:
        with engine.begin() as conn:
            until = conn.execute(_BACKING_OFF_UNTIL, {"notifier": notifier.name}).scalar()
        if until is not None and until > now:
            backing_off.append(notifier.name)
            continue
        # Each pass delivers or defers at least one row, so this ends; a failure ends it at once.
        while True:
            with engine.begin() as conn:
                outcome = _deliver_batch(
                    conn, notifier, now, policy=policy, draw=draw, limit=max_digest
                )
            if outcome is None:
                break
            outcomes.append(outcome)
            if not outcome.delivered or outcome.alerts < max_digest:
                break
    return DeliveryReport(fanned, tuple(outcomes), tuple(backing_off))
