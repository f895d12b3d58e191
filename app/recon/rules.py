"""The reconciliation rules: named, set-based SQL over one business date.

Each rule is one SELECT yielding `(kind, key, expected, actual, details)` rows — the breaks it
finds — plus optional `prepare` statements that must run first (gap backfill, refund links).
`run_rules` stages every rule's rows into the temp table `recon_found` in the caller's
transaction; `app.recon.lifecycle` merges that table into `recon_break`.

Conventions every rule follows:
- `expected` is what the reference side says (Report API, taker aggregate, confirmed event,
  the orders feed), `actual` what the side under test says; both are JSON objects or NULL.
- A window in `gap_window` explains an absence: events inside a gap of the feed or stream that
  would have carried them are not breaks (the exchange stream's gaps are backfilled instead).
- Intraday, sources are compared only up to a horizon: a live stream has not delivered yet
  what is newer than its newest event (less a grace), and a Report API snapshot knows nothing
  newer than its own newest row. A rule names the sources it compares (`horizon`); its query
  leaves out what lies beyond `:horizon` (NULL: compare everything, the day is over), and its
  stored breaks beyond it are staged as deferred so the lifecycle neither clears nor touches
  them (`horizon_field` names the details time that places a break). Gaps are separate.
- Bind parameters: `:business_date`, `:as_of`, `:pending_grace`, `:drift_tolerance`,
  `:has_report`, `:report_as_of`, `:horizon`, and the gap source patterns `:gap_executions`,
  `:gap_orders`, `:gap_trades` (LIKE patterns on `gap_window.source`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any

from sqlalchemy import Connection, text

from app.db.models import Execution, ReportExecution, pending_confirmed
from app.domain.breaks import BreakKind, severity_map

# What the ingest workers write into `gap_window.source` (stream name, then an optional shard).
GAP_EXECUTIONS = "dropcopy.executions%"
GAP_ORDERS_FEED = "feed.orders%"
GAP_TRADES_FEED = "feed.trades%"

# Sources a horizon is made of: the ingest checkpoints' stream names (before the shard) and the
# date's Report API snapshot.
STREAM_EXECUTIONS = "dropcopy.executions"
STREAM_TRADE_CAPTURES = "dropcopy.trade_captures"
STREAM_POSITION_CHANGES = "dropcopy.position_changes"
FEED_ORDERS = "feed.orders"
FEED_TRADES = "feed.trades"
REPORT_EXECUTIONS = "report.executions"
REPORT_TRADES = "report.trades"
REPORT_POSITIONS = "report.positions"
# Everything up to `:horizon`; a NULL horizon is no bound at all.
WITHIN_HORIZON = "<= coalesce(CAST(:horizon AS timestamptz), 'infinity')"

FILL_TYPES = "('EXECUTION_TYPE_FILL', 'EXECUTION_TYPE_PARTIAL_FILL')"
BUSTED = "'TRADE_STATE_BUSTED'"


def _busted(also: str = "") -> str:
    """SQL predicate for a fill `e`: its trade was busted (`also` holding of the trade `t`),
    which reverses the fill."""
    return (
        "EXISTS (SELECT 1 FROM trade_capture AS t"
        f" WHERE t.business_date = e.business_date AND t.id = e.trade_id AND t.busted{also})"
    )


BUSTED_TRADE = _busted()
# Busted by the horizon: a fill busted after it still counted then.
BUSTED_BY_HORIZON = _busted(f" AND coalesce(t.update_time, t.transact_time) {WITHIN_HORIZON}")


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kinds: tuple[BreakKind, ...]
    query: str
    needs_report: bool = False
    prepare: tuple[str, ...] = ()
    horizon: tuple[str, ...] = ()  # sources that may not have delivered everything yet
    horizon_field: str | None = None  # the details time of a break, compared with the horizon


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far a source has delivered: `at` is its newest event (None: nothing yet). A stream
    (`lags`) may still deliver a little older than that; a snapshot holds everything up to it,
    as its pages are read in time order while the venue only moves on."""

    at: datetime | None
    lags: bool


@dataclass(frozen=True, slots=True)
class Horizon:
    """Up to when a rule compares: `until` None = everything; not `ready` = nothing yet (one of
    its sources has delivered nothing), so the rule does not run."""

    until: datetime | None = None
    ready: bool = True


def day_end(business_date: date) -> datetime:
    return datetime.combine(business_date + timedelta(days=1), dtime(0), tzinfo=UTC)


def comparison_horizon(
    sources: tuple[str, ...],
    watermarks: Mapping[str, Watermark],
    *,
    business_date: date,
    now: datetime,
    grace: timedelta,
) -> Horizon:
    """The horizon of a rule over `sources`: the oldest of their watermarks, a stream's less the
    grace. No bound once the day is over (the wall clock, or the oldest bound, is past its end):
    then everything is compared. A source with no watermark at all (never streamed here, or no
    snapshot) does not bound it."""
    end = day_end(business_date)
    if now >= end + grace:
        return Horizon()
    bounds: list[datetime] = []
    for source in sources:
        mark = watermarks.get(source)
        if mark is None:
            continue
        if mark.at is None:
            return Horizon(ready=False)
        bounds.append(mark.at - grace if mark.lags else mark.at)
    until = min(bounds, default=None)
    return Horizon(until if until is not None and until < end else None)


# The newest event of each stream, over its shards (the slowest shard bounds it), and of the
# date's Report API snapshot.
WATERMARKS = """
SELECT split_part(stream, '[', 1) AS source,
       CASE WHEN bool_and(last_event_time IS NOT NULL) THEN min(last_event_time) END AS at,
       true AS lags
FROM stream_checkpoint GROUP BY 1
UNION ALL
SELECT source, at, false FROM (
  SELECT 'report.executions' AS source,
         (SELECT max(transact_time) FROM report_execution
          WHERE business_date = :business_date) AS at
  UNION ALL
  SELECT 'report.trades',
         (SELECT max(transact_time) FROM report_trade WHERE business_date = :business_date)
  UNION ALL
  SELECT 'report.positions',
         (SELECT max(update_time) FROM report_position WHERE as_of = :report_as_of)
) AS report WHERE :has_report
"""


def read_watermarks(conn: Connection, params: Mapping[str, Any]) -> dict[str, Watermark]:
    rows = conn.execute(text(WATERMARKS), params).all()
    return {row.source: Watermark(row.at, row.lags) for row in rows}


def _in_gap(sources: str, at: str, until: str | None = None) -> str:
    """SQL predicate: the instant `at` (or the span from `at` to `until`) lies in (overlaps) a
    recorded gap of a source matching `sources`."""
    return (
        f"EXISTS (SELECT 1 FROM gap_window AS g WHERE g.source LIKE {sources}"
        f" AND g.start_time <= {until or at} AND g.end_time >= {at})"
    )


def _backfill_columns() -> str:
    """Columns an `execution` row and its Report API snapshot share, in table order."""
    snapshot = {column.name for column in ReportExecution.__table__.columns}
    return ", ".join(
        column.name
        for column in Execution.__table__.columns
        if column.name in snapshot and column.name not in {"source", "received_at"}
    )


# --- exchange ------------------------------------------------------------------------------

# The stream missed what the Report API has, inside a window the ingest flagged as uncertain:
# the gap explains it, so fill it in as `report_backfill` rather than report a break.
# A gap is only as wide as the stream's own record shows: once the stream delivered new
# executions after the gap was recorded, it had resumed by then, so the window ends at the
# first of them (ingest may record a resumed-by-time gap as lasting until the wall clock's now).
BACKFILL_FROM_REPORT = f"""
INSERT INTO execution ({_backfill_columns()}, source)
SELECT {_backfill_columns()}, 'report_backfill'
FROM report_execution AS r
WHERE r.business_date = :business_date
  AND NOT EXISTS (
    SELECT 1 FROM execution AS e WHERE e.business_date = r.business_date AND e.id = r.id)
  AND EXISTS (
    SELECT 1 FROM gap_window AS g
    WHERE g.source LIKE :gap_executions AND r.transact_time >= g.start_time
      AND r.transact_time <= least(g.end_time, (
        SELECT min(e.transact_time) FROM execution AS e
        WHERE e.business_date = r.business_date AND e.source = 'dropcopy'
          AND e.received_at > g.detected_at AND e.transact_time >= g.start_time)))
ON CONFLICT DO NOTHING
"""

EXECUTIONS = Rule(
    name="executions",
    kinds=(
        BreakKind.EXECUTION_MISSING_FROM_STREAM,
        BreakKind.EXECUTION_MISSING_FROM_REPORT,
        BreakKind.EXECUTION_QUANTITY_MISMATCH,
        BreakKind.EXECUTION_PRICE_MISMATCH,
        BreakKind.EXECUTION_FEE_MISMATCH,
    ),
    needs_report=True,
    prepare=(BACKFILL_FROM_REPORT,),
    horizon=(STREAM_EXECUTIONS, REPORT_EXECUTIONS),
    horizon_field="transact_time",
    query=f"""
WITH s AS (
  SELECT id, last_shares, last_px, commission_notional_collected AS commission,
         account, symbol, order_id, trade_id, exec_type, transact_time
  FROM execution
  WHERE business_date = :business_date AND transact_time {WITHIN_HORIZON}
), r AS (
  SELECT id, last_shares, last_px, commission_notional_collected AS commission,
         account, symbol, order_id, trade_id, exec_type, transact_time
  FROM report_execution
  WHERE business_date = :business_date AND transact_time {WITHIN_HORIZON}
), differing AS MATERIALIZED (
  SELECT coalesce(s.id, r.id) AS id, s.id IS NULL AS stream_lacks, r.id IS NULL AS report_lacks,
         s.last_shares AS s_shares, r.last_shares AS r_shares,
         s.last_px AS s_px, r.last_px AS r_px,
         s.commission AS s_commission, r.commission AS r_commission,
         jsonb_build_object(
           'account', coalesce(s.account, r.account), 'symbol', coalesce(s.symbol, r.symbol),
           'order_id', coalesce(s.order_id, r.order_id),
           'trade_id', coalesce(s.trade_id, r.trade_id),
           'exec_type', coalesce(s.exec_type, r.exec_type),
           'transact_time', coalesce(s.transact_time, r.transact_time)) AS details
  FROM s FULL JOIN r ON r.id = s.id
  WHERE s.id IS NULL OR r.id IS NULL
     OR s.last_shares <> r.last_shares OR s.last_px <> r.last_px
     OR s.commission <> r.commission
)
SELECT k.kind, d.id AS key, k.expected, k.actual, d.details
FROM differing AS d
CROSS JOIN LATERAL (VALUES
  ('execution_missing_from_stream', d.stream_lacks,
   jsonb_build_object('last_shares', d.r_shares, 'last_px', d.r_px,
                      'commission', d.r_commission), NULL::jsonb),
  ('execution_missing_from_report', d.report_lacks, NULL::jsonb,
   jsonb_build_object('last_shares', d.s_shares, 'last_px', d.s_px,
                      'commission', d.s_commission)),
  ('execution_quantity_mismatch', d.s_shares <> d.r_shares,
   jsonb_build_object('last_shares', d.r_shares), jsonb_build_object('last_shares', d.s_shares)),
  ('execution_price_mismatch', d.s_px <> d.r_px,
   jsonb_build_object('last_px', d.r_px), jsonb_build_object('last_px', d.s_px)),
  ('execution_fee_mismatch', d.s_commission <> d.r_commission,
   jsonb_build_object('commission', d.r_commission),
   jsonb_build_object('commission', d.s_commission))
) AS k(kind, hit, expected, actual)
WHERE k.hit
""",
)

TRADE_STATES = Rule(
    name="trade_states",
    kinds=(BreakKind.TRADE_STATE_MISMATCH,),
    needs_report=True,
    horizon=(STREAM_TRADE_CAPTURES, REPORT_TRADES),
    horizon_field="update_time",
    query=f"""
WITH compared AS (
  SELECT t.id, t.symbol, t.aggressor_execution_id, t.passive_execution_id,
         t.state AS t_state, r.state AS r_state,
         coalesce(greatest(t.update_time, r.update_time), t.transact_time) AS update_time
  FROM trade_capture AS t
  JOIN report_trade AS r ON r.business_date = t.business_date AND r.id = t.id
  WHERE t.business_date = :business_date AND t.state <> r.state
)
SELECT 'trade_state_mismatch' AS kind, c.id AS key,
       jsonb_build_object('state', c.r_state) AS expected,
       jsonb_build_object('state', c.t_state) AS actual,
       jsonb_build_object('symbol', c.symbol, 'aggressor_execution_id', c.aggressor_execution_id,
                          'passive_execution_id', c.passive_execution_id,
                          'update_time', c.update_time) AS details
FROM compared AS c
-- A state either side reached after the horizon may not have reached the other side yet.
WHERE c.update_time {WITHIN_HORIZON}
""",
)

# Busted on both sides. Without a Report API snapshot the stream alone says so.
TRADES_BUSTED = Rule(
    name="trades_busted",
    kinds=(BreakKind.TRADE_BUSTED,),
    query=f"""
SELECT 'trade_busted' AS kind, t.id AS key, NULL::jsonb AS expected,
       jsonb_build_object('state', t.state) AS actual,
       jsonb_build_object('symbol', t.symbol, 'last_shares', t.last_shares, 'last_px', t.last_px,
                          'aggressor_execution_id', t.aggressor_execution_id,
                          'passive_execution_id', t.passive_execution_id) AS details
FROM trade_capture AS t
WHERE t.business_date = :business_date AND t.busted
  AND (NOT :has_report OR EXISTS (
    SELECT 1 FROM report_trade AS r
    WHERE r.business_date = t.business_date AND r.id = t.id AND r.state = {BUSTED}))
""",
)

# A leg is missing only if neither the stream nor the Report API ever had it; a leg in just one
# of them is an execution_missing_from_* break instead. Legs may carry a neighbouring trade
# date (a passive order resting over midnight), hence the ±1 day window.
TRADE_LEGS = Rule(
    name="trade_legs",
    kinds=(BreakKind.TRADE_LEG_MISSING,),
    horizon=(STREAM_EXECUTIONS, STREAM_TRADE_CAPTURES, REPORT_EXECUTIONS, REPORT_TRADES),
    horizon_field="transact_time",
    query=f"""
WITH legs AS (
  SELECT id AS trade_id, symbol, 'aggressor' AS leg, aggressor_execution_id AS execution_id,
         transact_time
  FROM trade_capture WHERE business_date = :business_date
  UNION
  SELECT id, symbol, 'passive', passive_execution_id, transact_time
  FROM trade_capture WHERE business_date = :business_date
  UNION
  SELECT id, symbol, 'aggressor', aggressor_execution_id, transact_time
  FROM report_trade WHERE business_date = :business_date
  UNION
  SELECT id, symbol, 'passive', passive_execution_id, transact_time
  FROM report_trade WHERE business_date = :business_date
)
SELECT DISTINCT ON (l.execution_id)
       'trade_leg_missing' AS kind, l.execution_id AS key,
       jsonb_build_object('trade_id', l.trade_id, 'leg', l.leg) AS expected,
       NULL::jsonb AS actual,
       jsonb_build_object('trade_id', l.trade_id, 'leg', l.leg, 'symbol', l.symbol,
                          'transact_time', l.transact_time) AS details
FROM legs AS l
WHERE l.execution_id <> '' AND l.transact_time {WITHIN_HORIZON}
  AND NOT EXISTS (
    SELECT 1 FROM execution AS e
    WHERE e.business_date BETWEEN :business_date - 1 AND :business_date + 1
      AND e.id = l.execution_id)
  AND NOT EXISTS (
    SELECT 1 FROM report_execution AS e
    WHERE e.business_date BETWEEN :business_date - 1 AND :business_date + 1
      AND e.id = l.execution_id)
ORDER BY l.execution_id, l.trade_id, l.leg
""",
)

# Recomputed from the stream's fills (the venue's true fills), net of busted trades, on top of
# the day's opening position; compared with the last position change of the day and with the
# Report API's positions. A venue position updated after the date cannot speak for it.
# Intraday every side is taken as of the horizon (a position is a running sum: nothing is
# deferred), and a listed position changed after it cannot speak for it either.
POSITIONS = Rule(
    name="positions",
    kinds=(BreakKind.POSITION_MISMATCH,),
    horizon=(STREAM_EXECUTIONS, STREAM_TRADE_CAPTURES, STREAM_POSITION_CHANGES, REPORT_POSITIONS),
    query=f"""
WITH fills AS (
  SELECT e.account, e.symbol,
         sum(CASE WHEN e.side = 'SIDE_BUY' THEN e.last_shares ELSE -e.last_shares END) AS net,
         sum(e.last_shares) FILTER (WHERE e.side = 'SIDE_BUY') AS bought,
         sum(e.last_shares) FILTER (WHERE e.side <> 'SIDE_BUY') AS sold
  FROM execution AS e
  WHERE e.business_date = :business_date AND e.exec_type IN {FILL_TYPES}
    AND e.transact_time {WITHIN_HORIZON} AND NOT {BUSTED_BY_HORIZON}
  GROUP BY e.account, e.symbol
), changed AS (
  SELECT DISTINCT ON (account, symbol) account, symbol, net_position, bod_position, change_time
  FROM position_change
  WHERE business_date = :business_date AND change_time {WITHIN_HORIZON}
  ORDER BY account, symbol, change_time DESC
), reported AS (
  SELECT account, symbol, net_position, bod_position, update_time
  FROM report_position
  WHERE :has_report AND as_of = :report_as_of
    AND (update_time IS NULL
         OR (update_time < (:business_date + 1)::timestamp AT TIME ZONE 'UTC'
             AND update_time {WITHIN_HORIZON}))
), compared AS (
  SELECT coalesce(f.account, c.account, r.account) AS account,
         coalesce(f.symbol, c.symbol, r.symbol) AS symbol,
         coalesce(c.bod_position, r.bod_position, 0) + coalesce(f.net, 0) AS computed,
         coalesce(f.bought, 0) AS bought, coalesce(f.sold, 0) AS sold,
         c.net_position AS changed_net, r.net_position AS reported_net,
         coalesce(c.bod_position, r.bod_position, 0) AS bod
  FROM fills AS f
  FULL JOIN changed AS c ON c.account = f.account AND c.symbol = f.symbol
  FULL JOIN reported AS r
    ON r.account = coalesce(f.account, c.account) AND r.symbol = coalesce(f.symbol, c.symbol)
)
SELECT 'position_mismatch' AS kind, account || '|' || symbol AS key,
       jsonb_build_object('position_change', changed_net, 'report', reported_net) AS expected,
       jsonb_build_object('net_position', computed) AS actual,
       jsonb_build_object('account', account, 'symbol', symbol, 'bod_position', bod,
                          'qty_bought', bought, 'qty_sold', sold) AS details
FROM compared
WHERE changed_net <> computed OR reported_net <> computed
""",
)

# --- chain ---------------------------------------------------------------------------------

MAKER_TAKER = Rule(
    name="maker_taker",
    kinds=(BreakKind.CHAIN_MAKER_TAKER_MISMATCH, BreakKind.CHAIN_TAKER_MISSING),
    query=f"""
WITH per_token AS (
  SELECT tx_hash, token_id,
         count(*) FILTER (WHERE role = 'maker') AS makers,
         coalesce(sum(shares) FILTER (WHERE role = 'maker'), 0) AS maker_shares,
         count(*) FILTER (WHERE role = 'taker') AS takers,
         sum(shares) FILTER (WHERE role = 'taker') AS taker_shares,
         min(event_time) AS event_time
  FROM order_filled WHERE business_date = :business_date
  GROUP BY tx_hash, token_id
), broken AS (
  SELECT CASE WHEN takers = 0 THEN 'chain_taker_missing'
              ELSE 'chain_maker_taker_mismatch' END AS kind, *
  FROM per_token
  WHERE makers > 0 AND (takers = 0 OR maker_shares <> taker_shares)
)
SELECT kind, tx_hash AS key,
       jsonb_object_agg(token_id, taker_shares ORDER BY token_id) AS expected,
       jsonb_object_agg(token_id, maker_shares ORDER BY token_id) AS actual,
       jsonb_build_object('makers', sum(makers), 'event_time', min(event_time)) AS details
FROM broken AS b
WHERE NOT {_in_gap(":gap_orders", "b.event_time")}
GROUP BY kind, tx_hash
""",
)

# A pending event never confirmed within the grace (a dropped transaction) — unless the orders
# feed was disconnected while its confirmation would have been sent.
PENDING_UNCONFIRMED = Rule(
    name="pending_unconfirmed",
    kinds=(BreakKind.CHAIN_PENDING_UNCONFIRMED,),
    query=f"""
SELECT 'chain_pending_unconfirmed' AS kind, p.tx_hash || '|' || p.order_hash AS key,
       NULL::jsonb AS expected,
       jsonb_build_object('shares', p.shares, 'price', p.price, 'fee', p.fee) AS actual,
       jsonb_build_object('role', p.role, 'user_address', p.user_address,
                          'condition_id', p.condition_id, 'event_time', p.event_time) AS details
FROM order_filled_pending AS p
WHERE p.business_date = :business_date AND NOT {pending_confirmed("p", ":business_date")}
  AND p.event_time < :as_of - :pending_grace
  AND NOT EXISTS (
    SELECT 1 FROM gap_window AS g
    WHERE g.source LIKE :gap_orders
      AND g.start_time <= p.event_time + :pending_grace AND g.end_time >= p.event_time)
""",
)

# A taker aggregate that disagrees with its makers is already a chain_maker_taker_mismatch of
# its transaction (staged by MAKER_TAKER, which runs first); its pending row, built from the
# makers, then drifts for that same reason — one break per fact, not two.
PENDING_DRIFT = Rule(
    name="pending_drift",
    kinds=(BreakKind.CHAIN_PENDING_DRIFT,),
    query="""
WITH drifted AS MATERIALIZED (
  SELECT DISTINCT ON (p.tx_hash, p.order_hash)
         p.tx_hash, p.order_hash, p.role, p.shares, p.price, p.fee,
         c.shares AS c_shares, c.price AS c_price, c.fee AS c_fee
  FROM order_filled_pending AS p
  JOIN order_filled AS c
    ON c.business_date = p.business_date AND c.tx_hash = p.tx_hash
   AND c.order_hash = p.order_hash
  WHERE p.business_date = :business_date
    AND (abs(p.shares - c.shares) > :drift_tolerance * abs(c.shares)
      OR abs(p.price - c.price) > :drift_tolerance * abs(c.price)
      OR abs(p.fee - c.fee) > :drift_tolerance * abs(c.fee))
  ORDER BY p.tx_hash, p.order_hash, c.log_index
)
SELECT 'chain_pending_drift' AS kind, d.tx_hash || '|' || d.order_hash AS key,
       jsonb_build_object('shares', d.c_shares, 'price', d.c_price, 'fee', d.c_fee) AS expected,
       jsonb_build_object('shares', d.shares, 'price', d.price, 'fee', d.fee) AS actual,
       jsonb_build_object('tolerance', :drift_tolerance, 'role', d.role) AS details
FROM drifted AS d
WHERE NOT (d.role = 'taker' AND EXISTS (
  SELECT 1 FROM recon_found AS f
  WHERE f.kind = 'chain_maker_taker_mismatch' AND f.key = d.tx_hash))
""",
)

# Each refund of the day tied to the one maker fill it rebates: the fill of its own transaction
# when there is one, else the order's first maker fill of the day. Refunds and net fees both read
# this table, so they cannot disagree about which fee a refund belongs to. (Ingest dates a refund
# by its fill, re-dating it when the fill arrives after it.) An unlinked refund whose order was
# filled on a neighbouring day is that day's business (midnight), not an orphan of this one.
REFUND_LINKS = """
CREATE TEMP TABLE IF NOT EXISTS recon_refund_link ON COMMIT DROP AS
WITH linked AS MATERIALIZED (
  SELECT DISTINCT ON (f.tx_hash, f.order_hash)
         f.tx_hash, f.order_hash, f.refund, f.fee_charged, f.received_at,
         o.tx_hash AS fill_tx_hash, o.log_index AS fill_log_index, o.fee AS fill_fee,
         o.user_address AS fill_user_address, o.condition_id AS fill_condition_id
  FROM fee_refund AS f
  LEFT JOIN order_filled AS o
    ON o.business_date = :business_date AND o.order_hash = f.order_hash AND o.role = 'maker'
  WHERE f.business_date = :business_date
  ORDER BY f.tx_hash, f.order_hash, (o.tx_hash = f.tx_hash) DESC NULLS LAST, o.event_time,
           o.tx_hash, o.log_index
)
SELECT * FROM linked WHERE fill_tx_hash IS NOT NULL
UNION ALL
-- The few unlinked ones: index probes each (LIMIT 1 keeps the planner from hashing whole
-- partitions for a handful of rows).
SELECT l.* FROM linked AS l
LEFT JOIN LATERAL (
  SELECT 1 AS hit FROM order_filled AS o
  WHERE o.business_date IN (:business_date - 1, :business_date + 1)
    AND o.order_hash = l.order_hash LIMIT 1
) AS neighbour ON true
WHERE l.fill_tx_hash IS NULL AND neighbour.hit IS NULL
"""

# A refund carries no time; its transaction's does, and an orphan whose transaction happened
# while the orders feed was down may just have lost its fill. When the whole transaction was
# lost too, the feed's order tells the time: its transaction was sent about when the refund
# was, between the newest chain event delivered in an earlier batch and the newest of the
# refund's own batch. Neither end alone will do: the first batch after a reconnect also carries
# events sent well after the gap closed, and a venue that reorders can deliver a refund just
# before the disconnect that loses its fill. `delivered` is one pass over the day, paid only
# when there are such orphans (a CTE is computed when first read), and only feed losses make them.
REFUNDS = Rule(
    name="refunds",
    kinds=(BreakKind.CHAIN_REFUND_ORPHAN, BreakKind.CHAIN_REFUND_ARITHMETIC),
    prepare=(REFUND_LINKS,),
    query=f"""
WITH delivered AS MATERIALIZED (
  SELECT received_at, min(event_time) AS oldest, max(event_time) AS newest
  FROM (SELECT received_at, event_time FROM order_filled WHERE business_date = :business_date
        UNION ALL
        SELECT received_at, event_time FROM order_filled_pending
        WHERE business_date = :business_date) AS chain
  GROUP BY received_at
), broken AS MATERIALIZED (
  SELECT l.*, CASE WHEN l.fill_tx_hash IS NULL THEN coalesce(
           (SELECT min(o.event_time) FROM order_filled AS o
            WHERE o.business_date = :business_date AND o.tx_hash = l.tx_hash),
           (SELECT min(p.event_time) FROM order_filled_pending AS p
            WHERE p.business_date = :business_date AND p.tx_hash = l.tx_hash)) END AS tx_time
  FROM recon_refund_link AS l
  WHERE l.fill_tx_hash IS NULL OR l.refund + l.fee_charged <> l.fill_fee
), timed AS (
  SELECT b.*,
         CASE WHEN b.fill_tx_hash IS NULL AND b.tx_time IS NULL THEN coalesce(
           (SELECT max(d.newest) FROM delivered AS d WHERE d.received_at < b.received_at),
           (SELECT d.oldest FROM delivered AS d WHERE d.received_at = b.received_at))
         ELSE b.tx_time END AS tx_from,
         CASE WHEN b.fill_tx_hash IS NULL AND b.tx_time IS NULL THEN coalesce(
           (SELECT d.newest FROM delivered AS d WHERE d.received_at = b.received_at),
           (SELECT max(d.newest) FROM delivered AS d WHERE d.received_at < b.received_at))
         ELSE b.tx_time END AS tx_to
  FROM broken AS b
)
SELECT DISTINCT ON (kind, l.order_hash)
       CASE WHEN l.fill_tx_hash IS NULL THEN 'chain_refund_orphan'
            ELSE 'chain_refund_arithmetic' END AS kind,
       l.order_hash AS key,
       CASE WHEN l.fill_tx_hash IS NULL THEN NULL
            ELSE jsonb_build_object('fee', l.fill_fee) END AS expected,
       jsonb_build_object('refund', l.refund, 'fee_charged', l.fee_charged,
                          'sum', l.refund + l.fee_charged) AS actual,
       jsonb_build_object('tx_hash', l.tx_hash, 'fill_tx_hash', l.fill_tx_hash) AS details
FROM timed AS l
WHERE l.tx_from IS NULL OR NOT {_in_gap(":gap_orders", "l.tx_from", "l.tx_to")}
ORDER BY kind, l.order_hash, l.tx_hash
""",
)

# --- between the two feed providers --------------------------------------------------------

FEED_PROVIDERS = Rule(
    name="feed_providers",
    kinds=(BreakKind.FEED_PROVIDER_MISSING, BreakKind.FEED_PROVIDER_MISMATCH),
    horizon=(FEED_ORDERS, FEED_TRADES),
    horizon_field="event_time",
    query=f"""
WITH compared AS MATERIALIZED (
  SELECT o.tx_hash, o.order_hash, o.event_time, o.condition_id,
         o.shares_normalized AS o_shares, o.price AS o_price,
         t.tx_hash IS NULL AS missing,
         t.shares_normalized AS t_shares, t.price AS t_price
  FROM order_filled AS o
  LEFT JOIN feed_trade AS t
    ON t.business_date = o.business_date AND t.tx_hash = o.tx_hash
   AND t.order_hash = o.order_hash
  WHERE o.business_date = :business_date AND o.role = 'maker'
    AND o.event_time {WITHIN_HORIZON}
    AND (t.tx_hash IS NULL OR t.shares_normalized <> o.shares_normalized OR t.price <> o.price)
)
SELECT DISTINCT ON (c.tx_hash, c.order_hash)
       CASE WHEN c.missing THEN 'feed_provider_missing' ELSE 'feed_provider_mismatch' END AS kind,
       c.tx_hash || '|' || c.order_hash AS key,
       jsonb_build_object('shares', c.o_shares, 'price', c.o_price) AS expected,
       CASE WHEN c.missing THEN NULL
            ELSE jsonb_build_object('shares', c.t_shares, 'price', c.t_price) END AS actual,
       jsonb_build_object('condition_id', c.condition_id, 'event_time', c.event_time) AS details
FROM compared AS c
WHERE NOT {_in_gap(":gap_orders", "c.event_time")}
  AND NOT {_in_gap(":gap_trades", "c.event_time")}
ORDER BY c.tx_hash, c.order_hash
""",
)

RULES: tuple[Rule, ...] = (
    EXECUTIONS,
    TRADE_STATES,
    TRADES_BUSTED,
    TRADE_LEGS,
    POSITIONS,
    MAKER_TAKER,
    PENDING_UNCONFIRMED,
    PENDING_DRIFT,
    REFUNDS,
    FEED_PROVIDERS,
)

STAGING = """
CREATE TEMP TABLE recon_found (
  kind text NOT NULL,
  key text NOT NULL,
  business_date date NOT NULL,
  severity text NOT NULL,
  expected jsonb,
  actual jsonb,
  details jsonb NOT NULL DEFAULT '{}'::jsonb,
  deferred boolean NOT NULL DEFAULT false,
  PRIMARY KEY (kind, key)
) ON COMMIT DROP
"""

# Stored breaks of a rule's kinds that lie beyond its horizon: this run cannot judge them.
DEFERRED = """
INSERT INTO recon_found (kind, key, business_date, severity, details, deferred)
SELECT b.kind, b.key, b.business_date, b.severity, b.details, true
FROM recon_break AS b
WHERE b.business_date = :business_date AND b.kind = ANY(:kinds)
  AND CAST(b.details ->> :horizon_field AS timestamptz) > :horizon
ON CONFLICT (kind, key) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class RuleResult:
    name: str
    found: dict[str, int]
    seconds: float
    horizon: datetime | None = None
    deferred: int = 0


@dataclass(frozen=True, slots=True)
class RulesOutcome:
    results: tuple[RuleResult, ...]
    evaluated: tuple[BreakKind, ...]

    @property
    def found(self) -> dict[str, int]:
        return {kind: n for r in self.results for kind, n in r.found.items()}


def run_rules(
    conn: Connection,
    params: Mapping[str, Any],
    rules: tuple[Rule, ...] = RULES,
    horizons: Mapping[str, Horizon] | None = None,
) -> RulesOutcome:
    """Stage every applicable rule's breaks into `recon_found` (created here, dropped at commit).

    Rules that need a Report API snapshot are skipped when `params["has_report"]` is false, and
    rules whose horizon (by rule name; none = no bound) is not ready yet; their kinds are left
    out of `evaluated` so the lifecycle does not auto-resolve them.

    Each rule runs as a plain SELECT and its (few) rows are staged from here: Postgres never
    plans an INSERT ... SELECT in parallel, and a day's scans need both cores. The JSON goes
    through as text so its numbers stay exact.
    """
    conn.execute(text(STAGING))
    severities = severity_map()
    results: list[RuleResult] = []
    evaluated: list[BreakKind] = []
    for rule in rules:
        horizon = (horizons or {}).get(rule.name, Horizon())
        if (rule.needs_report and not params["has_report"]) or not horizon.ready:
            continue
        started = time.perf_counter()
        bound = {**params, "horizon": horizon.until}
        for statement in rule.prepare:
            conn.execute(text(statement), bound)
        rows = conn.execute(
            text(
                "SELECT found.kind, found.key, CAST(found.expected AS text) AS expected,"
                " CAST(found.actual AS text) AS actual, CAST(found.details AS text) AS details"
                f" FROM ({rule.query}) AS found"
            ),
            bound,
        ).all()
        # A rule reports each (kind, key) once; rules never share a kind.
        unique = {(row.kind, row.key): row for row in reversed(rows)}
        found: dict[str, int] = dict.fromkeys(map(str, rule.kinds), 0)
        for kind, _ in unique:
            found[kind] += 1
        if unique:
            conn.execute(
                text(
                    "INSERT INTO recon_found (kind, key, business_date, severity, expected,"
                    " actual, details) VALUES (:kind, :key, :business_date, :severity,"
                    " CAST(:expected AS jsonb), CAST(:actual AS jsonb), CAST(:details AS jsonb))"
                ),
                [
                    {
                        **row._asdict(),
                        "business_date": params["business_date"],
                        "severity": severities[row.kind],
                    }
                    for row in unique.values()
                ],
            )
        deferred = 0
        if horizon.until is not None and rule.horizon_field is not None:
            deferred = conn.execute(
                text(DEFERRED),
                {
                    **bound,
                    "kinds": [str(kind) for kind in rule.kinds],
                    "horizon_field": rule.horizon_field,
                },
            ).rowcount
        results.append(
            RuleResult(rule.name, found, time.perf_counter() - started, horizon.until, deferred)
        )
        evaluated.extend(rule.kinds)
    return RulesOutcome(tuple(results), tuple(evaluated))
