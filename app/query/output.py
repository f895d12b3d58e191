"""Print a ResultSet as a rich table, CSV or JSON.

Exact values stay exact: Decimals print as their own digits, and in JSON they are strings
("0.04"), because a JSON number is a float to most readers.
"""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from app.query.queries import ResultSet


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2)


def cell(value: Any) -> str:
    """One value as flat text: what a CSV field or a table cell shows."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def write_csv(result: ResultSet, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    writer.writerows([cell(v) for v in row] for row in result.rows)


def emit(result: ResultSet, fmt: OutputFormat, title: str, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    if fmt is OutputFormat.JSON:
        stream.write(to_json(result.records()).decode() + "\n")
    elif fmt is OutputFormat.CSV:
        write_csv(result, stream)
    else:
        table = Table(title=f"{title} ({len(result.rows)} rows)", show_lines=False)
        for column in result.columns:
            table.add_column(column, overflow="fold")
        for row in result.rows:
            table.add_row(*(cell(v) for v in row))
        Console(file=stream).print(table)
