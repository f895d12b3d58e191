"""`recon reconcile` and `recon breaks …`: parse, call the recon service, print.

The lead mounts them: `root.command()(reconcile)` and `root.add_typer(breaks, name="breaks")`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

import orjson
import typer

from app.db.base import BreakStatus
from app.domain.breaks import AgeBucket, ManualAction

breaks = typer.Typer(help="Work the break queue: list, show, ack, resolve.", no_args_is_help=True)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {value!r}") from None


def _print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def reconcile(
    *,
    date_: Annotated[str, typer.Option("--date", help="Business date, YYYY-MM-DD.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    no_report: Annotated[
        bool,
        typer.Option(
            "--no-report",
            help="Skip the Report API snapshot (report rules then use the date's previous one).",
        ),
    ] = False,
) -> None:
    """Run the reconciliation for one business date: snapshot, rules, net fees, breaks."""
    from app.db.session import get_engine
    from app.recon.report_client import ReportError
    from app.recon.service import reconcile as run

    business_date = _date(date_)
    try:
        summary = run(get_engine(), business_date, report=None if no_report else "settings")
    except ReportError as exc:
        typer.secho(f"Report API snapshot failed: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    if json_output:
        _print_json(summary.to_json())
        return
    typer.echo(
        f"reconciled {business_date} (run {summary.run_id}, as of {summary.as_of.isoformat()},"
        f" report snapshot: {'yes' if summary.has_report else 'no'})"
    )
    for kind, count in sorted(summary.found.items()):
        if count:
            typer.echo(f"  {kind:<32} {count}")
    typer.echo(f"  breaks found: {summary.breaks_found}")
    typer.echo("  " + ", ".join(f"{k} {v}" for k, v in summary.lifecycle.items()))


@breaks.command("list")
def breaks_list(
    *,
    date_: Annotated[str | None, typer.Option("--date", help="Business date, YYYY-MM-DD.")] = None,
    kind: Annotated[str | None, typer.Option(help="Break kind, e.g. position_mismatch.")] = None,
    status: Annotated[
        BreakStatus | None, typer.Option(help="open, acknowledged or resolved.")
    ] = None,
    age: Annotated[
        AgeBucket | None, typer.Option(help="Days since first seen: 0-1, 2-7, 8-30 or >30.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List breaks, most severe and oldest first."""
    from app.db.session import get_engine
    from app.recon.lifecycle import list_breaks

    with get_engine().connect() as conn:
        found = list_breaks(
            conn,
            now=datetime.now(UTC),
            business_date=_date(date_) if date_ else None,
            kind=kind,
            status=status,
            age=age,
            limit=limit,
        )
    if json_output:
        _print_json([b.to_json() for b in found])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "date", "kind", "key", "severity", "status", "seen", "age")
    for b in found:
        table.add_row(
            str(b.id),
            b.business_date.isoformat(),
            b.kind,
            b.key,
            b.severity,
            b.status,
            str(b.occurrences),
            str(b.age_bucket),
        )
    Console().print(table)


@breaks.command("show")
def breaks_show(
    break_id: Annotated[int, typer.Argument(help="Break id.")],
    *,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one break with its audit trail."""
    from app.db.session import get_engine
    from app.recon.lifecycle import audit_trail, get_break

    with get_engine().connect() as conn:
        found = get_break(conn, break_id, now=datetime.now(UTC))
        trail = audit_trail(conn, break_id) if found else []
    if found is None:
        typer.secho(f"no break with id {break_id}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1)
    doc = {**found.to_json(), "audit": [entry.to_json() for entry in trail]}
    if json_output:
        _print_json(doc)
        return
    for name, value in doc.items():
        if name != "audit":
            typer.echo(f"{name:>14}: {orjson.dumps(value).decode()}")
    typer.echo("audit:")
    for entry in trail:
        note = f" — {entry.note}" if entry.note else ""
        typer.echo(
            f"  {entry.at.isoformat()} {entry.actor} {entry.action}"
            f" {entry.from_status or '-'} → {entry.to_status or '-'}{note}"
        )


def _act(
    break_id: int, action: ManualAction, actor: str, note: str | None, assignee: str | None
) -> None:
    from app.db.session import get_engine
    from app.recon.lifecycle import BreakActionError, act

    try:
        with get_engine().begin() as conn:
            view = act(
                conn,
                break_id,
                action,
                actor=actor,
                now=datetime.now(UTC),
                note=note,
                assignee=assignee,
            )
    except (LookupError, BreakActionError) as exc:
        typer.secho(str(exc), err=True, fg=typer.colors.RED)
        raise typer.Exit(code=1) from None
    typer.echo(f"break {view.id} ({view.kind} {view.key}) is now {view.status}")


@breaks.command("ack")
def breaks_ack(
    break_id: Annotated[int, typer.Argument(help="Break id.")],
    *,
    actor: Annotated[str, typer.Option(help="Who acknowledges it (goes to the audit trail).")],
    note: Annotated[str | None, typer.Option(help="Why, for the audit trail.")] = None,
    assignee: Annotated[str | None, typer.Option(help="Who works it.")] = None,
) -> None:
    """Acknowledge an open break."""
    _act(break_id, ManualAction.ACKNOWLEDGE, actor, note, assignee)


@breaks.command("resolve")
def breaks_resolve(
    break_id: Annotated[int, typer.Argument(help="Break id.")],
    *,
    actor: Annotated[str, typer.Option(help="Who resolves it (goes to the audit trail).")],
    note: Annotated[str | None, typer.Option(help="How, for the audit trail.")] = None,
    assignee: Annotated[str | None, typer.Option(help="Who worked it.")] = None,
) -> None:
    """Resolve an open or acknowledged break by hand; it stays resolved unless its facts change."""
    _act(break_id, ManualAction.RESOLVE, actor, note, assignee)
