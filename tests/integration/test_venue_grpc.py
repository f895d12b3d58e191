"""The simulated venue's gRPC endpoint over real sockets: DropCopy streams, resume, Report API,
auth, limits, health and injected faults."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from app.ingest import dropcopy, parse
from app.venue import grpc_server
from app.venue.faults import FaultRecord, FaultSpec, read_fault_log
from app.venue.grpc_server import GrpcOptions
from app.venue.run import VenueHandle, VenueOptions, serve_store
from polymarket.v1 import (
    dropcopy_pb2,
    dropcopy_pb2_grpc,
    enums_pb2,
    report_pb2,
    report_pb2_grpc,
    trading_pb2,
)

from ._venue_day import DAY, VenueStore, small_store

AUTH = (("authorization", "Bearer devtoken"),)
MD = (*AUTH, ("x-participant-id", "firms/F1/users/alice"))
DEADLINE_S = 20.0


@dataclass(frozen=True)
class StreamCase:
    name: str
    method: str
    request: type[Message]
    items: str
    item: type[Message]


CASES = {
    c.name: c
    for c in (
        StreamCase(
            "executions",
            "CreateDropCopySubscription",
            dropcopy_pb2.CreateDropCopySubscriptionRequest,
            "executions",
            trading_pb2.Execution,
        ),
        StreamCase(
            "trade_captures",
            "CreateTradeCaptureReportSubscription",
            dropcopy_pb2.CreateTradeCaptureReportSubscriptionRequest,
            "trade_capture_reports",
            trading_pb2.Trade,
        ),
        StreamCase(
            "instrument_states",
            "CreateInstrumentStateChangeSubscription",
            dropcopy_pb2.CreateInstrumentStateChangeSubscriptionRequest,
            "instruments",
            trading_pb2.Instrument,
        ),
        StreamCase(
            "position_changes",
            "CreatePositionChangeSubscription",
            dropcopy_pb2.CreatePositionChangeSubscriptionRequest,
            "position_changes",
            trading_pb2.PositionChange,
        ),
    )
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return small_store(tmp_path_factory)


@pytest.fixture(scope="module")
def venue(store: VenueStore) -> Iterator[VenueHandle]:
    options = VenueOptions(grpc=GrpcOptions(batch_size=250, report_requests_per_min=100_000))
    with serve_store(store, options) as handle:
        yield handle


@pytest.fixture(scope="module")
def channel(venue: VenueHandle) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(venue.grpc_target) as ch:
        yield ch


@dataclass
class Received:
    items: list[Message]
    tokens: list[bytes]  # one per response, in order
    batch_sizes: list[int]


def open_stream(
    channel: grpc.Channel,
    case: StreamCase,
    metadata: Any = MD,
    timeout: float = DEADLINE_S,
    **request: Any,
) -> Any:
    stub = dropcopy_pb2_grpc.DropCopyAPIStub(channel)
    return getattr(stub, case.method)(case.request(**request), metadata=metadata, timeout=timeout)


def read(call: Any, case: StreamCase, want: int) -> Received:
    """Read until `want` items arrived, then cancel: a live stream never ends by itself."""
    got = Received([], [], [])
    if want == 0:
        call.cancel()
        return got
    for response in call:
        batch = list(getattr(response, case.items))
        got.items.extend(batch)
        got.tokens.append(response.resume_token)
        got.batch_sizes.append(len(batch))
        if len(got.items) >= want:
            break
    call.cancel()
    return got


def expected(
    store: VenueStore,
    case: StreamCase,
    *,
    after: int = 0,
    symbols: tuple[str, ...] = (),
    firms: tuple[str, ...] = (),
) -> list[Message]:
    rows = store.stream(case.name, after, symbols, firms, 10**7)  # type: ignore[arg-type]
    return [case.item.FromString(r.payload) for r in rows]


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        for _ in call:
            pass
    return info.value.code(), info.value.details()


@pytest.mark.parametrize("name", list(CASES))
def test_each_stream_serves_the_stored_day_in_order(
    store: VenueStore, channel: grpc.Channel, name: str
) -> None:
    case = CASES[name]
    want = expected(store, case)
    assert want, f"the day has no {name}; the test would prove nothing"
    assert len(want) == store.stream_length(name)  # type: ignore[arg-type]
    got = read(open_stream(channel, case), case, len(want))
    assert got.items == want
    assert len(got.items) == store.truth()["counts"][name]  # type: ignore[index]
    assert max(got.batch_sizes) <= 250


def test_stream_stays_open_and_silent_after_the_day(
    store: VenueStore, channel: grpc.Channel
) -> None:
    case = CASES["instrument_states"]
    want = store.stream_length("instrument_states")
    items: list[Message] = []
    code = consume(open_stream(channel, case, timeout=0.8), lambda r: items.extend(r.instruments))
    # Neither more data nor an end of stream: the client's deadline is what ends it.
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(items) == want


def consume(call: Any, take: Callable[[Any], object]) -> grpc.StatusCode | None:
    """Hand each response to `take` until it returns True (then cancel: None) or the stream
    fails (its status code)."""
    try:
        for response in call:
            if take(response) is True:
                call.cancel()
                return None
    except grpc.RpcError as exc:
        return exc.code()
    pytest.fail("a DropCopy stream ended with OK")


@pytest.mark.parametrize("name", ["executions", "trade_captures", "position_changes"])
def test_symbol_and_firm_filters(store: VenueStore, channel: grpc.Channel, name: str) -> None:
    case = CASES[name]
    all_rows = store.stream(name, 0, (), (), 10**7)  # type: ignore[arg-type]
    symbol = all_rows[0].symbol
    firm = next(r.firm for r in all_rows if r.firm)
    for symbols, firms in (((symbol,), ()), ((), (firm,)), ((symbol,), (firm,))):
        want = expected(store, case, symbols=symbols, firms=firms)
        assert 0 < len(want) < len(all_rows)
        got = read(open_stream(channel, case, symbols=symbols, firms=firms), case, len(want))
        assert got.items == want, (symbols, firms)


def test_instrument_symbol_filter_needs_no_participant(
    store: VenueStore, channel: grpc.Channel
) -> None:
    case = CASES["instrument_states"]
    symbol = store.stream("instrument_states", 0, (), (), 1)[0].symbol
    want = expected(store, case, symbols=(symbol,))
    got = read(open_stream(channel, case, metadata=AUTH, symbols=[symbol]), case, len(want))
    assert got.items == want
    assert {i.symbol for i in got.items} == {symbol}  # type: ignore[attr-defined]


def test_resume_token_continues_with_no_gap(store: VenueStore, channel: grpc.Channel) -> None:
    case = CASES["executions"]
    want = expected(store, case)
    first = read(open_stream(channel, case), case, 600)
    assert len(first.items) < len(want)
    # Resume from a token in the middle of what was read: at least once, never a gap.
    k = len(first.tokens) // 2
    seen = sum(first.batch_sizes[: k + 1])
    rest = read(open_stream(channel, case, resume_token=first.tokens[k]), case, len(want) - seen)
    assert first.items[:seen] + rest.items == want


def test_resume_time_starts_at_the_first_event_at_or_after_it(
    store: VenueStore, channel: grpc.Channel
) -> None:
    case = CASES["executions"]
    rows = store.stream("executions", 0, (), (), 10**7)
    middle = rows[len(rows) // 2]
    request = dropcopy_pb2.CreateDropCopySubscriptionRequest()
    request.resume_time.FromMicroseconds(middle.event_time_us)
    after = store.first_seq_at_or_after("executions", middle.event_time_us)
    want = expected(store, case, after=after)
    assert rows[after].event_time_us == middle.event_time_us  # seq is 1-based, after = seq - 1
    call = dropcopy_pb2_grpc.DropCopyAPIStub(channel).CreateDropCopySubscription(
        request, metadata=MD, timeout=DEADLINE_S
    )
    assert read(call, case, len(want)).items == want


def test_expired_token_is_failed_precondition(store: VenueStore) -> None:
    case = CASES["executions"]
    options = VenueOptions(faults=FaultSpec(token_ttl_s=1.0))
    with serve_store(store, options) as venue, grpc.insecure_channel(venue.grpc_target) as ch:
        token = read(open_stream(ch, case), case, 1).tokens[0]
        fresh = read(open_stream(ch, case, resume_token=token), case, 1)
        assert fresh.items, "a fresh token resumes"
        time.sleep(1.1)
        code, details = code_of(open_stream(ch, case, resume_token=token))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "resume token expired" in details
        assert venue.fault_log.records(kind="token_expired")


def test_malformed_forged_or_foreign_tokens_are_invalid_argument(
    channel: grpc.Channel,
) -> None:
    case = CASES["executions"]
    token = read(open_stream(channel, case), case, 1).tokens[0]
    forged = token[:-3] + (b"AAA" if token[-3:] != b"AAA" else b"BBB")
    position_token = read(
        open_stream(channel, CASES["position_changes"]), CASES["position_changes"], 1
    ).tokens[0]
    for bad in (b"garbage!", b"", forged, position_token):
        if not bad:
            continue
        code, _ = code_of(open_stream(channel, case, resume_token=bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad
    code, details = code_of(open_stream(channel, case, resume_token=token, symbols=["OTHER"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "filters" in details


@pytest.mark.parametrize(
    ("metadata", "status"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "devtoken"),), grpc.StatusCode.UNAUTHENTICATED),
        (AUTH, grpc.StatusCode.PERMISSION_DENIED),
        ((*AUTH, ("x-participant-id", "firms/F1")), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_auth(channel: grpc.Channel, metadata: Any, status: grpc.StatusCode) -> None:
    code, _ = code_of(open_stream(channel, CASES["executions"], metadata=metadata))
    assert code == status
    report = report_pb2_grpc.ReportAPIStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        report.SearchExecutions(report_pb2.SearchExecutionsRequest(), metadata=metadata)
    assert info.value.code() == status


def test_stream_limit_per_token(store: VenueStore) -> None:
    case = CASES["instrument_states"]
    options = VenueOptions(grpc=GrpcOptions(max_streams_per_token=2))
    with serve_store(store, options) as venue, grpc.insecure_channel(venue.grpc_target) as ch:
        open_calls = [open_stream(ch, case, metadata=AUTH) for _ in range(2)]
        for call in open_calls:
            next(call)  # both are being served
        code, _ = code_of(open_stream(ch, case, metadata=AUTH))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        open_calls[0].cancel()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the server sees the cancel shortly after
            call = open_stream(ch, case, metadata=AUTH)
            try:
                next(call)
                call.cancel()
                break
            except grpc.RpcError:
                time.sleep(0.05)
        else:
            pytest.fail("a freed stream slot was never reusable")
        open_calls[1].cancel()


def test_health_serving_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "polymarket.v1.DropCopyAPI", "polymarket.v1.ReportAPI"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"polymarket.v1.DropCopyAPI", "polymarket.v1.ReportAPI"} <= names


def page_through(call: Any, request: Any, items: str, limit: int = 1000) -> list[Any]:
    out: list[Any] = []
    for _ in range(limit):
        response = call(request, metadata=MD, timeout=DEADLINE_S)
        out.extend(getattr(response, items))
        if not response.next_page_token:
            if hasattr(response, "eof"):
                assert response.eof
            return out
        assert not getattr(response, "eof", False)
        request.page_token = response.next_page_token
    pytest.fail("pagination never ended")


def test_report_pagination_returns_everything_exactly_once(
    store: VenueStore, channel: grpc.Channel
) -> None:
    report = report_pb2_grpc.ReportAPIStub(channel)
    everything = {"start_us": None, "end_us": None, "symbol": None, "accounts": []}
    cases = (
        (
            report.SearchExecutions,
            report_pb2.SearchExecutionsRequest(page_size=97),
            "executions",
            store.search_executions(
                **everything, exec_ids=[], order_id=None, types=[], after_key=None, limit=10**7
            ),
        ),
        (
            report.SearchTrades,
            report_pb2.SearchTradesRequest(page_size=53),
            "trades",
            store.search_trades(**everything, trade_ids=[], states=[], after_key=None, limit=10**7),
        ),
        (
            report.SearchOrders,
            report_pb2.SearchOrdersRequest(page_size=71),
            "orders",
            store.search_orders(**everything, order_ids=[], after_key=None, limit=10**7),
        ),
    )
    for call, request, items, (whole, rest) in cases:
        assert rest is None
        assert len(whole) > 2 * request.page_size, f"too few {items} to page through"
        got = page_through(call, request, items)
        ids = [m.id for m in got]
        assert len(ids) == len(set(ids)), f"{items}: a row came twice"
        assert [m.SerializeToString() for m in got] == whole, items


def test_report_filters_and_bad_page_token(store: VenueStore, channel: grpc.Channel) -> None:
    report = report_pb2_grpc.ReportAPIStub(channel)
    rows = store.stream("executions", 0, (), (), 10**7)
    symbol = rows[0].symbol
    got = page_through(
        report.SearchExecutions,
        report_pb2.SearchExecutionsRequest(page_size=500, symbol=symbol),
        "executions",
    )
    assert got
    assert {e.order.symbol for e in got} == {symbol}
    first = report.SearchExecutions(
        report_pb2.SearchExecutionsRequest(page_size=10), metadata=MD, timeout=5
    )
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as info:  # a page token is bound to its filters
        report.SearchExecutions(
            report_pb2.SearchExecutionsRequest(
                page_size=10, symbol=symbol, page_token=first.next_page_token
            ),
            metadata=MD,
            timeout=5,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        report.SearchTrades(
            report_pb2.SearchTradesRequest(page_token="not-a-token"), metadata=MD, timeout=5
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_list_positions(store: VenueStore, channel: grpc.Channel) -> None:
    report = report_pb2_grpc.ReportAPIStub(channel)
    response = report.ListPositions(report_pb2.ListPositionsRequest(), metadata=MD, timeout=5)
    assert [p.SerializeToString() for p in response.positions] == store.list_positions([], [])
    assert response.positions


def test_report_rate_limit(store: VenueStore) -> None:
    options = VenueOptions(grpc=GrpcOptions(report_requests_per_min=3))
    with serve_store(store, options) as venue, grpc.insecure_channel(venue.grpc_target) as ch:
        report = report_pb2_grpc.ReportAPIStub(ch)
        request = report_pb2.SearchOrdersRequest(page_size=1)
        for _ in range(3):
            report.SearchOrders(request, metadata=MD, timeout=5)
        with pytest.raises(grpc.RpcError) as info:
            report.SearchOrders(request, metadata=MD, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        other = (("authorization", "Bearer other"), MD[1])
        with pytest.raises(grpc.RpcError) as info:
            report.SearchOrders(request, metadata=other, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@dataclass
class FaultyRun:
    by_id: dict[str, Message]
    malformed: set[str]
    disconnects: int
    records: list[FaultRecord]


def consume_with_faults(store: VenueStore, spec: FaultSpec, want: int) -> FaultyRun:
    """A consumer that resumes on UNAVAILABLE from its last token and dedupes by id."""
    case = CASES["executions"]
    options = VenueOptions(grpc=GrpcOptions(batch_size=100), faults=spec)
    run = FaultyRun({}, set(), 0, [])
    tokens = [b""]

    def take(response: Any) -> bool:
        for e in response.executions:
            if e.type not in enums_pb2.ExecutionType.values() or e.last_shares < 0:
                run.malformed.add(e.id)
            else:
                run.by_id[e.id] = e
        tokens.append(response.resume_token)
        return len(run.by_id) == want

    with serve_store(store, options) as venue, grpc.insecure_channel(venue.grpc_target) as ch:
        for _ in range(1000):
            code = consume(open_stream(ch, case, resume_token=tokens[-1]), take)
            if code is None:
                break
            assert code == grpc.StatusCode.UNAVAILABLE
            run.disconnects += 1
        run.records = venue.fault_log.records()
    return run


def test_faults_disconnect_duplicate_reorder_malformed(store: VenueStore) -> None:
    """Through every fault the consumer still gets the exact day; the malformed executions it
    sees are exactly those in the fault log; the same seed injects the same faults."""
    want = expected(store, CASES["executions"])
    spec = FaultSpec.parse(
        "disconnect_every=400,duplicate_rate=0.2,reorder_window=5,malformed_rate=0.02,seed=3"
    )
    run = consume_with_faults(store, spec, len(want))
    assert sorted(run.by_id.values(), key=by_id) == sorted(want, key=by_id)
    kinds = Counter(r.kind for r in run.records)
    # The server may log a cut after the last batch the client needed, then hang up.
    assert kinds["disconnect"] in {run.disconnects, run.disconnects + 1}
    assert run.disconnects >= len(want) // 400 - 1
    assert kinds["duplicate"] > 0
    assert run.malformed == {
        str(r.detail["execution_id"]) for r in run.records if r.kind == "malformed"
    }
    assert run.malformed
    again = consume_with_faults(store, spec, len(want))
    assert again.records == run.records
    other_seed = consume_with_faults(store, replace(spec, seed=4), len(want))
    assert other_seed.records != run.records


# Each stream's malformed copies: the fault log's name for the key and where the copy keeps it.
MALFORMED_KEYS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "executions": ("execution_id", lambda m: m.id),
    "trade_captures": ("trade_id", lambda m: m.id),
    "instrument_states": ("symbol", lambda m: m.symbol),
    "position_changes": ("account", lambda m: m.position.account),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_messages_on_every_stream_are_refused_by_ingest_and_logged(
    store: VenueStore, name: str
) -> None:
    """Every stream slips in broken copies at malformed_rate; our ingest parser refuses exactly
    those the fault log names, and what it accepts is the stored day, in order."""
    case = CASES[name]
    ingest = next(spec for spec in dropcopy.STREAMS if spec.name == name)
    key_name, key_of = MALFORMED_KEYS[name]
    want = expected(store, case)
    accepted: list[Message] = []
    refused: dict[str, str] = {}

    def take(response: Any) -> bool:
        for item in getattr(response, case.items):
            try:
                ingest.parse(item)
            except parse.Rejected as exc:
                refused[key_of(item)] = exc.reason
            else:
                accepted.append(item)
        return len(accepted) >= len(want)

    options = VenueOptions(faults=FaultSpec.parse("malformed_rate=0.3,seed=2"))
    with serve_store(store, options) as venue, grpc.insecure_channel(venue.grpc_target) as ch:
        assert consume(open_stream(ch, case), take) is None
        records = venue.fault_log.records("malformed", f"grpc.{name}")
    assert accepted == want
    assert set(refused) == {r.detail[key_name] for r in records}
    assert all(key.startswith(f"MALFORMED-grpc.{name}-") for key in refused)
    # Both ways of breaking a message of this stream were tried, each refused for its reason.
    assert len({re.sub(r"-?\d+$", "", reason) for reason in refused.values()}) == 2


def by_id(message: Any) -> str:
    return str(message.id)


def test_report_pages_are_cut_to_what_a_client_accepts(
    store: VenueStore, channel: grpc.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_server, "MAX_RESPONSE_BYTES", 20_000)
    report = report_pb2_grpc.ReportAPIStub(channel)
    first = report.SearchTrades(
        report_pb2.SearchTradesRequest(page_size=10_000), metadata=MD, timeout=5
    )
    assert first.next_page_token
    assert 0 < first.ByteSize() <= 20_000 + 200
    got = page_through(
        report.SearchTrades, report_pb2.SearchTradesRequest(page_size=10_000), "trades"
    )
    whole, _ = store.search_trades(
        start_us=None,
        end_us=None,
        symbol=None,
        accounts=[],
        trade_ids=[],
        states=[],
        after_key=None,
        limit=10**7,
    )
    assert [t.SerializeToString() for t in got] == whole


def test_recon_venue_command_serves_until_sigterm(
    store: VenueStore, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    truth, faults_log = tmp_path / "truth.json", tmp_path / "faults.jsonl"
    args = [
        *("--faults", "malformed_rate=0.5,seed=1", "--faults-log", str(faults_log)),
        *("--seed", str(DAY.seed), "--scale", str(DAY.scale), "--date", str(DAY.business_date)),
        *("--store", str(tmp_path_factory.getbasetemp() / "venue-day"), "--truth", str(truth)),
        *("--grpc-port", "0", "--orders-port", "0", "--trades-port", "0", "--json"),
    ]
    command = "import typer; from app.venue.cli import venue; typer.run(venue)"
    with subprocess.Popen(
        [sys.executable, "-c", command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "the venue never announced its endpoints"
            endpoints = json.loads(proc.stdout.readline())
            with grpc.insecure_channel(endpoints["grpc_target"]) as ch:
                health = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert health.status == health_pb2.HealthCheckResponse.SERVING
                first = next(open_stream(ch, CASES["executions"]))
            malformed = [e.id for e in first.executions if e.id.startswith("MALFORMED-")]
            assert endpoints["orders_url"].startswith("ws://127.0.0.1:")
            assert json.loads(truth.read_bytes()) == store.truth()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            logged = [r for r in read_fault_log(faults_log) if r.kind == "malformed"]
            assert malformed
            # Logged when built: the server may have prepared batches the client never read.
            assert [r.detail["execution_id"] for r in logged][: len(malformed)] == malformed
        finally:
            if proc.poll() is None:
                proc.kill()


def _us(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def test_a_paced_report_api_knows_only_what_its_streams_have_played(store: VenueStore) -> None:
    """Paced, the venue plays the day live: its Report API serves what the DropCopy stream of
    the same events has sent so far, never the rest of the day (unpaced it serves all of it,
    as the tests above show)."""
    # 100 events/s: the ~1,000 executions of the day take ten seconds to play, far longer than
    # this test looks at them.
    grpc_options = GrpcOptions(pace_events_per_s=100, report_requests_per_min=100_000)
    everything = {"start_us": None, "end_us": None, "symbol": None, "accounts": []}
    whole_day, _ = store.search_executions(
        **everything, exec_ids=[], order_id=None, types=[], after_key=None, limit=10**7
    )
    with (
        serve_store(store, VenueOptions(grpc=grpc_options)) as venue,
        grpc.insecure_channel(venue.grpc_target) as ch,
    ):
        report = report_pb2_grpc.ReportAPIStub(ch)

        def executions() -> list[Any]:
            request = report_pb2.SearchExecutionsRequest(page_size=40)
            return page_through(report.SearchExecutions, request, "executions")

        def positions() -> list[Any]:
            request = report_pb2.ListPositionsRequest()
            return list(report.ListPositions(request, metadata=MD, timeout=5).positions)

        # Nothing has played yet, so nothing has happened.
        assert executions() == []
        assert positions() == []

        played = read(open_stream(ch, CASES["executions"]), CASES["executions"], 100)
        known = executions()
        assert len(known) < len(whole_day) / 2  # not the future
        newest = max(_us(e.transact_time) for e in known)
        assert newest >= max(_us(e.transact_time) for e in played.items)  # all it has sent
        # Up to its play position, everything: the whole day's first rows, in order.
        assert [e.SerializeToString() for e in known] == whole_day[: len(known)]
        # Each search follows its own stream: no trade capture has been played.
        trades = report.SearchTrades(report_pb2.SearchTradesRequest(), metadata=MD, timeout=5)
        assert list(trades.trades) == []

        changes = read(open_stream(ch, CASES["position_changes"]), CASES["position_changes"], 50)
        listed = positions()
        final = store.list_positions([], [])
        assert listed
        assert len(listed) <= len(final)
        assert {p.SerializeToString() for p in listed} != set(final)
        as_of = max(_us(p.update_time) for p in listed)
        assert as_of >= max(_us(c.change_time) for c in changes.items)
        # Each position is its latest change at that time.
        latest: dict[tuple[str, str], Any] = {}
        for row in store.stream("position_changes", 0, (), (), 10**7):
            if row.event_time_us <= as_of:
                change = trading_pb2.PositionChange.FromString(row.payload)
                latest[(change.position.account, change.position.symbol)] = change.position
        assert listed == [latest[key] for key in sorted(latest)]
