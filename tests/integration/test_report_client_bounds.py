"""The Report API client against a misbehaving ReportAPI on loopback: page tokens that repeat or
cycle, pagination that never ends, pages bigger than asked for, answers that do not decode or
never come, executions that fail the mapping. Each ends in a clear `ReportError` within a bound
(calls, pages, seconds), and a failed snapshot keeps the last good one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from app.recon.report_client import ReportClient, ReportClientConfig, ReportError, snapshot
from polymarket.v1 import report_pb2, trading_pb2
from tests.guarantees import Record
from tests.integration.test_report_client import D, execution, with_client
from tests.unit.test_parse_properties import EXECUTION, _break_utf8, proto_mutation

BAD_INPUT = "Bad input"
WINDOW = (datetime(2026, 5, 3, tzinfo=UTC), datetime(2026, 5, 5, tzinfo=UTC))
# method -> (request type, answer for a request: raw bytes, or None to never answer)
Script = dict[str, Callable[[Any], bytes | None]]


class MisbehavingReport:
    """A ReportAPI whose answers are raw bytes from a script, so they can be anything."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Any] = []

    def handler(self) -> grpc.GenericRpcHandler:
        types = {
            "SearchExecutions": report_pb2.SearchExecutionsRequest,
            "SearchTrades": report_pb2.SearchTradesRequest,
            "ListPositions": report_pb2.ListPositionsRequest,
        }
        return grpc.method_handlers_generic_handler(
            "polymarket.v1.ReportAPI",
            {
                method: grpc.unary_unary_rpc_method_handler(
                    self._answer(method), request_deserializer=request_type.FromString
                )
                for method, request_type in types.items()
            },
        )

    def _answer(self, method: str) -> Callable[[Any, Any], Awaitable[bytes]]:
        async def answer(request: Any, context: Any) -> bytes:
            self.requests.append(request)
            body = self.script.get(method, lambda _: b"")(request)
            if body is None:
                await asyncio.Event().wait()
            return body or b""

        return answer


def against(
    report: MisbehavingReport,
    use: Callable[[ReportClient], Awaitable[Any]],
    config: ReportClientConfig,
) -> Any:
    """Run `use` with a client of `report` on loopback; pacing waits are instant."""
    return asyncio.run(with_client(report.handler(), use, config))[0]


async def all_executions(client: ReportClient) -> list[str]:
    return [ex.id for page in [p async for p in client.executions(*WINDOW)] for ex in page]


def refused(report: MisbehavingReport, config: ReportClientConfig | None = None) -> str:
    with pytest.raises(ReportError) as caught:
        against(report, all_executions, config or ReportClientConfig())
    return str(caught.value)


def page(*executions: trading_pb2.Execution, next_token: str = "", eof: bool = False) -> bytes:
    response = report_pb2.SearchExecutionsResponse(
        executions=executions, next_page_token=next_token, eof=eof
    )
    return response.SerializeToString()


def test_eof_ends_the_executions_even_when_a_next_page_token_comes_with_it() -> None:
    def answer(request: report_pb2.SearchExecutionsRequest) -> bytes:
        n = int(request.page_token[1:]) + 1 if request.page_token else 0
        # Every page hands out a fresh token; the third also says it is the last.
        return page(execution(f"E{n}"), next_token=f"t{n}", eof=n == 2)

    report = MisbehavingReport({"SearchExecutions": answer})
    ids = against(report, all_executions, ReportClientConfig(max_pages=50))
    assert ids == ["E0", "E1", "E2"]
    assert [r.page_token for r in report.requests] == ["", "t0", "t1"]


def test_a_page_token_seen_before_is_caught_on_the_page_that_repeats_it(
    guarantee: Record,
) -> None:
    tried: list[int] = []

    @settings(max_examples=12, derandomize=True, deadline=None, database=None)
    @given(st.integers(min_value=1, max_value=30), st.integers(min_value=0, max_value=29))
    def check(cycle: int, back_to: int) -> None:
        # Tokens t0 .. t{cycle-1}, then back to an earlier one, forever.
        back_to %= cycle

        def answer(request: report_pb2.SearchExecutionsRequest) -> bytes:
            n = int(request.page_token[1:]) + 1 if request.page_token else 0
            return page(execution(f"E{n}"), next_token=f"t{n if n < cycle else back_to}")

        report = MisbehavingReport({"SearchExecutions": answer})
        why = refused(report, ReportClientConfig(max_pages=1000))
        assert why == f"Report API SearchExecutions repeated page token 't{back_to}'"
        # The first page that names a token already followed is the last one asked for.
        assert len(report.requests) == cycle + 1
        tried.append(len(report.requests))

    check()
    guarantee(
        BAD_INPUT,
        "Report API page tokens that repeat or cycle",
        len(tried),
        "refused on the first repeat, clear error",
    )


def test_endless_pagination_stops_at_max_pages(guarantee: Record) -> None:
    def endless(request: report_pb2.SearchExecutionsRequest) -> bytes:
        return page(next_token=f"{request.page_token}+")

    calls = 0
    for max_pages in (1, 2, 50):
        report = MisbehavingReport({"SearchExecutions": endless})
        why = refused(report, ReportClientConfig(max_pages=max_pages))
        assert why == f"Report API SearchExecutions did not finish within {max_pages} pages"
        assert len(report.requests) == max_pages
        calls += len(report.requests)
    guarantee(
        BAD_INPUT,
        "Report API that paginates forever",
        calls,
        "stopped at max_pages with a clear error",
    )


def test_a_page_bigger_than_asked_for_is_refused(guarantee: Record) -> None:
    size = 3
    rows = [execution(f"E{i}") for i in range(size + 1)]
    report = MisbehavingReport({"SearchExecutions": lambda _: page(*rows)})
    why = refused(report, ReportClientConfig(page_size=size))
    assert why == f"Report API SearchExecutions returned {size + 1} rows in a page of at most 3"
    refusals = [why]
    assert [r.page_size for r in report.requests] == [size]

    trades = report_pb2.SearchTradesResponse(trades=[trading_pb2.Trade(id="T")] * (size + 1))
    report = MisbehavingReport({"SearchTrades": lambda _: trades.SerializeToString()})

    async def all_trades(client: ReportClient) -> list[Any]:
        return [p async for p in client.trades(*WINDOW)]

    with pytest.raises(
        ReportError, match="SearchTrades returned 4 rows in a page of at most 3"
    ) as c:
        against(report, all_trades, ReportClientConfig(page_size=size))
    refusals.append(str(c.value))
    # A page of exactly page_size is fine.
    ok = MisbehavingReport({"SearchExecutions": lambda _: page(*rows[:size])})
    ids = against(ok, all_executions, ReportClientConfig(page_size=size))
    assert ids == ["E0", "E1", "E2"]
    guarantee(
        BAD_INPUT,
        "Report API pages bigger than page_size",
        len(refusals),
        "refused with a clear error",
    )


def _undecodable_page() -> bytes:
    """A SearchExecutionsResponse whose one execution has text that is not UTF-8."""
    item = _break_utf8(execution("E1"), "text", b"\xff\xfe")
    return bytes([0x0A, len(item)]) + item


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("SearchExecutions", _undecodable_page()),
        ("SearchExecutions", b"\x0a\x50truncated"),
        ("ListPositions", b"\x0a\x03\xff\xff\xff"),
    ],
    ids=["text-not-utf8", "truncated", "positions-garbage"],
)
def test_an_answer_that_does_not_decode_is_a_clear_error(method: str, answer: bytes) -> None:
    report = MisbehavingReport({method: lambda _: answer})

    async def use(client: ReportClient) -> Any:
        if method == "ListPositions":
            return await client.positions()
        return await all_executions(client)

    with pytest.raises(ReportError, match=f"Report API {method} answered with bytes that do not"):
        against(report, use, ReportClientConfig())
    assert len(report.requests) == 1


def test_an_answer_that_never_comes_times_out() -> None:
    report = MisbehavingReport({"SearchExecutions": lambda _: None})
    started = time.monotonic()
    why = refused(report, ReportClientConfig(call_timeout=0.3))
    assert why.startswith(
        "Report API SearchExecutions failed after 1 attempt(s): DEADLINE_EXCEEDED"
    )
    assert time.monotonic() - started < 30


def test_a_malformed_execution_fails_the_snapshot_and_keeps_the_last(
    engine: Engine, guarantee: Record
) -> None:
    good = [execution("E1"), execution("E2")]

    def take(executions: list[trading_pb2.Execution]) -> Any:
        script: Script = {
            "SearchExecutions": lambda _: page(*executions),
            "SearchTrades": lambda _: b"",
            "ListPositions": lambda _: b"",
        }
        config = ReportClientConfig()
        return against(MisbehavingReport(script), lambda c: snapshot(engine, c, D), config)

    assert take(good).executions == 2
    tried: list[str] = []

    @settings(
        max_examples=8,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(proto_mutation().filter(lambda c: c[0] is EXECUTION))
    def check(case: tuple[Any, trading_pb2.Execution, str, str]) -> None:
        _, broken, _, path = case
        with pytest.raises(
            ReportError, match="Report API returned a malformed execution"
        ) as caught:
            take([execution("E3"), broken])
        assert path in str(caught.value)
        tried.append(path)

    check()
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id FROM report_execution ORDER BY id")).scalars()
        assert list(ids) == ["E1", "E2"]
        runs = conn.execute(
            text("SELECT status, error FROM recon_run WHERE job = 'report_snapshot' ORDER BY id")
        ).all()
    assert [status for status, _ in runs] == ["succeeded"] + ["failed"] * len(tried)
    assert all("malformed execution" in error for _, error in runs[1:])
    guarantee(
        BAD_INPUT,
        "Report API executions that fail the mapping",
        len(tried),
        "snapshot refused with the reason; last good snapshot kept",
    )
