"""`recon`: the one entry point. Thin: parse, call a service, print."""

from __future__ import annotations

import logging
from typing import NoReturn

import typer

from app.config import get_settings

root = typer.Typer(
    name="recon",
    help="polyrecon: trade reconciliation back office for Polymarket (exchange + on-chain).",
    no_args_is_help=True,
    add_completion=False,
)
db = typer.Typer(help="Database: migrations and status.", no_args_is_help=True)
breaks = typer.Typer(help="Work the break queue: list, show, ack, resolve.", no_args_is_help=True)
query = typer.Typer(
    help="Compliance queries: order trail, trades, fees, wallet.", no_args_is_help=True
)
root.add_typer(db, name="db")
root.add_typer(breaks, name="breaks")
root.add_typer(query, name="query")


@root.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    settings = get_settings()
    logging.basicConfig(
        level=logging.DEBUG if verbose else settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Third-party chatter that helps nobody at 3 a.m.
    for noisy in ("pgserver", "alembic.runtime.plugins"):
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
def demo() -> None:
    """Zero-config main job: embedded Postgres, venue with breaks, ingest, reconcile, report."""
    _not_built("demo", 6)


@root.command()
def ingest() -> None:
    """Run the ingest workers against the configured exchange and feeds."""
    _not_built("ingest", 4)


@root.command()
def reconcile(date: str = typer.Option(..., "--date", help="Business date, YYYY-MM-DD.")) -> None:
    """Run the reconciliation jobs for one business date."""
    _not_built(f"reconcile --date {date}", 5)


@root.command()
def scheduler() -> None:
    """Run the scheduled jobs (APScheduler): intraday and end-of-day reconciliation.

    Jobs are stored in Postgres; any number of replicas may run: each tick runs once
    (RECON_INTRADAY_MINUTES, RECON_EOD_TIME, RECON_TIMEZONE, RECON_MISFIRE_GRACE_SECONDS).
    """
    from app.db.session import get_engine
    from app.jobs.scheduler import run_forever

    run_forever(get_engine(), get_settings())


@root.command()
def report(date: str = typer.Option(..., "--date", help="Business date, YYYY-MM-DD.")) -> None:
    """Build the nightly reconciliation report (HTML, CSV, JSON)."""
    _not_built(f"report --date {date}", 6)


@breaks.command("list")
def breaks_list() -> None:
    """List breaks (filters by date, kind, status, age; --json)."""
    _not_built("breaks list", 5)


@breaks.command("show")
def breaks_show(break_id: int) -> None:
    """Show one break with its audit trail."""
    _not_built("breaks show", 5)


@breaks.command("ack")
def breaks_ack(break_id: int) -> None:
    """Acknowledge a break."""
    _not_built("breaks ack", 5)


@breaks.command("resolve")
def breaks_resolve(break_id: int) -> None:
    """Resolve a break."""
    _not_built("breaks resolve", 5)


@query.command("order-trail")
def query_order_trail(order_id: str) -> None:
    """Every execution, trade, state change and break of an order, in time order."""
    _not_built("query order-trail", 6)


@query.command("trades")
def query_trades() -> None:
    """Trades by account, symbol or market, wallet, side, time range, minimum notional."""
    _not_built("query trades", 6)


@query.command("fees")
def query_fees() -> None:
    """Net fees by account, wallet, market and day."""
    _not_built("query fees", 6)


@query.command("wallet")
def query_wallet(address: str) -> None:
    """All on-chain activity of a wallet."""
    _not_built("query wallet", 6)


def main() -> None:
    root()
