"""What the database itself refuses, whatever the application does: an analyst's read-only login
writes nothing, and the break audit trail refuses UPDATE, DELETE and TRUNCATE to the application's
login role, which cannot switch the append-only trigger off either: `recon_owner` owns the
tables, the application logs in as a member of `recon_app`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from psycopg import errors
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import migrate
from app.db.base import Base, BreakStatus, Severity
from app.db.models import Break, BreakAudit
from app.db.partitions import ensure_partitions, partition_name
from app.db.session import make_engine
from app.domain.breaks import ManualAction, RuleConfig
from app.ingest.writer import BatchWriter, Checkpoint
from app.jobs.scheduler import JOBSTORE_TABLE, configure
from app.recon.lifecycle import act, audit_trail, list_breaks
from app.recon.service import reconcile
from tests.integration._recon_day import NOON, D, clean_day, load
from tests.integration.test_writer import DAY as WRITER_DAY
from tests.integration.test_writer import Day

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


def _login(engine: Engine, database_url: str, create: str) -> Iterator[Engine]:
    """A new login role (dropped afterwards), and an engine connected as it."""
    name = f"recon_sec_{uuid.uuid4().hex[:10]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(create.format(name=name)))
    as_role = make_engine(make_url(database_url).set(username=name).render_as_string(False))
    try:
        yield as_role
    finally:
        as_role.dispose()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            # A closed session drops its temporary tables as its backend exits, after the
            # client has gone: wait for that, or REASSIGN trips over a table being dropped.
            for _ in range(100):
                sessions = "SELECT count(*) FROM pg_stat_activity WHERE usename = :name"
                if conn.execute(text(sessions), {"name": name}).scalar_one() == 0:
                    break
                time.sleep(0.05)
            # Gives what it owns back, so the role can go; the database is dropped after.
            conn.execute(text(f"REASSIGN OWNED BY {name} TO CURRENT_USER"))
            conn.execute(text(f"DROP OWNED BY {name}"))
            conn.execute(text(f"DROP ROLE {name}"))


@pytest.fixture
def analyst(engine: Engine, database_url: str) -> Iterator[Engine]:
    """How analysts are set up: a login role that is a member of recon_readonly."""
    yield from _login(engine, database_url, "CREATE ROLE {name} LOGIN IN ROLE recon_readonly")


@pytest.fixture
def application(engine: Engine, database_url: str) -> Iterator[Engine]:
    """How the application's login is set up: not a superuser, a member of recon_app, and not
    the role that ran the migrations."""
    yield from _login(
        engine, database_url, "CREATE ROLE {name} LOGIN NOSUPERUSER IN ROLE recon_app"
    )


def _refused(engine: Engine, statement: str) -> BaseException:
    with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
        conn.execute(text(statement))
    return refused.value.orig  # type: ignore[return-value]


def _all_refused_by_privilege(engine: Engine, statements: list[str]) -> None:
    for statement in statements:
        refused = _refused(engine, statement)
        assert isinstance(refused, errors.InsufficientPrivilege), (statement, refused)


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
    _all_refused_by_privilege(analyst, statements)
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
        "application role (not superuser, member of recon_app) rewrites the break audit trail",
        len(statements),
        "UPDATE, DELETE, TRUNCATE refused; replica mode refused; appends still work",
    )


def test_application_role_cannot_switch_the_audit_trigger_off(
    engine: Engine, application: Engine, guarantee: Any
) -> None:
    statements = [
        "ALTER TABLE break_audit DISABLE TRIGGER break_audit_append_only",
        "ALTER TABLE break_audit DISABLE TRIGGER USER",
        "DROP TRIGGER break_audit_append_only ON break_audit",
        "ALTER TABLE break_audit OWNER TO CURRENT_USER",
        "ALTER TABLE break_audit RENAME TO break_audit_old",
        "DROP TABLE break_audit",
        # Neutering the trigger's function works as well as dropping the trigger.
        "CREATE OR REPLACE FUNCTION break_audit_append_only() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
        "ALTER FUNCTION break_audit_append_only() OWNER TO CURRENT_USER",
        "SET ROLE recon_owner",
        "GRANT recon_owner TO CURRENT_USER",
    ]
    _all_refused_by_privilege(application, statements)
    with engine.connect() as conn:
        trigger = conn.execute(
            text(
                "SELECT t.tgenabled, pg_get_userbyid(c.relowner) FROM pg_trigger AS t"
                " JOIN pg_class AS c ON c.oid = t.tgrelid"
                " WHERE t.tgname = 'break_audit_append_only' AND c.relname = 'break_audit'"
            )
        ).one()
    assert tuple(trigger) == ("O", "recon_owner")  # "O": enabled (origin mode)
    guarantee(
        "Security",
        "application role switches the audit trigger off: disable, drop, replace its function,"
        " take ownership, SET ROLE recon_owner",
        len(statements),
        "every statement refused (insufficient privilege); trigger still on",
    )


def _privileges(engine: Engine, role: str, table: str) -> set[str]:
    kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with engine.connect() as conn:
        return {
            kind
            for kind in kinds
            if conn.execute(
                text("SELECT has_table_privilege(:role, :table, :kind)"),
                {"role": role, "table": table, "kind": kind},
            ).scalar_one()
        }


def test_application_role_appends_to_the_audit_trail_and_works_the_break_lifecycle(
    engine: Engine, application: Engine, guarantee: Any
) -> None:
    role = application.url.username
    assert role is not None
    assert _privileges(engine, role, "break_audit") == {"SELECT", "INSERT"}
    assert _privileges(engine, role, "recon_break") == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    with engine.connect() as conn:
        owner = conn.execute(
            text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'break_audit'")
        ).scalar_one()
        assert owner == "recon_owner"
        assert not conn.execute(
            text("SELECT pg_has_role(:role, 'recon_owner', 'MEMBER')"), {"role": role}
        ).scalar_one()

    # The whole day as the application: partitions (ensure_partitions runs as recon_owner),
    # facts, a reconciliation that opens a break, then a person acknowledges and resolves it.
    rows = clean_day()
    rows["execution"] = [e for e in rows["execution"] if e["id"] != "E5"]
    with application.begin() as conn:
        load(conn, rows)
    reconcile(application, D, report=None, as_of=NOON + timedelta(hours=1), rules=RuleConfig())
    with application.connect() as conn:
        (found,) = list_breaks(conn, now=datetime.now(UTC))
    for action in (ManualAction.ACKNOWLEDGE, ManualAction.RESOLVE):
        with application.begin() as conn:
            act(conn, found.id, action, actor="ops@firm", now=datetime.now(UTC))

    rewrites = [
        "UPDATE break_audit SET note = 'rewritten'",
        "DELETE FROM break_audit",
        "TRUNCATE break_audit",
    ]
    # Refused by privilege, before the append-only trigger is even reached.
    _all_refused_by_privilege(application, rewrites)
    with engine.connect() as conn:
        trail = audit_trail(conn, found.id)
        partition_owner = conn.execute(
            text("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = :name"),
            {"name": partition_name("execution", D)},
        ).scalar_one()
    assert [(a.actor, a.action, a.to_status) for a in trail] == [
        ("recon", "opened", "open"),
        ("ops@firm", "acknowledged", "acknowledged"),
        ("ops@firm", "resolved", "resolved"),
    ]
    assert partition_owner == "recon_owner"
    guarantee(
        "Security",
        "application role UPDATEs, DELETEs, TRUNCATEs the break audit trail after a full"
        " break lifecycle (open, acknowledge, resolve) it ran itself",
        len(rewrites),
        "refused by privilege (SELECT and INSERT only); the lifecycle's audit rows all written",
    )


def test_a_migrator_that_cannot_hand_over_keeps_the_tables_and_the_guarantee(
    pg_server_url: str,
) -> None:
    """A database owner without CREATEROLE runs the migrations: it keeps owning the tables (with
    a warning), and an application login in recon_app is still refused and still partitions."""
    migrator = f"recon_sec_{uuid.uuid4().hex[:10]}"
    admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {migrator} LOGIN"))
        conn.execute(text(f"CREATE DATABASE {migrator} OWNER {migrator}"))
    url = make_url(pg_server_url).set(database=migrator)
    as_admin = make_engine(url.render_as_string(False))
    try:
        migrate.upgrade(url.set(username=migrator).render_as_string(False))
        login = contextmanager(_login)
        with login(
            as_admin, url.render_as_string(False), "CREATE ROLE {name} LOGIN IN ROLE recon_app"
        ) as application:
            refused = _refused(
                application, "ALTER TABLE break_audit DISABLE TRIGGER break_audit_append_only"
            )
            assert isinstance(refused, errors.InsufficientPrivilege)
            refused = _refused(application, "DELETE FROM break_audit")
            assert isinstance(refused, errors.InsufficientPrivilege)
            with application.begin() as conn:
                assert ensure_partitions(conn, [D]) > 0
        with as_admin.connect() as conn:
            owners = conn.execute(
                text(
                    "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
                    " WHERE relname IN ('break_audit', :partition)"
                ),
                {"partition": partition_name("execution", D)},
            ).scalars()
            assert list(owners) == [migrator]
    finally:
        as_admin.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {migrator} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {migrator}"))
        admin.dispose()


def test_the_scheduler_runs_as_the_application_role(engine: Engine, application: Engine) -> None:
    """APScheduler's job store creates its table when it is missing; the application role may
    not create tables, so the migrations make it (a scheduler failed to start as recon_app)."""
    scheduler = configure(BackgroundScheduler(), application, Settings(eod_time="03:00"))
    scheduler.start(paused=True)
    try:
        stored = {job.id for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
    with engine.connect() as conn:
        ids = set(conn.execute(text(f"SELECT id FROM {JOBSTORE_TABLE}")).scalars())
    assert stored
    assert ids == stored


def test_the_ingest_writer_runs_as_the_application_role(
    engine: Engine, application: Engine
) -> None:
    """Staging tables, day partitions (through ensure_partitions) and every merge, as recon_app:
    a whole day of every event kind, on days no partition exists for yet."""
    day = Day("a99a0001")
    events = day.events()
    result = BatchWriter(application).write(events, [], Checkpoint("a99a0001", b"t", NOON))
    assert result.events == len(events)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM order_filled")).scalar_one()
        owner = conn.execute(
            text("SELECT tableowner FROM pg_tables WHERE tablename = :t"),
            {"t": partition_name("order_filled", WRITER_DAY)},
        ).scalar_one()
    assert stored > 0
    assert owner == "recon_owner"
