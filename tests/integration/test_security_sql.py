"""User input reaches SQL only as bound values: injection strings through every filter find
exactly what a literal match finds, and the tables keep every row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import typer
from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.exc import StatementError
from typer.testing import CliRunner

from app.db import models
from app.db.base import Base
from app.query.cli import query
from app.query.queries import FeeFilter, ResultSet, TradeFilter, fees, order_trail, trades
from app.query.queries import wallet_activity as wallet
from app.recon.cli import breaks
from app.recon.lifecycle import list_breaks
from app.recon.service import reconcile
from app.reports.cli import report as report_command
from tests.integration._recon_day import NOON, D, execution, fill
from tests.integration._users_day import seed_reconciled_day

report = typer.Typer()
report.command()(report_command)

# Stored as data too (an account, an order id, a wallet, a market, a break key): a literal
# match must find those rows, and only those.
HOSTILE = "x' OR '1'='1' --"
INJECTIONS = (
    HOSTILE,
    "' OR 1=1 --",
    "'; DROP TABLE execution; --",
    "ACC1' --",  # a real account, then a comment: must not match ACC1
    "ACC1'; DELETE FROM recon_break; --",
    "' UNION SELECT NULL, NULL, NULL --",
    "%",  # LIKE wildcards mean nothing to an equality
    "_CC1",
    "$$; DROP TABLE order_filled; $$",
    "\\'; SELECT pg_sleep(30); --",
    "\u2019 OR \u20181\u2019=\u20181",  # typographic quotes
    "\u02bc; TRUNCATE fee_refund; --",  # a modifier letter that looks like a quote
    ":order_id",  # SQLAlchemy bind syntax, as a value
    "0x' OR TRUE --",
    "A" * 100_000,
)


def _hostile_rows(conn: Connection) -> None:
    """An execution, a maker fill and a break whose identifying values are HOSTILE."""
    conn.execute(
        insert(models.Execution.__table__),
        [
            {
                **execution("E-HOSTILE", account=HOSTILE, side="SIDE_BUY", at=NOON),
                "order_id": HOSTILE,
                "source": "dropcopy",
            }
        ],
    )
    maker = fill("txH", 1, "h1", role="maker", shares=1_000_000, user=HOSTILE, fee="0.001")
    conn.execute(
        insert(models.OrderFilled.__table__),
        [{**maker, "condition_id": HOSTILE, "market_slug": None}],
    )
    conn.execute(
        insert(models.Break.__table__),
        [
            {
                "kind": "trade_busted",
                "business_date": D,
                "key": HOSTILE,
                "severity": "low",
                "details": {},
            }
        ],
    )


def _counts(conn: Connection) -> dict[str, int]:
    tables = [t.name for t in Base.metadata.sorted_tables]
    return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in tables}


def _refs(result: ResultSet, column: str) -> list[Any]:
    return sorted(str(r[column]) for r in result.records())


def test_injection_strings_through_every_query_filter(engine: Engine, guarantee: Any) -> None:
    seed_reconciled_day(engine)
    with engine.begin() as conn:
        _hostile_rows(conn)
    reconcile(engine, D, report=None)  # net fees per account, wallet and market include HOSTILE

    big = 10**6
    with engine.connect() as conn:
        before = _counts(conn)
        every_trade = trades(conn, TradeFilter(limit=big)).records()
        every_fee = fees(conn, FeeFilter(limit=big)).records()
        now = datetime.now(UTC)
        every_break = list_breaks(conn, now=now)

        # What an equality on the raw value gives, computed here rather than by the database.
        exchange = [r for r in every_trade if r["venue"] == "exchange"]
        chain = [r for r in every_trade if r["venue"] == "chain"]
        literal: dict[str, Callable[[str], list[Any]]] = {
            "trades --account": lambda v: sorted(r["ref"] for r in exchange if r["party"] == v),
            "trades --symbol": lambda v: sorted(r["ref"] for r in exchange if r["market"] == v),
            "trades --market": lambda v: sorted(r["ref"] for r in chain if r["market"] == v),
            "trades --wallet": lambda v: sorted(
                r["ref"] for r in chain if v in (r["party"], r["counterparty"])
            ),
            "fees --key": lambda v: sorted(str(r) for r in every_fee if r["scope_key"] == v),
            "breaks list --kind": lambda v: sorted(b.id for b in every_break if b.kind == v),
        }
        actual: dict[str, Callable[[str], list[Any]]] = {
            "trades --account": lambda v: _refs(trades(conn, TradeFilter(account=v)), "ref"),
            "trades --symbol": lambda v: _refs(trades(conn, TradeFilter(symbol=v)), "ref"),
            "trades --market": lambda v: _refs(trades(conn, TradeFilter(market=v)), "ref"),
            "trades --wallet": lambda v: _refs(trades(conn, TradeFilter(wallet=v)), "ref"),
            "fees --key": lambda v: sorted(
                str(r) for r in fees(conn, FeeFilter(key=v, limit=big)).records()
            ),
            "breaks list --kind": lambda v: sorted(
                b.id for b in list_breaks(conn, now=now, kind=v)
            ),
        }
        # The hostile order's execution, and the breaks on the order or on its execution.
        hostile_trail = sorted(
            [("execution", "E-HOSTILE")]
            + [("break", b.key) for b in every_break if b.key in (HOSTILE, "E-HOSTILE")]
        )
        assert ("break", HOSTILE) in hostile_trail
        tried = 0
        for value in INJECTIONS:
            for name, run in actual.items():
                assert run(value) == literal[name](value), (name, value[:40])
                tried += 1
            # No unfiltered form to compare with: what they must find is known from the data.
            trail = order_trail(conn, value).records()
            assert sorted((r["record"], r["ref"]) for r in trail) == (
                hostile_trail if value == HOSTILE else []
            )
            activity = [r["activity"] for r in wallet(conn, value).records()]
            assert activity == (["fill_as_maker"] if value == HOSTILE else [])
            tried += 2

        # The hostile values really are in the data, so the comparisons above were not all empty.
        assert literal["trades --account"](HOSTILE) == ["E-HOSTILE"]
        assert len(literal["trades --wallet"](HOSTILE)) == 1
        assert literal["trades --market"](HOSTILE) == literal["trades --wallet"](HOSTILE)
        assert len(literal["fees --key"](HOSTILE)) >= 2  # account and wallet
        assert literal["trades --account"]("ACC1")

        # A NUL cannot be stored in text, so nothing can match it: refused before any SQL runs.
        for filter_ in (TradeFilter(account="\x00"), TradeFilter(wallet="A\x00' OR 1=1")):
            with pytest.raises(StatementError, match="NUL"):
                trades(conn, filter_)
            conn.rollback()
            tried += 1
        assert _counts(conn) == before
    guarantee(
        "Security",
        "SQL injection strings through every query filter",
        tried,
        "found exactly what a literal match finds; no table changed",
    )


# Free-text options: the value is passed on as it is and matches nothing.
AS_VALUES: list[tuple[typer.Typer, list[str]]] = [
    (query, ["trades", "--account", "' OR 1=1 --", "--json"]),
    (query, ["trades", "--symbol", "SYM' --", "--json"]),
    (query, ["trades", "--market", "0x' OR 1=1 --", "--json"]),
    (query, ["trades", "--wallet", "0x' OR 1=1 --", "--json"]),
    (query, ["fees", "--key", "'; DROP TABLE net_fee_daily; --", "--json"]),
    (query, ["wallet", "0x'; DELETE FROM order_filled; --", "--json"]),
    (query, ["order-trail", "O-E1' OR '1'='1", "--json"]),
    (breaks, ["list", "--kind", "execution_quantity_mismatch' OR '1'='1", "--json"]),
]
# Typed options (dates, times, enums, numbers): refused as a usage error, never sent.
REFUSED: list[tuple[typer.Typer, list[str]]] = [
    (report, ["--date", "2026-05-04' OR 1=1 --"]),
    (report, ["--date", "2026-05-04; DROP TABLE recon_report"]),
    (breaks, ["list", "--date", "2026-05-04' --"]),
    (breaks, ["list", "--status", "open' OR '1'='1"]),
    (breaks, ["list", "--age", "0-1' --"]),
    (query, ["trades", "--start", "2026-05-04' OR 1=1 --"]),
    (query, ["trades", "--date", "2026-05-04' --"]),
    (query, ["trades", "--side", "BUY' --"]),
    (query, ["trades", "--min-notional", "0 OR 1=1"]),
    (query, ["fees", "--end", "2026-05-04'; --"]),
    (query, ["fees", "--scope", "account' --"]),
    (query, ["wallet", "0xm1", "--start", "' OR 1=1 --"]),
]


def test_cli_options_carry_injection_as_values_or_refuse_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, guarantee: Any
) -> None:
    seed_reconciled_day(engine)
    monkeypatch.setattr("app.db.session.get_engine", lambda: engine)
    runner = CliRunner()
    with engine.connect() as conn:
        before = _counts(conn)
    # The same command with a real value finds something: an empty answer below means no match.
    real = runner.invoke(breaks, ["list", "--kind", "execution_quantity_mismatch", "--json"])
    assert [b["key"] for b in orjson.loads(real.output)] == ["E3"]
    for app, args in AS_VALUES:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert orjson.loads(result.output) == [], args
    for app, args in REFUSED:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
    with engine.connect() as conn:
        assert _counts(conn) == before
    guarantee(
        "Security",
        "SQL injection strings in `recon query`, `breaks list` and `report` options",
        len(AS_VALUES) + len(REFUSED),
        "free text matched literally (nothing); dates, enums and numbers refused; no table changed",
    )
