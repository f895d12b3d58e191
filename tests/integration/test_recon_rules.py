"""Each reconciliation rule against hand-made rows on a real Postgres: one change to a clean day
gives exactly the one break it should, with that key, and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, insert, make_url, text

from app.db import models
from app.db.session import make_engine
from app.domain.breaks import BreakKind, RuleConfig, exceeds_tolerance
from app.recon.service import reconcile

from ._recon_day import (
    NOON,
    D,
    Rows,
    clean_day,
    execution,
    fill,
    gap,
    h,
    legacy,
    load,
    pending,
    refund,
    rehashed,
    shifted,
    trade,
)

AS_OF = NOON + timedelta(hours=1)


def run(engine: Engine, rows: Rows, *, report: bool = True, later: int = 0) -> set[tuple[str, str]]:
    """Load the rows `later` days after D, reconcile that day, return its open breaks."""
    day = D + timedelta(days=later)
    with engine.begin() as conn:
        load(conn, shifted(rows, later), report=report, day=day)
    reconcile(engine, day, report=None, as_of=AS_OF + timedelta(days=later), rules=RuleConfig())
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT kind, key FROM recon_break WHERE status = 'open' AND business_date = :d"),
            {"d": day},
        )
        return {(row.kind, row.key) for row in found}


@pytest.fixture(scope="module")
def shared(pg_server_url: str, template_database: str) -> Iterator[Engine]:
    """One database for the many one-change cases, each on its own business date: the rules
    work per date, and a database per case would cost more than the cases themselves."""
    name = f"recon_rules_{uuid.uuid4().hex[:12]}"
    admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    engine = make_engine(make_url(pg_server_url).set(database=name).render_as_string(False))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def only(rows: Rows, table: str, key: str, value: object) -> dict[str, object]:
    matches = [row for row in rows[table] if row[key] == value]
    assert len(matches) == 1, (table, key, value)
    return matches[0]


def drop(rows: Rows, table: str, key: str, value: object) -> None:
    rows[table] = [row for row in rows[table] if row[key] != value]


def test_a_clean_day_has_no_breaks(engine: Engine) -> None:
    assert run(engine, clean_day()) == set()


def test_net_fees_are_stored_per_account_wallet_and_market(engine: Engine) -> None:
    run(engine, clean_day())
    with engine.connect() as conn:
        fees = {
            (row.scope, row.scope_key, row.source): (
                row.gross_fee,
                row.refund,
                row.net_fee,
                row.fills,
            )
            for row in conn.execute(text("SELECT * FROM net_fee_daily"))
        }
    # Commission dollars = notional units / (price_scale 100 * fractional_qty_scale 100).
    assert fees[("account", "ACC1", "exchange")] == (
        Decimal("0.001"),
        Decimal("0.0001"),
        Decimal("0.0009"),
        2,
    )
    assert fees[("account", "ACC2", "exchange")] == (
        Decimal("0.0004"),
        Decimal("0.0002"),
        Decimal("0.0002"),
        2,
    )
    assert fees[("market", "SYM", "exchange")] == (
        Decimal("0.0014"),
        Decimal("0.0003"),
        Decimal("0.0011"),
        4,
    )
    # V1 maker fees net of their refunds; the V2 fee is already net; maker rows only.
    assert fees[("wallet", "0xm1", "chain")] == (
        Decimal("0.0092"),
        Decimal("0.006"),
        Decimal("0.0032"),
        2,
    )
    assert fees[("wallet", "0xm2", "chain")] == (
        Decimal("0.012"),
        Decimal("0.0115"),
        Decimal("0.0005"),
        1,
    )
    assert fees[("market", h("market"), "chain")] == (
        Decimal("0.0212"),
        Decimal("0.0175"),
        Decimal("0.0037"),
        3,
    )
    assert len(fees) == 6


def test_fills_without_an_instrument_are_counted_not_priced(engine: Engine) -> None:
    rows = clean_day()
    rows["instrument"] = []
    with engine.begin() as conn:
        load(conn, rows)
    summary = reconcile(engine, D, report=None, as_of=AS_OF, rules=RuleConfig())
    assert summary.fees == {"exchange_rows": 0, "chain_rows": 3, "unpriced_exchange_fills": 4}


def _missing_from_stream(rows: Rows) -> None:
    drop(rows, "execution", "id", "E5")


def _missing_from_report(rows: Rows) -> None:
    drop(rows, "report_execution", "id", "E5")


def _quantity(rows: Rows) -> None:
    only(rows, "report_execution", "id", "E1")["last_shares"] = 90


def _price(rows: Rows) -> None:
    only(rows, "report_execution", "id", "E2")["last_px"] = 51


def _fee(rows: Rows) -> None:
    only(rows, "report_execution", "id", "E2")["commission_notional_collected"] = -3


def _state(rows: Rows) -> None:
    only(rows, "trade_capture", "id", "T1")["state"] = "TRADE_STATE_NEW"


def _reverse_t2_positions(rows: Rows, *, in_report: bool) -> None:
    """T2 busted: ACC1 keeps only its T1 buy, ACC2 only its T1 sell."""
    tables = ("position_change", "report_position") if in_report else ("position_change",)
    for table in tables:
        acc1 = only(rows, table, "account", "ACC1")
        acc1.update(net_position=100, qty_bought=100, qty_sold=0)
        acc2 = only(rows, table, "account", "ACC2")
        acc2.update(net_position=-100, qty_bought=0, qty_sold=100)


def _busted_both(rows: Rows) -> None:
    for table in ("trade_capture", "report_trade"):
        only(rows, table, "id", "T2").update(state="TRADE_STATE_BUSTED", busted=True)
    _reverse_t2_positions(rows, in_report=True)


def _busted_stream_only(rows: Rows) -> None:
    only(rows, "trade_capture", "id", "T2").update(state="TRADE_STATE_BUSTED", busted=True)
    _reverse_t2_positions(rows, in_report=True)


def _leg_missing(rows: Rows) -> None:
    drop(rows, "execution", "id", "E4")
    drop(rows, "report_execution", "id", "E4")
    for table in ("position_change", "report_position"):
        only(rows, table, "account", "ACC1").update(net_position=100, qty_sold=0)


def _position_change(rows: Rows) -> None:
    only(rows, "position_change", "account", "ACC1")["net_position"] = 61


def _position_report(rows: Rows) -> None:
    only(rows, "report_position", "account", "ACC2")["net_position"] = -59


def _maker_taker(rows: Rows) -> None:
    # Its pending aggregate (the makers' sum) now drifts too: that is the same fact, not a break.
    only(rows, "order_filled", "order_hash", h("at"))["shares"] = 5_100_000


def _taker_missing(rows: Rows) -> None:
    drop(rows, "order_filled", "order_hash", h("at"))
    drop(rows, "order_filled_pending", "order_hash", h("at"))


def _unconfirmed(rows: Rows) -> None:
    dropped = fill("txC", 1, "c1", role="maker", shares=1_000_000, user="0xm3")
    rows["order_filled_pending"].append(pending(dropped, event_time=AS_OF - timedelta(minutes=11)))


def _drift(rows: Rows) -> None:
    only(rows, "order_filled_pending", "order_hash", h("a2"))["price"] = Decimal("0.41")


def _orphan(rows: Rows) -> None:
    maker = only(rows, "order_filled", "order_hash", h("a1"))
    rows["fee_refund"].append({**refund(maker, "0.008"), "order_hash": h("zz")})


def _orphan_of_a_lost_transaction(rows: Rows) -> None:
    """A refund whose whole transaction we never saw: no fill, no pending event."""
    maker = fill("txQ", 1, "q1", role="maker", shares=1_000_000, user="0xm3", fee="0.008")
    rows["fee_refund"].append(refund(maker, "0.006"))


def _arithmetic(rows: Rows) -> None:
    only(rows, "fee_refund", "order_hash", h("a1"))["refund"] = Decimal("0.007")


def _feed_missing(rows: Rows) -> None:
    drop(rows, "feed_trade", "order_hash", h("a2"))


def _feed_mismatch_price(rows: Rows) -> None:
    only(rows, "feed_trade", "order_hash", h("a1"))["price"] = Decimal("0.41")


def _feed_mismatch_shares(rows: Rows) -> None:
    row = only(rows, "feed_trade", "order_hash", h("b1"))
    row["shares"] = row["shares_normalized"] = Decimal("1.51")


CASES: dict[str, tuple[Callable[[Rows], None], BreakKind, str]] = {
    "missing_from_stream": (_missing_from_stream, BreakKind.EXECUTION_MISSING_FROM_STREAM, "E5"),
    "missing_from_report": (_missing_from_report, BreakKind.EXECUTION_MISSING_FROM_REPORT, "E5"),
    "quantity": (_quantity, BreakKind.EXECUTION_QUANTITY_MISMATCH, "E1"),
    "price": (_price, BreakKind.EXECUTION_PRICE_MISMATCH, "E2"),
    "fee": (_fee, BreakKind.EXECUTION_FEE_MISMATCH, "E2"),
    "state": (_state, BreakKind.TRADE_STATE_MISMATCH, "T1"),
    "busted_both_sides": (_busted_both, BreakKind.TRADE_BUSTED, "T2"),
    "busted_one_side": (_busted_stream_only, BreakKind.TRADE_STATE_MISMATCH, "T2"),
    "leg_missing": (_leg_missing, BreakKind.TRADE_LEG_MISSING, "E4"),
    "position_change": (_position_change, BreakKind.POSITION_MISMATCH, "ACC1|SYM"),
    "position_report": (_position_report, BreakKind.POSITION_MISMATCH, "ACC2|SYM"),
    "maker_taker": (_maker_taker, BreakKind.CHAIN_MAKER_TAKER_MISMATCH, h("txA")),
    "taker_missing": (_taker_missing, BreakKind.CHAIN_TAKER_MISSING, h("txA")),
    "unconfirmed": (
        _unconfirmed,
        BreakKind.CHAIN_PENDING_UNCONFIRMED,
        f"{h('txC')}|{h('c1')}",
    ),
    "drift": (_drift, BreakKind.CHAIN_PENDING_DRIFT, f"{h('txA')}|{h('a2')}"),
    "orphan": (_orphan, BreakKind.CHAIN_REFUND_ORPHAN, h("zz")),
    "orphan_of_a_lost_transaction": (
        _orphan_of_a_lost_transaction,
        BreakKind.CHAIN_REFUND_ORPHAN,
        h("q1"),
    ),
    "arithmetic": (_arithmetic, BreakKind.CHAIN_REFUND_ARITHMETIC, h("a1")),
    "feed_missing": (_feed_missing, BreakKind.FEED_PROVIDER_MISSING, f"{h('txA')}|{h('a2')}"),
    "feed_price": (_feed_mismatch_price, BreakKind.FEED_PROVIDER_MISMATCH, f"{h('txA')}|{h('a1')}"),
    "feed_shares": (
        _feed_mismatch_shares,
        BreakKind.FEED_PROVIDER_MISMATCH,
        f"{h('txB')}|{h('b1')}",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_change_gives_exactly_its_break(shared: Engine, case: str) -> None:
    change, kind, key = CASES[case]
    rows = clean_day()
    change(rows)
    # Three days apart: rules look at the neighbouring days too (legs, refunds).
    later = 3 * (1 + sorted(CASES).index(case))
    assert run(shared, rows, later=later) == {(str(kind), rehashed(key, later))}


def test_every_break_kind_has_a_case() -> None:
    assert {kind for _, kind, _ in CASES.values()} == set(BreakKind)


def test_a_stream_gap_is_backfilled_from_the_report_not_flagged(engine: Engine) -> None:
    rows = clean_day()
    drop(rows, "execution", "id", "E5")
    rows["gap_window"].append(
        gap("dropcopy.executions", NOON - timedelta(seconds=30), NOON + timedelta(seconds=30))
    )
    assert run(engine, rows) == set()
    with engine.connect() as conn:
        source = conn.execute(text("SELECT source FROM execution WHERE id = 'E5'")).scalar_one()
        backfilled = conn.execute(text("SELECT backfilled_at FROM gap_window")).scalar_one()
    assert source == "report_backfill"
    assert backfilled is not None


def _lost_in_orders_gap(rows: Rows) -> None:
    """The orders feed dropped while txA was mined: a maker's confirmed fill never came."""
    drop(rows, "order_filled", "order_hash", h("a2"))


def test_a_stream_gap_ends_where_the_stream_delivered_again(engine: Engine) -> None:
    """Ingest may record a resumed-by-time gap as lasting until its wall clock's now; the
    stream's first new execution after the gap was recorded shows where it really resumed."""
    detected = datetime(2026, 11, 20, tzinfo=UTC)
    rows = clean_day()
    for row in rows["execution"]:
        late = row["transact_time"] > NOON
        row["received_at"] = detected + (timedelta(seconds=1) if late else -timedelta(days=1))
    drop(rows, "execution", "id", "E5")  # at NOON: inside the gap
    after = execution(
        "E6",
        account="ACC2",
        side="SIDE_SELL",
        exec_type="EXECUTION_TYPE_NEW",
        at=NOON + timedelta(minutes=2),
    )
    rows["report_execution"].append(after)  # after the stream's first new execution
    rows["gap_window"].append(
        {
            **gap("dropcopy.executions[all]", NOON - timedelta(minutes=1), detected),
            "detected_at": detected,
        }
    )
    assert run(engine, rows) == {(str(BreakKind.EXECUTION_MISSING_FROM_STREAM), "E6")}


@pytest.mark.parametrize(
    ("change", "source"),
    [
        # would be a maker/taker mismatch, an unconfirmed pending event and an orphan refund
        (_lost_in_orders_gap, "feed.orders"),
        # the refund arrived with (after) fills of NOON, inside the gap
        (_orphan_of_a_lost_transaction, "feed.orders"),
        (_feed_missing, "feed.trades"),
        (_feed_mismatch_price, "feed.orders"),
        (_unconfirmed, "feed.orders"),
    ],
)
def test_a_feed_gap_explains_what_it_could_have_lost(
    engine: Engine, change: Callable[[Rows], None], source: str
) -> None:
    rows = clean_day()
    change(rows)
    rows["gap_window"].append(
        gap(source, AS_OF - timedelta(minutes=15), AS_OF - timedelta(minutes=5))
        if change is _unconfirmed
        else gap(source, NOON - timedelta(seconds=10), NOON + timedelta(seconds=10))
    )
    assert run(engine, rows) == set()


def test_the_drift_rule_applies_the_domain_tolerance(shared: Engine) -> None:
    """PENDING_DRIFT's SQL test is `exceeds_tolerance`, value for value."""
    values = [Decimal(v) for v in ("0", "0.4", "0.404", "0.4041", "0.396", "2000000", "1979999")]
    pairs = [(e, a) for e in values for a in values]
    with shared.connect() as conn:
        exceeds = conn.execute(
            text(
                "SELECT abs(a - e) > CAST(:t AS numeric) * abs(e)"
                " FROM unnest(CAST(:e AS numeric[]), CAST(:a AS numeric[])) AS v(e, a)"
            ),
            {"t": Decimal("0.01"), "e": [e for e, _ in pairs], "a": [a for _, a in pairs]},
        ).scalars()
        assert list(exceeds) == [exceeds_tolerance(e, a, Decimal("0.01")) for e, a in pairs]


def test_without_a_gap_a_lost_fill_is_three_breaks(engine: Engine) -> None:
    rows = clean_day()
    _lost_in_orders_gap(rows)
    assert run(engine, rows) == {
        (str(BreakKind.CHAIN_MAKER_TAKER_MISMATCH), h("txA")),
        (str(BreakKind.CHAIN_PENDING_UNCONFIRMED), f"{h('txA')}|{h('a2')}"),
        (str(BreakKind.CHAIN_REFUND_ORPHAN), h("a2")),
    }


def _lost_transaction_refund_in_a_second_batch(
    rows: Rows, *, sent_with: datetime, gap_from: datetime, gap_to: datetime
) -> None:
    """The day in one ingest batch; then a batch with a refund whose whole transaction (txQ)
    the orders feed lost, and a fill (txL) sent at `sent_with`; the feed's gap window."""
    written = datetime(2026, 11, 20, tzinfo=UTC)
    for table in ("order_filled", "order_filled_pending", "fee_refund", "feed_trade"):
        for row in rows[table]:
            row["received_at"] = written
    _orphan_of_a_lost_transaction(rows)
    second = {"received_at": written + timedelta(seconds=1)}
    rows["fee_refund"][-1].update(second)
    maker = fill("txL", 1, "l1", role="maker", shares=10**6, user="0xm3", version=2, at=sent_with)
    taker = fill("txL", 2, "lt", role="taker", shares=10**6, user="0xt", version=2, at=sent_with)
    rows["order_filled"] += [maker | second, taker | second]
    rows["feed_trade"].append(legacy(maker) | second)
    rows["gap_window"].append(gap("feed.orders", gap_from, gap_to))


def test_an_orphan_refund_after_a_feed_gap_is_timed_by_what_arrived_before_it(
    engine: Engine,
) -> None:
    """The refund comes in the first batch after the reconnect, with fills sent well after
    the gap closed: they must not date it."""
    rows = clean_day()
    _lost_transaction_refund_in_a_second_batch(
        rows,
        sent_with=NOON + timedelta(minutes=5),
        gap_from=NOON - timedelta(seconds=10),
        gap_to=NOON + timedelta(seconds=10),
    )
    assert run(engine, rows) == set()


def test_an_orphan_refund_delivered_just_before_a_feed_gap_is_explained_by_it(
    engine: Engine,
) -> None:
    """A venue that reorders sent the refund ahead of its fill, and the feed dropped right
    after the refund's batch: what arrived before that batch is older than the gap."""
    rows = clean_day()
    _lost_transaction_refund_in_a_second_batch(
        rows,
        sent_with=NOON + timedelta(seconds=20),
        gap_from=NOON + timedelta(seconds=10),
        gap_to=NOON + timedelta(minutes=3),
    )
    assert run(engine, rows) == set()


def test_a_refund_whose_fill_is_on_the_next_day_is_not_an_orphan(engine: Engine) -> None:
    rows = clean_day()
    maker = fill("txZ", 1, "zz", role="maker", shares=1_000_000, user="0xm3", fee="0.008")
    rows["order_filled"].append({**maker, "business_date": D + timedelta(days=1)})
    rows["fee_refund"].append(refund(maker, "0.008"))
    assert run(engine, rows) == set()


def test_a_pending_event_within_its_grace_is_not_yet_a_break(engine: Engine) -> None:
    rows = clean_day()
    young = fill("txC", 1, "c1", role="maker", shares=1_000_000, user="0xm3")
    rows["order_filled_pending"].append(pending(young, event_time=AS_OF - timedelta(minutes=9)))
    assert run(engine, rows) == set()


def test_without_a_report_snapshot_the_report_rules_do_not_run(engine: Engine) -> None:
    rows = clean_day()
    _busted_both(rows)
    rows["report_execution"] = []
    rows["report_trade"] = []
    rows["report_position"] = []
    # The stream alone says T2 is busted; nothing can be missing from a report never taken.
    assert run(engine, rows, report=False) == {(str(BreakKind.TRADE_BUSTED), "T2")}


# --- intraday: sources are compared only up to their horizon ---------------------------------

DURING_THE_DAY = NOON + timedelta(hours=6)  # the wall clock of an intraday run


def _checkpoints(engine: Engine, marks: dict[str, datetime]) -> None:
    """Where each stream (and shard) of the ingest workers has got to."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO stream_checkpoint (stream, last_event_time) VALUES (:s, :t)"
                " ON CONFLICT (stream) DO UPDATE SET last_event_time = EXCLUDED.last_event_time"
            ),
            [{"s": stream, "t": at} for stream, at in marks.items()],
        )


def _intraday(engine: Engine, now: datetime = DURING_THE_DAY) -> set[tuple[str, str]]:
    reconcile(engine, D, report=None, as_of=AS_OF, rules=RuleConfig(), now=now)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT kind, key FROM recon_break WHERE status = 'open'"))
        return {(row.kind, row.key) for row in found}


def _day_with_later_report_executions() -> Rows:
    """E5 truly missing from the stream; E6 and E7, later in the day, in the Report API only."""
    rows = clean_day()
    _missing_from_stream(rows)
    for exec_id, minutes in (("E6", 30), ("E7", 40)):
        rows["report_execution"].append(
            execution(
                exec_id,
                account="ACC1",
                side="SIDE_BUY",
                exec_type="EXECUTION_TYPE_NEW",
                at=NOON + timedelta(minutes=minutes),
            )
        )
    return rows


MISSING = str(BreakKind.EXECUTION_MISSING_FROM_STREAM)


def test_intraday_what_the_stream_has_not_delivered_yet_is_not_missing(engine: Engine) -> None:
    with engine.begin() as conn:
        load(conn, _day_with_later_report_executions())
    # The slowest shard bounds the stream: it has delivered up to NOON + 10 min.
    streamed = NOON + timedelta(minutes=50)
    _checkpoints(
        engine,
        {
            "dropcopy.executions[symbols=A]": streamed,
            "dropcopy.executions[symbols=B]": NOON + timedelta(minutes=10),
            "dropcopy.trade_captures[all]": streamed,
            "dropcopy.position_changes[all]": streamed,
        },
    )
    assert _intraday(engine) == {(MISSING, "E5")}
    with engine.connect() as conn:
        counts = conn.execute(
            text("SELECT counts FROM recon_run WHERE job = 'reconcile' ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    assert counts["horizons"]["executions"] == (NOON + timedelta(minutes=9)).isoformat()

    # E7 arrives; then every stream is past the day's end (the nightly run, whatever the clock).
    e7 = only(_day_with_later_report_executions(), "report_execution", "id", "E7")
    with engine.begin() as conn:
        conn.execute(insert(models.Execution), [{**e7, "source": "dropcopy"}])
    past = datetime(2026, 5, 5, 0, 5, tzinfo=UTC)
    _checkpoints(
        engine,
        {
            "dropcopy.executions[symbols=A]": past,
            "dropcopy.executions[symbols=B]": past,
            "dropcopy.trade_captures[all]": past,
            "dropcopy.position_changes[all]": past,
        },
    )
    assert _intraday(engine, now=datetime(2026, 5, 4, 23, 59, tzinfo=UTC)) == {
        (MISSING, "E5"),
        (MISSING, "E6"),
    }


def test_intraday_breaks_beyond_a_falling_horizon_are_left_as_they_are(engine: Engine) -> None:
    with engine.begin() as conn:
        load(conn, _day_with_later_report_executions())
    streamed = {
        "dropcopy.executions[all]": NOON + timedelta(minutes=50),
        "dropcopy.trade_captures[all]": NOON + timedelta(minutes=50),
        "dropcopy.position_changes[all]": NOON + timedelta(minutes=50),
    }
    _checkpoints(engine, streamed)
    everything = {(MISSING, "E5"), (MISSING, "E6"), (MISSING, "E7")}
    assert _intraday(engine) == everything
    # A new shard starts from the beginning of the day: the horizon falls to NOON + 9 min, and
    # what lies beyond it can be neither confirmed nor cleared.
    _checkpoints(engine, {"dropcopy.executions[symbols=C]": NOON + timedelta(minutes=10)})
    assert _intraday(engine) == everything
    with engine.connect() as conn:
        actions = conn.execute(text("SELECT action FROM break_audit")).scalars().all()
        counts = conn.execute(
            text("SELECT counts FROM recon_run WHERE job = 'reconcile' ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    assert actions == ["opened"] * 3
    assert counts["deferred"] == {"executions": 2}


def test_intraday_a_trade_captured_before_its_executions_arrive_misses_no_leg(
    engine: Engine,
) -> None:
    rows = clean_day()
    later = NOON + timedelta(minutes=30)
    e8 = execution("E8", account="ACC1", side="SIDE_BUY", trade_id="T3", aggressor=True, at=later)
    e9 = execution("E9", account="ACC2", side="SIDE_SELL", trade_id="T3", at=later)
    rows["trade_capture"].append(trade("T3", e8, e9))
    with engine.begin() as conn:
        load(conn, rows)
    # The trade capture stream is ahead of the executions stream, as separate streams may be.
    _checkpoints(
        engine,
        {
            "dropcopy.executions[all]": NOON + timedelta(minutes=10),
            "dropcopy.trade_captures[all]": NOON + timedelta(minutes=50),
            "dropcopy.position_changes[all]": NOON + timedelta(minutes=50),
        },
    )
    assert _intraday(engine) == set()
    # Once the day is over, legs that never came are missing.
    day_over = datetime(2026, 5, 5, 0, 2, tzinfo=UTC)
    legs = str(BreakKind.TRADE_LEG_MISSING)
    assert _intraday(engine, now=day_over) == {(legs, "E8"), (legs, "E9")}
