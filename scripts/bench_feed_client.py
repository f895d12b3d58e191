"""Worker CPU per orders-feed frame, in layers: what the websocket receive alone costs, then with
the parser, then through `FeedConsumer` into a sink that drops what is put, then through the real
`SourceSink` (batching, its flusher and writer thread) up to, not including, the database.

The venue (a scale-1 day with no breaks, `--feed-replay` so every connection gets the day from
the start) runs in a process of its own; each measurement runs in a fresh client process that
counts its own CPU time (user + system, all threads) from the ack of its subscription to its
N-th frame. Runs are interleaved layer by layer and repeated, since the 2-core host is shared.

    .venv/bin/python scripts/bench_feed_client.py --frames 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "benchkey"
LAYERS = ("recv", "parse", "consumer", "sink")
LAYER_HELP = {
    "recv": "websocket receive only",
    "parse": "+ parse.orders_frame",
    "consumer": "FeedConsumer into a sink that drops",
    "sink": "FeedConsumer into SourceSink, no-op writer",
}


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU and wall time from `start()` (after the subscription's ack) to `stop()`."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def start(self) -> None:
        self.cpu, self.wall = cpu_now(), time.perf_counter()

    def stop(self) -> tuple[float, float]:
        return cpu_now() - self.cpu, time.perf_counter() - self.wall


async def _raw_client(url: str, frames: int, parse_too: bool) -> tuple[int, float, float]:
    """The feed client's own connection (`FeedConsumer._open`), read as the consumer reads it."""
    from app.ingest import feeds, parse
    from app.observability import IngestMetrics

    consumer = feeds.FeedConsumer(
        feeds.ORDERS,
        url=url,
        sink=_DroppingSink(frames),  # type: ignore[arg-type]
        settings=feeds.FeedSettings(),
        metrics=IngestMetrics(),
    )
    meter = Meter()
    async with consumer._open() as receiver:
        await consumer._handshake(receiver)
        meter.start()
        parse_frame = parse.orders_frame
        seen = 0
        while seen < frames:
            messages = await receiver.receive()
            seen += len(messages)
            if parse_too:
                for raw in messages:
                    parse_frame(raw)
        return (seen, *meter.stop())


class _Status:
    def touch(self) -> None:
        pass

    connected = False
    reconnects = 0
    gaps = 0


class _DroppingSink:
    """Counts what is put and drops it; `done` once `frames` events and dead letters came after
    the first put, which starts the meter."""

    def __init__(self, frames: int) -> None:
        self.status = _Status()
        self.meter = Meter()
        self._want = frames
        self.seen = -1
        self.done = asyncio.Event()

    async def put(self, events: Sequence[Any], dead: Sequence[Any], checkpoint: Any) -> None:
        if self.seen < 0:
            self.meter.start()
            self.seen = 0
            return
        self.seen += len(events) + len(dead)
        if self.seen >= self._want:
            self.done.set()

    async def call(self, fn: Any) -> Any:
        return None


class _NoopWriter:
    """A BatchWriter that writes nothing (the sink's thread hand-off and batching stay)."""

    def write(
        self, events: Sequence[Any], dead: Sequence[Any], checkpoint: Any, *, before_merge: Any
    ) -> None:
        before_merge()

    def load_checkpoint(self, stream: str) -> None:
        return None


async def _consumer_client(url: str, frames: int, real_sink: bool) -> tuple[int, float, float]:
    from app.ingest import feeds
    from app.ingest.pipeline import SourceSink, SourceStatus
    from app.observability import IngestMetrics

    metrics = IngestMetrics()
    dropping = _DroppingSink(frames)
    sink: Any = dropping
    if real_sink:
        real = SourceSink(
            SourceStatus("feed.orders"),
            _NoopWriter(),  # type: ignore[arg-type]
            metrics,
            max_rows=5000,
            max_delay=0.2,
        )
        real.start()
        put = real.put

        async def counting_put(events: Sequence[Any], dead: Sequence[Any], cp: Any) -> None:
            await put(events, dead, cp)
            await dropping.put(events, dead, cp)

        real.put = counting_put  # type: ignore[method-assign]
        sink = real
    consumer = feeds.FeedConsumer(
        feeds.ORDERS, url=url, sink=sink, settings=feeds.FeedSettings(), metrics=metrics
    )
    task = asyncio.create_task(consumer.run())
    await dropping.done.wait()
    cpu, wall = dropping.meter.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if real_sink:
        await sink.close(10)
    return dropping.seen, cpu, wall


def client(layer: str, url: str, frames: int) -> dict[str, float]:
    if layer in ("recv", "parse"):
        seen, cpu, wall = asyncio.run(_raw_client(url, frames, layer == "parse"))
    else:
        seen, cpu, wall = asyncio.run(_consumer_client(url, frames, layer == "sink"))
    return {"frames": seen, "cpu": cpu, "wall": wall}


def run_client(layer: str, url: str, frames: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", layer, "--url", url, "--frames", str(frames)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def start_venue(store: Path) -> tuple[subprocess.Popen[str], str]:
    code = "import typer; from app.venue.cli import venue; typer.run(venue)"
    args = [sys.executable, "-c", code, "--scale=1", "--breaks=none", f"--store={store}"]
    args += ["--grpc-port=0", "--orders-port=0", "--trades-port=0", f"--ws-key={KEY}"]
    args += ["--feed-replay", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("the venue did not start")
    url: str = json.loads(line)["orders_url"]
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "bench-venue")
    parser.add_argument("--url", help="an orders feed already running (else a venue is started)")
    parser.add_argument("--client", choices=LAYERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(args.client, args.url, args.frames)))
        return

    layers = args.layers.split(",")
    venue = None
    url = args.url
    if url is None:
        venue, url = start_venue(args.store)
    print(f"nproc {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    runs: dict[str, list[dict[str, float]]] = {layer: [] for layer in layers}
    try:
        for _ in range(args.repeat):
            for layer in layers:
                runs[layer].append(run_client(layer, url, args.frames))
    finally:
        if venue is not None:
            venue.terminate()
            venue.wait(timeout=30)
    print(f"{args.frames:,} frames per run; worker CPU us/frame (median, then each run); frames/s")
    for layer in layers:
        per_frame = [1e6 * r["cpu"] / r["frames"] for r in runs[layer]]
        rate = [r["frames"] / r["wall"] for r in runs[layer]]
        each = " ".join(f"{v:.1f}" for v in per_frame)
        print(
            f"  {layer:9s} {LAYER_HELP[layer]:44s} {statistics.median(per_frame):6.1f}"
            f"  ({each})  {statistics.median(rate):>9,.0f}/s"
        )


if __name__ == "__main__":
    main()
