"""`recon ingest`: run the ingest worker of this shard until SIGTERM/SIGINT (or idle)."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from app.config import get_settings
from app.observability import register_settings_secrets


def ingest(
    exit_when_idle: Annotated[
        float | None,
        typer.Option(
            "--exit-when-idle",
            metavar="SECONDS",
            min=0.1,
            help="Stop cleanly (exit 0) once every source has been quiet this long.",
        ),
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            metavar="SOURCE",
            help="Ingest only this source (repeatable): dropcopy.executions, "
            "dropcopy.trade_captures, dropcopy.instrument_states, dropcopy.position_changes, "
            "feed.orders, feed.trades. Default: all that are configured.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve /metrics and /healthz here (overrides RECON_METRICS_PORT).",
        ),
    ] = None,
) -> None:
    """Run the ingest workers against the configured exchange and feeds.

    Reads RECON_EXCHANGE_TARGET (TLS unless RECON_EXCHANGE_TLS=false, loopback only), the token
    (RECON_EXCHANGE_TOKEN or RECON_AUTH0_*), RECON_PARTICIPANT_ID, the shard filters
    RECON_SYMBOLS / RECON_FIRMS, and RECON_FEED_ORDERS_URL / RECON_FEED_TRADES_URL. Each worker
    opens 4 DropCopy streams; the venue allows 20 per firm, so run at most 5 shards per firm.
    The feeds are not sharded: with several shards, give them to one worker (--source).
    """
    from app.db.session import database_url, make_engine
    from app.ingest.auth import AuthError, token_source_from_settings
    from app.ingest.dropcopy import IngestFatal
    from app.ingest.worker import IngestConfig, IngestWorker

    settings = get_settings()
    url = database_url(settings)
    register_settings_secrets(settings, url)
    try:
        config = IngestConfig.from_settings(
            settings, sources=source or (), exit_when_idle=exit_when_idle, metrics_port=metrics_port
        )
        tokens = token_source_from_settings(settings) if config.dropcopy_sources else None
    except (ValueError, AuthError) as exc:
        typer.secho(f"recon ingest: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    engine = make_engine(url)

    async def main() -> int:
        worker = IngestWorker(config, engine, tokens)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop.set)
        return await worker.run()

    try:
        code = asyncio.run(main())
    except (IngestFatal, OSError) as exc:
        # Configuration the worker cannot start with (plaintext refused, metrics port taken).
        typer.secho(f"recon ingest: {exc}", err=True, fg=typer.colors.RED)
        code = 2
    finally:
        engine.dispose()
    raise typer.Exit(code=code)
