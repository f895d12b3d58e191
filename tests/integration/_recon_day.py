"""A small, hand-made, fully consistent trading day for the reconciliation tests.

`clean_day()` returns the rows of a day with no break in it: two trades (one with a rebate)
and an order acknowledgement on the exchange, in the stream and in the Report API alike,
positions that equal the fills; on chain a V1 transaction with two makers, their refunds and
pending events (drifting within tolerance), and a V2 transaction — every maker fill also on
the legacy feed. Tests change one thing and expect exactly one break.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.db import models
from app.db.partitions import ensure_partitions
from app.recon.report_client import SNAPSHOT_JOB, ReportClientConfig, report_window

D = date(2026, 5, 4)
NOON = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SNAPSHOT_AS_OF = datetime(2026, 5, 5, 1, 0, tzinfo=UTC)

Rows = dict[str, list[dict[str, Any]]]

TABLES: dict[str, Any] = {
    "instrument": models.Instrument,
    "execution": models.Execution,
    "report_execution": models.ReportExecution,
    "trade_capture": models.TradeCapture,
    "report_trade": models.ReportTrade,
    "position_change": models.PositionChange,
    "report_position": models.ReportPosition,
    "order_filled": models.OrderFilled,
    "order_filled_pending": models.OrderFilledPending,
    "fee_refund": models.FeeRefund,
    "feed_trade": models.FeedTrade,
    "gap_window": models.GapWindow,
}


def h(label: str) -> str:
    """A 0x-prefixed 64-hex-digit hash made from a label, for readable test keys."""
    return "0x" + label.encode().hex().ljust(64, "0")[:64]


def execution(
    exec_id: str,
    *,
    account: str,
    side: str,
    shares: int = 100,
    px: int = 50,
    commission: int = 0,
    exec_type: str = "EXECUTION_TYPE_FILL",
    trade_id: str | None = None,
    aggressor: bool = False,
    at: datetime = NOON,
) -> dict[str, Any]:
    return {
        "business_date": D,
        "id": exec_id,
        "order_id": f"O-{exec_id}",
        "clord_id": None,
        "symbol": "SYM",
        "side": side,
        "order_type": "ORDER_TYPE_LIMIT",
        "time_in_force": "TIME_IN_FORCE_DAY",
        "order_qty": shares,
        "order_price": px,
        "cum_qty": shares if exec_type != "EXECUTION_TYPE_NEW" else 0,
        "leaves_qty": 0 if exec_type != "EXECUTION_TYPE_NEW" else shares,
        "avg_px": px,
        "order_state": "ORDER_STATE_FILLED",
        "account": account,
        "participant": None,
        "exec_type": exec_type,
        "last_shares": shares if exec_type != "EXECUTION_TYPE_NEW" else 0,
        "last_px": px if exec_type != "EXECUTION_TYPE_NEW" else 0,
        "text": None,
        "transact_time": at,
        "trade_id": trade_id,
        "aggressor": aggressor,
        "commission_notional_collected": commission,
        "raw": b"",
    }


def trade(trade_id: str, aggressor: dict[str, Any], passive: dict[str, Any]) -> dict[str, Any]:
    return {
        "business_date": D,
        "id": trade_id,
        "trade_type": "TRADE_TYPE_REGULAR",
        "state": "TRADE_STATE_CLEARED",
        "text": None,
        "trade_link_id": None,
        "update_time": aggressor["transact_time"],
        "symbol": "SYM",
        "aggressor_execution_id": aggressor["id"],
        "passive_execution_id": passive["id"],
        "aggressor_account": aggressor["account"],
        "passive_account": passive["account"],
        "aggressor_side": aggressor["side"],
        "last_shares": aggressor["last_shares"],
        "last_px": aggressor["last_px"],
        "aggressor_commission": aggressor["commission_notional_collected"],
        "passive_commission": passive["commission_notional_collected"],
        "transact_time": aggressor["transact_time"],
        "busted": False,
        "raw": b"",
    }


def position(account: str, net: int, bought: int, sold: int) -> dict[str, Any]:
    return {
        "account": account,
        "symbol": "SYM",
        "net_position": net,
        "qty_bought": bought,
        "qty_sold": sold,
        "cost": 0,
        "realized": 0,
        "bod_position": 0,
        "update_time": NOON + timedelta(minutes=5),
        "raw": b"",
    }


def fill(
    tx: str,
    log_index: int,
    order: str,
    *,
    role: str,
    shares: int,
    user: str,
    fee: str = "0",
    price: str = "0.4",
    version: int = 1,
    at: datetime = NOON,
) -> dict[str, Any]:
    return {
        "business_date": D,
        "tx_hash": h(tx),
        "log_index": log_index,
        "order_hash": h(order),
        "token_id": "1234567890",
        "token_label": "Yes",
        "complement_token_id": "987654321",
        "complement_token_label": "No",
        "side": "BUY" if role == "maker" else "SELL",
        "market_slug": "will-it",
        "condition_id": h("market"),
        "market_id": "1",
        "title": "Will it?",
        "outcome": "Yes",
        "outcome_index": 0,
        "is_neg_risk": False,
        "shares": shares,
        "shares_normalized": Decimal(shares) / 1_000_000,
        "price": Decimal(price),
        "fee": Decimal(fee),
        "user_address": user,
        "taker_address": "0xtaker" if role == "maker" else "0xexchange",
        "role": role,
        "version": version,
        "builder": None,
        "metadata": None,
        "event_time": at,
        "raw": b"",
    }


def pending(confirmed: dict[str, Any], **changes: Any) -> dict[str, Any]:
    row = {k: v for k, v in confirmed.items() if k != "log_index"}
    row["event_time"] = confirmed["event_time"] - timedelta(seconds=4)
    row.update(changes)
    return row


def refund(maker: dict[str, Any], refund_amount: str) -> dict[str, Any]:
    amount = Decimal(refund_amount)
    return {
        "tx_hash": maker["tx_hash"],
        "order_hash": maker["order_hash"],
        "business_date": D,
        "user_address": maker["user_address"],
        "token_id": maker["token_id"],
        "condition_id": maker["condition_id"],
        "market_slug": maker["market_slug"],
        "title": maker["title"],
        "refund": amount,
        "fee_charged": maker["fee"] - amount,
        "event_time": None,
        "raw": b"",
    }


def legacy(maker: dict[str, Any]) -> dict[str, Any]:
    return {
        "business_date": D,
        "tx_hash": maker["tx_hash"],
        "order_hash": maker["order_hash"],
        "asset_id": maker["token_id"],
        "condition_id": maker["condition_id"],
        "market_slug": maker["market_slug"],
        "title": maker["title"],
        "outcome": maker["outcome"],
        "shares": maker["shares_normalized"],
        "shares_normalized": maker["shares_normalized"],
        "price": maker["price"],
        "user_address": maker["user_address"],
        "taker_address": maker["taker_address"],
        "event_time": maker["event_time"],
        "feed_source": "alchemy",
        "raw": b"",
    }


def gap(source: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {"source": source, "start_time": start, "end_time": end, "reason": "test gap"}


def clean_day() -> Rows:
    e1 = execution(
        "E1", account="ACC1", side="SIDE_BUY", commission=10, trade_id="T1", aggressor=True
    )
    e2 = execution("E2", account="ACC2", side="SIDE_SELL", commission=-2, trade_id="T1")
    e3 = execution(
        "E3",
        account="ACC2",
        side="SIDE_BUY",
        shares=40,
        px=48,
        commission=4,
        trade_id="T2",
        aggressor=True,
        at=NOON + timedelta(minutes=1),
    )
    e4 = execution(
        "E4",
        account="ACC1",
        side="SIDE_SELL",
        shares=40,
        px=48,
        commission=-1,
        trade_id="T2",
        at=NOON + timedelta(minutes=1),
    )
    ack = execution("E5", account="ACC1", side="SIDE_BUY", exec_type="EXECUTION_TYPE_NEW")
    executions = [e1, e2, e3, e4, ack]
    trades = [trade("T1", e1, e2), trade("T2", e3, e4)]
    positions = [position("ACC1", 60, 100, 40), position("ACC2", -60, 40, 100)]
    changes = [{**p, "business_date": D, "change_time": p["update_time"]} for p in positions]

    m1 = fill("txA", 10, "a1", role="maker", shares=2_000_000, user="0xm1", fee="0.008")
    m2 = fill("txA", 11, "a2", role="maker", shares=3_000_000, user="0xm2", fee="0.012")
    ta = fill("txA", 12, "at", role="taker", shares=5_000_000, user="0xtaker", fee="0.02")
    m3 = fill("txB", 3, "b1", role="maker", shares=1_500_000, user="0xm1", fee="0.0012", version=2)
    tb = fill(
        "txB", 4, "bt", role="taker", shares=1_500_000, user="0xtaker", fee="0.0045", version=2
    )
    return {
        "instrument": [
            {
                "symbol": "SYM",
                "name": "Symbol",
                "state": "INSTRUMENT_STATE_OPEN",
                "price_scale": 100,
                "fractional_qty_scale": 100,
                "update_time": NOON,
                "raw": b"",
            }
        ],
        "execution": [{**e, "source": "dropcopy"} for e in executions],
        "report_execution": copy.deepcopy(executions),
        "trade_capture": trades,
        "report_trade": copy.deepcopy(trades),
        "position_change": changes,
        "report_position": [{**p, "as_of": SNAPSHOT_AS_OF} for p in positions],
        "order_filled": [m1, m2, ta, m3, tb],
        "order_filled_pending": [
            # within the 1% tolerance: shares 0.5% short, price 0.0025 off (0.6%)
            pending(m1, shares=1_990_000, price=Decimal("0.4025")),
            pending(m2),
            pending(ta, shares=4_990_000),
        ],
        "fee_refund": [refund(m1, "0.006"), refund(m2, "0.0115")],
        "feed_trade": [legacy(m1), legacy(m2), legacy(m3)],
        "gap_window": [],
    }


def rehashed(value: str, days: int) -> str:
    """A hash made by `h()` as it reads `days` later: hashes are unique per day, as on chain."""
    parts = value.split("|")
    return "|".join(
        part[:-4] + f"{days:04x}" if part.startswith("0x") and len(part) == 66 else part
        for part in parts
    )


def shifted(rows: Rows, days: int) -> Rows:
    """The same day `days` later, so that several days can share a database: every date and
    time moves, and every hash is re-made (fee_refund is keyed by hashes alone)."""
    by = timedelta(days=days)

    def move(value: Any) -> Any:
        if isinstance(value, date):
            return value + by
        if isinstance(value, str):
            return rehashed(value, days)
        return value

    return {
        name: [{k: move(v) for k, v in row.items()} for row in table]
        for name, table in rows.items()
    }


def load(conn: Connection, rows: Rows, *, report: bool = True, day: date = D) -> None:
    """Insert the rows of `day` (committed by the caller's transaction); `report` records a
    Report API snapshot of that day, taken at the `as_of` of its report positions."""
    ensure_partitions(conn, [day - timedelta(days=1), day, day + timedelta(days=1)])
    for name, model in TABLES.items():
        if rows.get(name):
            statement = pg_insert(model.__table__)
            if name == "instrument":  # not per day: the first day's definition serves all
                statement = statement.on_conflict_do_nothing()
            conn.execute(statement, rows[name])
    if report:
        as_of = SNAPSHOT_AS_OF + (day - D)
        start, end = report_window(day, ReportClientConfig().window_margin)
        counts = {
            "as_of": as_of.isoformat(),
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
        }
        conn.execute(
            insert(models.ReconRun.__table__),
            [
                {
                    "job": SNAPSHOT_JOB,
                    "business_date": day,
                    "status": "succeeded",
                    "started_at": as_of,
                    "finished_at": as_of,
                    "counts": counts,
                }
            ],
        )
