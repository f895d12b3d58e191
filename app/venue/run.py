"""Run the simulated venue: its gRPC endpoint and both websocket feeds over one stored day.

`Venue` is the asyncio core (start, stop). `VenueHandle` runs a Venue on its own event-loop
thread so tests and the demo can use it in-process; `serve_until_signal` runs one in the
foreground for `recon venue`.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from app.venue.faults import FaultInjector, FaultLog, FaultSpec
from app.venue.feeds import ORDERS_FEED, TRADES_FEED, FeedOptions, FeedServer
from app.venue.grpc_server import GrpcEndpoint, GrpcOptions, VenueGrpc, start_grpc
from app.venue.model import DayConfig
from app.venue.tokens import TokenSigner

if TYPE_CHECKING:
    from app.venue.store import VenueStore


@dataclass(frozen=True, slots=True)
class VenueOptions:
    host: str = "127.0.0.1"
    grpc_port: int = 0  # 0 = ephemeral
    orders_port: int = 0
    trades_port: int = 0
    grpc: GrpcOptions = field(default_factory=GrpcOptions)
    feeds: FeedOptions = field(default_factory=FeedOptions)
    faults: FaultSpec = field(default_factory=FaultSpec)
    faults_log: Path | None = None  # JSON lines of every injected fault, for other processes
    # Signs resume and page tokens. None derives it from the day's config, so tokens issued
    # before a restart of the same day are still honoured after it.
    token_secret: bytes | None = None
    stop_grace_s: float = 1.0


def store_path(config: DayConfig, store_dir: Path) -> Path:
    """One file per day config, so different days share a store directory."""
    return store_dir / f"venue-{config.date_code}-{config.config_hash()[:16]}.sqlite"


def open_store(
    config: DayConfig, store_dir: Path, progress: Callable[[int], None] | None = None
) -> VenueStore:
    """Build the day's store, or reuse the one already built for this exact config."""
    from app.venue.store import VenueStore

    store_dir.mkdir(parents=True, exist_ok=True)
    return VenueStore.build(config, store_path(config, store_dir), progress)


def _derived_secret(store: VenueStore) -> bytes:
    return hashlib.sha256(b"polyrecon-venue-tokens:" + store.config_hash.encode()).digest()


class Venue:
    """All servers of the venue over one store, on the running event loop."""

    def __init__(self, store: VenueStore, options: VenueOptions) -> None:
        self.store = store
        self.options = options
        self.fault_log = FaultLog(options.faults_log)
        faults = FaultInjector(options.faults, self.fault_log)
        signer = TokenSigner(options.token_secret or _derived_secret(store))
        self._grpc_venue = VenueGrpc(store, options.grpc, signer, faults)
        self._grpc: GrpcEndpoint | None = None
        self.orders = FeedServer(ORDERS_FEED, store, options.feeds, faults)
        self.trades = FeedServer(TRADES_FEED, store, options.feeds, faults)

    async def start(self) -> None:
        host = self.options.host
        self._grpc = await start_grpc(self._grpc_venue, host, self.options.grpc_port)
        await self.orders.start(host, self.options.orders_port)
        await self.trades.start(host, self.options.trades_port)

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(self.options.stop_grace_s)
        await self.orders.stop()
        await self.trades.stop()
        self.fault_log.close()

    @property
    def grpc_port(self) -> int:
        return self._grpc.port if self._grpc is not None else 0

    @property
    def grpc_target(self) -> str:
        return f"{self.options.host}:{self.grpc_port}"

    def _feed_url(self, feed: FeedServer) -> str:
        key = min(self.options.feeds.keys)
        return f"ws://{self.options.host}:{feed.port}/ws/{key}"

    @property
    def orders_url(self) -> str:
        return self._feed_url(self.orders)

    @property
    def trades_url(self) -> str:
        return self._feed_url(self.trades)

    def describe(self) -> str:
        return (
            f"gRPC DropCopyAPI + ReportAPI  {self.grpc_target}\n"
            f"orders channel feed          {self.orders_url}\n"
            f"legacy trade feed            {self.trades_url}\n"
            f"faults                       {self.options.faults.describe()}"
        )


class VenueHandle:
    """A running Venue on a background event-loop thread; `stop()` (or `with`) shuts it down."""

    def __init__(self, store: VenueStore, options: VenueOptions) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop_requested: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.venue = Venue(store, options)
        self._thread = threading.Thread(target=self._run, name="venue", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        try:
            await self.venue.start()
        except BaseException as exc:
            self._failure = exc
            await self.venue.stop()
            return
        finally:
            self._ready.set()
        await self._stop_requested.wait()
        await self.venue.stop()

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop_requested is not None:
            self._loop.call_soon_threadsafe(self._stop_requested.set)
        self._thread.join()

    def __enter__(self) -> VenueHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def store(self) -> VenueStore:
        return self.venue.store

    @property
    def fault_log(self) -> FaultLog:
        return self.venue.fault_log

    @property
    def grpc_port(self) -> int:
        return self.venue.grpc_port

    @property
    def grpc_target(self) -> str:
        return self.venue.grpc_target

    @property
    def orders_url(self) -> str:
        return self.venue.orders_url

    @property
    def trades_url(self) -> str:
        return self.venue.trades_url


def serve_store(store: VenueStore, options: VenueOptions | None = None) -> VenueHandle:
    """Start every server of the venue over an opened store, in the background."""
    return VenueHandle(store, options or VenueOptions())


def start_venue(
    config: DayConfig,
    options: VenueOptions | None = None,
    *,
    store_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> VenueHandle:
    """Build (or reuse) the day's store under `store_dir` and start the venue in the background."""
    return serve_store(open_store(config, store_dir, progress), options)


async def serve_until_signal(
    store: VenueStore, options: VenueOptions, on_ready: Callable[[Venue], None]
) -> None:
    """Run the venue in the foreground until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    venue = Venue(store, options)
    try:
        await venue.start()
        on_ready(venue)
        await stop.wait()
    finally:
        await venue.stop()
