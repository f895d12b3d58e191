"""Build the simulated venue's day at a given scale and print throughput and peak memory.

Usage: python scripts/bench_venue_build.py [--scale 1.0] [--serial] [--keep PATH]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.venue.model import DayConfig
from app.venue.store import VenueStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serial", action="store_true", help="no chain worker process")
    parser.add_argument("--keep", type=Path, help="build here and keep the file")
    args = parser.parse_args()
    config = DayConfig(seed=args.seed, scale=args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "day.sqlite"
        path.unlink(missing_ok=True)
        started = time.perf_counter()
        cpu_started = time.process_time()
        with VenueStore.build(config, path, parallel=not args.serial) as store:
            wall = time.perf_counter() - started
            truth = store.truth()
        size_mb = path.stat().st_size / 1e6
    counts = truth["counts"]
    assert isinstance(counts, dict)
    events = sum(counts[name] for name in ("executions", "orders_feed"))
    rows = sum(counts.values()) - sum(
        counts[name] for name in ("order_filled_confirmed", "order_filled_pending", "fee_refund")
    )
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"scale {args.scale}: {events:,} events (executions + orders feed), {rows:,} rows")
    print(f"wall {wall:.1f} s, {events / wall:,.0f} events/s, {rows / wall:,.0f} rows/s")
    print(
        f"cpu: this process {time.process_time() - cpu_started:.1f} s, "
        f"chain worker {children.ru_utime + children.ru_stime:.1f} s"
    )
    print(
        f"peak RSS: this process {own.ru_maxrss / 1024:.0f} MB, "
        f"chain worker {children.ru_maxrss / 1024:.0f} MB; file {size_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
