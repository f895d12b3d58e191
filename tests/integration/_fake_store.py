"""A tiny in-memory stand-in for VenueStore (same read methods), for server development."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from app.venue.model import DayConfig, FeedRow, StreamName, StreamRow
from polymarket.v1 import trading_pb2

T0 = 1_777_852_800_000_000  # 2026-05-04 00:00 UTC in microseconds
SYMBOLS = ("AAA", "BBB", "CCC")
FIRMS = ("F1", "F2")


@dataclass
class FakeStore:
    config: DayConfig
    streams: dict[str, list[StreamRow]]
    executions: list[trading_pb2.Execution]
    orders: list[FeedRow]
    trades: list[FeedRow]

    @classmethod
    def make(cls, n: int = 2000, feed_n: int = 3000) -> FakeStore:
        execs = []
        rows: dict[str, list[StreamRow]] = {s: [] for s in ("executions", "trade_captures",
                                                             "instrument_states", "position_changes")}
        for i in range(1, n + 1):
            sym, firm = SYMBOLS[i % 3], FIRMS[i % 2]
            e = trading_pb2.Execution(id=f"E{i}", last_shares=i, type=2)
            e.order.symbol = sym
            e.order.account = f"{firm}-A"
            e.transact_time.FromMicroseconds(T0 + i * 1000)
            execs.append(e)
            rows["executions"].append(StreamRow(i, T0 + i * 1000, sym, firm, e.SerializeToString()))
            t = trading_pb2.Trade(id=f"T{i}")
            rows["trade_captures"].append(StreamRow(i, T0 + i * 1000, sym, firm, t.SerializeToString()))
            p = trading_pb2.PositionChange()
            p.position.symbol = sym
            rows["position_changes"].append(StreamRow(i, T0 + i * 1000, sym, firm, p.SerializeToString()))
        for i in range(1, 31):
            ins = trading_pb2.Instrument(symbol=SYMBOLS[i % 3], state=1)
            rows["instrument_states"].append(StreamRow(i, T0 + i * 50_000, SYMBOLS[i % 3], "", ins.SerializeToString()))
        feed = []
        for i in range(1, feed_n + 1):
            status = "pending" if i % 4 == 0 else "confirmed"
            data = orjson.dumps({"event_type": "order_filled", "status": status, "n": i,
                                 "condition_id": f"0xc{i % 5}", "user": f"0xu{i % 7}"})
            feed.append(FeedRow(i, T0 + i, status, f"0xc{i % 5}", f"slug-{i % 5}",
                                (f"0xu{i % 7}", "0xtaker"), data))
        trades = [r for r in feed if r.status == "confirmed"]
        trades = [FeedRow(k, r.event_time_us, r.status, r.condition_id, r.market_slug, r.users, r.data)
                  for k, r in enumerate(trades, 1)]
        return cls(DayConfig(), rows, execs, feed, trades)

    def stream(self, name: StreamName, after_seq: int, symbols: Sequence[str],
               firms: Sequence[str], limit: int) -> list[StreamRow]:
        out = []
        for r in self.streams[name][after_seq:]:
            if (not symbols or r.symbol in symbols) and (not firms or r.firm in firms):
                out.append(r)
                if len(out) == limit:
                    break
        return out

    def first_seq_at_or_after(self, name: StreamName, time_us: int) -> int:
        for r in self.streams[name]:
            if r.event_time_us >= time_us:
                return r.seq - 1
        return len(self.streams[name])

    def stream_length(self, name: StreamName) -> int:
        return len(self.streams[name])

    def search_executions(self, *, start_us: int | None, end_us: int | None, symbol: str | None,
                          accounts: Sequence[str], exec_ids: Sequence[str], order_id: str | None,
                          types: Sequence[int], after_key: str | None, limit: int
                          ) -> tuple[list[bytes], str | None]:
        start = int(after_key) if after_key else 0
        hits = [(i, e) for i, e in enumerate(self.executions) if i >= start
                and (symbol is None or e.order.symbol == symbol)
                and (not accounts or e.order.account in accounts)
                and (not exec_ids or e.id in exec_ids)]
        page = hits[:limit]
        nxt = str(hits[limit][0]) if len(hits) > limit else None
        return [e.SerializeToString() for _, e in page], nxt

    def search_trades(self, **kw: object) -> tuple[list[bytes], str | None]:
        return [], None

    def search_orders(self, **kw: object) -> tuple[list[bytes], str | None]:
        return [], None

    def list_positions(self, accounts: Sequence[str], symbols: Sequence[str]) -> list[bytes]:
        return [trading_pb2.Position(account="F1-A", symbol="AAA", net_position=5).SerializeToString()]

    def orders_feed(self, after_seq: int, limit: int) -> list[FeedRow]:
        return self.orders[after_seq : after_seq + limit]

    def trades_feed(self, after_seq: int, limit: int) -> list[FeedRow]:
        return self.trades[after_seq : after_seq + limit]
