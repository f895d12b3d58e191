"""`recon alerts …`: deliver the alert outbox by hand (the scheduler does it after each run)."""

from __future__ import annotations

import orjson
import typer

alerts = typer.Typer(help="Break alerts: deliver the outbox.", no_args_is_help=True)


@alerts.callback()
def _group() -> None:
    """Break alerts (RECON_ALERT_URLS): webhook, SMTP e-mail, log."""


@alerts.command("deliver")
def deliver(
    json_out: bool = typer.Option(False, "--json", help="Print the delivery report as JSON."),
) -> None:
    """Send every due alert through the notifiers in RECON_ALERT_URLS (one digest each)."""
    from app.alerts.notifiers import notifiers_from_settings
    from app.alerts.outbox import RetryPolicy, deliver_pending
    from app.config import get_settings
    from app.db.session import get_engine

    settings = get_settings()
    report = deliver_pending(
        get_engine(),
        notifiers_from_settings(settings),
        policy=RetryPolicy.from_settings(settings),
    )
    if json_out:
        typer.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(
        f"{report.alerts_delivered} alerts delivered in {report.messages_sent} messages, "
        f"{report.failures} failed sends, {len(report.backing_off)} notifiers backing off"
    )
    for outcome in report.outcomes:
        if not outcome.delivered:
            typer.echo(
                f"  {outcome.notifier}: {outcome.alerts} alerts not sent ({outcome.error}); "
                f"retry at {outcome.next_attempt_at}",
                err=True,
            )
