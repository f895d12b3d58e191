"""How the DropCopy consumers open their streams.

Opened as unregistered grpc.aio methods, the worker's memory grew with the day: peak RSS 1 GB
over 200k executions against 130 MB registered (scripts/bench_ingest.py --scale 1 --runs
executions). A day that size is far past the CI budget, so this checks the call itself.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from app.ingest.dropcopy import STREAMS, DropCopyConsumer, StreamSettings
from app.observability import IngestMetrics


class RecordingChannel:
    def __init__(self) -> None:
        self.opened: dict[str, dict[str, Any]] = {}

    def unary_stream(self, method: str, **options: Any) -> object:
        self.opened[method] = options
        return object()


def test_every_dropcopy_stream_is_a_registered_method() -> None:
    channel = RecordingChannel()
    for spec in STREAMS:
        DropCopyConsumer(
            spec,
            channel=channel,  # type: ignore[arg-type]
            tokens=SimpleNamespace(),  # type: ignore[arg-type]
            sink=SimpleNamespace(status=SimpleNamespace()),  # type: ignore[arg-type]
            settings=StreamSettings(),
            metrics=IngestMetrics(),
        )
    assert set(channel.opened) == {f"/polymarket.v1.DropCopyAPI/{s.method}" for s in STREAMS}
    assert all(options.get("_registered_method") is True for options in channel.opened.values())
