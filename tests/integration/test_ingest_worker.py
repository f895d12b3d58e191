"""The ingest worker's credentials handling against the simulated venue on loopback: refused
credentials fail loudly (and quietly about the token), and Auth0 tokens are refreshed under
live DropCopy streams without tearing them down."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, text

from app.ingest.auth import Auth0ClientCredentials, StaticToken
from app.ingest.worker import DROPCOPY_SOURCES, IngestConfig, IngestWorker
from app.venue.grpc_server import GrpcOptions
from app.venue.model import DayConfig
from app.venue.run import VenueHandle, VenueOptions, open_store, serve_store
from app.venue.store import VenueStore

DAY = DayConfig(seed=5, business_date=date(2026, 5, 6), scale=0.004, breaks={})
VENUE_TOKENS = tuple(f"venue-accepted-token-{n:02d}" for n in range(12))
PARTICIPANT = "firms/F1/users/ingest"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return open_store(DAY, tmp_path_factory.mktemp("venue"))


def _venue(store: VenueStore, pace: float | None = None) -> VenueHandle:
    grpc = GrpcOptions(tokens=frozenset(VENUE_TOKENS), batch_size=50, pace_events_per_s=pace)
    return serve_store(store, VenueOptions(grpc=grpc))


def _config(venue: VenueHandle) -> IngestConfig:
    return IngestConfig(
        exchange_target=venue.grpc_target,
        exchange_tls=False,
        participant_id=PARTICIPANT,
        sources=DROPCOPY_SOURCES,
        exit_when_idle=1.0,
    )


def test_refused_token_fails_loudly_without_logging_it(
    store: VenueStore, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "not-a-venue-token-7f3a9c"
    with _venue(store) as venue:

        async def main() -> tuple[int, IngestWorker]:
            worker = IngestWorker(_config(venue), engine, StaticToken(secret))
            return await asyncio.wait_for(worker.run(), timeout=30), worker

        with caplog.at_level(logging.INFO):
            code, worker = asyncio.run(main())
    assert code == 1
    _, health = worker.health()
    failures = [s["failure"] for s in health["sources"].values() if s["failure"]]
    assert any("refuses our credentials" in f for f in failures), failures
    assert secret not in caplog.text
    assert "refuses our credentials" in caplog.text


@pytest.fixture
def auth0() -> Iterator[tuple[str, list[str]]]:
    """A token endpoint that hands out the venue's accepted tokens in turn, 0.3 s each."""
    issued: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])))
            assert form[b"grant_type"] == [b"client_credentials"]
            token = VENUE_TOKENS[len(issued) % len(VENUE_TOKENS)]
            issued.append(token)
            body = json.dumps({"access_token": token, "expires_in": 0.3}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/oauth/token", issued
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_auth0_tokens_refresh_under_live_streams(
    store: VenueStore, engine: Engine, auth0: tuple[str, list[str]]
) -> None:
    url, issued = auth0
    tokens = Auth0ClientCredentials(
        token_url=url,
        client_id="polyrecon-test",
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    # Paced so the streams stay busy for a couple of seconds: many token lifetimes.
    with _venue(store, pace=1500.0) as venue:
        expected = store.stream_length("executions")

        async def main() -> tuple[int, IngestWorker]:
            worker = IngestWorker(_config(venue), engine, tokens)
            return await asyncio.wait_for(worker.run(), timeout=60), worker

        code, worker = asyncio.run(main())
    assert code == 0
    assert len(issued) >= 5, "the token was not refreshed in the background"
    # Streams opened under the first token ran on through every refresh.
    assert sum(s.status.reconnects for s in worker.sources.values()) == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM execution")).scalar_one() == expected


def test_symbol_shards_ingest_side_by_side(store: VenueStore, engine: Engine) -> None:
    symbols = store.symbols()
    shards = (tuple(symbols[::2]), tuple(symbols[1::2]))
    with _venue(store) as venue:

        async def main() -> list[int]:
            workers = [
                IngestWorker(
                    replace(_config(venue), symbols=shard), engine, StaticToken(VENUE_TOKENS[0])
                )
                for shard in shards
            ]
            return list(
                await asyncio.wait_for(asyncio.gather(*(w.run() for w in workers)), timeout=60)
            )

        codes = asyncio.run(main())
    assert codes == [0, 0]
    with engine.connect() as conn:
        executions = conn.execute(text("SELECT count(*) FROM execution")).scalar_one()
        keys = conn.execute(text("SELECT stream FROM stream_checkpoint")).scalars().all()
    assert executions == store.stream_length("executions")
    # Each shard resumes from its own checkpoint: 4 streams x 2 shards.
    assert len(keys) == 8
    assert {k.partition("[")[0] for k in keys} == set(DROPCOPY_SOURCES)
