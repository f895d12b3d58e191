"""Serving throughput of the simulated venue on loopback: events/s for one gRPC executions stream
and one websocket orders feed, each read by a client in a separate process, and the venue's CPU
per event served (process CPU time of the venue over the run / events). Each is run `--repeat`
times; the run with the median CPU per event is printed (on a shared 2-core VM one run varies by
a third).

    .venv/bin/python scripts/bench_venue_serve.py --scale 0.1 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def grpc_client(target: str, want: int) -> dict[str, float]:
    import grpc

    from polymarket.v1 import dropcopy_pb2, dropcopy_pb2_grpc

    metadata = (("authorization", "Bearer devtoken"), ("x-participant-id", "firms/B/users/bench"))
    with grpc.insecure_channel(target) as channel:
        stub = dropcopy_pb2_grpc.DropCopyAPIStub(channel)
        started = time.perf_counter()
        call = stub.CreateDropCopySubscription(
            dropcopy_pb2.CreateDropCopySubscriptionRequest(), metadata=metadata, timeout=600
        )
        got = 0
        for response in call:
            got += len(response.executions)
            if got >= want:
                break
        elapsed = time.perf_counter() - started
        call.cancel()
    return {"events": got, "seconds": elapsed}


def ws_client(url: str, want: int) -> dict[str, float]:
    from websockets.sync.client import connect

    subscribe = {
        "action": "subscribe",
        "platform": "polymarket",
        "version": 1,
        "type": "orders",
        "filters": {"users": ["*"], "status": "all"},
    }
    with connect(url, close_timeout=0.1, max_size=None) as ws:
        ws.recv(timeout=10)  # connected
        started = time.perf_counter()
        ws.send(json.dumps(subscribe))
        ws.recv(timeout=10)  # ack
        got = 0
        while got < want:
            ws.recv(timeout=30)
            got += 1
        elapsed = time.perf_counter() - started
    return {"events": got, "seconds": elapsed}


def run_client(kind: str, address: str, want: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", kind, "--address", address, "--want", str(want)],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "venue-bench")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1, help="runs per source (median shown)")
    parser.add_argument("--client", choices=["grpc", "ws"], help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--want", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client == "grpc":
        print(json.dumps(grpc_client(args.address, args.want)))
        return
    if args.client == "ws":
        print(json.dumps(ws_client(args.address, args.want)))
        return

    from app.venue.feeds import FeedOptions
    from app.venue.grpc_server import GrpcOptions
    from app.venue.model import DayConfig
    from app.venue.run import VenueOptions, open_store, serve_store

    started = time.perf_counter()
    store = open_store(DayConfig(scale=args.scale), args.store)
    print(f"store ready in {time.perf_counter() - started:.1f} s ({store.path})")
    executions = store.stream_length("executions")
    orders = len(store.orders_feed(0, 10**9))
    options = VenueOptions(
        grpc=GrpcOptions(batch_size=args.batch_size), feeds=FeedOptions(replay=True)
    )
    results = []
    with serve_store(store, options) as venue:
        for name, kind, address, want in (
            ("gRPC executions stream", "grpc", venue.grpc_target, executions),
            ("ws orders feed", "ws", venue.orders_url, orders),
        ):
            runs = []
            for _ in range(args.repeat):
                cpu = time.process_time()  # the venue's threads: what serving costs the server
                result = run_client(kind, address, want)
                runs.append((time.process_time() - cpu, result))
            runs.sort(key=lambda run: run[0])
            results.append((name, runs))
    print(
        f"nproc {len(os.sched_getaffinity(0))}, scale {args.scale}, gRPC batch {args.batch_size},"
        f" runs {args.repeat}"
    )
    for name, runs in results:
        server_cpu, result = runs[len(runs) // 2]
        rate = result["events"] / result["seconds"]
        per_event = [f"{1e6 * cpu / r['events']:.1f}" for cpu, r in runs]
        print(
            f"{name:24s} {int(result['events']):>9,d} events in {result['seconds']:6.2f} s"
            f" = {rate:>10,.0f} events/s; server CPU {server_cpu:5.2f} s"
            f" ({1e6 * server_cpu / result['events']:.1f} us/event; runs {' '.join(per_event)})"
        )


if __name__ == "__main__":
    main()
