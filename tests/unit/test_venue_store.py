"""The built day on disk: reproducible, cached, and serving every injected break where the ground
truth says a reconciler will find it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.domain.breaks import BreakKind
from app.venue import store as venue_store
from app.venue.model import INJECTABLE_KINDS, STREAM_NAMES, DayConfig, StreamName
from app.venue.store import VenueStore
from polymarket.v1 import enums_pb2 as pb
from polymarket.v1 import trading_pb2

CONFIG = DayConfig(seed=11, scale=0.005)
EVERYTHING = 1_000_000
FILL_TYPES = (pb.EXECUTION_TYPE_PARTIAL_FILL, pb.EXECUTION_TYPE_FILL)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VenueStore]:
    with VenueStore.build(CONFIG, tmp_path_factory.mktemp("venue") / "day.sqlite") as built:
        yield built


def payload_digest(path: Path) -> str:
    digest = hashlib.sha256()
    db = sqlite3.connect(path)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(tables):
            for row in db.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                digest.update(repr(row).encode())
    finally:
        db.close()
    return digest.hexdigest()


def breaks_of(store: VenueStore, kind: BreakKind) -> list[dict[str, object]]:
    breaks = store.truth()["breaks"]
    assert isinstance(breaks, list)
    return [b for b in breaks if b["kind"] == kind]


def keys_of(store: VenueStore, kind: BreakKind) -> set[str]:
    return {str(b["key"]) for b in breaks_of(store, kind)}


def stream_messages(store: VenueStore, name: StreamName) -> list[Any]:
    parsers = {
        "executions": trading_pb2.Execution,
        "trade_captures": trading_pb2.Trade,
        "instrument_states": trading_pb2.Instrument,
        "position_changes": trading_pb2.PositionChange,
    }
    rows = store.stream(name, 0, [], [], EVERYTHING)
    return [parsers[name].FromString(row.payload) for row in rows]


def report_executions(store: VenueStore) -> dict[str, trading_pb2.Execution]:
    payloads, after = store.search_executions(
        start_us=None,
        end_us=None,
        symbol=None,
        accounts=[],
        exec_ids=[],
        order_id=None,
        types=[],
        after_key=None,
        limit=EVERYTHING,
    )
    assert after is None
    return {e.id: e for e in map(trading_pb2.Execution.FromString, payloads)}


def report_trades(store: VenueStore) -> dict[str, trading_pb2.Trade]:
    payloads, _ = store.search_trades(
        start_us=None,
        end_us=None,
        symbol=None,
        accounts=[],
        trade_ids=[],
        states=[],
        after_key=None,
        limit=EVERYTHING,
    )
    return {t.id: t for t in map(trading_pb2.Trade.FromString, payloads)}


def feed_data(store: VenueStore, feed: str) -> list[dict[str, object]]:
    rows = (store.orders_feed if feed == "orders" else store.trades_feed)(0, EVERYTHING)
    return [orjson.loads(row.data) for row in rows]


def test_same_seed_builds_identical_payloads_and_truth_another_seed_differs(
    tmp_path: Path, store: VenueStore
) -> None:
    again = VenueStore.build(CONFIG, tmp_path / "again.sqlite")
    other = VenueStore.build(DayConfig(seed=12, scale=0.005), tmp_path / "other.sqlite")
    try:
        assert payload_digest(again.path) == payload_digest(store.path)
        assert again.path.read_bytes() != b""
        assert again.truth() == store.truth()
        assert payload_digest(other.path) != payload_digest(store.path)
        assert other.truth()["breaks"] != store.truth()["breaks"]
    finally:
        again.close()
        other.close()


def test_the_chain_worker_process_builds_the_same_file(
    tmp_path: Path, store: VenueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    workers: list[venue_store._ChainWorker] = []

    class CountedWorker(venue_store._ChainWorker):
        def __init__(self, config: DayConfig) -> None:
            super().__init__(config)
            workers.append(self)

    monkeypatch.setattr(venue_store, "_ChainWorker", CountedWorker)
    progress: list[int] = []
    forked = VenueStore.build(CONFIG, tmp_path / "forked.sqlite", progress.append, parallel=True)
    try:
        assert len(workers) == 1
        assert workers[0].process.exitcode == 0
        assert payload_digest(forked.path) == payload_digest(store.path)
        assert progress == sorted(progress)
        counts = forked.truth()["counts"]
        assert isinstance(counts, dict)
        tables = (*STREAM_NAMES, "orders_feed", "trades_feed", "report_executions")
        tables += ("report_trades", "report_orders", "positions")
        assert progress[-1] == sum(counts[table] for table in tables)
    finally:
        forked.close()


def test_build_reuses_a_file_of_the_same_config_and_replaces_another(tmp_path: Path) -> None:
    path = tmp_path / "cached.sqlite"
    config = DayConfig(seed=2, scale=0.003)
    VenueStore.build(config, path).close()
    built_at = path.stat().st_mtime_ns
    calls: list[int] = []
    VenueStore.build(config, path, calls.append).close()
    assert calls == []
    assert path.stat().st_mtime_ns == built_at
    with VenueStore.build(DayConfig(seed=3, scale=0.003), path) as rebuilt:
        assert rebuilt.config.seed == 3
    with VenueStore.open(path) as reopened:
        assert reopened.config == DayConfig(seed=3, scale=0.003)
    assert sorted(p.name for p in tmp_path.iterdir() if "building" in p.name) == []


def test_truth_is_sorted_and_counts_what_is_served(store: VenueStore, tmp_path: Path) -> None:
    truth = store.truth()
    breaks = truth["breaks"]
    assert isinstance(breaks, list)
    assert breaks == sorted(breaks, key=lambda b: (b["kind"], b["key"]))
    assert {b["kind"] for b in breaks} == {str(k) for k in INJECTABLE_KINDS}
    counts = truth["counts"]
    assert isinstance(counts, dict)
    for name in STREAM_NAMES:
        assert counts[name] == store.stream_length(name) == len(stream_messages(store, name))
    assert counts["orders_feed"] == store.feed_length("orders") == len(feed_data(store, "orders"))
    assert counts["trades_feed"] == store.feed_length("trades")
    assert counts["report_executions"] == len(report_executions(store))
    assert (truth["seed"], truth["business_date"], truth["scale"]) == (11, "2026-05-04", 0.005)
    store.write_truth(tmp_path / "truth.json")
    assert orjson.loads((tmp_path / "truth.json").read_bytes()) == truth


def test_streams_are_contiguous_time_ordered_and_filterable(store: VenueStore) -> None:
    for name in STREAM_NAMES:
        rows = store.stream(name, 0, [], [], EVERYTHING)
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert [r.event_time_us for r in rows] == sorted(r.event_time_us for r in rows)
        middle = rows[len(rows) // 2]
        after = store.first_seq_at_or_after(name, middle.event_time_us)
        assert store.stream(name, after, [], [], 1)[0] == middle
        assert store.first_seq_at_or_after(name, rows[-1].event_time_us + 1) == len(rows)
    rows = store.stream("executions", 0, [], [], EVERYTHING)
    symbol, firm = rows[0].symbol, rows[0].firm
    picked = store.stream("executions", 0, [symbol], [firm], EVERYTHING)
    assert picked == [r for r in rows if r.symbol == symbol and r.firm == firm]
    first_page = store.stream("executions", 0, [symbol], [], 5)
    assert first_page == [r for r in rows if r.symbol == symbol][:5]
    # a trade capture reaches both firms of the trade
    for row in store.stream("trade_captures", 0, [], ["FIRM02"], EVERYTHING):
        trade = trading_pb2.Trade.FromString(row.payload)
        assert "FIRM02" in (trade.aggressor.order.account[:6], trade.passive.order.account[:6])
    assert {r.firm for r in store.stream("instrument_states", 0, [], [], EVERYTHING)} == {""}
    assert store.firms() == ["FIRM01", "FIRM02", "FIRM03"]
    assert {r.symbol for r in rows} <= set(store.symbols())
    assert len(store.symbols()) == CONFIG.instruments
    assert len(store.accounts()) == CONFIG.firms * CONFIG.accounts_per_firm


def test_executions_break_where_the_truth_says(store: VenueStore) -> None:
    streamed = {e.id: e for e in stream_messages(store, "executions")}
    reported = report_executions(store)
    assert set(reported) - set(streamed) == keys_of(store, BreakKind.EXECUTION_MISSING_FROM_STREAM)
    assert set(streamed) - set(reported) == keys_of(store, BreakKind.EXECUTION_MISSING_FROM_REPORT)
    for kind, field in (
        (BreakKind.EXECUTION_QUANTITY_MISMATCH, "last_shares"),
        (BreakKind.EXECUTION_PRICE_MISMATCH, "last_px"),
        (BreakKind.EXECUTION_FEE_MISMATCH, "commission_notional_collected"),
    ):
        differing = {
            exec_id
            for exec_id in set(streamed) & set(reported)
            if getattr(streamed[exec_id], field) != getattr(reported[exec_id], field)
        }
        assert differing == keys_of(store, kind), kind
    for exec_id in keys_of(store, BreakKind.EXECUTION_MISSING_FROM_STREAM):
        payloads, _ = store.search_executions(
            start_us=None,
            end_us=None,
            symbol=None,
            accounts=[],
            exec_ids=[exec_id],
            order_id=None,
            types=[],
            after_key=None,
            limit=10,
        )
        assert [trading_pb2.Execution.FromString(p).id for p in payloads] == [exec_id]


def test_trades_break_where_the_truth_says(store: VenueStore) -> None:
    streamed = {e.id for e in stream_messages(store, "executions")}
    reported_execs = report_executions(store)
    final: dict[str, trading_pb2.Trade] = {}
    sends: Counter[str] = Counter()
    for trade in stream_messages(store, "trade_captures"):
        assert isinstance(trade, trading_pb2.Trade)
        final[trade.id] = trade
        sends[trade.id] += 1
    reported = report_trades(store)
    assert set(final) == set(reported)
    mismatched = {t for t in final if final[t].state != reported[t].state}
    assert mismatched == keys_of(store, BreakKind.TRADE_STATE_MISMATCH)
    busted = {t for t in final if final[t].state == pb.TRADE_STATE_BUSTED}
    assert busted == keys_of(store, BreakKind.TRADE_BUSTED)
    assert all(reported[t].state == pb.TRADE_STATE_BUSTED and sends[t] == 2 for t in busted)
    missing_legs = set()
    for trade in final.values():
        for leg in (trade.aggressor, trade.passive):
            if leg.id not in streamed and leg.id not in reported_execs:
                missing_legs.add(leg.id)
    assert missing_legs == keys_of(store, BreakKind.TRADE_LEG_MISSING)


def test_positions_break_where_the_truth_says(store: VenueStore) -> None:
    busted = {
        t.id
        for t in stream_messages(store, "trade_captures")
        if isinstance(t, trading_pb2.Trade) and t.state == pb.TRADE_STATE_BUSTED
    }
    fills: Counter[str] = Counter()
    for e in stream_messages(store, "executions"):
        assert isinstance(e, trading_pb2.Execution)
        if e.type in FILL_TYPES and e.trade_id not in busted:
            sign = 1 if e.order.side == pb.SIDE_BUY else -1
            fills[f"{e.order.account}|{e.order.symbol}"] += sign * e.last_shares
    last: dict[str, int] = {}
    for change in stream_messages(store, "position_changes"):
        assert isinstance(change, trading_pb2.PositionChange)
        last[f"{change.position.account}|{change.position.symbol}"] = change.position.net_position
    listed = {
        f"{p.account}|{p.symbol}": p.net_position
        for p in map(trading_pb2.Position.FromString, store.list_positions([], []))
    }
    assert listed == last
    assert {k for k, net in listed.items() if net != fills[k]} == keys_of(
        store, BreakKind.POSITION_MISMATCH
    )
    account, symbol = sorted(listed)[0].split("|")
    only = store.list_positions([account], [symbol])
    assert [trading_pb2.Position.FromString(p).account for p in only] == [account]


def test_chain_breaks_where_the_truth_says(store: VenueStore) -> None:
    rows = feed_data(store, "orders")
    filled = [r for r in rows if r["event_type"] == "order_filled"]
    confirmed = [r for r in filled if r["status"] == "confirmed"]
    makers: Counter[tuple[object, object]] = Counter()
    aggregates: dict[tuple[object, object], object] = {}
    for r in confirmed:
        key = (r["tx_hash"], r["token_id"])
        if r["role"] == "maker":
            makers[key] += int(str(r["shares"]))
        else:
            aggregates[key] = r["shares"]
    assert {k[0] for k in makers} - {k[0] for k in aggregates} == keys_of(
        store, BreakKind.CHAIN_TAKER_MISSING
    )
    assert {k[0] for k, v in aggregates.items() if makers[k] != v} == keys_of(
        store, BreakKind.CHAIN_MAKER_TAKER_MISMATCH
    )
    parsed = [orjson.loads(row.data) for row in store.orders_feed(0, EVERYTHING)]
    fee_of = {r["order_hash"]: Decimal(str(r["fee"])) for r in confirmed}
    refunds = [r for r in parsed if r["event_type"] == "fee_refund"]
    assert {r["order_hash"] for r in refunds if r["order_hash"] not in fee_of} == keys_of(
        store, BreakKind.CHAIN_REFUND_ORPHAN
    )
    exact = [row.data for row in store.orders_feed(0, EVERYTHING)]
    wrong = set()
    for data in exact:
        refund = orjson.loads(data)
        if refund["event_type"] != "fee_refund" or refund["order_hash"] not in fee_of:
            continue
        as_decimal = json.loads(data, parse_float=Decimal)
        if as_decimal["refund"] + as_decimal["fee_charged"] != fee_of[refund["order_hash"]]:
            wrong.add(refund["order_hash"])
    assert wrong == keys_of(store, BreakKind.CHAIN_REFUND_ARITHMETIC)
    seen = {(r["tx_hash"], r["order_hash"]) for r in confirmed}
    unconfirmed = {
        f"{r['tx_hash']}|{r['order_hash']}"
        for r in filled
        if r["status"] == "pending" and (r["tx_hash"], r["order_hash"]) not in seen
    }
    assert unconfirmed == keys_of(store, BreakKind.CHAIN_PENDING_UNCONFIRMED)


def test_legacy_feed_breaks_where_the_truth_says(store: VenueStore) -> None:
    makers = {
        f"{r['tx_hash']}|{r['order_hash']}": r
        for r in feed_data(store, "orders")
        if r["event_type"] == "order_filled" and r["status"] == "confirmed" and r["role"] == "maker"
    }
    legacy = {f"{r['tx_hash']}|{r['order_hash']}": r for r in feed_data(store, "trades")}
    assert set(makers) - set(legacy) == keys_of(store, BreakKind.FEED_PROVIDER_MISSING)
    disagreeing = {
        key
        for key, r in legacy.items()
        if (r["shares"], r["price"]) != (makers[key]["shares_normalized"], makers[key]["price"])
    }
    assert disagreeing == keys_of(store, BreakKind.FEED_PROVIDER_MISMATCH)
    row = store.trades_feed(0, 1)[0]
    data = orjson.loads(row.data)
    assert row.users == (data["user"], data["taker"])
    assert row.status == "confirmed"


def test_feed_numbers_are_written_exactly(store: VenueStore) -> None:
    for row in store.orders_feed(0, 3000):
        as_decimal = json.loads(row.data, parse_float=Decimal)
        for name in ("price", "fee", "refund", "fee_charged", "shares_normalized"):
            if name in as_decimal:
                value = as_decimal[name]
                assert isinstance(value, (Decimal, int))
                assert len(str(value).replace("0.", "").lstrip("0")) <= 10, row.data
        if "shares" in as_decimal:
            assert as_decimal["shares_normalized"] * 1_000_000 == as_decimal["shares"]


def paginate(
    search: Callable[..., tuple[list[bytes], str | None]], page: int, **filters: object
) -> list[bytes]:
    out: list[bytes] = []
    after: str | None = None
    for _ in range(10_000):
        payloads, after = search(after_key=after, limit=page, **filters)
        out.extend(payloads)
        if after is None:
            return out
    raise AssertionError("pagination did not end")


def test_search_pagination_returns_each_row_exactly_once(store: VenueStore) -> None:
    no_filter = {"start_us": None, "end_us": None, "symbol": None, "accounts": []}
    executions = paginate(
        store.search_executions, 37, exec_ids=[], order_id=None, types=[], **no_filter
    )
    assert executions == paginate(
        store.search_executions, EVERYTHING, exec_ids=[], order_id=None, types=[], **no_filter
    )
    ids = [trading_pb2.Execution.FromString(p).id for p in executions]
    assert len(ids) == len(set(ids)) == len(report_executions(store))
    trades = paginate(store.search_trades, 11, trade_ids=[], states=[], **no_filter)
    assert len({trading_pb2.Trade.FromString(p).id for p in trades}) == len(trades)
    assert len(trades) == len(report_trades(store))
    orders = paginate(store.search_orders, 50, order_ids=[], **no_filter)
    order_ids = [trading_pb2.Order.FromString(p).id for p in orders]
    assert order_ids == sorted(set(order_ids))
    assert all(
        trading_pb2.Order.FromString(p).state
        in (
            pb.ORDER_STATE_FILLED,
            pb.ORDER_STATE_CANCELED,
            pb.ORDER_STATE_REJECTED,
            pb.ORDER_STATE_EXPIRED,
            pb.ORDER_STATE_NEW,
            pb.ORDER_STATE_PARTIALLY_FILLED,
        )
        for p in orders
    )


def test_search_filters_select_exactly_the_matching_rows(store: VenueStore) -> None:
    everything = list(report_executions(store).values())
    times = sorted(e.transact_time.ToMicroseconds() for e in everything)
    fills = [e for e in everything if e.type in FILL_TYPES]
    anchor = fills[len(fills) // 3]
    start = anchor.transact_time.ToMicroseconds()
    end = fills[2 * len(fills) // 3].transact_time.ToMicroseconds()
    symbol, account = anchor.order.symbol, anchor.order.account
    filtered = paginate(
        store.search_executions,
        13,
        start_us=start,
        end_us=end,
        symbol=symbol,
        accounts=[account],
        exec_ids=[],
        order_id=None,
        types=list(FILL_TYPES),
    )
    expected = [
        e.id
        for e in everything
        if start <= e.transact_time.ToMicroseconds() < end
        and e.order.symbol == symbol
        and e.order.account == account
        and e.type in FILL_TYPES
    ]
    assert [trading_pb2.Execution.FromString(p).id for p in filtered] == expected
    assert expected
    order_id = everything[0].order.id
    by_order, _ = store.search_executions(
        start_us=None,
        end_us=None,
        symbol=None,
        accounts=[],
        exec_ids=[],
        order_id=order_id,
        types=[],
        after_key=None,
        limit=100,
    )
    assert {trading_pb2.Execution.FromString(p).order.id for p in by_order} == {order_id}
    late, _ = store.search_executions(
        start_us=times[-1] + 1,
        end_us=None,
        symbol=None,
        accounts=[],
        exec_ids=[],
        order_id=None,
        types=[],
        after_key=None,
        limit=100,
    )
    assert late == []
    trades = report_trades(store)
    some = sorted(trades)[:3]
    picked, _ = store.search_trades(
        start_us=None,
        end_us=None,
        symbol=None,
        accounts=[],
        trade_ids=some,
        states=[pb.TRADE_STATE_CLEARED, pb.TRADE_STATE_BUSTED],
        after_key=None,
        limit=10,
    )
    assert [trading_pb2.Trade.FromString(p).id for p in picked] == [
        t for t in some if trades[t].state in (pb.TRADE_STATE_CLEARED, pb.TRADE_STATE_BUSTED)
    ]
    by_account = paginate(
        store.search_trades,
        17,
        start_us=None,
        end_us=None,
        symbol=None,
        accounts=[account],
        trade_ids=[],
        states=[],
    )
    assert len(by_account) == sum(
        account in (t.aggressor.order.account, t.passive.order.account) for t in trades.values()
    )


def test_readers_on_many_threads_see_the_same_rows(store: VenueStore) -> None:
    expected = store.stream("position_changes", 0, [], [], EVERYTHING)
    results: dict[int, list[object]] = defaultdict(list)
    errors: list[BaseException] = []

    def read(n: int) -> None:
        try:
            for _ in range(5):
                results[n].append(store.stream("position_changes", 0, [], [], EVERYTHING))
        except BaseException as exc:  # collected and re-raised on the test thread
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert all(r == expected for rs in results.values() for r in rs)
    assert sum(len(rs) for rs in results.values()) == 20


def test_open_refuses_a_missing_or_half_built_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        VenueStore.open(tmp_path / "absent.sqlite")
    half = tmp_path / "half.sqlite"
    db = sqlite3.connect(half)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="not a complete venue store"):
        VenueStore.open(half)


def test_a_failing_chain_worker_fails_the_build_and_leaves_no_file(tmp_path: Path) -> None:
    too_many = DayConfig(seed=4, scale=0.003, breaks={"chain_taker_missing": 10_000})
    with pytest.raises(RuntimeError, match="too small"):
        VenueStore.build(too_many, tmp_path / "day.sqlite", parallel=True)
    assert list(tmp_path.iterdir()) == []


def test_confirmed_tx_times_are_the_earliest_confirmed_event_of_each_transaction(
    store: VenueStore,
) -> None:
    confirmed = [d for d in feed_data(store, "orders") if d.get("status") == "confirmed"]
    expected: dict[str, datetime] = {}
    for d in confirmed:
        at = datetime.fromtimestamp(int(str(d["timestamp"])), UTC)
        tx = str(d["tx_hash"])
        expected[tx] = min(at, expected.get(tx, at))
    asked = sorted(expected)[:50]
    assert asked
    unknown = "0x" + "f" * 64
    assert store.confirmed_tx_times([*asked, unknown]) == {tx: expected[tx] for tx in asked}
    assert store.confirmed_tx_times([]) == {}
