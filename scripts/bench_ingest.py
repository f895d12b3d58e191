"""Benchmark `recon ingest` end to end on loopback: venue process -> worker process -> Postgres.

For each run (executions alone, the orders feed alone, everything in one worker, everything
split over two workers: DropCopy and feeds) a fresh database gets a whole simulated day ingested
by worker subprocesses. Prints per source: events,
events/s (from the commit times in the database), the rate of a raw psycopg COPY of the very
same rows into a plain table in this run, the ratio, and the worker's peak RSS.

Per run it also prints the CPU time per event of each process (worker, venue, and the Postgres
backends serving the run, read from /proc when Postgres is local): on a host shared with other
work, events/s swing with the load, CPU per event much less; and nproc divided by the sum is the
rate the machine could reach with nothing else running.

    .venv/bin/python scripts/bench_ingest.py --scale 0.1      # ~100k chain events
    .venv/bin/python scripts/bench_ingest.py --scale 5 --runs all   # ~5M chain events
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402 - after the path fix for running as a script

TOKEN = "bench-token-0123456789"  # noqa: S105 - the local venue's made-up token
KEY = "benchkey"
PARTICIPANT = "firms/F1/users/bench"
DROPCOPY = [
    "dropcopy.executions",
    "dropcopy.trade_captures",
    "dropcopy.instrument_states",
    "dropcopy.position_changes",
]
FEEDS = ["feed.orders", "feed.trades"]
# Each run: one worker process per source group, all at once.
RUNS = {
    "executions": [["dropcopy.executions"]],
    "orders": [["feed.orders"]],
    "all": [DROPCOPY + FEEDS],
    "split": [DROPCOPY, FEEDS],
}
RAW_SAMPLE = 500_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TABLES = {
    "dropcopy.executions": ["execution"],
    "dropcopy.trade_captures": ["trade_capture_state"],
    "dropcopy.instrument_states": ["instrument_state_change"],
    "dropcopy.position_changes": ["position_change"],
    "feed.orders": ["order_filled", "order_filled_pending", "fee_refund"],
    "feed.trades": ["feed_trade"],
}


def _python(module_fn: str) -> list[str]:
    module, fn = module_fn.rsplit(":", 1)
    return [sys.executable, "-c", f"import typer; from {module} import {fn}; typer.run({fn})"]


@dataclass
class Measured:
    source: str
    events: int
    seconds: float
    raw_copy_rows_per_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(server: str, template: str | None = None) -> str:
    name = f"recon_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq(server), autocommit=True) as conn:
        suffix = f" TEMPLATE {template}" if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    return name


def drop_database(server: str, name: str) -> None:
    # A backend still dropping a big temp table may outlive FORCE's 5 s grace: try again.
    for attempt in range(10):
        try:
            with psycopg.connect(libpq(server), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.errors.ObjectInUse:
            if attempt == 9:
                raise
            time.sleep(3)
        else:
            return


def with_database(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def start_venue(
    scale: float, store: Path, batch: int
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    args = [
        *_python("app.venue.cli:venue"),
        f"--scale={scale}",
        "--breaks=none",
        f"--store={store}",
        "--grpc-port=0",
        "--orders-port=0",
        "--trades-port=0",
        f"--token={TOKEN}",
        f"--ws-key={KEY}",
        f"--batch-size={batch}",
        "--feed-replay",
        "--json",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("the venue did not start")
    return proc, json.loads(line)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class BackendCpu(threading.Thread):
    """CPU seconds of the local Postgres backends serving one database, sampled every 0.1 s
    while the run lasts (so the last moments of a backend that exits are missed)."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self._tag = f" {database} ".encode()
        self._seen: dict[int, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" "
                except OSError:
                    continue
                if self._tag in cmdline:
                    seconds = cpu_seconds(int(entry.name))
                    if seconds is not None:
                        self._seen[int(entry.name)] = seconds

    def stop(self) -> float | None:
        self._done.set()
        self.join()
        return sum(self._seen.values()) if self._seen else None


def peak_rss(pid: int) -> int | None:
    """The process's own high-water RSS in bytes (VmHWM), None once it is gone.

    Not wait4's ru_maxrss: on Linux that carries over the RSS of the forked copy of this
    script from before the exec, so a worker started after a run that left this process big
    (the raw-COPY sample) reported this process's size, not its own (1,060 MiB for ~130)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


class PeakRss(threading.Thread):
    """The last VmHWM seen of each process, sampled every 0.1 s until it exits."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self._peaks = dict.fromkeys(pids, 0)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.1):
            for pid in self._peaks:
                peak = peak_rss(pid)
                if peak is not None:
                    self._peaks[pid] = max(self._peaks[pid], peak)

    def stop(self) -> list[int]:
        self._done.set()
        self.join()
        return list(self._peaks.values())


@dataclass
class RunCpu:
    workers: float
    venue: float
    postgres: float | None


def run_workers(
    endpoints: dict[str, str],
    database_url: str,
    groups: list[list[str]],
    batch_rows: int,
    venue_pid: int,
    *,
    idle: float,
) -> tuple[float, list[int], RunCpu]:
    """Run one worker per source group until idle: wall time, each one's peak RSS (bytes) and
    the CPU seconds the run cost each process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECON_")}
    env.update(
        RECON_DATABASE_URL=database_url,
        RECON_EXCHANGE_TARGET=endpoints["grpc_target"],
        RECON_EXCHANGE_TLS="false",
        RECON_EXCHANGE_TOKEN=TOKEN,
        RECON_PARTICIPANT_ID=PARTICIPANT,
        RECON_FEED_ORDERS_URL=endpoints["orders_url"],
        RECON_FEED_TRADES_URL=endpoints["trades_url"],
        RECON_INGEST_BATCH_MAX_ROWS=str(batch_rows),
        RECON_LOG_LEVEL="WARNING",
    )
    backends = BackendCpu(make_url(database_url).database or "")
    backends.start()
    venue_before = cpu_seconds(venue_pid) or 0.0
    started = time.monotonic()
    procs = []
    for group in groups:
        args = [sys.executable, "-c", "from app.cli import main; main()", "ingest"]
        args += ["--exit-when-idle", str(idle)]
        for source in group:
            args += ["--source", source]
        procs.append(subprocess.Popen(args, env=env, cwd=ROOT))
    rss = PeakRss([proc.pid for proc in procs])
    rss.start()
    workers_cpu = 0.0
    for proc in procs:
        # Reaped by wait4, not Popen.wait, for its CPU times; its /proc entry stays readable
        # (a zombie keeps no VmHWM) until then, so the sampler has seen the last of it.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"worker failed with {os.waitstatus_to_exitcode(status)}")
        workers_cpu += usage.ru_utime + usage.ru_stime
    peaks = rss.stop()
    wall = time.monotonic() - started
    venue_cpu = (cpu_seconds(venue_pid) or venue_before) - venue_before
    return wall, peaks, RunCpu(workers_cpu, venue_cpu, backends.stop())


def measure(conn: psycopg.Connection, source: str) -> Measured:
    events = 0
    first = last = None
    raw_rows = 0
    raw_seconds = 0.0
    for table in TABLES[source]:
        count, lo, hi = conn.execute(
            f"SELECT count(*), min(received_at), max(received_at) FROM {table}"
        ).fetchone()  # type: ignore[misc]
        events += count
        if count:
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
        rows, seconds = raw_copy(conn, table)
        raw_rows += rows
        raw_seconds += seconds
    span = (last - first).total_seconds() if first and last else 0.0
    return Measured(source, events, span, raw_rows / raw_seconds if raw_seconds else 0.0)


def raw_copy(conn: psycopg.Connection, table: str) -> tuple[int, float]:
    """COPY the ingested rows back into a plain table: the floor cost of storing them.

    At most RAW_SAMPLE rows: the rate per row is what matters, and a 5M-row day would not fit
    in this process's memory as one buffer.
    """
    buffer = io.BytesIO()
    sample = f"SELECT * FROM {table} LIMIT {RAW_SAMPLE}"
    with conn.cursor().copy(f"COPY ({sample}) TO STDOUT (FORMAT BINARY)") as copy:
        for chunk in copy:
            buffer.write(chunk)
    conn.execute(f"CREATE TEMP TABLE raw_{table} (LIKE {table})")
    started = time.perf_counter()
    with conn.cursor().copy(f"COPY raw_{table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(buffer.getvalue())
    conn.commit()
    seconds = time.perf_counter() - started
    rows = conn.execute(f"SELECT count(*) FROM raw_{table}").fetchone()[0]  # type: ignore[index]
    conn.execute(f"DROP TABLE raw_{table}")
    conn.commit()
    return rows, seconds


def report(
    run: str, wall: float, peaks: list[int], cpu: RunCpu, results: list[Measured], *, idle: float
) -> None:
    rss = ", ".join(f"{p / 2**20:.0f}" for p in peaks)
    print(
        f"\nrun {run}: wall {wall:.1f} s (includes {idle:g} s idle), peak RSS {rss} MiB, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    events = sum(m.events for m in results)
    if events:
        per_event = {"worker": cpu.workers, "venue": cpu.venue, "postgres": cpu.postgres}
        parts = ", ".join(
            f"{name} {'n/a' if seconds is None else f'{seconds / events * 1e6:.1f}'}"
            for name, seconds in per_event.items()
        )
        total = sum(seconds for seconds in per_event.values() if seconds is not None)
        ceiling = (os.cpu_count() or 1) * events / total if total else float("nan")
        print(
            f"  CPU us/event: {parts}; total {total / events * 1e6:.1f} "
            f"(the machine alone: at most {ceiling:,.0f} events/s)"
        )
    print(f"  {'source':28} {'events':>10} {'events/s':>10} {'raw COPY/s':>11} {'ratio':>6}")
    for m in results:
        ratio = m.rate / m.raw_copy_rows_per_s if m.raw_copy_rows_per_s else float("nan")
        print(
            f"  {m.source:28} {m.events:>10,} {m.rate:>10,.0f}"
            f" {m.raw_copy_rows_per_s:>11,.0f} {ratio:>6.2f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "RECON_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--runs", default="executions,orders,all,split")
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--venue-batch", type=int, default=500)
    parser.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "bench-venue")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=2.0,
        help="workers stop once every source is quiet this long; raise it on a loaded machine, "
        "where a stall of the venue can look like the end of the day",
    )
    args = parser.parse_args()

    print(f"nproc={os.cpu_count()} scale={args.scale} load average {os.getloadavg()[0]:.1f}")
    template = create_database(args.database_url)
    upgrade(with_database(args.database_url, template))
    built = time.monotonic()
    venue, endpoints = start_venue(args.scale, args.store, args.venue_batch)
    print(f"venue ready in {time.monotonic() - built:.1f} s")
    try:
        for run in args.runs.split(","):
            name = create_database(args.database_url, template)
            url = with_database(args.database_url, name)
            try:
                wall, peaks, cpu = run_workers(
                    endpoints, url, RUNS[run], args.batch_rows, venue.pid, idle=args.idle_seconds
                )
                with psycopg.connect(libpq(url)) as conn:
                    results = [measure(conn, s) for group in RUNS[run] for s in group]
                report(run, wall, peaks, cpu, results, idle=args.idle_seconds)
            finally:
                drop_database(args.database_url, name)
    finally:
        venue.terminate()
        venue.wait(timeout=30)
        drop_database(args.database_url, template)


if __name__ == "__main__":
    main()
