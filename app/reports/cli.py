"""`recon report --date D [--out DIR]`: build, store and write the nightly report."""

from __future__ import annotations

from datetime import date as date_type
from pathlib import Path
from typing import Annotated

import orjson
import typer


def report(
    date: Annotated[str, typer.Option("--date", help="Business date, YYYY-MM-DD.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for the files (default <RECON_DATA_DIR>/reports/D)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Build the nightly reconciliation report (HTML, CSV, JSON), store it and write it out."""
    from app.config import get_settings
    from app.db.session import get_engine
    from app.reports.build import build_report, default_directory

    try:
        business_date = date_type.fromisoformat(date)
    except ValueError:
        raise typer.BadParameter(f"--date: not a date (YYYY-MM-DD): {date!r}") from None
    directory = out_dir or default_directory(get_settings().data_dir, business_date)
    built = build_report(get_engine(), business_date, directory)
    if json_out:
        typer.echo(orjson.dumps(built.summary, option=orjson.OPT_INDENT_2).decode())
        return
    breaks = built.summary["breaks"]
    typer.echo(
        f"report {built.report_id} for {business_date}: {breaks['total']} breaks of the day, "
        f"{breaks['open_all_dates']} open; written to {built.html_path}"
    )
