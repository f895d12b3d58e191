"""Compliance queries: set-based SQL over the analyst views, every value a bound parameter.

WHERE clauses are assembled only from the fixed fragments below (our identifiers), never from
user input. Time bounds are also turned into business-date bounds so Postgres prunes day
partitions; the indexes added with the views serve the lookups that come without a date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, text

from app.db.base import FeeScope, FeeSource

DEFAULT_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ResultSet:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def _result(conn: Connection, sql: str, params: dict[str, Any]) -> ResultSet:
    cursor = conn.execute(text(sql), params)
    return ResultSet(tuple(cursor.keys()), tuple(tuple(row) for row in cursor))


@dataclass(frozen=True, slots=True)
class Where:
    """AND-ed SQL fragments and their bound values."""

    clauses: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, clause: str, **params: Any) -> Where:
        return Where((*self.clauses, clause), {**self.params, **params})

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"


# --- order trail --------------------------------------------------------------------------

_ORDER_TRAIL = """
WITH ex AS (
    SELECT * FROM execution WHERE order_id = :order_id
), rep AS (
    SELECT r.* FROM report_execution AS r
    WHERE r.order_id = :order_id
      AND NOT EXISTS (SELECT 1 FROM ex WHERE ex.business_date = r.business_date AND ex.id = r.id)
), trades AS (
    SELECT DISTINCT business_date, trade_id FROM ex WHERE trade_id IS NOT NULL
    UNION
    SELECT DISTINCT business_date, trade_id FROM rep WHERE trade_id IS NOT NULL
), keys AS (
    SELECT id AS key FROM ex UNION SELECT id FROM rep UNION SELECT trade_id FROM trades
    UNION SELECT CAST(:order_id AS text)
)
SELECT at, business_date, record, event, ref, details FROM (
    SELECT ex.transact_time AS at, ex.business_date, 'execution' AS record,
           ex.exec_type AS event, ex.id AS ref,
           jsonb_build_object(
               'source', ex.source, 'account', ex.account, 'symbol', ex.symbol, 'side', ex.side,
               'order_state', ex.order_state, 'last_shares', ex.last_shares,
               'last_px', ex.last_px, 'cum_qty', ex.cum_qty, 'leaves_qty', ex.leaves_qty,
               'trade_id', ex.trade_id, 'aggressor', ex.aggressor,
               'commission_notional_collected', ex.commission_notional_collected,
               'text', ex.text) AS details
    FROM ex
    UNION ALL
    SELECT rep.transact_time, rep.business_date, 'report_execution', rep.exec_type, rep.id,
           jsonb_build_object(
               'note', 'in the Report API, not in the executions stream',
               'account', rep.account, 'symbol', rep.symbol, 'side', rep.side,
               'order_state', rep.order_state, 'last_shares', rep.last_shares,
               'last_px', rep.last_px, 'trade_id', rep.trade_id,
               'commission_notional_collected', rep.commission_notional_collected)
    FROM rep
    UNION ALL
    SELECT t.transact_time, t.business_date, 'trade', t.state, t.id,
           jsonb_build_object(
               'trade_type', t.trade_type, 'symbol', t.symbol, 'last_shares', t.last_shares,
               'last_px', t.last_px, 'aggressor_execution_id', t.aggressor_execution_id,
               'passive_execution_id', t.passive_execution_id, 'busted', t.busted,
               'text', t.text)
    FROM trade_capture AS t
    JOIN trades AS tr ON tr.business_date = t.business_date AND tr.trade_id = t.id
    UNION ALL
    SELECT s.update_time, s.business_date, 'trade_state', s.state, s.trade_id,
           jsonb_build_object('received_at', s.received_at)
    FROM trade_capture_state AS s
    JOIN trades AS tr ON tr.business_date = s.business_date AND tr.trade_id = s.trade_id
    UNION ALL
    SELECT b.first_seen_at, b.business_date, 'break', b.kind, b.key,
           jsonb_build_object(
               'break_id', b.id, 'status', b.status, 'severity', b.severity,
               'occurrences', b.occurrences, 'expected', b.expected, 'actual', b.actual)
    FROM recon_break AS b
    WHERE b.key IN (SELECT key FROM keys)
) AS trail
ORDER BY at, record, ref
"""


def order_trail(conn: Connection, order_id: str) -> ResultSet:
    """Every execution, trade, trade state and break of an order, in time order.

    Executions the Report API knows but the stream never delivered are included (as
    `report_execution`): a trail that hid them would hide exactly what compliance asks about.
    """
    return _result(conn, _ORDER_TRAIL, {"order_id": order_id})


# --- trades -------------------------------------------------------------------------------


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


@dataclass(frozen=True, slots=True)
class TradeFilter:
    """Filters of `recon query trades`; exchange-only and chain-only filters pick the venue."""

    account: str | None = None
    symbol: str | None = None
    market: str | None = None
    wallet: str | None = None
    side: Side | None = None
    start: datetime | None = None
    end: datetime | None = None
    business_date: date | None = None
    min_notional: Decimal | None = None
    limit: int = DEFAULT_LIMIT

    @property
    def wants_exchange(self) -> bool:
        return self.market is None and self.wallet is None

    @property
    def wants_chain(self) -> bool:
        return self.account is None and self.symbol is None


def _time_bounds(
    time_column: str,
    start: datetime | None,
    end: datetime | None,
    *,
    slack: timedelta,
    date_column: str = "business_date",
) -> Where:
    """Filter on event time, and on the business date too so only the days involved are read.

    An exchange business date is the venue's trade date, which can differ from the UTC date of
    the event by a day, hence `slack`; a chain business date is exactly the UTC date.
    """
    where = Where()
    if start is not None:
        where = where.add(f"{time_column} >= :start", start=start)
        where = where.add(f"{date_column} >= :start_date", start_date=(start - slack).date())
    if end is not None:
        where = where.add(f"{time_column} < :end", end=end)
        where = where.add(f"{date_column} <= :end_date", end_date=(end + slack).date())
    return where


def _on_date(where: Where, business_date: date | None) -> Where:
    if business_date is None:
        return where
    return where.add("business_date = :business_date", business_date=business_date)


# Each part of the newest-first union keeps its newest `limit` rows in the union's own order,
# time ties included: cut by time alone, which tied rows survive would be up to the plan (and
# change with it). Refs compare in byte order, the hex keys' own, so that a part and the union
# sort them alike whatever the database's collation.
EXCHANGE_REF = "execution_id"
CHAIN_REF = "tx_hash || ':' || log_index"


def _exchange_trades(f: TradeFilter) -> tuple[str, Where]:
    where = _time_bounds("transact_time", f.start, f.end, slack=timedelta(days=1))
    where = _on_date(where, f.business_date)
    if f.account is not None:
        where = where.add("account = :account", account=f.account)
    if f.symbol is not None:
        where = where.add("symbol = :symbol", symbol=f.symbol)
    if f.side is not None:
        where = where.add("side = :exchange_side", exchange_side=f"SIDE_{f.side}")
    if f.min_notional is not None:
        where = where.add("notional >= :min_notional", min_notional=f.min_notional)
    sql = f"""
        SELECT 'exchange' AS venue, transact_time AS at, business_date,
               trade_id AS trade, {EXCHANGE_REF} AS ref, symbol AS market, account AS party,
               NULL AS counterparty, side, quantity, price, notional, commission AS fee,
               trade_state AS state
        FROM v_exchange_fill WHERE {where.sql}
        ORDER BY transact_time DESC, {EXCHANGE_REF} COLLATE "C" LIMIT :limit"""
    return sql, where


def _chain_trades(f: TradeFilter) -> tuple[str, Where]:
    where = _on_date(_time_bounds("event_time", f.start, f.end, slack=timedelta()), f.business_date)
    if f.wallet is not None:
        where = where.add("(maker_address = :wallet OR taker_address = :wallet)", wallet=f.wallet)
    if f.market is not None:
        where = where.add("condition_id = :market", market=f.market)
    if f.side is not None:
        where = where.add("side = :chain_side", chain_side=str(f.side))
    if f.min_notional is not None:
        where = where.add("notional >= :min_notional", min_notional=f.min_notional)
    sql = f"""
        SELECT 'chain' AS venue, event_time AS at, business_date,
               tx_hash AS trade, {CHAIN_REF} AS ref,
               coalesce(market_slug, condition_id) AS market, maker_address AS party,
               taker_address AS counterparty, side, shares_normalized AS quantity, price,
               notional, net_fee AS fee, NULL AS state
        FROM v_chain_fill WHERE {where.sql}
        ORDER BY event_time DESC, ({CHAIN_REF}) COLLATE "C" LIMIT :limit"""
    return sql, where


def trades(conn: Connection, f: TradeFilter) -> ResultSet:
    """Exchange fills and on-chain maker fills matching every filter, newest first.

    Chain rows are maker fills (one per maker; the taker aggregate would count shares twice);
    `party` is the maker wallet, `counterparty` the taker, `side` the maker order's side, and
    `fee` the maker's net fee. `--wallet` matches the wallet on either side.
    """
    parts: list[tuple[str, Where]] = []
    if f.wants_exchange:
        parts.append(_exchange_trades(f))
    if f.wants_chain:
        parts.append(_chain_trades(f))
    if not parts:
        raise ValueError(
            "exchange filters (account, symbol) and chain filters (wallet, market) exclude"
            " each other: no trade can match both"
        )
    params: dict[str, Any] = {"limit": f.limit}
    for _, where in parts:
        params.update(where.params)
    union = " UNION ALL ".join(f"({sql})" for sql, _ in parts)
    return _result(
        conn,
        f'SELECT * FROM ({union}) AS t ORDER BY at DESC, ref COLLATE "C" LIMIT :limit',
        params,
    )


# --- fees ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeeFilter:
    scope: FeeScope | None = None
    key: str | None = None
    source: FeeSource | None = None
    start_date: date | None = None
    end_date: date | None = None
    total: bool = False
    limit: int = DEFAULT_LIMIT


def fees(conn: Connection, f: FeeFilter) -> ResultSet:
    """Net fees from `net_fee_daily` per day (or summed over the range with `total`)."""
    where = Where()
    if f.scope is not None:
        where = where.add("scope = :scope", scope=str(f.scope))
    if f.key is not None:
        where = where.add("scope_key = :key", key=f.key)
    if f.source is not None:
        where = where.add("source = :source", source=str(f.source))
    if f.start_date is not None:
        where = where.add("business_date >= :start_date", start_date=f.start_date)
    if f.end_date is not None:
        where = where.add("business_date <= :end_date", end_date=f.end_date)
    params = {**where.params, "limit": f.limit}
    if f.total:
        sql = f"""
            SELECT scope, scope_key, source, min(business_date) AS first_date,
                   max(business_date) AS last_date, sum(gross_fee) AS gross_fee,
                   sum(refund) AS refund, sum(net_fee) AS net_fee, sum(fills) AS fills
            FROM net_fee_daily WHERE {where.sql}
            GROUP BY scope, scope_key, source
            ORDER BY scope, net_fee DESC, scope_key, source LIMIT :limit"""
    else:
        sql = f"""
            SELECT business_date, scope, scope_key, source, gross_fee, refund, net_fee, fills
            FROM net_fee_daily WHERE {where.sql}
            ORDER BY business_date, scope, scope_key, source LIMIT :limit"""
    return _result(conn, sql, params)


# --- wallet -------------------------------------------------------------------------------

_WALLET = """
SELECT * FROM (
    (SELECT o.event_time AS at, o.business_date,
            CASE o.role WHEN 'maker' THEN 'fill_as_maker' ELSE 'fill_as_taker' END AS activity,
            o.tx_hash, o.order_hash, coalesce(o.market_slug, o.condition_id) AS market,
            o.outcome, o.side, o.shares_normalized AS shares, o.price,
            o.shares_normalized * o.price AS notional, o.fee, r.refund,
            CASE WHEN o.version = 1 AND o.role = 'maker' THEN o.fee - coalesce(r.refund, 0)
                 ELSE o.fee END AS net_fee,
            CASE o.role WHEN 'maker' THEN o.taker_address END AS counterparty
     FROM order_filled AS o
     LEFT JOIN fee_refund AS r
       ON o.role = 'maker' AND r.tx_hash = o.tx_hash AND r.order_hash = o.order_hash
     WHERE o.user_address = :wallet AND {fill_where}
     ORDER BY at DESC, activity, o.tx_hash COLLATE "C", o.order_hash COLLATE "C" LIMIT :limit)
    UNION ALL
    (SELECT r.at, r.business_date, 'fee_refund',
            r.tx_hash, r.order_hash, coalesce(r.market_slug, r.condition_id), NULL, NULL,
            NULL, NULL, NULL, r.refund + r.fee_charged, r.refund, r.fee_charged, NULL
     FROM (
        -- The feed gives refunds no time; they land in the block of the fill they rebate.
        SELECT f.*, coalesce(f.event_time, fill.event_time, f.received_at) AS at
        FROM fee_refund AS f
        LEFT JOIN LATERAL (
            SELECT o.event_time FROM order_filled AS o
            WHERE o.business_date = f.business_date AND o.tx_hash = f.tx_hash
              AND o.order_hash = f.order_hash
            LIMIT 1
        ) AS fill ON TRUE
        WHERE f.user_address = :wallet
     ) AS r
     WHERE {refund_where}
     ORDER BY r.at DESC, r.tx_hash COLLATE "C", r.order_hash COLLATE "C" LIMIT :limit)
) AS activity
ORDER BY at DESC, activity, tx_hash COLLATE "C", order_hash COLLATE "C"
LIMIT :limit
"""


def wallet_activity(
    conn: Connection,
    address: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> ResultSet:
    """A wallet's on-chain activity, newest first: fills as maker (per-maker rows), fills as
    taker (the taker-aggregate rows, one per taker action) and fee refunds."""
    fills = _time_bounds(
        "o.event_time", start, end, slack=timedelta(), date_column="o.business_date"
    )
    # A refund may carry no timestamp; its business date is the best bound there is.
    refunds = _time_bounds(
        "r.at",
        start,
        end,
        slack=timedelta(),
        date_column="r.business_date",
    )
    sql = _WALLET.format(fill_where=fills.sql, refund_where=refunds.sql)
    return _result(conn, sql, {**fills.params, "wallet": address, "limit": limit})
