"""Alembic environment for polyrecon.

Online runs take a Postgres advisory lock so that replicas starting together migrate once, and
bound their lock waits so DDL never queues for long behind the application's queries.
Day partitions (`<parent>_pYYYYMMDD`) are created at run time by `ensure_partitions()`, not by
migrations, so autogenerate (and `alembic check`) must not see them.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import create_engine, pool, text

from app.db import models  # noqa: F401 -- importing it puts every table on Base.metadata
from app.db.base import Base, TextEnum
from app.db.partitions import PARTITION_NAME
from app.db.session import database_url

MIGRATION_LOCK = "polyrecon.migrations"
# Waiting for another replica's migration is fine; a DDL lock held behind live traffic is not.
LOCK_WAIT_FOR_OTHER_MIGRATOR = "60s"
DDL_LOCK_TIMEOUT = "10s"
STATEMENT_TIMEOUT = "5min"

target_metadata = Base.metadata


# APScheduler's job store creates and owns its table.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def include_name(name: str | None, type_: str, parent_names: MutableMapping[Any, Any]) -> bool:
    """Skip day partitions before they are even reflected, so `check` stays fast with many days."""
    if type_ == "table" and name in FOREIGN_TABLES:
        return False
    if type_ == "table" and name is not None:
        partition = PARTITION_NAME.fullmatch(name)
        return partition is None or partition["parent"] not in target_metadata.tables
    return True


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our StrEnum columns as the plain text they are: migrations never import app code."""
    if type_ == "type" and isinstance(obj, TextEnum):
        return "sa.Text()"
    return False


def configure(**target: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        include_name=include_name,
        render_item=render_item,
        compare_server_default=True,
        **target,
    )


def url() -> str:
    given = context.config.attributes.get("url")
    return given if isinstance(given, str) else database_url()


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the DDL for review instead of running it."""
    configure(url=url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # NullPool: closing the connection ends the session, which releases the advisory lock even
    # when a migration fails half way.
    engine = create_engine(url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        connection.execute(text(f"SET statement_timeout = '{LOCK_WAIT_FOR_OTHER_MIGRATOR}'"))
        connection.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": MIGRATION_LOCK})
        connection.execute(text(f"SET lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        connection.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
        connection.commit()
        configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
