"""Day partitions of the fact tables, made by the SQL function `ensure_partitions(d date)`.

There is no DEFAULT partition: a row for a day nobody prepared fails loudly instead of landing
somewhere no query looks. Creating a partition locks its parent ACCESS EXCLUSIVE, so call this
in its own short transaction before writing a batch (or ahead of time for today and tomorrow),
not inside a transaction that has already written to the parent tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from sqlalchemy import Connection, text

PARTITION_NAME = re.compile(r"(?P<parent>.+)_p\d{8}")


def partition_name(parent: str, day: date) -> str:
    return f"{parent}_p{day:%Y%m%d}"


def ensure_partitions(conn: Connection, dates: Iterable[date]) -> int:
    """Create any missing day partitions for `dates`; return how many were created. Idempotent."""
    days = sorted(set(dates))
    if not days:
        return 0
    created = conn.execute(
        text("SELECT coalesce(sum(ensure_partitions(day)), 0) FROM unnest(:days) AS day"),
        {"days": days},
    ).scalar_one()
    return int(created)
