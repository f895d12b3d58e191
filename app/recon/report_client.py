"""Report API snapshots: pull a date's executions, trades and the current positions, paced and
bounded, and replace the date's `report_execution` / `report_trade` rows in one transaction.

The venue allows about 12 search calls a minute per token: every call first takes a token from
a bucket refilled at that rate (capacity one, so calls are evenly spaced and never burst past
the venue's sliding window). RESOURCE_EXHAUSTED and UNAVAILABLE are retried with exponential
backoff and full jitter; anything else, a malformed answer, or pagination that does not end
(a page token seen twice, or more pages than configured) raises `ReportError`.

Async because the exchange token may be an Auth0 token that must be refreshed in the background
while a slow, paced snapshot runs; the database work in between is short and synchronous.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Protocol, TypeVar

import grpc
import orjson
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection, Engine, text

from app.config import Settings
from app.db.models import ReportExecution, ReportPosition, ReportTrade
from app.db.partitions import ensure_partitions
from app.db.session import write_through_outage
from app.ingest import parse
from app.ingest.auth import TokenSource
from app.ingest.backoff import BackoffPolicy, BackoffState, failed
from app.observability import redact
from polymarket.v1 import report_pb2, report_pb2_grpc, trading_pb2

Metadata = Callable[[], Sequence[tuple[str, str]]]
RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
SNAPSHOT_JOB = "report_snapshot"


class ReportError(RuntimeError):
    """The Report API could not give a complete, well-formed answer; the message says why."""


@dataclass(frozen=True, slots=True)
class ReportClientConfig:
    requests_per_minute: float = 12.0
    page_size: int = 10_000  # the venue's maximum: fewest paced calls
    max_pages: int = 1_000  # see Settings.report_max_pages
    max_attempts: int = 8
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=1.0, cap=60.0))
    call_timeout: float = 60.0
    # Trade dates are the venue's, not UTC days: search a margin either side and keep the rows
    # whose transact_trade_date is the business date.
    window_margin: timedelta = timedelta(hours=6)

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError("requests_per_minute must be positive")
        if self.page_size < 1 or self.max_pages < 1 or self.max_attempts < 1:
            raise ValueError("page_size, max_pages and max_attempts must be at least 1")


class TokenBucket:
    """At most `rate_per_minute` acquisitions a minute, evenly spaced (capacity one)."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval = 60.0 / rate_per_minute
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    async def acquire(self) -> None:
        now = self._clock()
        if self._next is not None and now < self._next:
            await self._sleep(self._next - now)
            now = self._clock()
        self._next = max(now, self._next or now) + self._interval


class _Paged(Protocol):
    next_page_token: str


Answer = TypeVar("Answer")
Page = TypeVar("Page", bound=_Paged)
Row = TypeVar("Row")


def _timestamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def _last_page(page: _Paged) -> bool:
    """SearchExecutions marks its last page with `eof`; a token sent along with it is not
    followed (a server that hands one out anyway would otherwise be asked for more)."""
    if isinstance(page, report_pb2.SearchExecutionsResponse) and page.eof:
        return True
    return not page.next_page_token


def _bind(fetch: Callable[[str], Awaitable[Page]], token: str) -> Callable[[], Awaitable[Page]]:
    return lambda: fetch(token)


class ReportClient:
    """Paced, bounded calls to one ReportAPI."""

    def __init__(
        self,
        stub: report_pb2_grpc.ReportAPIAsyncStub,
        metadata: Metadata,
        config: ReportClientConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._config = config
        self._bucket = TokenBucket(config.requests_per_minute, clock=clock, sleep=sleep)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.calls = 0

    @property
    def config(self) -> ReportClientConfig:
        return self._config

    async def _call(self, what: str, call: Callable[[], Awaitable[Answer]]) -> Answer:
        state = BackoffState()
        for attempt in range(1, self._config.max_attempts + 1):
            await self._bucket.acquire()
            self.calls += 1
            try:
                answer = await call()
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in RETRYABLE or attempt == self._config.max_attempts:
                    # The venue's text may quote the credentials it refused.
                    raise ReportError(
                        f"Report API {what} failed after {attempt} attempt(s): "
                        f"{code.name} {redact(exc.details() or '')}".rstrip()
                    ) from None
                delay, state = failed(
                    self._config.backoff, state, self._clock(), self._rng.random()
                )
                await self._sleep(delay)
                continue
            # grpc hands back None, not an error, for an answer it cannot deserialize.
            if answer is None:
                raise ReportError(f"Report API {what} answered with bytes that do not decode")
            return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _pages(
        self, what: str, fetch: Callable[[str], Awaitable[Page]]
    ) -> AsyncIterator[Page]:
        seen: set[str] = set()
        token = ""
        for _ in range(self._config.max_pages):
            page = await self._call(what, _bind(fetch, token))
            yield page
            if _last_page(page):
                return
            token = page.next_page_token
            if token in seen:
                raise ReportError(f"Report API {what} repeated page token {token[:32]!r}")
            seen.add(token)
        raise ReportError(f"Report API {what} did not finish within {self._config.max_pages} pages")

    def _page_rows(self, what: str, rows: Sequence[Row]) -> Sequence[Row]:
        """A page's rows, refused when there are more than asked for: page_size bounds memory."""
        if len(rows) > self._config.page_size:
            raise ReportError(
                f"Report API {what} returned {len(rows)} rows in a page of at most "
                f"{self._config.page_size}"
            )
        return rows

    async def executions(
        self, start: datetime, end: datetime
    ) -> AsyncIterator[Sequence[trading_pb2.Execution]]:
        def fetch(token: str) -> Awaitable[report_pb2.SearchExecutionsResponse]:
            request = report_pb2.SearchExecutionsRequest(
                page_size=self._config.page_size,
                page_token=token,
                start_time=_timestamp(start),
                end_time=_timestamp(end),
            )
            return self._stub.SearchExecutions(
                request, metadata=self._metadata(), timeout=self._config.call_timeout
            )

        async for page in self._pages("SearchExecutions", fetch):
            yield self._page_rows("SearchExecutions", page.executions)

    async def trades(
        self, start: datetime, end: datetime
    ) -> AsyncIterator[Sequence[trading_pb2.Trade]]:
        def fetch(token: str) -> Awaitable[report_pb2.SearchTradesResponse]:
            request = report_pb2.SearchTradesRequest(
                page_size=self._config.page_size,
                page_token=token,
                start_time=_timestamp(start),
                end_time=_timestamp(end),
            )
            return self._stub.SearchTrades(
                request, metadata=self._metadata(), timeout=self._config.call_timeout
            )

        async for page in self._pages("SearchTrades", fetch):
            yield self._page_rows("SearchTrades", page.trades)

    async def positions(self) -> Sequence[trading_pb2.Position]:
        # ListPositions is not a paced search on the venue, but one more token is cheap safety.
        response = await self._call(
            "ListPositions",
            lambda: self._stub.ListPositions(
                report_pb2.ListPositionsRequest(),
                metadata=self._metadata(),
                timeout=self._config.call_timeout,
            ),
        )
        return response.positions


# --- snapshots -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    run_id: int
    business_date: date
    as_of: datetime
    window_start: datetime
    window_end: datetime
    executions: int
    trades: int
    positions: int
    other_dates: int  # rows in the search window that belong to a neighbouring trade date
    calls: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "executions": self.executions,
            "trades": self.trades,
            "positions": self.positions,
            "other_dates": self.other_dates,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
        }


def report_window(business_date: date, margin: timedelta) -> tuple[datetime, datetime]:
    midnight = datetime.combine(business_date, dtime(0), tzinfo=UTC)
    return midnight - margin, midnight + timedelta(days=1) + margin


def _columns(table: Any, *, skip: Iterable[str] = ()) -> tuple[str, ...]:
    skipped = set(skip)
    return tuple(c.name for c in table.__table__.columns if c.name not in skipped)


EXECUTION_COLUMNS = _columns(ReportExecution, skip=("fetched_at",))
TRADE_COLUMNS = _columns(ReportTrade, skip=("fetched_at",))
POSITION_COLUMNS = _columns(ReportPosition, skip=("as_of", "raw"))
_STAGED = {
    "report_execution": "recon_snap_execution",
    "report_trade": "recon_snap_trade",
}


def _copy(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    dbapi = conn.connection.driver_connection
    assert isinstance(dbapi, psycopg.Connection)
    with dbapi.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def _malformed(what: str, exc: parse.Rejected) -> ReportError:
    return ReportError(f"Report API returned a malformed {what}: {exc.reason}")


def execution_rows(
    page: Sequence[trading_pb2.Execution], business_date: date
) -> tuple[list[tuple[Any, ...]], int]:
    """Rows of the date, and how many of the page belong to another date."""
    rows: list[tuple[Any, ...]] = []
    for message in page:
        try:
            event = parse.execution(message)
        except parse.Rejected as exc:
            raise _malformed("execution", exc) from None
        if event.business_date == business_date:
            rows.append(tuple(getattr(event, name) for name in EXECUTION_COLUMNS))
    return rows, len(page) - len(rows)


def trade_rows(
    page: Sequence[trading_pb2.Trade], business_date: date
) -> tuple[list[tuple[Any, ...]], int]:
    rows: list[tuple[Any, ...]] = []
    for message in page:
        try:
            event = parse.trade_capture(message)
        except parse.Rejected as exc:
            raise _malformed("trade", exc) from None
        if event.business_date == business_date:
            rows.append(tuple(getattr(event, name) for name in TRADE_COLUMNS))
    return rows, len(page) - len(rows)


def position_rows(page: Sequence[trading_pb2.Position], as_of: datetime) -> list[tuple[Any, ...]]:
    """The position checks of a streamed position change apply to a listed position too."""
    rows: list[tuple[Any, ...]] = []
    for message in page:
        try:
            event = parse.position_change(
                trading_pb2.PositionChange(position=message, change_time=_timestamp(as_of))
            )
        except parse.Rejected as exc:
            raise _malformed("position", exc) from None
        values = tuple(getattr(event, name) for name in POSITION_COLUMNS)
        rows.append((as_of, *values, message.SerializeToString()))
    return rows


async def snapshot(
    engine: Engine,
    client: ReportClient,
    business_date: date,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SnapshotSummary:
    """Replace the date's Report API snapshot; records a `report_snapshot` run either way.

    Pages are staged in session temp tables as they arrive (no transaction stays open across the
    paced waits); the swap into the snapshot tables is one short transaction.
    """
    started = time.perf_counter()
    as_of = now()
    start, end = report_window(business_date, client.config.window_margin)
    calls_before = client.calls
    with engine.connect() as conn:
        with conn.begin():
            ensure_partitions(conn, [business_date])
        with conn.begin():
            run_id = conn.execute(
                text(
                    "INSERT INTO recon_run (job, business_date, started_at)"
                    " VALUES (:job, :business_date, :as_of) RETURNING id"
                ),
                {"job": SNAPSHOT_JOB, "business_date": business_date, "as_of": as_of},
            ).scalar_one()
        try:
            with conn.begin():
                for table, staged in _STAGED.items():
                    conn.execute(
                        text(f"CREATE TEMP TABLE {staged} (LIKE {table} INCLUDING DEFAULTS)")
                    )
            counts = {"executions": 0, "trades": 0, "other_dates": 0}
            async for executions in client.executions(start, end):
                rows, other = execution_rows(executions, business_date)
                with conn.begin():
                    _copy(conn, "recon_snap_execution", EXECUTION_COLUMNS, rows)
                counts["other_dates"] += other
            async for trades in client.trades(start, end):
                rows, other = trade_rows(trades, business_date)
                with conn.begin():
                    _copy(conn, "recon_snap_trade", TRADE_COLUMNS, rows)
                counts["other_dates"] += other
            positions = position_rows(await client.positions(), as_of)
            with conn.begin():
                params = {"business_date": business_date, "as_of": as_of}
                for (table, staged), columns in zip(
                    _STAGED.items(), (EXECUTION_COLUMNS, TRADE_COLUMNS), strict=True
                ):
                    conn.execute(
                        text(f"DELETE FROM {table} WHERE business_date = :business_date"), params
                    )
                    inserted = conn.execute(
                        text(
                            f"INSERT INTO {table} ({', '.join(columns)}, fetched_at)"
                            f" SELECT DISTINCT ON (id) {', '.join(columns)}, :as_of"
                            f" FROM {staged} ORDER BY id"
                        ),
                        params,
                    ).rowcount
                    counts["executions" if table == "report_execution" else "trades"] = inserted
                _copy(conn, "report_position", ("as_of", *POSITION_COLUMNS, "raw"), positions)
                summary = SnapshotSummary(
                    run_id=run_id,
                    business_date=business_date,
                    as_of=as_of,
                    window_start=start,
                    window_end=end,
                    executions=counts["executions"],
                    trades=counts["trades"],
                    positions=len(positions),
                    other_dates=counts["other_dates"],
                    calls=client.calls - calls_before,
                    seconds=time.perf_counter() - started,
                )
                _finish_run(conn, run_id, "succeeded", summary.as_dict(), None)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            write_through_outage(engine, lambda c: _finish_run(c, run_id, "failed", {}, error))
            raise
        finally:
            with conn.begin():
                for staged in _STAGED.values():
                    conn.execute(text(f"DROP TABLE IF EXISTS {staged}"))
    return summary


def _finish_run(
    conn: Connection, run_id: int, status: str, counts: dict[str, Any], error: str | None
) -> None:
    conn.execute(
        text(
            "UPDATE recon_run SET status = :status, finished_at = now(),"
            " counts = CAST(:counts AS jsonb), error = :error WHERE id = :id"
        ),
        {"id": run_id, "status": status, "counts": orjson.dumps(counts).decode(), "error": error},
    )


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    run_id: int
    as_of: datetime
    window_start: datetime
    window_end: datetime


def latest_snapshot(conn: Connection, business_date: date) -> SnapshotRef | None:
    """The date's current Report API snapshot, if it has one."""
    row = conn.execute(
        text(
            "SELECT id, counts FROM recon_run"
            " WHERE job = :job AND business_date = :business_date AND status = 'succeeded'"
            " ORDER BY id DESC LIMIT 1"
        ),
        {"job": SNAPSHOT_JOB, "business_date": business_date},
    ).first()
    if row is None:
        return None
    counts = row.counts
    return SnapshotRef(
        run_id=row.id,
        as_of=datetime.fromisoformat(counts["as_of"]),
        window_start=datetime.fromisoformat(counts["window_start"]),
        window_end=datetime.fromisoformat(counts["window_end"]),
    )


# --- wiring from settings ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportEndpoint:
    """Where and as whom to call the Report API."""

    target: str
    tls: bool
    allow_insecure: bool
    tokens: TokenSource
    participant_id: str | None
    config: ReportClientConfig = field(default_factory=ReportClientConfig)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportEndpoint | None:
        """None when no exchange credentials are configured: then there is no Report API."""
        from app.ingest.auth import AuthError, token_source_from_settings

        try:
            tokens = token_source_from_settings(settings)
        except AuthError:
            return None
        return cls(
            target=settings.exchange_target,
            tls=settings.exchange_tls,
            allow_insecure=settings.exchange_allow_insecure,
            tokens=tokens,
            participant_id=settings.participant_id,
            config=ReportClientConfig(
                requests_per_minute=settings.report_requests_per_minute,
                page_size=settings.report_page_size,
                max_pages=settings.report_max_pages,
            ),
        )

    def metadata(self) -> list[tuple[str, str]]:
        metadata = [("authorization", f"Bearer {self.tokens.current()}")]
        if self.participant_id:
            metadata.append(("x-participant-id", self.participant_id))
        return metadata


async def snapshot_from(
    engine: Engine, endpoint: ReportEndpoint, business_date: date
) -> SnapshotSummary:
    """Open a channel, keep the token fresh meanwhile, and take the date's snapshot."""
    from app.ingest.dropcopy import open_channel

    await endpoint.tokens.start()
    stop = asyncio.Event()
    refresher = asyncio.create_task(endpoint.tokens.run(stop))
    channel = open_channel(
        endpoint.target, tls=endpoint.tls, allow_insecure=endpoint.allow_insecure
    )
    try:
        client = ReportClient(
            report_pb2_grpc.ReportAPIStub(channel), endpoint.metadata, endpoint.config
        )
        return await snapshot(engine, client, business_date)
    finally:
        stop.set()
        await channel.close(None)
        await refresher
