"""`recon venue`: build (or reuse) a simulated trading day and serve it until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.config import get_settings
from app.venue.faults import FaultSpec
from app.venue.feeds import FeedOptions
from app.venue.grpc_server import GrpcOptions
from app.venue.model import DayConfig, default_breaks
from app.venue.run import Venue, VenueOptions, open_store, serve_until_signal

_DEFAULT_DAY = DayConfig()


def parse_breaks(spec: str) -> dict[str, int]:
    """ "all" = a couple of each kind, "none" = a clean day, else "kind=count,..."."""
    spec = spec.strip()
    if spec == "all":
        return default_breaks()
    if spec in {"", "none"}:
        return {}
    breaks: dict[str, int] = {}
    for item in spec.split(","):
        kind, sep, count = (part.strip() for part in item.partition("="))
        if not sep or not count.isdigit():
            raise ValueError(f"bad break {item.strip()!r}: expected kind=count")
        breaks[kind] = int(count)
    return breaks


def venue(
    *,
    seed: Annotated[int, typer.Option(help="Generator seed; equal options give an equal day.")] = (
        _DEFAULT_DAY.seed
    ),
    business_date: Annotated[
        str,
        typer.Option("--date", metavar="YYYY-MM-DD", help="Business date of the simulated day."),
    ] = _DEFAULT_DAY.business_date.isoformat(),
    scale: Annotated[
        float,
        typer.Option(help="Day size: 1.0 is ~1,000,000 chain events and 200,000 executions."),
    ] = _DEFAULT_DAY.scale,
    breaks: Annotated[
        str,
        typer.Option(
            help='Injected breaks: "all" (a couple of each kind), "none", or "kind=count,..." '
            "(kinds: " + ", ".join(sorted(default_breaks())) + ")."
        ),
    ] = "all",
    faults: Annotated[
        str,
        typer.Option(
            help="Server faults, off by default: comma-separated key=value of disconnect_every "
            "(events per stream/connection), duplicate_rate, reorder_window, latency_ms, "
            "token_ttl_s, ws_drop_every, malformed_rate, seed. "
            'Example: "disconnect_every=5000,duplicate_rate=0.01,seed=7".'
        ),
    ] = "",
    faults_log: Annotated[
        Path | None, typer.Option(help="Append every injected fault here as JSON lines.")
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Write the day's ground truth (breaks, counts) here.")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Directory of built days (default: <RECON_DATA_DIR>/venue)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address every server binds to.")] = "127.0.0.1",
    grpc_port: Annotated[int, typer.Option(help="DropCopyAPI + ReportAPI port (0 = any).")] = 50051,
    orders_port: Annotated[int, typer.Option(help="Orders channel websocket port.")] = 8765,
    trades_port: Annotated[int, typer.Option(help="Legacy trade feed websocket port.")] = 8766,
    token: Annotated[
        list[str] | None,
        typer.Option(help="Accepted gRPC bearer token (repeatable; default devtoken)."),
    ] = None,
    ws_key: Annotated[
        list[str] | None,
        typer.Option(help="Accepted feed API key, /ws/<key> (repeatable; default devkey)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Events per DropCopy response.")] = 500,
    pace: Annotated[
        float | None,
        typer.Option(help="Events per second per stream/feed, to play the day like live."),
    ] = None,
    report_rate: Annotated[
        int, typer.Option(help="Report API search calls per minute per token.")
    ] = 12,
    max_streams: Annotated[int, typer.Option(help="Concurrent DropCopy streams per token.")] = 20,
    feed_replay: Annotated[
        bool,
        typer.Option(
            help="Every feed subscription starts at the beginning of the day "
            "(default: one live timeline per feed, no replay on reconnect)."
        ),
    ] = False,
    ping_interval: Annotated[
        float, typer.Option(help="Seconds between feed pings; silent clients are dropped.")
    ] = 30.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the endpoints as one JSON line.")
    ] = False,
) -> None:
    """Run the simulated venue: gRPC DropCopyAPI + ReportAPI and the two websocket trade feeds,
    serving one deterministic trading day with injected breaks, until SIGINT/SIGTERM."""
    console = Console(stderr=json_output)
    try:
        day = DayConfig(
            seed=seed,
            business_date=date.fromisoformat(business_date),
            scale=scale,
            breaks=parse_breaks(breaks),
        )
        fault_spec = FaultSpec.parse(faults)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    store_dir = store or get_settings().data_dir / "venue"
    with Progress(
        TextColumn("building day"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("build", total=None)
        day_store = open_store(day, store_dir, lambda n: progress.update(task, completed=n))
    if truth is not None:
        day_store.write_truth(truth)
    options = VenueOptions(
        host=host,
        grpc_port=grpc_port,
        orders_port=orders_port,
        trades_port=trades_port,
        grpc=GrpcOptions(
            tokens=frozenset(token or ["devtoken"]),
            batch_size=batch_size,
            pace_events_per_s=pace,
            report_requests_per_min=report_rate,
            max_streams_per_token=max_streams,
        ),
        feeds=FeedOptions(
            keys=frozenset(ws_key or ["devkey"]),
            replay=feed_replay,
            pace_events_per_s=pace,
            ping_interval_s=ping_interval,
            ping_timeout_s=ping_interval,
        ),
        faults=fault_spec,
        faults_log=faults_log,
    )

    def announce(running: Venue) -> None:
        if json_output:
            endpoints = {
                "grpc_target": running.grpc_target,
                "orders_url": running.orders_url,
                "trades_url": running.trades_url,
                "truth": str(truth) if truth else None,
            }
            print(orjson.dumps(endpoints).decode(), flush=True)
        else:
            console.print(running.describe())
            console.print("serving; Ctrl-C to stop", style="dim")

    asyncio.run(serve_until_signal(day_store, options, announce))
