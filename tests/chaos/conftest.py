"""The venue every chaos module runs against: its own `store` fixture's day, served on loopback
with a Report API unpaced (chaos is about faults, not about waiting out the rate limit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.venue.grpc_server import GrpcOptions
from app.venue.run import VenueHandle, VenueOptions, serve_store
from app.venue.store import VenueStore

from ._support import TOKEN


@pytest.fixture
def venue(store: VenueStore) -> Iterator[VenueHandle]:
    options = VenueOptions(
        grpc=GrpcOptions(tokens=frozenset({TOKEN}), report_requests_per_min=100_000)
    )
    with serve_store(store, options) as handle:
        yield handle
