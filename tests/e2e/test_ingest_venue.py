"""`recon ingest` against the simulated venue over loopback, with every fault on: the database
ends up holding exactly the venue's ground truth (feeds: minus what a drop lost, inside a gap)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app.db.models import pending_confirmed
from app.ingest.auth import StaticToken
from app.ingest.worker import IngestWorker
from app.venue.faults import FaultSpec
from app.venue.feeds import FeedOptions
from app.venue.grpc_server import GrpcOptions
from app.venue.model import DayConfig
from app.venue.run import VenueOptions, open_store, serve_store
from app.venue.store import VenueStore
from polymarket.v1 import trading_pb2

from ._ingest_support import (
    EXCHANGE_TABLES,
    FEED_KEY,
    FEED_TABLES,
    TOKEN,
    Truth,
    db_rows,
    gap_windows,
    venue_truth,
    worker_config,
)

# No injected breaks: those are the reconciler's business; this is about delivery.
DAY = DayConfig(seed=11, business_date=date(2026, 5, 4), scale=0.01, breaks={})
# Reconnects wait a full-jitter backoff in [0, 0.1 s]: a 0.01 s token lifetime makes nearly every
# resume by token expire (at 0.05 s about half did, and with a handful of reconnects in a run, a
# run with none expired came up about one time in ten), while a fast one still resumes by token.
FAULTS = (
    "disconnect_every=700,duplicate_rate=0.2,reorder_window=8,token_ttl_s=0.01,"
    "ws_drop_every=500,malformed_rate=0.003,seed=5"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return open_store(DAY, tmp_path_factory.mktemp("venue"))


@pytest.fixture(scope="module")
def truth(store: VenueStore) -> Truth:
    return venue_truth(store)


def _venue_options(faults: str) -> VenueOptions:
    return VenueOptions(
        grpc=GrpcOptions(tokens=frozenset({TOKEN}), batch_size=100),
        # A small outbox: what a dropped connection had queued is lost, keep that modest.
        feeds=FeedOptions(keys=frozenset({FEED_KEY}), outbox_frames=64),
        faults=FaultSpec.parse(faults),
    )


def _scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_ingest_with_faults_equals_ground_truth(
    store: VenueStore, truth: Truth, engine: Engine, tmp_path: Path
) -> None:
    with serve_store(store, _venue_options(FAULTS)) as venue:
        config = worker_config(venue, metrics_port=0, batch_max_rows=1000)

        async def main() -> tuple[int, IngestWorker, list[tuple[int, str]]]:
            worker = IngestWorker(config, engine, StaticToken(TOKEN))
            run = asyncio.create_task(worker.run())
            scrapes: list[tuple[int, str]] = []
            for _ in range(100):  # bounded: at most ~10 s waiting for the first commits
                await asyncio.sleep(0.1)
                port = worker.metrics_port
                if port and sum(s.status.events_committed for s in worker.sources.values()):
                    scrapes.append(await asyncio.to_thread(_scrape, port, "/metrics"))
                    scrapes.append(await asyncio.to_thread(_scrape, port, "/healthz"))
                    break
            code = await asyncio.wait_for(run, timeout=90)
            return code, worker, scrapes

        code, worker, scrapes = asyncio.run(main())
        faults = venue.fault_log.records()

    assert code == 0
    assert worker.idle_exit
    kinds = Counter((r.channel.split(".")[0], r.kind) for r in faults)
    # Every fault really fired, or the test proves less than it claims.
    for kind in ("disconnect", "duplicate", "malformed", "token_expired"):
        assert kinds[("grpc", kind)] > 0, kind
    for kind in ("drop", "duplicate", "malformed"):
        assert kinds[("ws", kind)] > 0, kind

    rows = db_rows(engine)
    # Exchange: exactly the truth, each row once (resume tokens and replay cover every fault).
    for table in EXCHANGE_TABLES:
        assert len(rows[table]) == len(set(rows[table])), f"{table} has duplicates"
        assert set(rows[table]) == truth.rows[table], table
    executions = [r[0] for r in rows["execution"]]
    assert sorted(executions) == sorted(set(truth.served_executions))

    # Feeds have no replay: a drop may lose frames, but only inside a recorded gap window.
    gaps = gap_windows(engine)
    for table, source in FEED_TABLES.items():
        got = set(rows[table])
        assert len(got) == len(rows[table]), f"{table} has duplicates"
        assert got <= truth.rows[table], f"{table} has rows the venue never sent"
        lost = truth.rows[table] - got
        windows = gaps.get(source, [])
        for key in lost:
            when = truth.times[table][key]
            assert when is not None
            assert any(start <= when <= end for start, end in windows), (table, key, when)
        assert len(lost) < len(truth.rows[table]) // 2, f"{table}: too much lost"

    # Pending chain events are superseded by their confirmed event, which the readers' day window
    # finds wherever it was dated.
    with engine.connect() as conn:
        confirmed_anywhere = conn.execute(
            text(
                "SELECT count(DISTINCT (p.business_date, p.tx_hash, p.order_hash))"
                " FROM order_filled_pending p JOIN order_filled c USING (tx_hash, order_hash)"
            )
        ).scalar_one()
        superseded = conn.execute(
            text(f"SELECT count(*) FROM order_filled_pending p WHERE {pending_confirmed('p')}")
        ).scalar_one()
        dead = dict(
            conn.execute(text("SELECT source, count(*) FROM dead_letter GROUP BY source")).all()
        )
        dead_ids = {
            trading_pb2.Execution.FromString(raw).id
            for (raw,) in conn.execute(
                text("SELECT raw FROM dead_letter WHERE source = 'dropcopy.executions'")
            )
        }
        dead_raw = {
            source: {
                bytes(raw)
                for (raw,) in conn.execute(
                    text("SELECT raw FROM dead_letter WHERE source = :s"), {"s": source}
                )
            }
            for source in truth.rejected
        }
        expired_gaps = conn.execute(
            text("SELECT count(*) FROM gap_window WHERE reason = 'resume token expired'")
        ).scalar_one()
    assert superseded == confirmed_anywhere > 0

    # Malformed input went to dead letters, never into the tables, never lost.
    malformed_ids = {
        str(r.detail["execution_id"])
        for r in faults
        if r.kind == "malformed" and r.channel == "grpc.executions"
    }
    assert malformed_ids <= dead_ids
    for source, payloads in truth.rejected.items():
        assert payloads <= dead_raw[source], source
    assert not malformed_ids & set(executions)
    assert dead.get("feed.orders", 0) + dead.get("feed.trades", 0) > 0
    assert expired_gaps > 0

    # Operations: metrics and health answered while ingesting.
    (metrics_status, metrics_body), (health_status, health_body) = scrapes
    assert metrics_status == 200
    assert "recon_ingest_events_total" in metrics_body
    assert "recon_ingest_batch_seconds_bucket" in metrics_body
    assert health_status == 200, health_body
    assert set(json.loads(health_body)["sources"]) == {
        "dropcopy.executions",
        "dropcopy.trade_captures",
        "dropcopy.instrument_states",
        "dropcopy.position_changes",
        "feed.orders",
        "feed.trades",
    }
