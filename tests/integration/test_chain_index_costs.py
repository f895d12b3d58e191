"""The chain tables' cheaper indexes (migration 2026-12-06-0900_chain_index_costs): collations,
index methods and predicates as the models declare them, on the parents and on a day partition
made afterwards; and every query that reads those tables answers exactly as before.

`alembic check` compares neither collations nor index methods nor predicates, hence the first
test: the models are still the one description of the schema."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Table, insert, text

from app.db import migrate, models
from app.db.partitions import ensure_partitions, partition_name
from app.db.session import make_engine
from app.query.queries import Side, TradeFilter, trades, wallet_activity
from app.recon.service import reconcile
from app.reports.build import gather
from tests.integration._recon_day import NOON, D
from tests.integration._users_day import seed_reconciled_day

BEFORE = "4c1d9e2b7f30"  # the revision before the migration
CHAIN: tuple[Table, ...] = (
    models.OrderFilled.__table__,
    models.OrderFilledPending.__table__,
    models.FeeRefund.__table__,
    models.FeedTrade.__table__,
)
FRESH_DAY = date(2026, 12, 24)


def _collations(conn: Connection, relation: str) -> dict[str, str]:
    rows = conn.execute(
        text(
            "SELECT a.attname, coalesce(c.collname, '') FROM pg_attribute AS a"
            " LEFT JOIN pg_collation AS c ON c.oid = a.attcollation"
            " WHERE a.attrelid = CAST(:r AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
            " AND a.atttypid = 'text'::regtype"
        ),
        {"r": relation},
    )
    return dict(rows.all())


def _indexes(conn: Connection, relation: str) -> dict[str, tuple[str, str, str]]:
    """index name -> (method, key columns, predicate), predicate without casts and brackets."""
    rows = conn.execute(
        text(
            "SELECT i.relname, am.amname,"
            " (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(x.indkey)"
            "  WITH ORDINALITY AS k(attnum, n)"
            "  JOIN pg_attribute AS a ON a.attrelid = x.indrelid AND a.attnum = k.attnum),"
            " coalesce(pg_get_expr(x.indpred, x.indrelid), '')"
            " FROM pg_index AS x JOIN pg_class AS i ON i.oid = x.indexrelid"
            " JOIN pg_am AS am ON am.oid = i.relam WHERE x.indrelid = CAST(:r AS regclass)"
        ),
        {"r": relation},
    )
    return {
        name: (method, columns, predicate.replace("::text", "").strip("()"))
        for name, method, columns, predicate in rows
    }


def _declared_indexes(table: Table) -> set[tuple[str, str, str]]:
    declared = set()
    for index in table.indexes:
        options = index.dialect_options["postgresql"]
        where = options["where"]
        declared.add(
            (
                options["using"] or "btree",
                ",".join(column.name for column in index.columns),
                "" if where is None else str(where),
            )
        )
    if table.primary_key.columns:
        declared.add(("btree", ",".join(c.name for c in table.primary_key.columns), ""))
    return declared


def test_collations_and_indexes_are_the_models_on_parents_and_a_fresh_partition(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        assert ensure_partitions(conn, [FRESH_DAY]) > 0
    with engine.connect() as conn:
        for table in CHAIN:
            relations = [table.name]
            if table.dialect_options["postgresql"]["partition_by"]:
                relations.append(partition_name(table.name, FRESH_DAY))
            for relation in relations:
                found = _collations(conn, relation)
                # A TextEnum passes `collation` on from the Text it stores as.
                declared = {name: table.columns[name].type.collation for name in found}
                assert found == {k: v or "default" for k, v in declared.items()}, relation
                indexes = set(_indexes(conn, relation).values())
                assert indexes == _declared_indexes(table), relation
        hex_keys = {name for name, c in _collations(conn, "order_filled").items() if c == "C"}
    assert hex_keys == {"tx_hash", "order_hash", "user_address", "taker_address", "condition_id"}


# --- the same answers before and after ---------------------------------------------------------

WALLETS = tuple(f"0x{n:040x}" for n in range(1, 9))
MARKETS = tuple("0x" + hashlib.sha256(f"market {n}".encode()).hexdigest() for n in range(4))


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


def _fill(tx: int, log_index: int, role: str, user: str, at: datetime) -> dict[str, Any]:
    market = MARKETS[tx % len(MARKETS)]
    shares = 1_000_000 * (1 + (tx * 7 + log_index) % 5)
    price = Decimal(5 + (tx * 13) % 90) / 100
    return {
        "business_date": at.date(),
        "tx_hash": _hash("tx", tx),
        "log_index": log_index,
        "order_hash": _hash("order", tx, log_index),
        "token_id": str(10**70 + tx % len(MARKETS)),
        "token_label": "Yes",
        "complement_token_id": None,
        "complement_token_label": None,
        "side": ("BUY", "SELL")[(tx + (role == "taker")) % 2],
        "market_slug": f"market-{tx % len(MARKETS)}" if tx % 3 else None,
        "condition_id": market,
        "market_id": None,
        "title": None,
        "outcome": "Yes",
        "outcome_index": 0,
        "is_neg_risk": False,
        "shares": shares,
        "shares_normalized": Decimal(shares) / 1_000_000,
        "price": price,
        "fee": (Decimal(shares) / 10**8 * price).quantize(Decimal("0.000001")),
        "user_address": user,
        "taker_address": WALLETS[tx % len(WALLETS)] if role == "maker" else "0xexchange",
        "role": role,
        "version": 1 + tx % 2,
        "builder": None,
        "metadata": None,
        "event_time": at,
        "raw": b"",
    }


def _chain_rows() -> dict[str, list[dict[str, Any]]]:
    """Two days of transactions, three in every block (so times tie), one to three makers each;
    V1 makers get refunds, some transactions a pending row and a legacy-feed row."""
    fills: list[dict[str, Any]] = []
    for tx in range(240):
        at = NOON - timedelta(hours=6) + timedelta(minutes=30 * (tx // 3))
        makers = 1 + tx % 3
        for j in range(makers):
            maker = WALLETS[(tx * 5 + j * 3 + 1) % len(WALLETS)]
            fills.append(_fill(tx, 2 * j, "maker", maker, at))
        fills.append(_fill(tx, 2 * makers, "taker", WALLETS[tx % len(WALLETS)], at))
    makers_v1 = [f for f in fills if f["role"] == "maker" and f["version"] == 1]
    return {
        "order_filled": fills,
        "order_filled_pending": [
            {
                **{k: v for k, v in f.items() if k != "log_index"},
                "event_time": f["event_time"] - timedelta(seconds=3),
            }
            for n, f in enumerate(fills[::5])
        ],
        "fee_refund": [
            {
                "tx_hash": f["tx_hash"],
                "order_hash": f["order_hash"],
                "business_date": f["business_date"],
                "user_address": f["user_address"],
                "token_id": f["token_id"],
                "condition_id": f["condition_id"],
                "market_slug": f["market_slug"],
                "title": None,
                "refund": f["fee"] / 2,
                "fee_charged": f["fee"] - f["fee"] / 2,
                "event_time": None,
                "raw": b"",
            }
            for f in makers_v1[::2]
        ],
        "feed_trade": [
            {
                "business_date": f["business_date"],
                "tx_hash": f["tx_hash"],
                "order_hash": f["order_hash"],
                "asset_id": f["token_id"],
                "condition_id": f["condition_id"],
                "market_slug": f["market_slug"],
                "title": None,
                "outcome": "Yes",
                "shares": f["shares_normalized"],
                "shares_normalized": f["shares_normalized"],
                "price": f["price"] if n % 9 else f["price"] + Decimal("0.01"),
                "user_address": f["user_address"],
                "taker_address": f["taker_address"],
                "event_time": f["event_time"],
                "feed_source": "alchemy",
                "raw": b"",
            }
            for n, f in enumerate(fills[::3])
            if f["role"] == "maker"
        ],
    }


TRADE_FILTERS = {
    "newest": TradeFilter(),
    "newest 25": TradeFilter(limit=25),
    "newest sells 10": TradeFilter(side=Side.SELL, limit=10),
    "window": TradeFilter(start=NOON - timedelta(hours=2), end=NOON + timedelta(hours=3)),
    "day after": TradeFilter(business_date=D + timedelta(days=1), limit=40),
    "wallet": TradeFilter(wallet=WALLETS[3]),
    "wallet 5": TradeFilter(wallet=WALLETS[4], limit=5),
    "market": TradeFilter(market=MARKETS[1], min_notional=Decimal("1")),
    "market of the day": TradeFilter(market=MARKETS[2], business_date=D),
}


def _answers(engine: Engine) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    with engine.connect() as conn:
        for name, f in TRADE_FILTERS.items():
            answers[f"trades {name}"] = trades(conn, f)
        for wallet in (WALLETS[2], WALLETS[5], "0xm1"):
            answers[f"wallet {wallet}"] = wallet_activity(conn, wallet)
        answers["wallet window"] = wallet_activity(
            conn, WALLETS[6], start=NOON - timedelta(hours=3), end=NOON + timedelta(hours=9)
        )
        answers["v_chain_fill"] = conn.execute(
            text("SELECT * FROM v_chain_fill ORDER BY business_date, tx_hash, log_index")
        ).all()
        answers["v_chain_fill by hash"] = conn.execute(
            text("SELECT tx_hash, order_hash, maker_address FROM v_chain_fill ORDER BY 1, 2, 3")
        ).all()
        answers["net fees"] = conn.execute(
            text(
                "SELECT business_date, scope, scope_key, source, gross_fee, refund, net_fee, fills"
                " FROM net_fee_daily ORDER BY 1, 2, 3, 4"
            )
        ).all()
        answers["breaks"] = conn.execute(
            text("SELECT kind, business_date, key, status FROM recon_break ORDER BY 1, 2, 3")
        ).all()
        built = datetime(2026, 12, 6, tzinfo=UTC)
        for day in (D, D + timedelta(days=1)):
            answers[f"report {day}"] = gather(conn, day, built)
    return answers


def _view_acl(engine: Engine) -> set[tuple[str, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pg_get_userbyid(c.relowner), coalesce(pg_get_userbyid(a.grantee), ''),"
                " coalesce(a.privilege_type, '')"
                " FROM pg_class AS c LEFT JOIN LATERAL aclexplode(c.relacl) AS a ON TRUE"
                " WHERE c.oid = 'v_chain_fill'::regclass"
            )
        )
        return {tuple(row) for row in rows}


@pytest.fixture
def before_engine(empty_database_url: str) -> Iterator[Engine]:
    migrate.upgrade(empty_database_url, BEFORE)
    engine = make_engine(empty_database_url)
    yield engine
    engine.dispose()


def test_queries_answer_the_same_before_and_after_and_after_downgrade(
    empty_database_url: str, before_engine: Engine
) -> None:
    seed_reconciled_day(before_engine)
    chain = _chain_rows()
    with before_engine.begin() as conn:
        days = {row["business_date"] for row in chain["order_filled"]}
        ensure_partitions(conn, days)
        for name, rows in chain.items():
            conn.execute(insert(models.Base.metadata.tables[name]), rows)
    for day in sorted(days):
        reconcile(before_engine, day, report=None)
    acl = _view_acl(before_engine)
    before = _answers(before_engine)
    assert len(before["trades newest"].rows) > 300
    assert len(before["breaks"]) > 3

    migrate.upgrade(empty_database_url)
    assert _view_acl(before_engine) == acl
    after = _answers(before_engine)
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], name
    for day in sorted(days):
        reconcile(before_engine, day, report=None)
    assert _answers(before_engine) == before

    migrate.downgrade(empty_database_url, BEFORE)
    assert _view_acl(before_engine) == acl
    assert _answers(before_engine) == before
