"""The nightly reconciliation report of one business date: gather, summarise, render, store.

`gather` reads everything in one REPEATABLE READ snapshot (counts and breaks agree with each
other); `summarise`, `compare`, `render_html` and `csv_files` are pure; `build_report` stores the
report in `recon_report` and writes HTML, CSV and JSON files to a directory.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, text

from app.db.base import BreakStatus, Severity
from app.db.models import pending_confirmed
from app.domain.breaks import AgeBucket, age_bucket, age_days
from app.recon.rules import GAP_EXECUTIONS, GAP_ORDERS_FEED, GAP_TRADES_FEED
from app.reports.charts import Series, bar_chart, column_chart, fmt_number
from app.reports.template import PAGE

log = logging.getLogger(__name__)

SEVERITIES = tuple(s.value for s in reversed(Severity))
GAP_FEEDS = tuple(pattern.rstrip("%") for pattern in (GAP_ORDERS_FEED, GAP_TRADES_FEED))
STATUSES = tuple(s.value for s in BreakStatus)
# The page stays readable; the CSV has every open break.
MAX_OPEN_ROWS_IN_PAGE = 500
TOP_FEE_ROWS = 12
HTML_NAME = "report.html"
SUMMARY_NAME = "summary.json"


# --- what the report is made of --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventCount:
    source: str
    count: int


@dataclass(frozen=True, slots=True)
class MatchRate:
    name: str
    matched: int
    total: int
    # Rows on the side compared against: zero means the comparison could not be made.
    other_side: int

    @property
    def rate(self) -> Decimal | None:
        if self.total == 0 or self.other_side == 0:
            return None
        return (Decimal(self.matched) / Decimal(self.total)).quantize(Decimal("0.0001"))


@dataclass(frozen=True, slots=True)
class KindCount:
    kind: str
    severity: str
    by_status: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.by_status)

    def count(self, status: str) -> int:
        return dict(self.by_status).get(status, 0)


@dataclass(frozen=True, slots=True)
class OpenBreak:
    id: int
    kind: str
    key: str
    business_date: date
    severity: str
    status: str
    occurrences: int
    first_seen_at: datetime
    age_days: int
    age_bucket: AgeBucket
    assignee: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HourRow:
    hour: int
    exchange_fills: int
    chain_fills: int
    exchange_notional: Decimal
    chain_notional: Decimal
    breaks: int


@dataclass(frozen=True, slots=True)
class FeeRow:
    scope: str
    key: str
    label: str
    source: str
    gross_fee: Decimal
    refund: Decimal
    net_fee: Decimal
    fills: int


@dataclass(frozen=True, slots=True)
class PreviousReport:
    business_date: date
    built_at: datetime
    summary: dict[str, Any]
    breaks_opened_since: int
    breaks_resolved_since: int


@dataclass(frozen=True, slots=True)
class GapRow:
    """A window a stream or feed may have missed (`gap_window`), and what was done about it."""

    id: int
    source: str
    start: datetime
    end: datetime
    reason: str
    backfilled_at: datetime | None

    @property
    def outcome(self) -> str:
        if self.backfilled_at is not None:
            return f"backfilled from the Report API at {self.backfilled_at:%Y-%m-%d %H:%M:%S}Z"
        if self.source.startswith(GAP_EXECUTIONS.rstrip("%")):
            return "awaiting a Report API snapshot that covers it"
        if self.source.startswith(GAP_FEEDS):
            return "no replay: what was sent inside is lost; absences inside are not breaks"
        return "not backfilled: events sent inside may be missing"


@dataclass(frozen=True, slots=True)
class ReportData:
    business_date: date
    built_at: datetime
    events: tuple[EventCount, ...]
    match_rates: tuple[MatchRate, ...]
    kinds: tuple[KindCount, ...]
    open_breaks: tuple[OpenBreak, ...]
    hours: tuple[HourRow, ...]
    untimed_breaks: int
    fees: tuple[FeeRow, ...]
    previous: PreviousReport | None
    gaps: tuple[GapRow, ...] = ()


Metric = int | Decimal


@dataclass(frozen=True, slots=True)
class Change:
    metric: str
    previous: Metric | None
    current: Metric | None

    @property
    def delta(self) -> Metric | None:
        if self.previous is None or self.current is None:
            return None
        return self.current - self.previous


# --- gather (the only reads) -------------------------------------------------------------------

# (label, rows of the date of one table, which of them). One statement, one snapshot, and one
# scan per table: a day's order_filled is over a gigabyte, so labels that share a table share
# its scan.
_EVENT_SOURCES: tuple[tuple[str, str, str], ...] = (
    (
        "dropcopy executions",
        "execution WHERE business_date = :d",
        "source = 'dropcopy'",
    ),
    (
        "executions backfilled from Report API",
        "execution WHERE business_date = :d",
        "source = 'report_backfill'",
    ),
    ("trade captures", "trade_capture WHERE business_date = :d", "true"),
    ("trade state changes", "trade_capture_state WHERE business_date = :d", "true"),
    ("instrument state changes", "instrument_state_change WHERE business_date = :d", "true"),
    ("position changes", "position_change WHERE business_date = :d", "true"),
    ("chain fills, maker rows", "order_filled WHERE business_date = :d", "role = 'maker'"),
    ("chain fills, taker aggregates", "order_filled WHERE business_date = :d", "role = 'taker'"),
    ("chain pending events", "order_filled_pending WHERE business_date = :d", "true"),
    ("chain fee refunds", "fee_refund WHERE business_date = :d", "true"),
    ("legacy feed trades", "feed_trade WHERE business_date = :d", "true"),
    ("Report API executions", "report_execution WHERE business_date = :d", "true"),
    ("Report API trades", "report_trade WHERE business_date = :d", "true"),
    ("dead letters received", "dead_letter WHERE received_at::date = :d", "true"),
    ("gap windows", "gap_window WHERE start_time::date = :d", "true"),
)


def _events_sql() -> str:
    """Counts in the order of _EVENT_SOURCES, as columns c0, c1, ... of one row."""
    scans = list(dict.fromkeys(rows for _, rows, _ in _EVENT_SOURCES))
    counts = ", ".join(
        f"s{scans.index(rows)}.c{i}" for i, (_, rows, _) in enumerate(_EVENT_SOURCES)
    )
    subqueries = ", ".join(
        "(SELECT "
        + ", ".join(
            f"count(*) FILTER (WHERE {which}) AS c{i}"
            for i, (_, rows, which) in enumerate(_EVENT_SOURCES)
            if rows == scan
        )
        + f" FROM {scan}) AS s{n}"
        for n, scan in enumerate(scans)
    )
    return f"SELECT {counts} FROM {subqueries}"


_EVENTS_SQL = _events_sql()

# (name, SQL returning matched, total, other_side).
_MATCH_RATES: tuple[tuple[str, str], ...] = (
    (
        "stream executions found in the Report API",
        """SELECT count(r.id), count(*),
                  (SELECT count(*) FROM report_execution WHERE business_date = :d)
           FROM execution AS e
           LEFT JOIN report_execution AS r ON r.business_date = e.business_date AND r.id = e.id
           WHERE e.business_date = :d""",
    ),
    (
        "Report API executions found in the stream",
        """SELECT count(e.id), count(*),
                  (SELECT count(*) FROM execution WHERE business_date = :d)
           FROM report_execution AS r
           LEFT JOIN execution AS e ON e.business_date = r.business_date AND e.id = r.id
           WHERE r.business_date = :d""",
    ),
    (
        "trade legs found among executions",
        """SELECT count(e.id), count(*),
                  (SELECT count(*) FROM execution WHERE business_date = :d)
           FROM trade_capture AS t
           CROSS JOIN LATERAL (VALUES (t.aggressor_execution_id), (t.passive_execution_id))
                AS leg(execution_id)
           LEFT JOIN execution AS e
             ON e.business_date = t.business_date AND e.id = leg.execution_id
           WHERE t.business_date = :d""",
    ),
    (
        "trades whose state agrees with the Report API",
        """SELECT count(r.id), count(*),
                  (SELECT count(*) FROM report_trade WHERE business_date = :d)
           FROM trade_capture AS t
           LEFT JOIN report_trade AS r
             ON r.business_date = t.business_date AND r.id = t.id AND r.state = t.state
           WHERE t.business_date = :d""",
    ),
    (
        "chain transactions whose makers sum to the taker aggregate",
        """WITH per_token AS (
               SELECT tx_hash, token_id,
                      sum(shares) FILTER (WHERE role = 'maker') AS maker_shares,
                      sum(shares) FILTER (WHERE role = 'taker') AS taker_shares
               FROM order_filled WHERE business_date = :d GROUP BY tx_hash, token_id)
           SELECT count(*) FILTER (WHERE maker_shares = taker_shares), count(*), count(*)
           FROM per_token""",
    ),
    (
        "pending chain events confirmed",
        f"""SELECT count(*) FILTER (WHERE {pending_confirmed("p", ":d")}), count(*), count(*)
           FROM order_filled_pending AS p WHERE business_date = :d""",
    ),
    (
        "V1 maker fills with their fee refund",
        """SELECT count(r.order_hash), count(*),
                  (SELECT count(*) FROM fee_refund WHERE business_date = :d)
           FROM order_filled AS o
           LEFT JOIN fee_refund AS r ON r.tx_hash = o.tx_hash AND r.order_hash = o.order_hash
           WHERE o.business_date = :d AND o.role = 'maker' AND o.version = 1""",
    ),
    (
        "maker fills seen by the legacy trade feed",
        """SELECT count(t.tx_hash), count(*),
                  (SELECT count(*) FROM feed_trade WHERE business_date = :d)
           FROM order_filled AS o
           LEFT JOIN feed_trade AS t
             ON t.business_date = o.business_date AND t.tx_hash = o.tx_hash
            AND t.order_hash = o.order_hash
           WHERE o.business_date = :d AND o.role = 'maker'""",
    ),
)

_KINDS_SQL = """
SELECT kind, max(severity) AS severity, status, count(*) AS n
FROM recon_break WHERE business_date = :d
GROUP BY kind, status ORDER BY kind, status
"""

_OPEN_BREAKS_SQL = """
SELECT id, kind, key, business_date, severity, status, occurrences, first_seen_at, assignee,
       details
FROM recon_break
WHERE status IN ('open', 'acknowledged') AND business_date <= :d
ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
         business_date, kind, key
"""

_VOLUME_BY_HOUR_SQL = """
SELECT hour, sum(exchange_fills) AS exchange_fills, sum(chain_fills) AS chain_fills,
       sum(exchange_notional) AS exchange_notional, sum(chain_notional) AS chain_notional
FROM (
    SELECT extract(hour FROM e.transact_time AT TIME ZONE 'UTC')::int AS hour,
           count(*) AS exchange_fills, 0 AS chain_fills,
           sum(e.last_px::numeric * e.last_shares / (i.price_scale * i.fractional_qty_scale))
               AS exchange_notional,
           0 AS chain_notional
    FROM execution AS e JOIN instrument AS i ON i.symbol = e.symbol
    WHERE e.business_date = :d
      AND e.exec_type IN ('EXECUTION_TYPE_FILL', 'EXECUTION_TYPE_PARTIAL_FILL')
    GROUP BY 1
    UNION ALL
    SELECT extract(hour FROM event_time AT TIME ZONE 'UTC')::int, 0, count(*), 0,
           sum(shares_normalized * price)
    FROM order_filled WHERE business_date = :d AND role = 'maker'
    GROUP BY 1
) AS by_source
GROUP BY hour
"""

# When did what broke happen? The key names an execution, a trade, a transaction, an order or
# a (tx|order) pair; COALESCE stops at the first lookup that finds it (all are index lookups).
# Positions (account|symbol) have no single time: they are counted as untimed.
_BREAKS_BY_HOUR_SQL = """
WITH timed AS (
    SELECT b.id, coalesce(
        (SELECT e.transact_time FROM execution AS e
         WHERE e.business_date = b.business_date AND e.id = b.key),
        (SELECT r.transact_time FROM report_execution AS r
         WHERE r.business_date = b.business_date AND r.id = b.key),
        (SELECT t.transact_time FROM trade_capture AS t
         WHERE t.business_date = b.business_date
           AND t.id = coalesce(b.details->>'trade_id', b.key)),
        (SELECT t.transact_time FROM report_trade AS t
         WHERE t.business_date = b.business_date AND t.id = b.key),
        (SELECT min(o.event_time) FROM order_filled AS o
         WHERE o.business_date = b.business_date AND o.tx_hash = split_part(b.key, '|', 1)),
        (SELECT min(p.event_time) FROM order_filled_pending AS p
         WHERE p.business_date = b.business_date AND p.tx_hash = split_part(b.key, '|', 1)),
        (SELECT min(o.event_time) FROM order_filled AS o
         WHERE o.business_date = b.business_date AND o.order_hash = b.key),
        (SELECT min(coalesce(f.event_time, f.received_at)) FROM fee_refund AS f
         WHERE f.order_hash = b.key)
    ) AS at
    FROM recon_break AS b WHERE b.business_date = :d
)
SELECT extract(hour FROM at AT TIME ZONE 'UTC')::int AS hour, count(*) AS n
FROM timed GROUP BY 1
"""

_FEES_SQL = """
SELECT f.scope, f.scope_key, f.source, f.gross_fee, f.refund, f.net_fee, f.fills,
       coalesce(m.market_slug, f.scope_key) AS label
FROM net_fee_daily AS f
LEFT JOIN LATERAL (
    SELECT o.market_slug FROM order_filled AS o
    WHERE f.scope = 'market' AND f.source = 'chain'
      AND o.condition_id = f.scope_key AND o.business_date = f.business_date
    LIMIT 1
) AS m ON TRUE
WHERE f.business_date = :d
ORDER BY f.scope, f.net_fee DESC, f.scope_key, f.source
"""

# Every gap that overlaps the business date (a UTC day, as chain events are dated).
_GAPS_SQL = """
SELECT id, source, start_time, end_time, reason, backfilled_at
FROM gap_window
WHERE start_time < (CAST(:d AS date) + 1)::timestamp AT TIME ZONE 'UTC'
  AND end_time >= CAST(:d AS date)::timestamp AT TIME ZONE 'UTC'
ORDER BY start_time, id
"""

_PREVIOUS_SQL = """
SELECT business_date, built_at, summary,
       (SELECT count(*) FROM recon_break WHERE first_seen_at > r.built_at) AS opened,
       (SELECT count(*) FROM recon_break WHERE resolved_at > r.built_at) AS resolved
FROM recon_report AS r
WHERE business_date < :d
ORDER BY business_date DESC, built_at DESC
LIMIT 1
"""


def _open_break(row: Any, now: datetime) -> OpenBreak:
    days = age_days(row.first_seen_at, now)
    return OpenBreak(
        id=row.id,
        kind=row.kind,
        key=row.key,
        business_date=row.business_date,
        severity=row.severity,
        status=row.status,
        occurrences=row.occurrences,
        first_seen_at=row.first_seen_at,
        age_days=days,
        age_bucket=age_bucket(days),
        assignee=row.assignee,
        details=row.details or {},
    )


def _hours(volume: Iterable[Any], breaks: dict[int | None, int]) -> tuple[HourRow, ...]:
    """All 24 UTC hours, quiet ones included, so the charts keep their shape."""
    by_hour = {row.hour: row for row in volume}
    rows = []
    for hour in range(24):
        v = by_hour.get(hour)
        rows.append(
            HourRow(
                hour=hour,
                exchange_fills=int(v.exchange_fills) if v else 0,
                chain_fills=int(v.chain_fills) if v else 0,
                exchange_notional=Decimal(v.exchange_notional) if v else Decimal(0),
                chain_notional=Decimal(v.chain_notional) if v else Decimal(0),
                breaks=breaks.get(hour, 0),
            )
        )
    return tuple(rows)


def gather(conn: Connection, business_date: date, now: datetime) -> ReportData:
    """Read the report's data for `business_date`; call inside one snapshot transaction."""
    params = {"d": business_date}
    counts = conn.execute(text(_EVENTS_SQL), params).one()
    events = tuple(
        EventCount(label, int(n)) for (label, _, _), n in zip(_EVENT_SOURCES, counts, strict=True)
    )
    rates = []
    for name, sql in _MATCH_RATES:
        matched, total, other = conn.execute(text(sql), params).one()
        rates.append(MatchRate(name, int(matched), int(total), int(other)))
    per_kind: dict[str, dict[str, int]] = {}
    severity_of: dict[str, str] = {}
    for row in conn.execute(text(_KINDS_SQL), params):
        per_kind.setdefault(row.kind, {})[row.status] = int(row.n)
        severity_of[row.kind] = row.severity
    kinds = tuple(
        KindCount(kind, severity_of[kind], tuple(sorted(statuses.items())))
        for kind, statuses in sorted(per_kind.items())
    )
    open_breaks = tuple(_open_break(r, now) for r in conn.execute(text(_OPEN_BREAKS_SQL), params))
    breaks_by_hour: dict[int | None, int] = {
        row.hour: int(row.n) for row in conn.execute(text(_BREAKS_BY_HOUR_SQL), params)
    }
    hours = _hours(conn.execute(text(_VOLUME_BY_HOUR_SQL), params), breaks_by_hour)
    fees = tuple(
        FeeRow(
            scope=r.scope,
            key=r.scope_key,
            label=r.label,
            source=r.source,
            gross_fee=r.gross_fee,
            refund=r.refund,
            net_fee=r.net_fee,
            fills=int(r.fills),
        )
        for r in conn.execute(text(_FEES_SQL), params)
    )
    gaps = tuple(
        GapRow(r.id, r.source, r.start_time, r.end_time, r.reason, r.backfilled_at)
        for r in conn.execute(text(_GAPS_SQL), params)
    )
    prev = conn.execute(text(_PREVIOUS_SQL), params).first()
    previous = (
        None
        if prev is None
        else PreviousReport(
            business_date=prev.business_date,
            built_at=prev.built_at,
            summary=prev.summary,
            breaks_opened_since=int(prev.opened),
            breaks_resolved_since=int(prev.resolved),
        )
    )
    return ReportData(
        business_date=business_date,
        built_at=now,
        events=events,
        match_rates=tuple(rates),
        kinds=kinds,
        open_breaks=open_breaks,
        hours=hours,
        untimed_breaks=breaks_by_hour.get(None, 0),
        fees=fees,
        previous=previous,
        gaps=gaps,
    )


# --- summarise and compare (pure) ------------------------------------------------------------


def _num(value: Decimal | int | None) -> str | int | None:
    """JSON form of an exact number: ints stay ints, Decimals become strings."""
    if value is None or isinstance(value, int):
        return value
    return str(value)


def fee_totals(fees: Sequence[FeeRow]) -> dict[str, dict[str, Decimal | int]]:
    """Per source, summed over markets: every fill has exactly one market, so nothing doubles."""
    totals: dict[str, dict[str, Decimal | int]] = {}
    for row in fees:
        if row.scope != "market":
            continue
        t = totals.setdefault(
            row.source,
            {"gross_fee": Decimal(0), "refund": Decimal(0), "net_fee": Decimal(0), "fills": 0},
        )
        t["gross_fee"] += row.gross_fee
        t["refund"] += row.refund
        t["net_fee"] += row.net_fee
        t["fills"] += row.fills
    return totals


def metrics(data: ReportData) -> dict[str, Metric]:
    """The flat numbers one report is compared with the next on: counts, rates, fees."""
    out: dict[str, Metric] = {f"events: {e.source}": e.count for e in data.events}
    for rate in data.match_rates:
        if rate.rate is not None:
            out[f"match rate: {rate.name}"] = rate.rate
    by_severity = Counter[str]()
    for kind in data.kinds:
        out[f"breaks: {kind.kind}"] = kind.total
        by_severity[kind.severity] += kind.total
    for severity in SEVERITIES:
        out[f"breaks of the day: {severity}"] = by_severity[severity]
    out["breaks open (all dates)"] = len(data.open_breaks)
    for source, totals in sorted(fee_totals(data.fees).items()):
        out[f"net fees: {source}"] = Decimal(totals["net_fee"])
    return out


def _metric(value: object) -> Metric:
    """A metric read back from a stored summary: ints were stored as ints, Decimals as text."""
    return value if isinstance(value, int) else Decimal(str(value))


def compare(current: dict[str, Metric], previous: dict[str, Any] | None) -> tuple[Change, ...]:
    """Every metric that moved (or appeared, or vanished) since the previous summary."""
    if previous is None:
        return ()
    before = {k: _metric(v) for k, v in previous.get("metrics", {}).items()}
    changes = [
        Change(name, before.get(name), current.get(name))
        for name in sorted(current.keys() | before.keys())
        if before.get(name) != current.get(name)
    ]
    return tuple(changes)


def summarise(data: ReportData) -> dict[str, Any]:
    """The JSON summary: stored with the report and compared against by the next one."""
    current = metrics(data)
    previous_summary = data.previous.summary if data.previous else None
    by_status = Counter[str]()
    by_severity = Counter[str]()
    for kind in data.kinds:
        for status, n in kind.by_status:
            by_status[status] += n
        by_severity[kind.severity] += kind.total
    return {
        "business_date": data.business_date.isoformat(),
        "built_at": data.built_at.isoformat(),
        "events": {e.source: e.count for e in data.events},
        "match_rates": {
            r.name: {
                "matched": r.matched,
                "total": r.total,
                "compared_with": r.other_side,
                "rate": _num(r.rate),
            }
            for r in data.match_rates
        },
        "breaks": {
            "total": sum(k.total for k in data.kinds),
            "by_status": {s: by_status[s] for s in STATUSES},
            "by_severity": {s: by_severity[s] for s in SEVERITIES},
            "by_kind": {
                k.kind: {"severity": k.severity, **{s: k.count(s) for s in STATUSES}}
                for k in data.kinds
            },
            "open_all_dates": len(data.open_breaks),
            "open_by_age": {
                str(b): sum(1 for o in data.open_breaks if o.age_bucket == b) for b in AgeBucket
            },
            "untimed": data.untimed_breaks,
        },
        "fees": {
            source: {name: _num(value) for name, value in totals.items()}
            for source, totals in sorted(fee_totals(data.fees).items())
        },
        "gaps": [
            {
                "id": g.id,
                "source": g.source,
                "start": g.start.isoformat(),
                "end": g.end.isoformat(),
                "reason": g.reason,
                "backfilled_at": g.backfilled_at.isoformat() if g.backfilled_at else None,
                "outcome": g.outcome,
            }
            for g in data.gaps
        ],
        "metrics": {name: _num(value) for name, value in current.items()},
        "previous": None
        if data.previous is None
        else {
            "business_date": data.previous.business_date.isoformat(),
            "built_at": data.previous.built_at.isoformat(),
            "breaks_opened_since": data.previous.breaks_opened_since,
            "breaks_resolved_since": data.previous.breaks_resolved_since,
        },
        "changes": [
            {
                "metric": c.metric,
                "previous": _num(c.previous),
                "current": _num(c.current),
                "delta": _num(c.delta),
            }
            for c in compare(current, previous_summary)
        ],
    }


# --- render (pure) ----------------------------------------------------------------------------


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: frozenset[int] = frozenset()
) -> str:
    """An HTML table; cells arrive already escaped (they may hold markup of ours)."""
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _severity(severity: str) -> str:
    return f'<span class="sev sev-{escape(severity)}">{escape(severity)}</span>'


def _rate(rate: MatchRate) -> str:
    if rate.rate is None:
        return '<span class="note">n/a (nothing to compare with)</span>'
    percent = rate.rate * 100
    return (
        f'<div class="rate"><div class="track"><div class="fill" style="width:{percent:.1f}%">'
        f"</div></div><span>{percent:.2f}%</span></div>"
    )


def _card(label: str, value: str, sub: str = "") -> str:
    return (
        f'<div class="card"><div class="label">{escape(label)}</div>'
        f'<div class="value">{escape(value)}</div><div class="sub">{escape(sub)}</div></div>'
    )


def _signed(value: Metric | None) -> str:
    if value is None:
        return "—"
    return ("+" if value > 0 else "") + fmt_number(value)


def _changes_html(summary: dict[str, Any], data: ReportData) -> str:
    if data.previous is None:
        return '<p class="note">No earlier report to compare with.</p>'
    prev = data.previous
    intro = (
        f'<p class="note">Against the report of {escape(prev.business_date.isoformat())} '
        f"(built {escape(prev.built_at.isoformat(timespec='seconds'))}): "
        f"{prev.breaks_opened_since} breaks opened and {prev.breaks_resolved_since} resolved "
        "since then.</p>"
    )
    changes = summary["changes"]
    if not changes:
        return intro + '<p class="note">No metric changed.</p>'
    rows = []
    for c in changes:
        delta = None if c["delta"] is None else _metric(c["delta"])
        worse = delta is not None and delta > 0 and c["metric"].startswith("breaks")
        cls = "up" if worse else "down" if delta is not None and delta < 0 else ""
        rows.append(
            (
                escape(c["metric"]),
                "—" if c["previous"] is None else escape(fmt_number(_metric(c["previous"]))),
                "—" if c["current"] is None else escape(fmt_number(_metric(c["current"]))),
                f'<span class="{cls}">{escape(_signed(delta))}</span>',
            )
        )
    return intro + _table(("metric", "previous", "now", "change"), rows, frozenset({1, 2, 3}))


def _top_fees(rows: Iterable[FeeRow]) -> list[tuple[str, Decimal]]:
    """The largest net fees by size; the rest summed into one bar so the chart stays legible."""
    ordered = sorted(rows, key=lambda r: (-abs(r.net_fee), r.label))
    top = [(f"{r.label} ({r.source})", r.net_fee) for r in ordered[:TOP_FEE_ROWS]]
    rest = ordered[TOP_FEE_ROWS:]
    if rest:
        top.append((f"{len(rest)} others", sum((r.net_fee for r in rest), Decimal(0))))
    return top


def _compact(details: dict[str, Any]) -> str:
    text_ = orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode()
    return text_ if len(text_) <= 160 else text_[:159] + "…"


def render_html(data: ReportData, summary: dict[str, Any], files: Sequence[str]) -> str:
    breaks = summary["breaks"]
    total_events = sum(e.count for e in data.events)
    rates = [r.rate for r in data.match_rates if r.rate is not None]
    worst_rate = min(rates) if rates else None
    cards = "".join(
        (
            _card("events", fmt_number(total_events), f"{len(data.events)} sources"),
            _card(
                "breaks of the day",
                fmt_number(breaks["total"]),
                ", ".join(f"{breaks['by_severity'][s]} {s}" for s in SEVERITIES),
            ),
            _card(
                "open breaks",
                fmt_number(breaks["open_all_dates"]),
                "all business dates up to this one",
            ),
            _card(
                "lowest match rate",
                "n/a" if worst_rate is None else f"{worst_rate * 100:.2f}%",
                f"of {len(rates)} comparisons",
            ),
            *(
                _card(f"net fees, {source}", f"${fmt_number(Decimal(str(t['net_fee'])))}")
                for source, t in summary["fees"].items()
            ),
        )
    )
    hour_labels = [f"{h.hour:02d}" for h in data.hours]
    volume_chart = column_chart(
        "Fills per hour",
        hour_labels,
        [
            Series("exchange fills", tuple(h.exchange_fills for h in data.hours)),
            Series("chain maker fills", tuple(h.chain_fills for h in data.hours)),
        ],
    )
    untimed = f" ({data.untimed_breaks} without a single time, e.g. positions)"
    breaks_chart = column_chart(
        "Breaks per hour of the event" + (untimed if data.untimed_breaks else ""),
        hour_labels,
        [Series("breaks", tuple(h.breaks for h in data.hours))],
        height=200,
    )
    fees_account = bar_chart(
        "Net fees by account", _top_fees(f for f in data.fees if f.scope == "account")
    )
    fees_market = bar_chart(
        "Net fees by market", _top_fees(f for f in data.fees if f.scope == "market")
    )
    events_table = _table(
        ("source", "events"),
        ((escape(e.source), fmt_number(e.count)) for e in data.events),
        frozenset({1}),
    )
    match_table = _table(
        ("comparison", "matched", "of", "rate"),
        (
            (escape(r.name), fmt_number(r.matched), fmt_number(r.total), _rate(r))
            for r in data.match_rates
        ),
        frozenset({1, 2}),
    )
    kinds_table = (
        _table(
            ("kind", "severity", *STATUSES),
            (
                (escape(k.kind), _severity(k.severity), *(str(k.count(s)) for s in STATUSES))
                for k in data.kinds
            ),
            frozenset({2, 3, 4}),
        )
        if data.kinds
        else '<p class="note">No breaks on this business date.</p>'
    )
    age_counts = Counter((o.age_bucket, o.severity) for o in data.open_breaks)
    age_table = _table(
        ("age (days)", *SEVERITIES, "total"),
        (
            (
                escape(str(bucket)),
                *(str(age_counts[(bucket, s)]) for s in SEVERITIES),
                str(sum(age_counts[(bucket, s)] for s in SEVERITIES)),
            )
            for bucket in AgeBucket
        ),
        frozenset(range(1, len(SEVERITIES) + 2)),
    )
    shown = data.open_breaks[:MAX_OPEN_ROWS_IN_PAGE]
    open_table = (
        _table(
            ("id", "severity", "kind", "key", "date", "status", "age", "seen", "assignee", "facts"),
            (
                (
                    str(o.id),
                    _severity(o.severity),
                    escape(o.kind),
                    f'<span class="mono">{escape(o.key)}</span>',
                    f'<span class="nowrap">{escape(o.business_date.isoformat())}</span>',
                    escape(o.status),
                    f"{o.age_days} d",
                    f"{o.occurrences}×",
                    escape(o.assignee or ""),
                    f'<span class="mono">{escape(_compact(o.details))}</span>',
                )
                for o in shown
            ),
            frozenset({0, 6, 7}),
        )
        if data.open_breaks
        else '<p class="note">No open breaks.</p>'
    )
    if len(data.open_breaks) > len(shown):
        open_table += (
            f'<p class="note">{len(shown)} of {len(data.open_breaks)} shown; all are in '
            "open_breaks.csv.</p>"
        )
    gaps_table = (
        _table(
            ("id", "source", "from (UTC)", "to (UTC)", "reason", "outcome"),
            (
                (
                    str(g.id),
                    escape(g.source),
                    f'<span class="nowrap">{g.start:%Y-%m-%d %H:%M:%S}</span>',
                    f'<span class="nowrap">{g.end:%Y-%m-%d %H:%M:%S}</span>',
                    escape(g.reason),
                    escape(g.outcome),
                )
                for g in data.gaps
            ),
            frozenset({0}),
        )
        if data.gaps
        else '<p class="note">No stream or feed gaps: every source was heard throughout.</p>'
    )
    previous_line = (
        f"compared with {data.previous.business_date.isoformat()}"
        if data.previous
        else "first report"
    )
    return PAGE.substitute(
        title=escape(f"polyrecon reconciliation report — {data.business_date.isoformat()}"),
        built_at=escape(data.built_at.isoformat(timespec="seconds")),
        business_date=escape(data.business_date.isoformat()),
        previous_line=escape(previous_line),
        cards=cards,
        changes=_changes_html(summary, data),
        volume_chart=volume_chart,
        breaks_chart=breaks_chart,
        fees_account_chart=fees_account,
        fees_market_chart=fees_market,
        events_table=events_table,
        match_table=match_table,
        kinds_table=kinds_table,
        age_table=age_table,
        open_table=open_table,
        gaps_table=gaps_table,
        files=escape(", ".join(files)),
    )


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def csv_files(data: ReportData) -> dict[str, str]:
    """The report's data as CSV files, name → content; every number exact."""
    return {
        "events.csv": _csv(("source", "events"), ((e.source, e.count) for e in data.events)),
        "match_rates.csv": _csv(
            ("comparison", "matched", "total", "compared_with", "rate"),
            (
                (r.name, r.matched, r.total, r.other_side, "" if r.rate is None else r.rate)
                for r in data.match_rates
            ),
        ),
        "breaks_by_kind.csv": _csv(
            ("kind", "severity", *STATUSES, "total"),
            ((k.kind, k.severity, *(k.count(s) for s in STATUSES), k.total) for k in data.kinds),
        ),
        "open_breaks.csv": _csv(
            (
                "id",
                "kind",
                "key",
                "business_date",
                "severity",
                "status",
                "occurrences",
                "first_seen_at",
                "age_days",
                "age_bucket",
                "assignee",
                "details",
            ),
            (
                (
                    o.id,
                    o.kind,
                    o.key,
                    o.business_date.isoformat(),
                    o.severity,
                    o.status,
                    o.occurrences,
                    o.first_seen_at.isoformat(),
                    o.age_days,
                    str(o.age_bucket),
                    o.assignee or "",
                    orjson.dumps(o.details, option=orjson.OPT_SORT_KEYS).decode(),
                )
                for o in data.open_breaks
            ),
        ),
        "hourly.csv": _csv(
            (
                "hour_utc",
                "exchange_fills",
                "chain_maker_fills",
                "exchange_notional",
                "chain_notional",
                "breaks",
            ),
            (
                (
                    h.hour,
                    h.exchange_fills,
                    h.chain_fills,
                    h.exchange_notional,
                    h.chain_notional,
                    h.breaks,
                )
                for h in data.hours
            ),
        ),
        "gaps.csv": _csv(
            ("id", "source", "start", "end", "reason", "backfilled_at", "outcome"),
            (
                (
                    g.id,
                    g.source,
                    g.start.isoformat(),
                    g.end.isoformat(),
                    g.reason,
                    g.backfilled_at.isoformat() if g.backfilled_at else "",
                    g.outcome,
                )
                for g in data.gaps
            ),
        ),
        "net_fees.csv": _csv(
            ("scope", "key", "label", "source", "gross_fee", "refund", "net_fee", "fills"),
            (
                (f.scope, f.key, f.label, f.source, f.gross_fee, f.refund, f.net_fee, f.fills)
                for f in data.fees
            ),
        ),
    }


# --- build (store and write) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltReport:
    report_id: int
    business_date: date
    directory: Path
    files: tuple[str, ...]
    summary: dict[str, Any]

    @property
    def html_path(self) -> Path:
        return self.directory / HTML_NAME


def build_report(
    engine: Engine, business_date: date, out_dir: Path, *, now: datetime | None = None
) -> BuiltReport:
    """Build the report of `business_date`, store it in `recon_report`, write it to `out_dir`."""
    now = now or datetime.now(UTC)
    snapshot = engine.execution_options(isolation_level="REPEATABLE READ")
    with snapshot.connect() as conn, conn.begin():
        conn.execute(text("SET TRANSACTION READ ONLY"))
        data = gather(conn, business_date, now)
    summary = summarise(data)
    csvs = csv_files(data)
    files = (HTML_NAME, SUMMARY_NAME, *csvs)
    html = render_html(data, summary, files)
    summary_json = orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    with engine.begin() as conn:
        report_id = conn.execute(
            text(
                "INSERT INTO recon_report (business_date, built_at, summary, html)"
                " VALUES (:d, :built_at, CAST(:summary AS jsonb), :html) RETURNING id"
            ),
            {"d": business_date, "built_at": now, "summary": summary_json.decode(), "html": html},
        ).scalar_one()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HTML_NAME).write_text(html, encoding="utf-8")
    (out_dir / SUMMARY_NAME).write_bytes(summary_json + b"\n")
    for name, content in csvs.items():
        (out_dir / name).write_text(content, encoding="utf-8")
    log.info("report %s for %s written to %s", report_id, business_date, out_dir)
    return BuiltReport(report_id, business_date, out_dir, files, summary)


def default_directory(data_dir: Path, business_date: date) -> Path:
    return data_dir / "reports" / business_date.isoformat()
