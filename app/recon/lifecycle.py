"""The break lifecycle: merge a run's findings into `recon_break`, and the manual actions.

A run's findings (the temp table `recon_found`, see `app.recon.rules`) meet the stored breaks of
the same business date, set-wise, in the caller's transaction:

| stored break                         | found now | becomes                                     |
|--------------------------------------|-----------|---------------------------------------------|
| none                                 | yes       | open, occurrence 1; audit `opened`, alert   |
| open / acknowledged                  | yes       | unchanged status, last seen now (no audit)  |
| auto-resolved                        | yes       | open, occurrences + 1; `reopened`, alert    |
| resolved by a person, same `actual`  | yes       | stays resolved; details note it (no audit)  |
| resolved by a person, `actual` moved | yes       | open, occurrences + 1; `reopened`, alert    |
| open / acknowledged                  | no        | resolved; audit `auto_resolved`             |

Only kinds the run evaluated are auto-resolved: a rule that did not run proves nothing, and
neither does one about a break beyond its horizon (staged `deferred`): that break is left as is.
Every status change writes a `break_audit` row; `break_audit` itself is append-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, text

from app.alerts.outbox import ALL_NOTIFIERS
from app.db.base import BreakStatus
from app.domain.breaks import (
    AgeBucket,
    BreakKind,
    ManualAction,
    age_bucket,
    age_days,
    bucket_days,
    manual_transition,
)

RECON_ACTOR = "recon"
# Alert delivery fans this one row out to every configured notifier (app.alerts.outbox).
DEFAULT_NOTIFIERS: tuple[str, ...] = (ALL_NOTIFIERS,)


class BreakActionError(Exception):
    """A manual action that the break's current status does not allow."""


@dataclass(frozen=True, slots=True)
class MergeCounts:
    opened: int
    reopened: int
    still_open: int
    still_resolved: int
    auto_resolved: int

    def as_dict(self) -> dict[str, int]:
        return {
            "opened": self.opened,
            "reopened": self.reopened,
            "still_open": self.still_open,
            "still_resolved": self.still_resolved,
            "auto_resolved": self.auto_resolved,
        }


# The payload a notifier renders; built in SQL so alerts are queued in the merge's transaction.
_ALERT_PAYLOAD = """jsonb_build_object(
    'break_id', b.id, 'kind', b.kind, 'key', b.key, 'business_date', b.business_date,
    'severity', b.severity, 'status', b.status, 'occurrences', b.occurrences,
    'expected', b.expected, 'actual', b.actual, 'details', b.details)"""

# How each stored break of the date stands against this run's findings. A resolved break's
# last resolution in the audit trail says whether a person or the engine resolved it.
_CLASSIFY = """
CREATE TEMP TABLE recon_merge ON COMMIT DROP AS
SELECT b.id, b.status AS from_status, f.kind IS NOT NULL AS present,
       f.expected, f.actual, f.details, f.severity,
       b.actual IS DISTINCT FROM f.actual AS actual_changed,
       (SELECT a.action FROM break_audit AS a
        WHERE a.break_id = b.id AND a.to_status = 'resolved'
        ORDER BY a.id DESC LIMIT 1) AS resolved_by
FROM recon_break AS b
LEFT JOIN recon_found AS f ON f.kind = b.kind AND f.key = b.key
WHERE b.business_date = :business_date AND b.kind = ANY(:kinds) AND f.deferred IS NOT TRUE
"""

_AUTO_RESOLVE = """
WITH changed AS (
  UPDATE recon_break AS b
  SET status = 'resolved', resolved_at = :now, last_run_id = :run_id
  FROM recon_merge AS m
  WHERE m.id = b.id AND NOT m.present AND m.from_status IN ('open', 'acknowledged')
  RETURNING b.id, m.from_status
)
INSERT INTO break_audit (break_id, at, actor, action, from_status, to_status, data)
SELECT id, :now, :actor, 'auto_resolved', from_status, 'resolved',
       jsonb_build_object('run_id', :run_id)
FROM changed
RETURNING break_id
"""

_REOPEN = f"""
WITH changed AS (
  UPDATE recon_break AS b
  SET status = 'open', resolved_at = NULL, occurrences = b.occurrences + 1,
      last_seen_at = :now, last_run_id = :run_id, severity = m.severity,
      expected = m.expected, actual = m.actual, details = m.details
  FROM recon_merge AS m
  WHERE m.id = b.id AND m.present AND m.from_status = 'resolved'
    AND (m.resolved_by IS DISTINCT FROM 'resolved' OR m.actual_changed)
  RETURNING b.*
), alerted AS (
  INSERT INTO alert_outbox (break_id, occurrence, notifier, payload, created_at, next_attempt_at)
  SELECT b.id, b.occurrences, n.notifier, {_ALERT_PAYLOAD}, :now, :now
  FROM changed AS b CROSS JOIN unnest(CAST(:notifiers AS text[])) AS n(notifier)
)
INSERT INTO break_audit (break_id, at, actor, action, from_status, to_status, data)
SELECT b.id, :now, :actor, 'reopened', 'resolved', 'open',
       jsonb_build_object('run_id', :run_id, 'occurrence', b.occurrences, 'actual', b.actual)
FROM changed AS b
RETURNING break_id
"""

# Still there: refresh what was seen. A person's resolution stands while the facts are the same.
_TOUCH = """
UPDATE recon_break AS b
SET last_seen_at = :now, last_run_id = :run_id, severity = m.severity, expected = m.expected,
    actual = m.actual,
    details = CASE WHEN b.status = 'resolved'
                   THEN m.details || jsonb_build_object('present_after_manual_resolve', true)
                   ELSE m.details END
FROM recon_merge AS m
WHERE m.id = b.id AND m.present
  AND (m.from_status <> 'resolved' OR (m.resolved_by = 'resolved' AND NOT m.actual_changed))
RETURNING b.status
"""

_OPEN_NEW = f"""
WITH created AS (
  INSERT INTO recon_break (kind, business_date, key, severity, status, expected, actual, details,
                           first_seen_at, last_seen_at, occurrences, last_run_id)
  SELECT f.kind, f.business_date, f.key, f.severity, 'open', f.expected, f.actual, f.details,
         :now, :now, 1, :run_id
  FROM recon_found AS f
  WHERE NOT f.deferred
  ON CONFLICT (kind, business_date, key) DO NOTHING
  RETURNING *
), alerted AS (
  INSERT INTO alert_outbox (break_id, occurrence, notifier, payload, created_at, next_attempt_at)
  SELECT b.id, 1, n.notifier, {_ALERT_PAYLOAD}, :now, :now
  FROM created AS b CROSS JOIN unnest(CAST(:notifiers AS text[])) AS n(notifier)
)
INSERT INTO break_audit (break_id, at, actor, action, from_status, to_status, data)
SELECT b.id, :now, :actor, 'opened', NULL, 'open', jsonb_build_object('run_id', :run_id)
FROM created AS b
RETURNING break_id
"""


def merge(
    conn: Connection,
    *,
    business_date: date,
    kinds: Sequence[BreakKind],
    run_id: int | None,
    now: datetime,
    notifiers: Sequence[str] = DEFAULT_NOTIFIERS,
) -> MergeCounts:
    """Merge `recon_found` into `recon_break` for `business_date`; see the module docstring."""
    params: dict[str, Any] = {
        "business_date": business_date,
        "kinds": [str(k) for k in kinds],
        "run_id": run_id,
        "now": now,
        "actor": RECON_ACTOR,
        "notifiers": list(notifiers),
    }
    conn.execute(text(_CLASSIFY), params)
    auto_resolved = len(conn.execute(text(_AUTO_RESOLVE), params).all())
    reopened = len(conn.execute(text(_REOPEN), params).all())
    touched = conn.execute(text(_TOUCH), params).scalars().all()
    opened = len(conn.execute(text(_OPEN_NEW), params).all())
    still_resolved = sum(1 for status in touched if status == BreakStatus.RESOLVED)
    return MergeCounts(
        opened=opened,
        reopened=reopened,
        still_open=len(touched) - still_resolved,
        still_resolved=still_resolved,
        auto_resolved=auto_resolved,
    )


# --- reading and working the queue -------------------------------------------------------

_BREAK_COLUMNS = """b.id, b.kind, b.business_date, b.key, b.severity, b.status, b.expected,
b.actual, b.details, b.first_seen_at, b.last_seen_at, b.resolved_at, b.occurrences, b.assignee,
b.notes, b.last_run_id"""


@dataclass(frozen=True, slots=True)
class BreakView:
    id: int
    kind: str
    business_date: date
    key: str
    severity: str
    status: str
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None
    details: dict[str, Any]
    first_seen_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    occurrences: int
    assignee: str | None
    notes: str | None
    last_run_id: int | None
    age_days: int
    age_bucket: AgeBucket

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "key": self.key,
            "status": self.status,
            "business_date": self.business_date.isoformat(),
            "severity": self.severity,
            "occurrences": self.occurrences,
            "first_seen_at": self.first_seen_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "age_days": self.age_days,
            "age_bucket": str(self.age_bucket),
            "assignee": self.assignee,
            "notes": self.notes,
            "expected": self.expected,
            "actual": self.actual,
            "details": self.details,
            "last_run_id": self.last_run_id,
        }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str | None
    note: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "note": self.note,
            "data": self.data,
        }


def _view(row: Any, now: datetime) -> BreakView:
    days = age_days(row.first_seen_at, now)
    return BreakView(
        id=row.id,
        kind=row.kind,
        business_date=row.business_date,
        key=row.key,
        severity=row.severity,
        status=row.status,
        expected=row.expected,
        actual=row.actual,
        details=row.details,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
        resolved_at=row.resolved_at,
        occurrences=row.occurrences,
        assignee=row.assignee,
        notes=row.notes,
        last_run_id=row.last_run_id,
        age_days=days,
        age_bucket=age_bucket(days),
    )


def list_breaks(
    conn: Connection,
    *,
    now: datetime,
    business_date: date | None = None,
    kind: str | None = None,
    status: BreakStatus | None = None,
    age: AgeBucket | None = None,
    limit: int | None = None,
) -> list[BreakView]:
    """Breaks matching every given filter, most severe and oldest first."""
    where = ["TRUE"]
    params: dict[str, Any] = {"now": now}
    if business_date is not None:
        where.append("b.business_date = :business_date")
        params["business_date"] = business_date
    if kind is not None:
        where.append("b.kind = :kind")
        params["kind"] = kind
    if status is not None:
        where.append("b.status = :status")
        params["status"] = str(status)
    if age is not None:
        span = bucket_days(age)
        where.append("b.first_seen_at <= :now - make_interval(days => :age_first)")
        params["age_first"] = span.first
        if span.last is not None:
            where.append("b.first_seen_at > :now - make_interval(days => :age_last + 1)")
            params["age_last"] = span.last
    if limit is not None:
        params["limit"] = limit
    rows = conn.execute(
        text(
            f"SELECT {_BREAK_COLUMNS} FROM recon_break AS b WHERE {' AND '.join(where)}"
            " ORDER BY CASE b.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1"
            " WHEN 'medium' THEN 2 ELSE 3 END, b.first_seen_at, b.id"
            + (" LIMIT :limit" if limit is not None else "")
        ),
        params,
    )
    return [_view(row, now) for row in rows]


def get_break(conn: Connection, break_id: int, *, now: datetime) -> BreakView | None:
    row = conn.execute(
        text(f"SELECT {_BREAK_COLUMNS} FROM recon_break AS b WHERE b.id = :id"), {"id": break_id}
    ).first()
    return None if row is None else _view(row, now)


def audit_trail(conn: Connection, break_id: int) -> list[AuditEntry]:
    rows = conn.execute(
        text(
            "SELECT id, at, actor, action, from_status, to_status, note, data"
            " FROM break_audit WHERE break_id = :id ORDER BY id"
        ),
        {"id": break_id},
    )
    return [AuditEntry(*row) for row in rows]


def act(
    conn: Connection,
    break_id: int,
    action: ManualAction,
    *,
    actor: str,
    now: datetime,
    note: str | None = None,
    assignee: str | None = None,
) -> BreakView:
    """A person acknowledges or resolves a break; the change and its note go to the audit trail.

    Raises LookupError for an unknown id and BreakActionError when the status forbids it.
    """
    if not actor.strip():
        raise BreakActionError("an action needs an actor")
    row = conn.execute(
        text("SELECT status FROM recon_break WHERE id = :id FOR UPDATE"), {"id": break_id}
    ).first()
    if row is None:
        raise LookupError(f"no break with id {break_id}")
    current = BreakStatus(row.status)
    try:
        move = manual_transition(action, current)
    except ValueError as exc:
        raise BreakActionError(str(exc)) from None
    conn.execute(
        text(
            "UPDATE recon_break SET status = :to_status,"
            " resolved_at = CASE WHEN :to_status = 'resolved' THEN CAST(:now AS timestamptz) END,"
            " assignee = coalesce(:assignee, assignee),"
            # concat_ws skips NULLs: no note keeps the notes as they were.
            " notes = nullif(concat_ws(E'\\n', notes, CAST(:note AS text)), '')"
            " WHERE id = :id"
        ),
        {
            "id": break_id,
            "to_status": str(move.to_status),
            "now": now,
            "assignee": assignee,
            "note": note,
        },
    )
    conn.execute(
        text(
            "INSERT INTO break_audit (break_id, at, actor, action, from_status, to_status, note,"
            " data) VALUES (:id, :now, :actor, :action, :from_status, :to_status, :note,"
            " CAST(:data AS jsonb))"
        ),
        {
            "id": break_id,
            "now": now,
            "actor": actor,
            "action": move.audit_action,
            "from_status": str(current),
            "to_status": str(move.to_status),
            "note": note,
            "data": orjson.dumps({"assignee": assignee} if assignee else {}).decode(),
        },
    )
    view = get_break(conn, break_id, now=now)
    assert view is not None  # locked above, so it still exists
    return view
