"""Compliance queries, analyst views and the read-only role on a reconciled hand-made day."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from psycopg import errors
from sqlalchemy import Engine, insert, make_url, text
from sqlalchemy.exc import ProgrammingError
from typer.testing import CliRunner

from app.db import models
from app.db.session import make_engine
from app.domain.breaks import age_bucket, age_days
from app.query.cli import query
from app.query.queries import (
    FeeFilter,
    FeeScope,
    FeeSource,
    Side,
    TradeFilter,
    fees,
    order_trail,
    trades,
    wallet_activity,
)
from tests.integration._recon_day import NOON, D, h
from tests.integration._users_day import ORDER, REPORT_ONLY, seed_reconciled_day


@pytest.fixture(scope="module")
def day(pg_server_url: str, template_database: str) -> Iterator[Engine]:
    """One reconciled day for the whole module: these tests only read (or roll back)."""
    name = f"recon_test_queries_{uuid.uuid4().hex[:8]}"
    admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    engine = make_engine(
        make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    )
    try:
        seed_reconciled_day(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_order_trail_shows_executions_trades_states_and_breaks_in_time_order(day: Engine) -> None:
    with day.connect() as conn:
        trail = order_trail(conn, ORDER).records()
    assert [(r["record"], r["event"], r["ref"]) for r in trail] == [
        ("execution", "EXECUTION_TYPE_FILL", "E1"),
        ("trade", "TRADE_STATE_CLEARED", "T1"),
        ("trade_state", "TRADE_STATE_NEW", "T1"),
        ("trade_state", "TRADE_STATE_CLEARED", "T1"),
        ("report_execution", "EXECUTION_TYPE_FILL", REPORT_ONLY),
        ("break", "execution_missing_from_stream", REPORT_ONLY),
    ]
    times = [r["at"] for r in trail]
    assert times == sorted(times)
    assert trail[0]["details"]["account"] == "ACC1"
    assert trail[-1]["details"]["status"] == "open"
    with day.connect() as conn:
        assert order_trail(conn, "O-nope").rows == ()


def test_trades_filters_exchange_and_chain(day: Engine) -> None:
    def refs(f: TradeFilter) -> list[str]:
        with day.connect() as conn:
            return [r["ref"] for r in trades(conn, f).records()]

    assert refs(TradeFilter(account="ACC1")) == ["E4", "E1"]
    assert refs(TradeFilter(account="ACC1", side=Side.SELL)) == ["E4"]
    # E1: 1 contract at $0.50; E4: 0.4 contracts at $0.48 = $0.192
    assert refs(TradeFilter(account="ACC1", min_notional=Decimal("0.3"))) == ["E1"]
    assert refs(TradeFilter(symbol="SYM", start=NOON + timedelta(seconds=30))) == ["E3", "E4"]
    maker_m1 = [f"{h('txA')}:10", f"{h('txB')}:3"]
    assert sorted(refs(TradeFilter(wallet="0xm1"))) == sorted(maker_m1)
    # As the taker of every maker fill: the maker rows, never the taker aggregates.
    assert len(refs(TradeFilter(wallet="0xtaker"))) == 3
    assert len(refs(TradeFilter(market=h("market"), business_date=D))) == 3
    everything = refs(TradeFilter(business_date=D))
    assert len(everything) == 4 + 3
    assert refs(TradeFilter(business_date=D + timedelta(days=1))) == []
    assert refs(TradeFilter(account="ACC1' OR '1'='1")) == []
    with pytest.raises(ValueError, match="exclude each other"):
        refs(TradeFilter(account="ACC1", wallet="0xm1"))

    with day.connect() as conn:
        row = trades(conn, TradeFilter(account="ACC1", side=Side.BUY)).records()[0]
    assert (row["quantity"], row["price"], row["notional"], row["fee"]) == (
        Decimal(1),
        Decimal("0.5"),
        Decimal("0.5"),
        Decimal("0.001"),
    )
    assert row["state"] == "TRADE_STATE_CLEARED"


def test_fees_per_day_and_in_total(day: Engine) -> None:
    with day.connect() as conn:
        # Another day of ACC1, seen only inside this transaction (rolled back at the end).
        conn.execute(
            insert(models.NetFeeDaily.__table__),
            [
                {
                    "business_date": D - timedelta(days=1),
                    "scope": "account",
                    "scope_key": "ACC1",
                    "source": "exchange",
                    "gross_fee": Decimal("0.0100"),
                    "refund": Decimal(0),
                    "net_fee": Decimal("0.0100"),
                    "fills": 3,
                }
            ],
        )
        daily = fees(conn, FeeFilter(scope=FeeScope.ACCOUNT, key="ACC1")).records()
        total = fees(conn, FeeFilter(scope=FeeScope.ACCOUNT, key="ACC1", total=True)).records()
        one_day = fees(conn, FeeFilter(scope=FeeScope.ACCOUNT, start_date=D, end_date=D)).records()
        chain = fees(conn, FeeFilter(scope=FeeScope.WALLET, source=FeeSource.CHAIN)).records()
        conn.rollback()
    # ACC1 on D: E1 commission 10 and E4 rebate -1 raw units over scales 100 x 100.
    assert [(r["business_date"], r["net_fee"], r["fills"]) for r in daily] == [
        (D - timedelta(days=1), Decimal("0.0100"), 3),
        (D, Decimal("0.0009"), 2),
    ]
    assert total[0]["net_fee"] == Decimal("0.0109")
    assert (total[0]["first_date"], total[0]["last_date"], total[0]["fills"]) == (
        D - timedelta(days=1),
        D,
        5,
    )
    assert {r["scope_key"] for r in one_day} == {"ACC1", "ACC2"}
    by_wallet = {r["scope_key"]: r["net_fee"] for r in chain}
    # 0xm1: V1 fee 0.008 less refund 0.006, plus V2 net fee 0.0012.
    assert by_wallet["0xm1"] == Decimal("0.0032")


def test_wallet_activity_as_maker_as_taker_and_refunds(day: Engine) -> None:
    with day.connect() as conn:
        maker = wallet_activity(conn, "0xm1").records()
        taker = wallet_activity(conn, "0xtaker").records()
        later = wallet_activity(conn, "0xm1", start=NOON + timedelta(hours=1))
    assert sorted(r["activity"] for r in maker) == ["fee_refund", "fill_as_maker", "fill_as_maker"]
    v1 = next(r for r in maker if r["activity"] == "fill_as_maker" and r["refund"] is not None)
    assert (v1["fee"], v1["refund"], v1["net_fee"]) == (
        Decimal("0.008"),
        Decimal("0.006"),
        Decimal("0.002"),
    )
    assert [r["activity"] for r in taker] == ["fill_as_taker", "fill_as_taker"]
    assert all(r["counterparty"] is None for r in taker)
    assert later.rows == ()


def test_cli_prints_table_csv_and_json(day: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.db.session.get_engine", lambda: day)
    runner = CliRunner()

    as_json = runner.invoke(query, ["trades", "--account", "ACC1", "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = orjson.loads(as_json.output)
    assert [r["ref"] for r in rows] == ["E4", "E1"]
    assert rows[1]["notional"] == "0.5"  # exact decimals travel as strings

    as_csv = runner.invoke(query, ["wallet", "0XM1", "--csv"])
    assert as_csv.exit_code == 0, as_csv.output
    parsed = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(parsed) == 3
    assert {r["activity"] for r in parsed} == {"fill_as_maker", "fee_refund"}

    table = runner.invoke(query, ["order-trail", ORDER])
    assert table.exit_code == 0, table.output
    assert "order O-E1 (6 rows)" in table.output

    fee_json = runner.invoke(
        query, ["fees", "--scope", "market", "--date", D.isoformat(), "--json"]
    )
    assert fee_json.exit_code == 0, fee_json.output
    assert {r["source"] for r in orjson.loads(fee_json.output)} == {"exchange", "chain"}

    bad = runner.invoke(query, ["trades", "--account", "ACC1", "--wallet", "0xm1"])
    assert bad.exit_code == 2
    assert runner.invoke(query, ["trades", "--csv", "--json"]).exit_code == 2
    assert runner.invoke(query, ["trades", "--date", "yesterday"]).exit_code == 2


def test_views_for_analysts(day: Engine) -> None:
    with day.connect() as conn:
        chain = conn.execute(
            text("SELECT order_hash, net_fee FROM v_chain_fill ORDER BY order_hash")
        ).all()
        exchange = conn.execute(text("SELECT count(*) FROM v_exchange_fill")).scalar()
        open_breaks = conn.execute(text("SELECT kind FROM v_open_breaks ORDER BY kind")).all()
    assert {r.order_hash: r.net_fee for r in chain}[h("a1")] == Decimal("0.002")
    assert len(chain) == 3
    assert exchange == 4
    assert [r.kind for r in open_breaks] == sorted(
        ["chain_refund_arithmetic", "execution_missing_from_stream", "execution_quantity_mismatch"]
    )


def test_open_breaks_view_ages_like_the_domain_rule(engine: Engine) -> None:
    now = datetime.now(UTC)
    ages = [0, 1, 2, 7, 8, 30, 31, 400]
    with engine.begin() as conn:
        conn.execute(
            insert(models.Break.__table__),
            [
                {
                    "kind": "trade_busted",
                    "business_date": D,
                    "key": f"T-{days}",
                    "severity": "low",
                    "status": "open",
                    "details": {},
                    # An hour into the day: the test's clock and the database's cannot straddle
                    # a day boundary between them.
                    "first_seen_at": now - timedelta(days=days, hours=1),
                    "last_seen_at": now,
                }
                for days in ages
            ],
        )
        rows = conn.execute(text("SELECT key, first_seen_at, age_bucket FROM v_open_breaks"))
        buckets = {
            r.key: (r.age_bucket, str(age_bucket(age_days(r.first_seen_at, now)))) for r in rows
        }
    assert len(buckets) == len(ages)
    assert all(sql == domain for sql, domain in buckets.values()), buckets


def test_readonly_role_reads_everything_and_writes_nothing(day: Engine) -> None:
    with day.connect() as conn:
        conn.execute(text("SET ROLE recon_readonly"))
        assert conn.execute(text("SELECT count(*) FROM v_chain_fill")).scalar() == 3
        assert conn.execute(text("SELECT count(*) FROM recon_break")).scalar() == 3
        # A day partition made after the migration, read directly: default privileges cover it.
        partition = f"execution_p{D:%Y%m%d}"
        assert conn.execute(text(f"SELECT count(*) FROM {partition}")).scalar() == 5
        for statement in (
            "INSERT INTO recon_break (kind, business_date, key, severity) "
            "VALUES ('trade_busted', '2026-05-04', 'X', 'low')",
            "UPDATE net_fee_daily SET net_fee = 0, gross_fee = 0, refund = 0",
            "DELETE FROM execution",
        ):
            with pytest.raises(ProgrammingError) as refused:
                conn.execute(text(statement))
            assert isinstance(refused.value.orig, errors.InsufficientPrivilege)
            # SET ROLE is transactional: the rollback also ends it.
            conn.rollback()
            conn.execute(text("SET ROLE recon_readonly"))
        conn.rollback()
        assert conn.execute(text("SELECT current_user")).scalar() != "recon_readonly"
