"""The simulated trading day: a deterministic function of a `DayConfig`, streamed in time order.

`generate_day(config)` yields the day as `DayItem`s: what the exchange's DropCopy streams carry,
what its Report API answers, what the chain feeds print, and the ground-truth breaks. Memory stays
bounded whatever the scale: the exchange is a discrete-event simulation over small order books,
and the chain is generated transaction by transaction behind a short reordering window (pending
events precede their transaction by up to 5 s).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import partial
from itertools import accumulate
from typing import Literal

from app.domain.breaks import BreakKind
from app.venue.breaks import (
    REPORT_MISMATCHES,
    Pool,
    assert_all_placed,
    broken_refund,
    execution_break,
    fill_key,
    mismatched_aggregate_shares,
    mismatched_legacy,
    plan_pool,
    report_execution,
    reported_position,
)
from app.venue.model import (
    SHARE_UNIT,
    US_PER_S,
    Account,
    Break,
    DayConfig,
    Execution,
    FeedName,
    FeeRefund,
    InstrumentSpec,
    InstrumentStatus,
    LegacyTrade,
    Market,
    OrderFilled,
    OrderSnapshot,
    PositionState,
    StreamName,
    Token,
    TradeCapture,
)
from polymarket.v1 import enums_pb2 as pb

# Calibrated so that scale 1.0 gives about 200,000 executions and 1,000,000 orders-feed events.
ORDERS_AT_SCALE_1 = 78_500
CHAIN_EVENTS_AT_SCALE_1 = 1_000_000

CTF_EXCHANGE = "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e"
NEG_RISK_CTF_EXCHANGE = "0xc5d563a36ae78145c45a50134d48a1215220f80a"

DAY_US = 86_400 * US_PER_S
BLOCK_US = 2 * US_PER_S  # Polygon produces a block about every two seconds
PENDING_LEAD_US = (3 * US_PER_S, 5 * US_PER_S)
REFUND_DELAY_US = (2_000, 5_000)
LEGACY_DELAY_US = (200_000, 2_000_000)
# Chain events are released once no later transaction can still emit anything before them.
CHAIN_REORDER_US = PENDING_LEAD_US[1] + US_PER_S

BOOK_DEPTH = 25  # resting orders per side and instrument; the oldest beyond it are canceled
MAKERS_PER_TX = (1, 2, 3, 4)
MAKERS_WEIGHTS = (45, 30, 15, 10)
MAKERS_MEAN = sum(m * w for m, w in zip(MAKERS_PER_TX, MAKERS_WEIGHTS, strict=True)) / sum(
    MAKERS_WEIGHTS
)
FEE_QUANTUM = Decimal("0.000001")
PENDING_DRIFT_STEP = Decimal("0.0001")

LEAGUES = ("nfl", "nba", "mlb", "nhl", "epl", "ucl")
TEAMS = {
    "kc": "Kansas City",
    "phi": "Philadelphia",
    "buf": "Buffalo",
    "sf": "San Francisco",
    "dal": "Dallas",
    "bos": "Boston",
    "lal": "Los Angeles",
    "nyy": "New York",
    "mia": "Miami",
    "den": "Denver",
    "det": "Detroit",
    "chi": "Chicago",
}
ASSETS = {"btc": "Bitcoin", "eth": "Ethereum", "sol": "Solana", "xrp": "XRP"}
REJECT_REASONS = ("insufficient buying power", "price outside limits", "max order size exceeded")


# --- what the day is made of ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Universe:
    instruments: tuple[InstrumentSpec, ...]
    accounts: tuple[Account, ...]
    markets: tuple[Market, ...]
    wallets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExecutionItem:
    """One execution: what the DropCopy stream and the Report API each say about it."""

    execution: Execution
    firm: str
    in_stream: bool
    report: Execution | None  # None: the Report API does not know it


@dataclass(frozen=True, slots=True)
class StreamItem:
    stream: StreamName
    time_us: int
    symbol: str
    firms: tuple[str, ...]  # one firm, or a trade's aggressor then passive firm
    value: TradeCapture | InstrumentStatus | PositionState


@dataclass(frozen=True, slots=True)
class ReportTradeItem:
    trade: TradeCapture  # final state, as the Report API answers
    firms: tuple[str, str]


@dataclass(frozen=True, slots=True)
class ReportOrderItem:
    order: OrderSnapshot  # latest state


@dataclass(frozen=True, slots=True)
class PositionItem:
    position: PositionState  # end of day, as ListPositions answers


@dataclass(frozen=True, slots=True)
class FeedItem:
    feed: FeedName
    time_us: int
    event: OrderFilled | FeeRefund | LegacyTrade


DayItem = (
    ExecutionItem | StreamItem | ReportTradeItem | ReportOrderItem | PositionItem | FeedItem | Break
)


def generate_day(config: DayConfig) -> Iterator[DayItem]:
    """The whole day: the exchange's items in time order, then the chain's in time order."""
    universe = build_universe(config)
    yield from exchange_day(config, universe)
    yield from chain_day(config, universe)


def seeded_rng(seed: int, label: str) -> random.Random:
    return random.Random(f"{seed}:{label}")


def hex_id(seed: int, *parts: object, size: int = 32) -> str:
    text = "|".join(str(p) for p in (seed, *parts))
    return "0x" + hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def build_universe(config: DayConfig) -> Universe:
    rng = seeded_rng(config.seed, "universe")
    day = config.business_date
    team_codes = sorted(TEAMS)
    instruments = []
    for i in range(config.instruments):
        league = LEAGUES[i % len(LEAGUES)]
        team = team_codes[rng.randrange(len(team_codes))]
        price_scale = rng.choice((100, 1000, 10_000))
        instruments.append(
            InstrumentSpec(
                symbol=f"tec-{league}-g{i + 1:02d}-{day.isoformat()}-{team}",
                name=f"{TEAMS[team]} to win game {i + 1} ({league.upper()}, {day.isoformat()})",
                price_scale=price_scale,
                fractional_qty_scale=rng.choice((1, 10, 100)),
                tick=max(1, price_scale // 1000),
                taker_fee_bps=rng.choice((10, 20, 30)),
                maker_fee_bps=(-5, 5, -2, 0)[i % 4],  # some instruments pay makers a rebate
            )
        )
    accounts = tuple(
        Account(
            account=f"FIRM{f + 1:02d}-ACC{a + 1:02d}",
            firm=f"FIRM{f + 1:02d}",
            participant=f"firms/FIRM{f + 1:02d}/users/U{a + 1:02d}",
        )
        for f in range(config.firms)
        for a in range(config.accounts_per_firm)
    )
    if day < config.chain_version_split_date:
        v1_markets = set(range(config.markets))
    else:
        n_v1 = round(config.v1_fraction * config.markets)
        if config.v1_fraction > 0:
            n_v1 = max(1, n_v1)
        v1_markets = set(rng.sample(range(config.markets), n_v1))
    markets = tuple(
        _market(config, rng, m, version=1 if m in v1_markets else 2) for m in range(config.markets)
    )
    wallets = tuple(hex_id(config.seed, "wallet", w, size=20) for w in range(400))
    return Universe(tuple(instruments), accounts, markets, wallets)


def _market(config: DayConfig, rng: random.Random, m: int, *, version: int) -> Market:
    day_start_s = config.day_start_us // US_PER_S
    if rng.random() < 0.5:
        asset = sorted(ASSETS)[rng.randrange(len(ASSETS))]
        window_start = day_start_s + 900 * rng.randrange(96)
        clock = (config.business_date.isoformat(), timedelta(seconds=window_start - day_start_s))
        slug = f"{asset}-updown-15m-{window_start}"
        title = f"{ASSETS[asset]} Up or Down - {clock[0]}, {clock[1]} UTC"
        labels = ("Up", "Down")
        neg_risk = False
        image = f"https://polymarket-upload.s3.us-east-2.amazonaws.com/{asset.upper()}+fullsize.png"
    else:
        team = sorted(TEAMS)[rng.randrange(len(TEAMS))]
        slug = f"will-{team}-win-game-{m + 1}-{config.business_date.isoformat()}"
        title = f"Will {TEAMS[team]} win game {m + 1} on {config.business_date.isoformat()}?"
        labels = ("Yes", "No")
        neg_risk = rng.random() < 0.3
        image = f"https://polymarket-upload.s3.us-east-2.amazonaws.com/{slug}.png"
    tokens = tuple(
        Token(str(int(hex_id(config.seed, "token", m, j), 16)), labels[j], j) for j in range(2)
    )
    return Market(
        condition_id=hex_id(config.seed, "condition", m),
        market_slug=slug,
        title=title,
        market_id=str(rng.randrange(500_000, 2_000_000)),
        image=image,
        is_neg_risk=neg_risk,
        version=version,
        tokens=(tokens[0], tokens[1]),
        tick=Decimal("0.001") if rng.random() < 0.1 else Decimal("0.01"),
    )


# --- positions -----------------------------------------------------------------------------------


def apply_fill(
    position: PositionState, side: int, qty: int, px: int, time_us: int, *, reverse: bool = False
) -> PositionState:
    """The position after a fill (average-cost basis), or after undoing one when `reverse`.

    A reversal trades the opposite way at the same price but takes the quantity back out of
    qty_bought / qty_sold, so net_position == qty_bought - qty_sold holds throughout.
    """
    direction = 1 if side == pb.SIDE_BUY else -1
    if reverse:
        direction = -direction
    net, cost, realized = position.net_position, position.cost, position.realized
    if net == 0 or (net > 0) == (direction > 0):
        opening = qty
    else:
        closing = min(qty, abs(net))
        held = 1 if net > 0 else -1
        basis = abs(cost) * closing // abs(net)
        realized += held * (px * closing - basis)
        cost -= held * basis
        net -= held * closing
        opening = qty - closing
    net += direction * opening
    cost += direction * opening * px
    bought, sold = position.qty_bought, position.qty_sold
    if side == pb.SIDE_BUY:
        bought += -qty if reverse else qty
    else:
        sold += -qty if reverse else qty
    return PositionState(
        position.account, position.symbol, net, bought, sold, cost, realized, time_us
    )


# --- the exchange --------------------------------------------------------------------------------


class _Order:
    __slots__ = (
        "account",
        "clord_id",
        "create_us",
        "cum",
        "id",
        "notional",
        "order_type",
        "price",
        "qty",
        "side",
        "spec",
        "state",
        "tif",
    )

    def __init__(
        self,
        order_id: str,
        spec: InstrumentSpec,
        account: Account,
        *,
        side: int,
        order_type: int,
        tif: int,
        qty: int,
        price: int,
        create_us: int,
    ) -> None:
        self.id = order_id
        self.clord_id = "C" + order_id[1:]
        self.spec = spec
        self.account = account
        self.side = side
        self.order_type = order_type
        self.tif = tif
        self.qty = qty
        self.price = price
        self.create_us = create_us
        self.cum = 0
        self.notional = 0
        self.state: int = pb.ORDER_STATE_NEW

    @property
    def leaves(self) -> int:
        return self.qty - self.cum

    def snapshot(self) -> OrderSnapshot:
        live = self.state in (pb.ORDER_STATE_NEW, pb.ORDER_STATE_PARTIALLY_FILLED)
        return OrderSnapshot(
            self.id,
            self.clord_id,
            self.spec.symbol,
            self.side,
            self.order_type,
            self.tif,
            self.qty,
            self.price,
            self.cum,
            self.qty - self.cum if live else 0,
            self.notional // self.cum if self.cum else 0,
            self.state,
            self.account.account,
            self.account.participant,
            self.create_us,
        )


class _Book:
    """Resting orders of one instrument; entries sort best first, then by arrival."""

    __slots__ = ("asks", "bids", "mid", "state")

    def __init__(self, mid: int) -> None:
        self.bids: list[tuple[int, int, _Order]] = []
        self.asks: list[tuple[int, int, _Order]] = []
        self.mid = mid
        self.state: int = pb.INSTRUMENT_STATE_CLOSED

    def side_of(self, side: int) -> list[tuple[int, int, _Order]]:
        return self.bids if side == pb.SIDE_BUY else self.asks

    @staticmethod
    def entry(order: _Order, arrival: int) -> tuple[int, int, _Order]:
        return (-order.price if order.side == pb.SIDE_BUY else order.price, arrival, order)


Action = Callable[[], Iterator[DayItem]]


def exchange_day(config: DayConfig, universe: Universe) -> Iterator[DayItem]:
    return _ExchangeDay(config, universe).run()


class _ExchangeDay:
    def __init__(self, config: DayConfig, universe: Universe) -> None:
        self.config = config
        self.rng = seeded_rng(config.seed, "exchange")
        plan_rng = seeded_rng(config.seed, "exchange-breaks")
        self.n_orders = max(1, round(ORDERS_AT_SCALE_1 * config.scale))
        # Conservative estimates of pool sizes: an order gets at least an ack or a reject, and
        # about a third of orders trade (calibrated; slots stop at 60% of the estimate).
        self.order_events = plan_pool(config, Pool.ORDER_EVENT, self.n_orders, plan_rng)
        self.trades = plan_pool(config, Pool.TRADE, self.n_orders // 3, plan_rng)
        self.fills = plan_pool(config, Pool.POSITION, self.n_orders // 2, plan_rng)
        self.date = config.business_date
        self.day_start = config.day_start_us
        self.day_end = self.day_start + DAY_US
        self.instruments = universe.instruments
        self.accounts = universe.accounts
        self.firm_of = {a.account: a.firm for a in universe.accounts}
        self.spec_of = {spec.symbol: spec for spec in universe.instruments}
        opens = self.day_start + 30 * 60 * US_PER_S
        closes = self.day_start + (23 * 3600 + 50 * 60) * US_PER_S
        self.arrival_window = (opens, closes - opens)
        self.books = [
            _Book(spec.price_scale // 2 // spec.tick * spec.tick) for spec in self.instruments
        ]
        self.weights = list(accumulate(1.0 / (1 + self.rng.random() * 3) for _ in self.instruments))
        self.heap: list[tuple[int, int, Action]] = []
        self.tie = 0
        self.now = self.day_start
        self.exec_n = self.trade_n = self.order_n = self.arrivals = 0
        self.order_event_n = self.fill_n = 0
        self.positions: dict[tuple[str, str], PositionState] = {}
        self.position_offsets: dict[tuple[str, str], int] = {}
        self.code = config.date_code

    # scheduling ----------------------------------------------------------------------------------

    def schedule(self, time_us: int, action: Action) -> None:
        self.tie += 1
        heapq.heappush(self.heap, (time_us, self.tie, action))

    def tick(self) -> int:
        """A fresh event time: every item of a stream gets a strictly later time than the last."""
        self.now += 1
        return self.now

    def run(self) -> Iterator[DayItem]:
        self.schedule_instrument_states()
        self.schedule(self.arrival_time(0), self.order_arrival)
        while self.heap:
            time_us, _, action = heapq.heappop(self.heap)
            self.now = max(self.now, time_us)
            yield from action()
        yield from self.end_of_day()
        assert_all_placed([self.order_events, self.trades, self.fills])

    def arrival_time(self, n: int) -> int:
        start, span = self.arrival_window
        return start + int((n + self.rng.random()) * span / self.n_orders)

    def schedule_instrument_states(self) -> None:
        minute = 60 * US_PER_S
        for i in range(len(self.instruments)):
            pre_open = self.day_start + minute + i * US_PER_S
            open_at = self.day_start + 30 * minute + self.rng.randrange(2 * minute)
            close_at = self.day_start + (23 * 60 + 50) * minute + self.rng.randrange(2 * minute)
            self.schedule(pre_open, partial(self.instrument_state, i, pb.INSTRUMENT_STATE_PREOPEN))
            self.schedule(open_at, partial(self.instrument_state, i, pb.INSTRUMENT_STATE_OPEN))
            if self.rng.random() < 0.35:
                halt_at = open_at + 60 * minute + self.rng.randrange(20 * 60 * minute)
                resume_at = halt_at + (5 + self.rng.randrange(25)) * minute
                self.schedule(
                    halt_at, partial(self.instrument_state, i, pb.INSTRUMENT_STATE_HALTED)
                )
                self.schedule(
                    resume_at, partial(self.instrument_state, i, pb.INSTRUMENT_STATE_OPEN)
                )
            self.schedule(close_at, partial(self.close_instrument, i))

    # instruments ---------------------------------------------------------------------------------

    def instrument_state(self, i: int, state: int) -> Iterator[DayItem]:
        spec = self.instruments[i]
        self.books[i].state = state
        now = self.tick()
        yield StreamItem(
            "instrument_states", now, spec.symbol, (), InstrumentStatus(spec, state, now)
        )

    def close_instrument(self, i: int) -> Iterator[DayItem]:
        book = self.books[i]
        yield from self.instrument_state(i, pb.INSTRUMENT_STATE_CLOSED)
        for side in (book.bids, book.asks):
            expiring = [e for e in side if e[2].tif == pb.TIME_IN_FORCE_DAY]
            for entry in expiring:
                side.remove(entry)
                order = entry[2]
                order.state = pb.ORDER_STATE_EXPIRED
                yield from self.order_event(order, pb.EXECUTION_TYPE_EXPIRED, "day order expired")

    # orders --------------------------------------------------------------------------------------

    def order_arrival(self) -> Iterator[DayItem]:
        self.arrivals += 1
        if self.arrivals < self.n_orders:
            self.schedule(self.arrival_time(self.arrivals), self.order_arrival)
        i = bisect.bisect_left(self.weights, self.rng.random() * self.weights[-1])
        book = self.books[i]
        if book.state != pb.INSTRUMENT_STATE_OPEN:
            return
        order = self.new_order(self.instruments[i], book)
        if self.rng.random() < 0.02:
            order.state = pb.ORDER_STATE_REJECTED
            reason = REJECT_REASONS[self.rng.randrange(len(REJECT_REASONS))]
            yield from self.order_event(order, pb.EXECUTION_TYPE_REJECTED, reason)
            return
        yield from self.order_event(order, pb.EXECUTION_TYPE_NEW, "")
        yield from self.match(order, book)
        if order.leaves:
            yield from self.rest(order, book)

    def new_order(self, spec: InstrumentSpec, book: _Book) -> _Order:
        rng = self.rng
        side = pb.SIDE_BUY if rng.random() < 0.5 else pb.SIDE_SELL
        sign = 1 if side == pb.SIDE_BUY else -1
        fqs = spec.fractional_qty_scale
        qty = (1 + int(rng.expovariate(1 / 40))) * fqs
        if fqs > 1 and rng.random() < 0.3:
            qty += rng.randrange(1, fqs)
        if rng.random() < 0.2:
            book.mid = min(
                max(book.mid + rng.choice((-1, 1)) * spec.tick, 10 * spec.tick),
                spec.price_scale - 10 * spec.tick,
            )
        order_type = pb.ORDER_TYPE_LIMIT
        if rng.random() < 0.45:
            price = book.mid + sign * rng.randrange(4) * spec.tick
            if rng.random() < 0.2:
                order_type = pb.ORDER_TYPE_MARKET_TO_LIMIT
                opposite = book.asks if side == pb.SIDE_BUY else book.bids
                price = abs(opposite[0][0]) if opposite else price
        else:
            price = book.mid - sign * (1 + rng.randrange(6)) * spec.tick
        roll = rng.random()
        if roll < 0.55:
            tif = pb.TIME_IN_FORCE_DAY
        elif roll < 0.8:
            tif = pb.TIME_IN_FORCE_GOOD_TILL_CANCEL
        else:
            tif = pb.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL
        self.order_n += 1
        return _Order(
            f"O-{self.code}-{self.order_n:08d}",
            spec,
            self.accounts[rng.randrange(len(self.accounts))],
            side=side,
            order_type=order_type,
            tif=tif,
            qty=qty,
            price=min(max(price, spec.tick), spec.price_scale - spec.tick),
            create_us=self.now,
        )

    def rest(self, order: _Order, book: _Book) -> Iterator[DayItem]:
        """What is left of an order after matching: canceled if IOC, else it joins the book."""
        if order.tif == pb.TIME_IN_FORCE_IMMEDIATE_OR_CANCEL:
            order.state = pb.ORDER_STATE_CANCELED
            yield from self.order_event(order, pb.EXECUTION_TYPE_CANCELED, "IOC remainder canceled")
            return
        resting = book.side_of(order.side)
        entry = _Book.entry(order, self.order_n)
        bisect.insort(resting, entry, key=lambda e: (e[0], e[1]))
        if len(resting) > BOOK_DEPTH:
            worst = resting.pop()
            worst[2].state = pb.ORDER_STATE_CANCELED
            yield from self.order_event(worst[2], pb.EXECUTION_TYPE_CANCELED, "")
        if entry in resting and self.rng.random() < 0.5:
            cancel_at = self.now + int(self.rng.expovariate(1 / (10 * 60 * US_PER_S)))
            if cancel_at < self.day_end - US_PER_S:
                self.schedule(cancel_at, partial(self.cancel, order, resting, entry))

    def cancel(
        self, order: _Order, resting: list[tuple[int, int, _Order]], entry: tuple[int, int, _Order]
    ) -> Iterator[DayItem]:
        if order.state not in (pb.ORDER_STATE_NEW, pb.ORDER_STATE_PARTIALLY_FILLED):
            return
        resting.remove(entry)
        order.state = pb.ORDER_STATE_CANCELED
        yield from self.order_event(order, pb.EXECUTION_TYPE_CANCELED, "")

    def order_event(self, order: _Order, exec_type: int, text: str) -> Iterator[DayItem]:
        """An execution that is not a fill (ack, cancel, reject, expiry); terminal ones settle
        the order's latest state for the Report API."""
        execution = self.execution(order, exec_type, text)
        self.order_event_n += 1
        kind = self.order_events.claim(self.order_event_n)
        firm = order.account.firm
        if kind is BreakKind.EXECUTION_MISSING_FROM_STREAM:
            yield ExecutionItem(execution, firm, in_stream=False, report=execution)
        elif kind is BreakKind.EXECUTION_MISSING_FROM_REPORT:
            yield ExecutionItem(execution, firm, in_stream=True, report=None)
        else:
            yield ExecutionItem(execution, firm, in_stream=True, report=execution)
        if kind is not None:
            yield execution_break(kind, execution, None)
        if exec_type != pb.EXECUTION_TYPE_NEW:
            yield ReportOrderItem(execution.order)

    def execution(
        self,
        order: _Order,
        exec_type: int,
        text: str,
        *,
        shares: int = 0,
        px: int = 0,
        trade_id: str = "",
        aggressor: bool = False,
        fee: int = 0,
    ) -> Execution:
        self.exec_n += 1
        return Execution(
            f"E-{self.code}-{self.exec_n:08d}",
            order.snapshot(),
            shares,
            px,
            exec_type,
            text,
            self.tick(),
            trade_id,
            aggressor,
            fee,
            self.date,
        )

    # trades --------------------------------------------------------------------------------------

    def match(self, incoming: _Order, book: _Book) -> Iterator[DayItem]:
        opposite = book.asks if incoming.side == pb.SIDE_BUY else book.bids
        limit = incoming.price
        k = 0
        while incoming.leaves and k < len(opposite):
            resting = opposite[k][2]
            crosses = (
                resting.price <= limit if incoming.side == pb.SIDE_BUY else resting.price >= limit
            )
            if not crosses:
                break
            if resting.account is incoming.account:
                k += 1  # self-trade prevention: an account never trades with itself
                continue
            yield from self.trade(incoming, resting, min(incoming.leaves, resting.leaves))
            if resting.leaves == 0:
                del opposite[k]

    def fill(self, order: _Order, qty: int, px: int) -> None:
        order.cum += qty
        order.notional += qty * px
        order.state = (
            pb.ORDER_STATE_FILLED if order.cum == order.qty else (pb.ORDER_STATE_PARTIALLY_FILLED)
        )

    def trade(self, aggressor: _Order, passive: _Order, qty: int) -> Iterator[DayItem]:
        rng = self.rng
        spec = aggressor.spec
        px = passive.price
        self.trade_n += 1
        trade_id = f"T-{self.code}-{self.trade_n:08d}"
        legs: list[Execution] = []
        for order, is_aggressor, bps in (
            (aggressor, True, spec.taker_fee_bps),
            (passive, False, spec.maker_fee_bps),
        ):
            self.fill(order, qty, px)
            exec_type = (
                pb.EXECUTION_TYPE_FILL
                if order.state == pb.ORDER_STATE_FILLED
                else pb.EXECUTION_TYPE_PARTIAL_FILL
            )
            fee = px * qty * abs(bps) // 10_000 * (1 if bps >= 0 else -1)
            legs.append(
                self.execution(
                    order,
                    exec_type,
                    "",
                    shares=qty,
                    px=px,
                    trade_id=trade_id,
                    aggressor=is_aggressor,
                    fee=fee,
                )
            )
            if order is passive and order.state == pb.ORDER_STATE_FILLED:
                yield ReportOrderItem(legs[-1].order)
        if aggressor.state == pb.ORDER_STATE_FILLED:
            yield ReportOrderItem(legs[0].order)
        trade_type = pb.TRADE_TYPE_BLOCK if rng.random() < 0.03 else pb.TRADE_TYPE_REGULAR
        kind = self.trades.claim(self.trade_n)
        broken_leg = rng.randrange(2)
        reports: list[Execution | None] = list(legs)
        if kind is not None and kind in REPORT_MISMATCHES:
            altered = report_execution(kind, legs[broken_leg], spec.tick, spec.fractional_qty_scale)
            reports[broken_leg] = altered
            yield execution_break(kind, legs[broken_leg], altered)
        for n, leg in enumerate(legs):
            missing = kind is BreakKind.TRADE_LEG_MISSING and n == broken_leg
            yield ExecutionItem(
                leg,
                self.firm_of[leg.order.account],
                in_stream=not missing,
                report=None if missing else reports[n],
            )
            if not missing:
                yield from self.position_change(leg, reverse=False)
        if kind is BreakKind.TRADE_LEG_MISSING:
            missing_leg = legs[broken_leg]
            yield Break(
                kind,
                missing_leg.id,
                self.date,
                {
                    "trade_id": trade_id,
                    "leg": "aggressor" if missing_leg.aggressor else "passive",
                    "account": missing_leg.order.account,
                    "symbol": spec.symbol,
                    "order_id": missing_leg.order.id,
                },
            )
        yield from self.trade_sends(trade_id, legs, reports, trade_type, kind)

    def trade_sends(
        self,
        trade_id: str,
        legs: list[Execution],
        reports: list[Execution | None],
        trade_type: int,
        kind: BreakKind | None,
    ) -> Iterator[DayItem]:
        """The trade capture stream's sends of one trade, now and later, and its final state."""
        rng = self.rng
        agg, pas = legs
        firms = (self.firm_of[agg.order.account], self.firm_of[pas.order.account])
        now = self.tick()
        trade = TradeCapture(trade_id, agg, pas, trade_type, pb.TRADE_STATE_CLEARED, "", now)
        final_state, final_time = pb.TRADE_STATE_CLEARED, now
        if kind is BreakKind.TRADE_BUSTED:
            bust_at = now + min(
                rng.randrange(30 * US_PER_S, 300 * US_PER_S), self.day_end - US_PER_S - now
            )
            self.schedule(bust_at, partial(self.bust, trade, firms))
            final_state, final_time = pb.TRADE_STATE_BUSTED, bust_at
            yield Break(
                kind,
                trade_id,
                self.date,
                {
                    "symbol": agg.order.symbol,
                    "busted_at_us": bust_at,
                    "last_shares": agg.last_shares,
                },
            )
        elif kind is BreakKind.TRADE_STATE_MISMATCH:
            trade = replace(trade, state=pb.TRADE_STATE_NEW)
            yield Break(
                kind,
                trade_id,
                self.date,
                {
                    "symbol": agg.order.symbol,
                    "stream_state": pb.TradeState.Name(pb.TRADE_STATE_NEW),
                    "report_state": pb.TradeState.Name(pb.TRADE_STATE_CLEARED),
                },
            )
        elif rng.random() < 0.2:
            # Cleared a moment later: sent NEW now and re-sent CLEARED under the same id.
            cleared_at = now + rng.randrange(50_000, 800_000)
            cleared = replace(trade, update_time_us=cleared_at)
            self.schedule(cleared_at, partial(self.resend, cleared, firms))
            trade = replace(trade, state=pb.TRADE_STATE_NEW)
            final_time = cleared_at
        yield StreamItem("trade_captures", now, agg.order.symbol, firms, trade)
        report_agg, report_pas = reports
        yield ReportTradeItem(
            TradeCapture(
                trade_id,
                report_agg or agg,
                report_pas or pas,
                trade_type,
                final_state,
                "",
                final_time,
            ),
            firms,
        )

    def resend(self, trade: TradeCapture, firms: tuple[str, str]) -> Iterator[DayItem]:
        yield StreamItem(
            "trade_captures",
            self.tick(),
            trade.aggressor.order.symbol,
            firms,
            replace(trade, update_time_us=self.now),
        )

    def bust(self, trade: TradeCapture, firms: tuple[str, str]) -> Iterator[DayItem]:
        busted = replace(
            trade, state=pb.TRADE_STATE_BUSTED, text="trade busted", update_time_us=self.tick()
        )
        yield StreamItem(
            "trade_captures", busted.update_time_us, busted.aggressor.order.symbol, firms, busted
        )
        for leg in (trade.aggressor, trade.passive):
            yield from self.position_change(leg, reverse=True)

    # positions -----------------------------------------------------------------------------------

    def position_change(self, leg: Execution, *, reverse: bool) -> Iterator[DayItem]:
        account, symbol = leg.order.account, leg.order.symbol
        key = (account, symbol)
        before = self.positions.get(key) or PositionState(account, symbol, 0, 0, 0, 0, 0, 0)
        now = self.tick()
        after = apply_fill(
            before, leg.order.side, leg.last_shares, leg.last_px, now, reverse=reverse
        )
        self.positions[key] = after
        if not reverse:
            self.fill_n += 1
            if self.fills.claim(self.fill_n, lambda _: key not in self.position_offsets):
                fqs = self.spec_of[symbol].fractional_qty_scale
                self.position_offsets[key] = self.rng.choice((-1, 1)) * fqs * self.rng.randint(1, 5)
        reported = reported_position(after, self.position_offsets.get(key, 0))
        yield StreamItem("position_changes", now, symbol, (self.firm_of[account],), reported)

    def end_of_day(self) -> Iterator[DayItem]:
        for book in self.books:
            for _, _, order in (*book.bids, *book.asks):
                yield ReportOrderItem(order.snapshot())
        for key in sorted(self.positions):
            true = self.positions[key]
            offset = self.position_offsets.get(key, 0)
            reported = reported_position(true, offset)
            yield PositionItem(reported)
            if offset:
                yield Break(
                    BreakKind.POSITION_MISMATCH,
                    f"{key[0]}|{key[1]}",
                    self.date,
                    {
                        "account": key[0],
                        "symbol": key[1],
                        "fills_net_position": true.net_position,
                        "venue_net_position": reported.net_position,
                    },
                )


# --- the chain -----------------------------------------------------------------------------------


def chain_day(config: DayConfig, universe: Universe) -> Iterator[DayItem]:
    return _ChainDay(config, universe).run()


def taker_fee_rate(version: int) -> Decimal:
    return Decimal("0.02") if version == 1 else Decimal("0.015")


def maker_fee_rate(version: int) -> Decimal:
    # V1 charges makers a gross fee and refunds most of it; V2 charges the net fee up front.
    return Decimal("0.02") if version == 1 else Decimal("0.002")


def fee_for(shares: int, price: Decimal, rate: Decimal) -> Decimal:
    """Polymarket's fee curve: rate * min(p, 1 - p) * shares, in USDC to 6 decimals."""
    return (rate * min(price, 1 - price) * shares / SHARE_UNIT).quantize(
        FEE_QUANTUM, rounding=ROUND_HALF_UP
    )


@dataclass(frozen=True, slots=True)
class _Match:
    """One matchOrders transaction: a taker order filled against one or more maker orders."""

    index: int
    time_us: int
    market: Market
    outcome: int
    price: Decimal
    maker_side: Literal["BUY", "SELL"]
    taker: str
    makers: tuple[str, ...]
    shares: tuple[int, ...]
    tx_hash: str
    maker_hashes: tuple[str, ...]
    taker_hash: str
    maker_fees: tuple[Decimal, ...]
    taker_fee: Decimal

    @property
    def block_timestamp(self) -> int:
        return self.time_us // BLOCK_US * BLOCK_US // US_PER_S

    def maker_row(self, j: int, log_index: int | None) -> OrderFilled:
        return OrderFilled(
            "confirmed",
            self.market,
            self.outcome,
            self.maker_side,
            self.shares[j],
            self.price,
            self.tx_hash,
            log_index,
            self.block_timestamp,
            self.maker_hashes[j],
            self.makers[j],
            self.taker,
            "maker",
            self.maker_fees[j],
        )

    def aggregate_row(self, shares: int, log_index: int | None) -> OrderFilled:
        """The taker-aggregate row: the taker's whole fill, `taker` being the exchange contract."""
        return OrderFilled(
            "confirmed",
            self.market,
            self.outcome,
            "SELL" if self.maker_side == "BUY" else "BUY",
            shares,
            self.price,
            self.tx_hash,
            log_index,
            self.block_timestamp,
            self.taker_hash,
            self.taker,
            NEG_RISK_CTF_EXCHANGE if self.market.is_neg_risk else CTF_EXCHANGE,
            "taker",
            self.taker_fee,
        )

    def token_details(self) -> dict[str, str | int]:
        return {
            "condition_id": self.market.condition_id,
            "token_id": self.market.tokens[self.outcome].token_id,
            "maker_shares": sum(self.shares),
        }


class _ChainDay:
    def __init__(self, config: DayConfig, universe: Universe) -> None:
        self.config = config
        self.seed = config.seed
        self.rng = seeded_rng(config.seed, "chain")
        self.markets = universe.markets
        self.wallets = universe.wallets
        v1_share = sum(m.version == 1 for m in self.markets) / len(self.markets)
        per_tx = (MAKERS_MEAN + 1) * (1 + config.pending_fraction) + v1_share * MAKERS_MEAN
        self.n_tx = max(1, round(CHAIN_EVENTS_AT_SCALE_1 * config.scale / per_tx))
        self.txs = plan_pool(config, Pool.TX, self.n_tx, seeded_rng(config.seed, "chain-breaks"))
        self.date = config.business_date
        self.start = config.day_start_us + 10 * US_PER_S
        self.span = DAY_US - 20 * US_PER_S
        self.mids = [self.rng.randint(5, 95) for _ in self.markets]  # in cents
        self.block = -1
        self.log_index = 0
        self.tie = 0
        self.heap: list[tuple[int, int, FeedItem]] = []

    def run(self) -> Iterator[DayItem]:
        for i in range(self.n_tx):
            time_us = self.start + int((i + self.rng.random()) * self.span / self.n_tx)
            while self.heap and self.heap[0][0] < time_us - CHAIN_REORDER_US:
                yield heapq.heappop(self.heap)[2]
            yield from self.transaction(i, time_us)
        while self.heap:
            yield heapq.heappop(self.heap)[2]
        assert_all_placed([self.txs])

    def emit(
        self, feed: FeedName, time_us: int, event: OrderFilled | FeeRefund | LegacyTrade
    ) -> None:
        self.tie += 1
        heapq.heappush(self.heap, (time_us, self.tie, FeedItem(feed, time_us, event)))

    def next_log_index(self, time_us: int) -> int:
        block = time_us // BLOCK_US
        if block != self.block:
            self.block = block
            self.log_index = self.rng.randrange(300)  # logs of other contracts in the block
        self.log_index += 1
        return self.log_index

    def draw(self, i: int, time_us: int) -> _Match:
        rng = self.rng
        m = rng.randrange(len(self.markets))
        market = self.markets[m]
        self.mids[m] = min(max(self.mids[m] + rng.choice((-1, 0, 0, 1)), 2), 98)
        price = Decimal(self.mids[m]) / 100
        if market.tick < Decimal("0.01"):
            price += Decimal(rng.randrange(-9, 10)) / 1000
        n_makers = rng.choices(MAKERS_PER_TX, MAKERS_WEIGHTS)[0]
        people = rng.sample(self.wallets, n_makers + 1)
        shares = tuple(rng.randint(1, 2000) * 10**4 for _ in range(n_makers))
        maker_rate = maker_fee_rate(market.version)
        return _Match(
            index=i,
            time_us=time_us,
            market=market,
            outcome=rng.randrange(2),
            price=price,
            maker_side="BUY" if rng.random() < 0.5 else "SELL",
            taker=people[0],
            makers=tuple(people[1:]),
            shares=shares,
            tx_hash=hex_id(self.seed, "tx", i),
            maker_hashes=tuple(hex_id(self.seed, "order", i, j) for j in range(n_makers)),
            taker_hash=hex_id(self.seed, "order", i, "taker"),
            maker_fees=tuple(fee_for(n, price, maker_rate) for n in shares),
            taker_fee=fee_for(sum(shares), price, taker_fee_rate(market.version)),
        )

    def transaction(self, i: int, time_us: int) -> Iterator[DayItem]:
        match = self.draw(i, time_us)
        pending = self.rng.random() < self.config.pending_fraction
        v1 = match.market.version == 1

        def eligible(kind: BreakKind) -> bool:
            if kind in (BreakKind.CHAIN_REFUND_ORPHAN, BreakKind.CHAIN_REFUND_ARITHMETIC):
                return v1
            if kind is BreakKind.CHAIN_PENDING_UNCONFIRMED:
                return len(match.makers) == 1
            return True

        kind = self.txs.claim(i, eligible)
        if kind in (BreakKind.CHAIN_TAKER_MISSING, BreakKind.CHAIN_MAKER_TAKER_MISMATCH):
            # Its pending aggregate would otherwise look unconfirmed, or drift by more than 1%.
            pending = False
        elif kind is BreakKind.CHAIN_PENDING_UNCONFIRMED:
            pending = True
        if pending:
            yield from self.pending_rows(match, kind)
        if kind is not BreakKind.CHAIN_PENDING_UNCONFIRMED:
            yield from self.confirmed_rows(match, kind)

    def confirmed_rows(self, match: _Match, kind: BreakKind | None) -> Iterator[DayItem]:
        v1 = match.market.version == 1
        for j in range(len(match.makers)):
            row_time = match.time_us + j
            row = match.maker_row(j, self.next_log_index(row_time))
            self.emit("orders", row_time, row)
            if v1:
                yield from self.refund(row_time, row, kind if j == 0 else None)
            yield from self.legacy(row_time, row, kind if j == 0 else None)
        if kind is BreakKind.CHAIN_TAKER_MISSING:
            yield Break(kind, match.tx_hash, self.date, match.token_details())
            return
        shares = sum(match.shares)
        if kind is BreakKind.CHAIN_MAKER_TAKER_MISMATCH:
            shares = mismatched_aggregate_shares(shares, self.rng)
            details = match.token_details()
            details["taker_shares"] = shares
            yield Break(kind, match.tx_hash, self.date, details)
        agg_time = match.time_us + len(match.makers)
        self.emit("orders", agg_time, match.aggregate_row(shares, self.next_log_index(agg_time)))
        if kind is BreakKind.CHAIN_REFUND_ORPHAN:
            yield from self.orphan_refund(match, agg_time)

    def refund(self, row_time: int, row: OrderFilled, kind: BreakKind | None) -> Iterator[DayItem]:
        rng = self.rng
        share = (Decimal(1), Decimal("0.96"), Decimal("0.5"))[rng.randrange(3)]
        refund = (row.fee * share).quantize(FEE_QUANTUM, rounding=ROUND_DOWN)
        event = FeeRefund(
            row.market,
            row.outcome_index,
            row.user,
            row.order_hash,
            row.tx_hash,
            refund,
            row.fee - refund,
        )
        if kind is BreakKind.CHAIN_REFUND_ARITHMETIC:
            event = broken_refund(event)
            yield Break(
                kind,
                row.order_hash,
                self.date,
                {
                    "tx_hash": row.tx_hash,
                    "fee": str(row.fee),
                    "refund": str(event.refund),
                    "fee_charged": str(event.fee_charged),
                },
            )
        self.next_log_index(row_time)
        self.emit("orders", row_time + rng.randint(*REFUND_DELAY_US), event)

    def orphan_refund(self, match: _Match, after_us: int) -> Iterator[DayItem]:
        """A fee_refund for an order the feed never showed filled."""
        orphan_hash = hex_id(self.seed, "orphan", match.index)
        refund = fee_for(match.shares[0], match.price, maker_fee_rate(1))
        event = FeeRefund(
            match.market,
            match.outcome,
            match.makers[0],
            orphan_hash,
            match.tx_hash,
            refund,
            Decimal(0),
        )
        self.next_log_index(after_us)
        self.emit("orders", after_us + self.rng.randint(*REFUND_DELAY_US), event)
        yield Break(
            BreakKind.CHAIN_REFUND_ORPHAN,
            orphan_hash,
            self.date,
            {"tx_hash": match.tx_hash, "refund": str(refund), "fee_charged": "0"},
        )

    def legacy(self, row_time: int, row: OrderFilled, kind: BreakKind | None) -> Iterator[DayItem]:
        trade = LegacyTrade(
            row.market,
            row.outcome_index,
            row.shares,
            row.price,
            row.tx_hash,
            row.timestamp,
            row.order_hash,
            row.user,
            row.taker,
        )
        if kind is BreakKind.FEED_PROVIDER_MISSING:
            details: dict[str, str | int] = {"shares": row.shares, "price": str(row.price)}
            yield Break(kind, fill_key(row), self.date, details)
            return
        if kind is BreakKind.FEED_PROVIDER_MISMATCH:
            trade = mismatched_legacy(trade, self.rng)
            yield Break(
                kind,
                fill_key(row),
                self.date,
                {
                    "chain_shares": row.shares,
                    "chain_price": str(row.price),
                    "feed_shares": trade.shares,
                    "feed_price": str(trade.price),
                },
            )
        self.emit("trades", row_time + self.rng.randint(*LEGACY_DELAY_US), trade)

    def pending_rows(self, match: _Match, kind: BreakKind | None) -> Iterator[DayItem]:
        """The mempool's view of the transaction, seconds before it is mined: no log index, and
        price, shares and fee may drift by at most 1%."""
        rng = self.rng
        seen_at = match.time_us - rng.randint(*PENDING_LEAD_US)
        rows = [match.maker_row(j, None) for j in range(len(match.makers))]
        rows.append(match.aggregate_row(sum(match.shares), None))
        maker_total = 0
        for j, row in enumerate(rows):
            shares, price, fee = row.shares, row.price, row.fee
            if row.role == "maker":
                if rng.random() < 0.3:
                    shares -= shares * rng.randint(1, 100) // 10_000
                    steps = int(price * 100)
                    price += PENDING_DRIFT_STEP * rng.randint(-steps, steps)
                    fee -= (fee * rng.randint(0, 100) / 10_000).quantize(
                        FEE_QUANTUM, rounding=ROUND_DOWN
                    )
                maker_total += shares
            else:
                shares = maker_total
            event_time = seen_at + j
            pending = OrderFilled(
                "pending",
                row.market,
                row.outcome_index,
                row.side,
                shares,
                price,
                row.tx_hash,
                None,
                event_time // US_PER_S,
                row.order_hash,
                row.user,
                row.taker,
                row.role,
                fee,
            )
            self.emit("orders", event_time, pending)
            if kind is BreakKind.CHAIN_PENDING_UNCONFIRMED:
                yield Break(
                    kind,
                    fill_key(row),
                    self.date,
                    {"role": row.role, "seen_at_us": event_time, "shares": shares},
                )
