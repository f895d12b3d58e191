"""What the database itself refuses, whatever the application does: an analyst's read-only login
writes nothing, and the break audit trail refuses UPDATE, DELETE and TRUNCATE to a
non-superuser application role, including one that owns the audit table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import errors
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.db.base import Base, BreakStatus, Severity
from app.db.models import Break, BreakAudit
from app.db.partitions import ensure_partitions, partition_name
from app.db.session import make_engine
from tests.integration._recon_day import D

TABLES = [t.name for t in Base.metadata.sorted_tables]
FIRST_COLUMN = {t.name: next(iter(t.columns)).name for t in Base.metadata.sorted_tables}


def _writes(table: str) -> list[str]:
    column = FIRST_COLUMN[table]
    return [
        # Privileges are checked before any row is read or built: DEFAULT VALUES is enough.
        f"INSERT INTO {table} DEFAULT VALUES",
        f"UPDATE {table} SET {column} = {column}",
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
        f"ALTER TABLE {table} ADD COLUMN intruder text",
        f"DROP TABLE {table}",
    ]


def _login(engine: Engine, database_url: str, create: str, grants: list[str]) -> Iterator[Engine]:
    """A new login role (dropped afterwards), and an engine connected as it."""
    name = f"recon_sec_{uuid.uuid4().hex[:10]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(create.format(name=name)))
        for grant in grants:
            conn.execute(text(grant.format(name=name)))
    as_role = make_engine(make_url(database_url).set(username=name).render_as_string(False))
    try:
        yield as_role
    finally:
        as_role.dispose()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # Gives what it owns back, so the role can go; the database is dropped after.
            conn.execute(text(f"REASSIGN OWNED BY {name} TO CURRENT_USER"))
            conn.execute(text(f"DROP OWNED BY {name}"))
            conn.execute(text(f"DROP ROLE {name}"))


@pytest.fixture
def analyst(engine: Engine, database_url: str) -> Iterator[Engine]:
    """How analysts are set up: a login role that is a member of recon_readonly."""
    yield from _login(engine, database_url, "CREATE ROLE {name} LOGIN IN ROLE recon_readonly", [])


@pytest.fixture
def application(engine: Engine, database_url: str) -> Iterator[Engine]:
    """A deployment's application role: not a superuser, every DML privilege on every table,
    and the owner of the break tables (as when it ran the migrations itself)."""
    yield from _login(
        engine,
        database_url,
        "CREATE ROLE {name} LOGIN NOSUPERUSER",
        [
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public"
            " TO {name}",
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {name}",
            "ALTER TABLE recon_break OWNER TO {name}",
            "ALTER TABLE break_audit OWNER TO {name}",
        ],
    )


def _refused(engine: Engine, statement: str) -> BaseException:
    with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
        conn.execute(text(statement))
    return refused.value.orig  # type: ignore[return-value]


def test_readonly_login_reads_but_cannot_write_anything(
    engine: Engine, analyst: Engine, guarantee: Any
) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, [D])
    statements = [s for table in TABLES for s in _writes(table)]
    statements += [f"DELETE FROM {partition_name('execution', D)}"]
    statements += [
        "CREATE TABLE intruder (x int)",
        "CREATE TABLE execution_p20990101 PARTITION OF execution"
        " FOR VALUES FROM ('2099-01-01') TO ('2099-01-02')",
        "SELECT ensure_partitions(DATE '2099-01-01')",
        "SELECT nextval('break_audit_id_seq')",
        "CREATE SCHEMA intruder",
    ]
    with analyst.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM execution")).scalar_one() == 0
    for statement in statements:
        refused = _refused(analyst, statement)
        assert isinstance(refused, errors.InsufficientPrivilege), (statement, refused)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT to_regclass('intruder')")).scalar_one() is None
    guarantee(
        "Security",
        "read-only login: INSERT, UPDATE, DELETE, TRUNCATE, ALTER, DROP, CREATE on every table",
        len(statements),
        "every statement refused by Postgres (insufficient privilege)",
    )


def test_audit_trail_refuses_rewrites_by_the_application_role(
    engine: Engine, application: Engine, guarantee: Any
) -> None:
    with Session(application) as session, session.begin():
        found = Break(
            kind="trade_busted", business_date=D, key="T1", severity=Severity.LOW, details={}
        )
        session.add(found)
        session.flush()
        break_id = found.id
        session.add(
            BreakAudit(break_id=break_id, actor="recon", action="open", to_status=BreakStatus.OPEN)
        )
    statements = [
        "UPDATE break_audit SET note = 'rewritten'",
        "UPDATE break_audit SET note = 'x' WHERE false",
        "DELETE FROM break_audit",
        "TRUNCATE break_audit",
        "TRUNCATE recon_break CASCADE",
        "SET session_replication_role = replica",  # would silence the trigger
        "ALTER TABLE break_audit DISABLE TRIGGER ALL",  # system triggers: superuser only
    ]
    for statement in statements:
        _refused(application, statement)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT action, note FROM break_audit")).all()
    assert [tuple(r) for r in rows] == [("open", None)]
    # Appending is what the role is for.
    with application.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO break_audit (break_id, actor, action, to_status)"
                " VALUES (:id, 'recon', 'acknowledge', 'acknowledged')"
            ),
            {"id": break_id},
        )
    guarantee(
        "Security",
        "application role (not superuser, owns the table) rewrites the break audit trail",
        len(statements),
        "UPDATE, DELETE, TRUNCATE refused; replica mode refused; appends still work",
    )


@pytest.mark.xfail(
    strict=True,
    reason="the table owner may disable its triggers: the application role must not own"
    " break_audit (needs a migration that separates the owner role from the application role)",
)
def test_audit_table_owner_cannot_switch_the_trigger_off(application: Engine) -> None:
    _refused(application, "ALTER TABLE break_audit DISABLE TRIGGER break_audit_append_only")
