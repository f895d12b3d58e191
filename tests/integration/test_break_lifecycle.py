"""The break lifecycle on a real Postgres: idempotent runs, auto-resolve, reopen, manual actions,
the append-only audit trail, and the `recon reconcile` / `recon breaks` commands."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy.exc
import typer
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.alerts.outbox import ALL_NOTIFIERS as ALL
from app.config import get_settings
from app.db.session import get_engine
from app.domain.breaks import AgeBucket, ManualAction, RuleConfig
from app.recon.cli import breaks
from app.recon.cli import reconcile as reconcile_command
from app.recon.lifecycle import BreakActionError, act, audit_trail, list_breaks
from app.recon.service import reconcile

from ._recon_day import NOON, D, Rows, clean_day, h, load, refund

AS_OF = NOON + timedelta(hours=1)


def run(engine: Engine) -> None:
    reconcile(engine, D, report=None, as_of=AS_OF, rules=RuleConfig())


def day(engine: Engine, rows: Rows | None = None) -> None:
    with engine.begin() as conn:
        load(conn, rows or clean_day())


def breaks_now(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, kind, key, status, occurrences, resolved_at, details, first_seen_at"
                " FROM recon_break"
            )
        ).mappings()
        return {(row["kind"], row["key"]): dict(row) for row in rows}


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def execute(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def one_break(engine: Engine, kind: str) -> dict[str, Any]:
    (found,) = [b for (k, _), b in breaks_now(engine).items() if k == kind]
    return found


def with_two_breaks() -> Rows:
    rows = clean_day()
    rows["execution"] = [e for e in rows["execution"] if e["id"] != "E5"]
    maker = next(r for r in rows["order_filled"] if r["order_hash"] == h("a1"))
    rows["fee_refund"].append({**refund(maker, "0.008"), "order_hash": h("zz")})
    return rows


def test_reconciling_twice_gives_the_same_breaks_and_no_new_audit_rows(engine: Engine) -> None:
    day(engine, with_two_breaks())
    run(engine)
    first = breaks_now(engine)
    audit, alerts = (
        count(engine, "SELECT count(*) FROM break_audit"),
        count(engine, "SELECT count(*) FROM alert_outbox"),
    )
    run(engine)
    second = breaks_now(engine)
    assert set(first) == {
        ("execution_missing_from_stream", "E5"),
        ("chain_refund_orphan", h("zz")),
    }
    assert {k: (b["id"], b["status"], b["occurrences"]) for k, b in first.items()} == {
        k: (b["id"], b["status"], b["occurrences"]) for k, b in second.items()
    }
    assert audit == count(engine, "SELECT count(*) FROM break_audit") == 2
    assert alerts == count(engine, "SELECT count(*) FROM alert_outbox") == 2
    assert count(engine, f"SELECT count(*) FROM alert_outbox WHERE notifier = '{ALL}'") == 2
    runs = "SELECT count(*) FROM recon_run WHERE job = 'reconcile' AND status = 'succeeded'"
    assert count(engine, runs) == 2


def test_late_data_auto_resolves_and_a_recurrence_reopens(engine: Engine) -> None:
    day(engine, with_two_breaks())
    run(engine)
    execute(
        engine,
        "INSERT INTO execution SELECT r.business_date, r.id, r.order_id, r.clord_id, r.symbol,"
        " r.side, r.order_type, r.time_in_force, r.order_qty, r.order_price, r.cum_qty,"
        " r.leaves_qty, r.avg_px, r.order_state, r.account, r.participant, r.exec_type,"
        " r.last_shares, r.last_px, r.text, r.transact_time, r.trade_id, r.aggressor,"
        " r.commission_notional_collected, r.raw, 'dropcopy'"
        " FROM report_execution AS r WHERE r.id = 'E5'",
    )
    run(engine)
    late = one_break(engine, "execution_missing_from_stream")
    assert late["status"] == "resolved"
    assert late["resolved_at"] is not None
    assert one_break(engine, "chain_refund_orphan")["status"] == "open"
    run(engine)
    with engine.connect() as conn:
        assert [(a.actor, a.action) for a in audit_trail(conn, late["id"])] == [
            ("recon", "opened"),
            ("recon", "auto_resolved"),
        ]

    execute(engine, "DELETE FROM execution WHERE id = 'E5'")
    run(engine)
    again = one_break(engine, "execution_missing_from_stream")
    assert (again["id"], again["status"], again["occurrences"]) == (late["id"], "open", 2)
    assert again["resolved_at"] is None
    with engine.connect() as conn:
        assert [a.action for a in audit_trail(conn, late["id"])] == [
            "opened",
            "auto_resolved",
            "reopened",
        ]
        occurrences = conn.execute(
            text("SELECT occurrence FROM alert_outbox WHERE break_id = :id ORDER BY occurrence"),
            {"id": late["id"]},
        ).scalars()
        assert list(occurrences) == [1, 2]


def _act(engine: Engine, break_id: int, action: ManualAction, **kwargs: Any) -> None:
    with engine.begin() as conn:
        act(conn, break_id, action, actor="ops@firm", now=datetime.now(UTC), **kwargs)


def test_a_person_resolving_a_break_holds_until_its_facts_change(engine: Engine) -> None:
    rows = clean_day()
    e2 = next(r for r in rows["report_execution"] if r["id"] == "E2")
    e2["commission_notional_collected"] = -3
    day(engine, rows)
    run(engine)
    fee = one_break(engine, "execution_fee_mismatch")
    _act(engine, fee["id"], ManualAction.ACKNOWLEDGE, note="looking", assignee="ana")
    run(engine)
    assert one_break(engine, "execution_fee_mismatch")["status"] == "acknowledged"
    _act(engine, fee["id"], ManualAction.RESOLVE, note="venue confirmed our fee")
    run(engine)
    held = one_break(engine, "execution_fee_mismatch")
    assert held["status"] == "resolved"
    assert held["details"]["present_after_manual_resolve"] is True
    with engine.connect() as conn:
        trail = audit_trail(conn, fee["id"])
    assert [(a.actor, a.action, a.from_status, a.to_status, a.note) for a in trail] == [
        ("recon", "opened", None, "open", None),
        ("ops@firm", "acknowledged", "open", "acknowledged", "looking"),
        ("ops@firm", "resolved", "acknowledged", "resolved", "venue confirmed our fee"),
    ]
    assert trail[1].data == {"assignee": "ana"}

    execute(engine, "UPDATE execution SET commission_notional_collected = -4 WHERE id = 'E2'")
    run(engine)
    moved = one_break(engine, "execution_fee_mismatch")
    assert (moved["status"], moved["occurrences"]) == ("open", 2)


def test_actions_the_status_forbids_are_refused(engine: Engine) -> None:
    rows = clean_day()
    rows["execution"] = [e for e in rows["execution"] if e["id"] != "E5"]
    day(engine, rows)
    run(engine)
    found = one_break(engine, "execution_missing_from_stream")
    _act(engine, found["id"], ManualAction.RESOLVE)
    with pytest.raises(BreakActionError, match="cannot acknowledge a break that is resolved"):
        _act(engine, found["id"], ManualAction.ACKNOWLEDGE)
    with pytest.raises(LookupError):
        _act(engine, found["id"] + 1000, ManualAction.RESOLVE)
    with pytest.raises(BreakActionError, match="actor"), engine.begin() as conn:
        act(conn, found["id"], ManualAction.RESOLVE, actor=" ", now=datetime.now(UTC))


def test_the_audit_trail_refuses_update_and_delete(engine: Engine) -> None:
    rows = clean_day()
    rows["execution"] = [e for e in rows["execution"] if e["id"] != "E5"]
    day(engine, rows)
    run(engine)
    for sql in ("UPDATE break_audit SET actor = 'someone else'", "DELETE FROM break_audit"):
        with pytest.raises(sqlalchemy.exc.DBAPIError):
            execute(engine, sql)
    assert count(engine, "SELECT count(*) FROM break_audit WHERE actor = 'recon'") == 1


def test_kinds_a_run_could_not_check_are_not_auto_resolved(engine: Engine) -> None:
    rows = clean_day()
    rows["report_execution"] = [e for e in rows["report_execution"] if e["id"] != "E5"]
    day(engine, rows)
    run(engine)
    assert one_break(engine, "execution_missing_from_report")["status"] == "open"
    execute(engine, "UPDATE recon_run SET status = 'failed' WHERE job = 'report_snapshot'")
    run(engine)
    assert one_break(engine, "execution_missing_from_report")["status"] == "open"


def test_listing_filters_by_date_kind_status_and_age(engine: Engine) -> None:
    day(engine, with_two_breaks())
    run(engine)
    execute(
        engine,
        "UPDATE recon_break SET first_seen_at = now() - interval '10 days'"
        " WHERE kind = 'chain_refund_orphan'",
    )
    now = datetime.now(UTC)
    with engine.connect() as conn:

        def keys(**filters: Any) -> list[str]:
            return [b.key for b in list_breaks(conn, now=now, **filters)]

        # critical before medium
        assert keys() == ["E5", h("zz")]
        assert keys(business_date=D, kind="chain_refund_orphan") == [h("zz")]
        assert keys(business_date=D + timedelta(days=1)) == []
        assert keys(age=AgeBucket.DAYS_0_1) == ["E5"]
        assert keys(age=AgeBucket.DAYS_8_30) == [h("zz")]
        assert keys(age=AgeBucket.OVER_30) == []
        (orphan,) = list_breaks(conn, now=now, kind="chain_refund_orphan")
    doc = orphan.to_json()
    assert {
        "kind": doc["kind"],
        "key": doc["key"],
        "status": doc["status"],
        "business_date": doc["business_date"],
        "severity": doc["severity"],
        "occurrences": doc["occurrences"],
        "age_days": doc["age_days"],
        "age_bucket": doc["age_bucket"],
    } == {
        "kind": "chain_refund_orphan",
        "key": h("zz"),
        "status": "open",
        "business_date": D.isoformat(),
        "severity": "medium",
        "occurrences": 1,
        "age_days": 10,
        "age_bucket": "8-30",
    }
    assert doc["details"]["tx_hash"] == h("txA")


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[typer.Typer]:
    monkeypatch.setenv("RECON_DATABASE_URL", database_url)
    for var in ("RECON_EXCHANGE_TOKEN", "RECON_AUTH0_TOKEN_URL"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app = typer.Typer()
    app.command()(reconcile_command)
    app.add_typer(breaks, name="breaks")
    yield app
    get_engine().dispose()
    get_settings.cache_clear()
    get_engine.cache_clear()


def invoke(app: typer.Typer, *args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_commands_reconcile_list_show_ack_and_resolve(cli: typer.Typer, engine: Engine) -> None:
    day(engine, with_two_breaks())
    summary = orjson.loads(invoke(cli, "reconcile", "--date", D.isoformat(), "--json"))
    assert summary["found"]["chain_refund_orphan"] == 1
    assert summary["lifecycle"]["opened"] == 2
    listed = orjson.loads(invoke(cli, "breaks", "list", "--date", D.isoformat(), "--json"))
    assert [(b["kind"], b["key"], b["status"]) for b in listed] == [
        ("execution_missing_from_stream", "E5", "open"),
        ("chain_refund_orphan", h("zz"), "open"),
    ]
    for field in ("business_date", "details", "severity", "occurrences", "first_seen_at"):
        assert field in listed[0]
    first = str(listed[0]["id"])
    invoke(cli, "breaks", "ack", first, "--actor", "ana", "--note", "on it")
    invoke(cli, "breaks", "resolve", first, "--actor", "ana", "--note", "fixed upstream")
    shown = orjson.loads(invoke(cli, "breaks", "show", first, "--json"))
    assert shown["status"] == "resolved"
    assert shown["notes"] == "on it\nfixed upstream"
    assert [a["action"] for a in shown["audit"]] == ["opened", "acknowledged", "resolved"]
    resolved = orjson.loads(invoke(cli, "breaks", "list", "--status", "resolved", "--json"))
    assert [b["key"] for b in resolved] == ["E5"]
    refused = CliRunner().invoke(cli, ["breaks", "ack", first, "--actor", "ana"])
    assert refused.exit_code == 1
    assert "cannot acknowledge" in refused.output
