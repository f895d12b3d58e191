"""`recon`: the one entry point. Thin: parse, call a service, print."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from app.config import get_settings

root = typer.Typer(
    name="recon",
    help="polyrecon: trade reconciliation back office for Polymarket (exchange + on-chain).",
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="Database: migrations and status.", no_args_is_help=True)
root.add_typer(db, name="db")


@root.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    from pydantic import ValidationError

    from app.observability import configure_logging, register_settings_secrets

    try:
        settings = get_settings()
    except ValidationError as exc:
        # Only the messages: they name variables, never the values given.
        for error in exc.errors(include_input=False, include_url=False):
            field = f"RECON_{str(error['loc'][0]).upper()}: " if error["loc"] else ""
            for line in error["msg"].splitlines():
                typer.secho(f"recon: configuration refused: {field}{line}", err=True, fg="red")
        raise typer.Exit(code=2) from None
    register_settings_secrets(settings)
    configure_logging("DEBUG" if verbose else settings.log_level, json_lines=settings.log_json)
    # Third-party chatter that helps nobody at 3 a.m.
    for noisy in ("pgserver", "alembic.runtime.plugins", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _not_built(what: str, issue: int) -> NoReturn:
    typer.secho(
        f"recon {what} is not built yet (tracked in issue {issue}); nothing was done.",
        err=True,
        fg=typer.colors.RED,
    )
    raise typer.Exit(code=2)


@db.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("head", help="Target revision (default: head)."),
) -> None:
    """Apply migrations up to REVISION on the configured database (embedded when unset)."""
    from app.db.migrate import upgrade
    from app.db.session import database_url

    upgrade(database_url(), revision)
    typer.echo(f"database upgraded to {revision}")


@db.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base."),
) -> None:
    """Revert migrations down to REVISION."""
    from app.db.migrate import downgrade
    from app.db.session import database_url

    downgrade(database_url(), revision)
    typer.echo(f"database downgraded to {revision}")


@db.command("url")
def db_url() -> None:
    """Print the database URL in use, password hidden (starts the embedded Postgres if needed)."""
    from sqlalchemy import make_url

    from app.db.session import database_url

    typer.echo(make_url(database_url()).render_as_string(hide_password=True))


@root.command()
def demo(
    *,
    seed: int = typer.Option(1, help="Seed of the simulated day (same seed, same day)."),
    scale: float = typer.Option(
        0.02, min=0.001, help="Size of the day: 1.0 is ~1M chain events and 200k executions."
    ),
    faults: str = typer.Option(
        "",
        help="Venue faults, e.g. 'disconnect_every=5000,duplicate_rate=0.01,reorder_window=8,"
        "token_ttl_s=30,ws_drop_every=20000,malformed_rate=0.0005,seed=3' "
        "(see recon venue --help). Off by default.",
    ),
    breaks: str = typer.Option(
        "all",
        help='Injected breaks: N of each kind, "all" (2 of each), "none" or "kind=count,...". '
        "A dropped pending transaction counts once and is two breaks (maker and aggregate).",
    ),
    database: str = typer.Option("polyrecon_demo", help="Name of the fresh demo database."),
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: the data dir).")
    ] = None,
    as_json: bool = typer.Option(
        False, "--json", help="Print the summary as JSON on stdout (progress goes to stderr)."
    ),
) -> None:
    """Zero-config main job: venue with injected breaks → ingest → reconcile → report.

    Uses the embedded Postgres unless RECON_DATABASE_URL is set, in a fresh database. Exits 0
    only if every injected break was found and nothing else, except breaks whose evidence the
    venue sent inside a recorded feed gap: those are listed as unobservable.
    """
    import orjson
    from rich.console import Console

    from app.demo import print_summary, run_demo

    console = Console(stderr=as_json)
    result = run_demo(
        get_settings(),
        seed=seed,
        scale=scale,
        faults=faults,
        out_dir=out,
        console=console,
        breaks=breaks,
        database=database,
    )
    if as_json:
        typer.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        print_summary(result, console)
    raise typer.Exit(code=0 if result.passed else 1)


@root.command()
def scheduler() -> None:
    """Run the scheduled jobs (APScheduler): intraday and end-of-day reconciliation.

    Jobs are stored in Postgres; any number of replicas may run: each tick runs once
    (RECON_INTRADAY_MINUTES, RECON_EOD_TIME, RECON_TIMEZONE, RECON_MISFIRE_GRACE_SECONDS).
    """
    from app.db.session import get_engine
    from app.jobs.scheduler import run_forever

    run_forever(get_engine(), get_settings())


def _mount() -> None:
    """Each feature owns its command; this file only puts them under `recon`."""
    from app.alerts.cli import alerts
    from app.ingest.cli import ingest
    from app.query.cli import query
    from app.recon.cli import breaks, reconcile
    from app.reports.cli import report
    from app.venue.cli import venue

    root.command()(venue)
    root.command()(ingest)
    root.command()(reconcile)
    root.command()(report)
    root.add_typer(breaks, name="breaks")
    root.add_typer(query, name="query")
    root.add_typer(alerts, name="alerts")


_mount()


def main() -> None:
    root()


if __name__ == "__main__":
    main()
