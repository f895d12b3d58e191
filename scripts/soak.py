"""Soak run (bounded): the venue plays a day live at a fixed rate while `recon ingest` and
`recon scheduler` (intraday reconciliation, Report API included, every `--intraday-minutes`) run
on it for `--minutes`.

Every `--sample-seconds` it samples the worker's and the scheduler's RSS, each DropCopy stream's
and feed's committed events and checkpoint age (seconds since its last commit: how far the
database is behind what the worker has read), and the reconciliation runs so far. At the end it
prints a summary (RSS min/max after warm-up and its drift, max checkpoint age, events/s per source
against the pace, each reconcile run's duration, horizon and breaks, and the breaks opened that
the venue did not inject) and writes it, with every sample, as JSON.

    .venv/bin/python scripts/soak.py --minutes 5 --pace 300 --out /tmp/soak.json

The day is built for the business date of today (UTC), so the intraday ticks reconcile it, and
big enough that the executions stream does not run dry before the end (`--store-dir` keeps it
for the next run of the same day and pace). The database is a fresh `polyrecon_soak` on the
server of `--database-url` (default: RECON_TEST_DATABASE_URL, else the local Postgres).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402 - after the path fix for running as a script
from app.demo import fresh_database  # noqa: E402

TOKEN = "soak-token-0123456789"  # noqa: S105 - the local venue's made-up token
KEY = "soakkey"
PARTICIPANT = "firms/F1/users/soak"
RECON = [sys.executable, "-c", "from app.cli import main; main()"]
# Executions are the scarcest stream per unit of scale (200k vs ~1M orders-feed rows): size the
# day so that it still has executions to play at the end, with a margin.
EXECUTIONS_PER_SCALE = 200_000
MARGIN = 1.3
WARM_UP_S = 60.0


@dataclass
class Sample:
    t: float  # seconds since the worker started
    worker_rss_mb: float
    scheduler_rss_mb: float
    events: dict[str, int]
    checkpoint_age_s: dict[str, float]
    reconcile_runs: int


@dataclass
class Summary:
    minutes: float
    pace_events_per_s_per_source: float
    nproc: int
    load_average: tuple[float, float, float]
    scale: float
    worker_rss_mb: dict[str, float] = field(default_factory=dict)
    scheduler_rss_mb: dict[str, float] = field(default_factory=dict)
    events_per_s: dict[str, float] = field(default_factory=dict)
    max_checkpoint_age_s: dict[str, float] = field(default_factory=dict)
    # A stream that has played its whole day goes quiet and its checkpoint ages: from then on
    # (its last advance) its age says nothing about lag.
    last_advance_s: dict[str, float] = field(default_factory=dict)
    reconcile: dict[str, Any] = field(default_factory=dict)
    breaks: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def start_venue(
    args: argparse.Namespace, scale: float, store: Path, truth: Path
) -> tuple[Any, dict[str, str]]:
    today = datetime.now(UTC).date()
    venue = subprocess.Popen(
        [
            *RECON,
            "venue",
            f"--seed={args.seed}",
            f"--date={today.isoformat()}",
            f"--scale={scale}",
            f"--store={store}",
            f"--truth={truth}",
            "--grpc-port=0",
            "--orders-port=0",
            "--trades-port=0",
            f"--token={TOKEN}",
            f"--ws-key={KEY}",
            f"--pace={args.pace}",
            "--report-rate=100000",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert venue.stdout is not None
    line = venue.stdout.readline()
    if not line:
        raise SystemExit("the venue did not start")
    return venue, json.loads(line)


def recon_env(
    database_url: str, endpoints: dict[str, str], intraday_minutes: float
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECON_")}
    env.update(
        RECON_DATABASE_URL=database_url,
        RECON_EXCHANGE_TARGET=endpoints["grpc_target"],
        RECON_EXCHANGE_TLS="false",
        RECON_EXCHANGE_TOKEN=TOKEN,
        RECON_PARTICIPANT_ID=PARTICIPANT,
        RECON_FEED_ORDERS_URL=endpoints["orders_url"],
        RECON_FEED_TRADES_URL=endpoints["trades_url"],
        RECON_INTRADAY_MINUTES=str(intraday_minutes),
        # End of day well away from the run: this measures intraday reconciliation.
        RECON_EOD_TIME=f"{(datetime.now(UTC).hour + 12) % 24:02d}:00",
        RECON_TIMEZONE="UTC",
        RECON_REPORT_REQUESTS_PER_MINUTE="100000",
        RECON_ALERT_URLS="log:",
        RECON_LOG_LEVEL="INFO",
    )
    return env


def sample(conn: psycopg.Connection[Any], t: float, worker: int, scheduler: int) -> Sample:
    rows = conn.execute(
        "SELECT stream, events_total, extract(epoch FROM now() - updated_at) FROM stream_checkpoint"
    ).fetchall()
    (runs,) = conn.execute(  # type: ignore[misc]
        "SELECT count(*) FROM recon_run WHERE job = 'reconcile' AND status = 'succeeded'"
    ).fetchone()
    return Sample(
        t=round(t, 1),
        worker_rss_mb=round(rss_mb(worker), 1),
        scheduler_rss_mb=round(rss_mb(scheduler), 1),
        events={stream: int(total) for stream, total, _ in rows},
        checkpoint_age_s={stream: round(float(age), 2) for stream, _, age in rows},
        reconcile_runs=int(runs),
    )


def rss_summary(values: list[float]) -> dict[str, float]:
    """Min/max after warm-up, and the drift: median of the last minute minus the first's."""
    if not values:
        return {}
    per_minute = max(1, len(values) // 4)
    return {
        "min": min(values),
        "max": max(values),
        "drift_first_to_last_quarter": round(
            statistics.median(values[-per_minute:]) - statistics.median(values[:per_minute]), 1
        ),
    }


def _until_last_advance(samples: list[Sample], stream: str) -> list[Sample]:
    """The samples up to the last one in which `stream` had committed more events."""
    last = 0
    for i in range(1, len(samples)):
        if samples[i].events.get(stream, 0) > samples[i - 1].events.get(stream, 0):
            last = i
    return samples[: last + 1]


def _busy_age(point: Sample, before: Sample | None) -> float:
    """The oldest checkpoint among the streams that committed since the previous sample."""
    busy = [
        age
        for stream, age in point.checkpoint_age_s.items()
        if before is None or point.events[stream] > before.events.get(stream, 0)
    ]
    return max(busy, default=0.0)


def summarise(summary: Summary, conn: psycopg.Connection[Any]) -> None:
    steady = [s for s in summary.samples if s.t >= WARM_UP_S] or summary.samples
    summary.worker_rss_mb = rss_summary([s.worker_rss_mb for s in steady])
    summary.scheduler_rss_mb = rss_summary([s.scheduler_rss_mb for s in steady])
    first, last = steady[0], steady[-1]
    span = last.t - first.t
    for stream, total in last.events.items():
        before = first.events.get(stream, 0)
        summary.events_per_s[stream] = round((total - before) / span, 1) if span else 0.0
        active = _until_last_advance(steady, stream)
        summary.max_checkpoint_age_s[stream] = max(
            s.checkpoint_age_s.get(stream, 0.0) for s in active
        )
        summary.last_advance_s[stream] = active[-1].t
    runs = conn.execute(
        "SELECT extract(epoch FROM finished_at - started_at), status, counts FROM recon_run"
        " WHERE job = 'reconcile' ORDER BY id"
    ).fetchall()
    succeeded = [
        (round(float(d), 2), counts) for d, status, counts in runs if status == "succeeded"
    ]
    durations = [d for d, _ in succeeded]
    summary.reconcile = {
        "runs": len(runs),
        "succeeded": len(durations),
        "seconds": durations,
        "max_seconds": max(durations, default=0.0),
        "per_run": [
            {
                "seconds": d,
                "breaks_found": sum(counts["found"].values()),
                "opened": counts["lifecycle"]["opened"],
                "horizons": counts.get("horizons", {}),
                "deferred": counts.get("deferred", {}),
            }
            for d, counts in succeeded
        ],
    }


def breaks_summary(conn: psycopg.Connection[Any], truth: Path) -> dict[str, Any]:
    """Every break the runs opened, against the venue's injected ones (which need not all have
    played by the end): the ones it did not inject are false alarms."""
    injected = {(b["kind"], b["key"]) for b in json.loads(truth.read_text())["breaks"]}
    opened = conn.execute("SELECT kind, key FROM recon_break").fetchall()
    not_injected = sorted((kind, key) for kind, key in opened if (kind, key) not in injected)
    by_kind: dict[str, int] = {}
    for kind, _ in not_injected:
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return {
        "injected_in_the_day": len(injected),
        "opened": len(opened),
        "opened_injected": len(opened) - len(not_injected),
        "opened_not_injected": len(not_injected),
        "not_injected_by_kind": by_kind,
        "not_injected_examples": [f"{kind} {key}" for kind, key in not_injected[:10]],
    }


def stop(proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--pace", type=float, default=300.0, help="events/s the venue plays per stream and feed"
    )
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument(
        "--intraday-minutes",
        type=float,
        default=2.0,
        help="the scheduler's intraday reconciliation interval",
    )
    parser.add_argument(
        "--store-dir", type=Path, help="keep the built day here (default: a temporary directory)"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "RECON_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    args = parser.parse_args()

    seconds = args.minutes * 60
    scale = round(max(0.01, args.pace * seconds * MARGIN / EXECUTIONS_PER_SCALE), 3)
    database_url = fresh_database(args.database_url, "polyrecon_soak")
    upgrade(database_url)
    summary = Summary(
        minutes=args.minutes,
        pace_events_per_s_per_source=args.pace,
        nproc=os.cpu_count() or 0,
        load_average=os.getloadavg(),
        scale=scale,
    )
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        print(f"building a day at scale {scale} and starting the venue", flush=True)
        truth = Path(tmp) / "truth.json"
        store = args.store_dir or Path(tmp) / "venue"
        venue, endpoints = start_venue(args, scale, store, truth)
        env = recon_env(database_url, endpoints, args.intraday_minutes)
        # Their logs (and the log notifier's alerts) go to files beside the JSON, not the screen.
        logs = args.out.with_suffix("")
        with (
            open(f"{logs}.ingest.log", "w", encoding="utf-8") as ingest_log,
            open(f"{logs}.scheduler.log", "w", encoding="utf-8") as scheduler_log,
        ):
            worker = subprocess.Popen([*RECON, "ingest"], env=env, cwd=ROOT, stderr=ingest_log)
            scheduler = subprocess.Popen(
                [*RECON, "scheduler"], env=env, cwd=ROOT, stderr=scheduler_log
            )
        started = time.monotonic()
        try:
            with psycopg.connect(libpq(database_url), autocommit=True) as conn:
                while (now := time.monotonic() - started) < seconds:
                    time.sleep(args.sample_seconds)
                    for proc in (worker, scheduler, venue):
                        if proc.poll() is not None:
                            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
                    point = sample(conn, now, worker.pid, scheduler.pid)
                    before = summary.samples[-1] if summary.samples else None
                    summary.samples.append(point)
                    age = _busy_age(point, before)
                    print(
                        f"t={point.t:6.0f}s worker {point.worker_rss_mb:6.1f} MB"
                        f" events {sum(point.events.values()):>9,}"
                        f" busy streams' max checkpoint age {age:5.1f}s"
                        f" reconciles {point.reconcile_runs}",
                        flush=True,
                    )
                summary.load_average = os.getloadavg()
                stop(scheduler)
                if stop(worker) != 0:
                    raise SystemExit("the worker did not stop cleanly")
                summarise(summary, conn)
                summary.breaks = breaks_summary(conn, truth)
        finally:
            for proc in (scheduler, worker, venue):
                stop(proc, signal.SIGKILL if proc is not venue else signal.SIGTERM)
    args.out.write_text(json.dumps(asdict(summary), indent=2) + "\n", encoding="utf-8")
    brief = {k: v for k, v in asdict(summary).items() if k != "samples"}
    print(json.dumps(brief, indent=2))


if __name__ == "__main__":
    main()
