"""The Report API client against a scripted ReportAPI on loopback: paging, pacing retries, and
the bounds on answers that are malformed or never end; snapshots replace a date atomically."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from app.recon.report_client import (
    ReportClient,
    ReportClientConfig,
    ReportError,
    latest_snapshot,
    snapshot,
)
from polymarket.v1 import enums_pb2, report_pb2, report_pb2_grpc, trading_pb2

D = date(2026, 5, 4)
NOON = datetime(2026, 5, 4, 12, tzinfo=UTC)


def execution(exec_id: str, *, shares: int = 10) -> trading_pb2.Execution:
    ex = trading_pb2.Execution(
        id=exec_id,
        order=trading_pb2.Order(
            id=f"O-{exec_id}",
            symbol="SYM",
            side=enums_pb2.SIDE_BUY,
            type=enums_pb2.ORDER_TYPE_LIMIT,
            time_in_force=enums_pb2.TIME_IN_FORCE_DAY,
            order_qty=10,
            price=50,
            cum_qty=10,
            state=enums_pb2.ORDER_STATE_FILLED,
            account="ACC1",
        ),
        last_shares=shares,
        last_px=50,
        type=enums_pb2.EXECUTION_TYPE_FILL,
        transact_trade_date=trading_pb2.TradeDate(year=D.year, month=D.month, day=D.day),
    )
    ex.transact_time.FromDatetime(NOON)
    return ex


Pages = Callable[[str], report_pb2.SearchExecutionsResponse]


class ScriptedReport(report_pb2_grpc.ReportAPIServicer):
    """Answers SearchExecutions from a script; no trades; one position."""

    def __init__(self, pages: Pages, failures: list[grpc.StatusCode] | None = None) -> None:
        self.pages = pages
        self.failures = list(failures or [])
        self.requests: list[report_pb2.SearchExecutionsRequest] = []

    async def SearchExecutions(
        self, request: report_pb2.SearchExecutionsRequest, context: Any
    ) -> report_pb2.SearchExecutionsResponse:
        self.requests.append(request)
        if self.failures:
            await context.abort(self.failures.pop(0), "scripted failure")
        return self.pages(request.page_token)

    async def SearchTrades(
        self, request: report_pb2.SearchTradesRequest, context: Any
    ) -> report_pb2.SearchTradesResponse:
        return report_pb2.SearchTradesResponse()

    async def SearchOrders(
        self, request: report_pb2.SearchOrdersRequest, context: Any
    ) -> report_pb2.SearchOrdersResponse:
        return report_pb2.SearchOrdersResponse()

    async def ListPositions(
        self, request: report_pb2.ListPositionsRequest, context: Any
    ) -> report_pb2.ListPositionsResponse:
        position = trading_pb2.Position(account="ACC1", symbol="SYM", net_position=10)
        position.update_time.FromDatetime(NOON)
        return report_pb2.ListPositionsResponse(positions=[position])


def paged(executions: list[trading_pb2.Execution], size: int) -> Pages:
    def page(token: str) -> report_pb2.SearchExecutionsResponse:
        start = int(token or 0)
        nxt = start + size
        return report_pb2.SearchExecutionsResponse(
            executions=executions[start:nxt],
            next_page_token=str(nxt) if nxt < len(executions) else "",
        )

    return page


async def with_client(
    servicer: ScriptedReport | grpc.GenericRpcHandler,
    use: Callable[[ReportClient], Awaitable[Any]],
    config: ReportClientConfig | None = None,
) -> tuple[Any, list[float]]:
    # Waiting is instant: sleeping moves this client's clock forward instead.
    slept: list[float] = []

    def clock() -> float:
        return time.monotonic() + sum(slept)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    server = grpc.aio.server()
    if isinstance(servicer, grpc.GenericRpcHandler):
        server.add_generic_rpc_handlers([servicer])
    else:
        report_pb2_grpc.add_ReportAPIServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = ReportClient(
                report_pb2_grpc.ReportAPIStub(channel),
                lambda: [("authorization", "Bearer t")],
                config or ReportClientConfig(),
                clock=clock,
                sleep=sleep,
            )
            return await use(client), slept
    finally:
        await server.stop(None)


async def collect(client: ReportClient) -> list[str]:
    window = (NOON - timedelta(days=1), NOON + timedelta(days=1))
    return [ex.id for page in [p async for p in client.executions(*window)] for ex in page]


def test_pages_are_followed_to_the_end_and_paced() -> None:
    servicer = ScriptedReport(paged([execution(f"E{i}") for i in range(7)], 3))
    ids, slept = asyncio.run(with_client(servicer, collect))
    assert ids == [f"E{i}" for i in range(7)]
    assert [r.page_token for r in servicer.requests] == ["", "3", "6"]
    assert all(r.page_size == ReportClientConfig().page_size for r in servicer.requests)
    # 12 a minute: the 2nd and 3rd call each waited for the bucket (about 5 s).
    assert len(slept) == 2
    assert all(4.0 < s <= 5.0 for s in slept)


def test_rate_limit_refusals_are_retried_with_backoff() -> None:
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    servicer = ScriptedReport(paged([execution("E1")], 3), [exhausted, exhausted])
    ids, _ = asyncio.run(with_client(servicer, collect))
    assert ids == ["E1"]
    assert len(servicer.requests) == 3


def test_other_errors_and_exhausted_retries_raise_clearly() -> None:
    denied = ScriptedReport(paged([], 3), [grpc.StatusCode.PERMISSION_DENIED])
    with pytest.raises(ReportError, match=r"SearchExecutions failed after 1 attempt.*PERMISSION"):
        asyncio.run(with_client(denied, collect))
    busy = ScriptedReport(paged([], 3), [grpc.StatusCode.UNAVAILABLE] * 3)
    config = ReportClientConfig(max_attempts=3)
    with pytest.raises(ReportError, match=r"after 3 attempt.*UNAVAILABLE"):
        asyncio.run(with_client(busy, collect, config))


def test_a_repeated_page_token_is_refused() -> None:
    def loop(token: str) -> report_pb2.SearchExecutionsResponse:
        return report_pb2.SearchExecutionsResponse(
            executions=[execution("E1")], next_page_token="again"
        )

    with pytest.raises(ReportError, match="repeated page token 'again'"):
        asyncio.run(with_client(ScriptedReport(loop), collect))


def test_endless_pagination_is_bounded() -> None:
    def endless(token: str) -> report_pb2.SearchExecutionsResponse:
        return report_pb2.SearchExecutionsResponse(next_page_token=str(int(token or 0) + 1))

    servicer = ScriptedReport(endless)
    with pytest.raises(ReportError, match="did not finish within 5 pages"):
        asyncio.run(with_client(servicer, collect, ReportClientConfig(max_pages=5)))
    assert len(servicer.requests) == 5


def snapshot_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM report_execution ORDER BY id")).scalars())


def test_a_snapshot_replaces_the_date_and_a_malformed_answer_keeps_the_last(
    engine: Engine,
) -> None:
    def take(executions: list[trading_pb2.Execution]) -> Any:
        servicer = ScriptedReport(paged(executions, 2))
        return asyncio.run(with_client(servicer, lambda c: snapshot(engine, c, D)))[0]

    first = take([execution("E1"), execution("E2"), execution("E3")])
    assert (first.executions, first.positions) == (3, 1)
    assert snapshot_ids(engine) == ["E1", "E2", "E3"]
    take([execution("E2"), execution("E9")])
    assert snapshot_ids(engine) == ["E2", "E9"]

    broken = execution("E4")
    broken.order.side = 7  # not a Side: the parser refuses it
    with pytest.raises(ReportError, match=r"malformed execution: order\.side"):
        take([execution("E5"), broken])
    assert snapshot_ids(engine) == ["E2", "E9"]
    with engine.connect() as conn:
        statuses = conn.execute(
            text("SELECT status FROM recon_run WHERE job = 'report_snapshot' ORDER BY id")
        ).scalars()
        assert list(statuses) == ["succeeded", "succeeded", "failed"]
        ref = latest_snapshot(conn, D)
        temp = conn.execute(text("SELECT count(*) FROM pg_class WHERE relname LIKE 'recon_snap%'"))
        assert temp.scalar_one() == 0
    assert ref is not None
    assert ref.window_start == datetime(2026, 5, 3, 18, tzinfo=UTC)
