"""What the schema itself guarantees: day partitions, append-only audit, natural keys, checks."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.base import Base, BreakStatus, FillRole, Severity
from app.db.models import Break, BreakAudit, Execution, OrderFilled, TradeCaptureState
from app.db.partitions import ensure_partitions, partition_name

DAY = date(2026, 11, 22)
NEXT_DAY = date(2026, 11, 23)
AT = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)

PARTITIONED = sorted(
    table.name
    for table in Base.metadata.tables.values()
    if table.dialect_options["postgresql"]["partition_by"]
)


def execution_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "business_date": DAY,
        "id": "exec-1",
        "order_id": "order-1",
        "clord_id": "cl-1",
        "symbol": "PRES-2028-DEM",
        "side": "SIDE_BUY",
        "order_type": "ORDER_TYPE_LIMIT",
        "time_in_force": "TIME_IN_FORCE_DAY",
        "order_qty": 1_000,
        "order_price": 550,
        "cum_qty": 1_000,
        "leaves_qty": 0,
        "avg_px": 550,
        "order_state": "ORDER_STATE_FILLED",
        "account": "firms/F1/accounts/A1",
        "participant": "firms/F1/users/U1",
        "exec_type": "EXECUTION_TYPE_FILL",
        "last_shares": 1_000,
        "last_px": 550,
        "text": None,
        "transact_time": AT,
        "trade_id": "trade-1",
        "aggressor": True,
        "commission_notional_collected": -25,
        "source": "dropcopy",
        "raw": b"\x0a\x06exec-1",
    }
    return row | overrides


def order_filled_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "business_date": DAY,
        "tx_hash": "0xf30a29f249",
        "log_index": 0x21E,
        "order_hash": "0x8bf54f44e5d7",
        "token_id": "61192765571543000000000000000000000000000000000000000000000000000000000001",
        "side": "SELL",
        "condition_id": "0x04f954e4f30f",
        "shares": 2_000_000,
        "shares_normalized": Decimal(2),
        "price": Decimal("0.04"),
        "fee": Decimal("0.008"),
        "user_address": "0xe9cbb1c9b3f7f411",
        "taker_address": "0x98f36c3d6300b905",
        "role": "maker",
        "version": 2,
        "event_time": datetime(2026, 11, 22, 22, 38, 51, tzinfo=UTC),
        "raw": b'{"event_type":"order_filled"}',
    }
    return row | overrides


def new_break(session: Session) -> Break:
    found = Break(
        kind="execution_missing_in_report",
        business_date=DAY,
        key="exec-1",
        severity=Severity.HIGH,
        details={"source": "dropcopy"},
    )
    session.add(found)
    session.flush()
    return found


def table(name: str) -> Table:
    return Base.metadata.tables[name]


def test_ensure_partitions_is_idempotent(engine: Engine) -> None:
    with engine.begin() as conn:
        assert ensure_partitions(conn, [DAY, DAY]) == len(PARTITIONED)
    with engine.begin() as conn:
        assert ensure_partitions(conn, [DAY]) == 0
        assert ensure_partitions(conn, []) == 0
        made = conn.execute(
            text(
                "SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid)"
                " FROM pg_inherits"
                " JOIN pg_class AS parent ON parent.oid = inhparent"
                " JOIN pg_class AS child ON child.oid = inhrelid"
                " WHERE child.relkind = 'r'"
            )
        ).all()
    assert sorted(parent for parent, _, _ in made) == PARTITIONED
    for parent, child, bound in made:
        assert child == partition_name(parent, DAY) == f"{parent}_p20261122"
        assert bound == "FOR VALUES FROM ('2026-11-22') TO ('2026-11-23')"


def test_concurrent_ensure_partitions_create_each_once(engine: Engine) -> None:
    callers = 4
    start = threading.Barrier(callers, timeout=30)

    def create(day: date) -> int:
        start.wait()
        with engine.begin() as conn:
            return ensure_partitions(conn, [day])

    # A lost race is timing-dependent: several fresh days make it near certain to happen.
    with ThreadPoolExecutor(max_workers=callers) as pool:
        for day in (DAY + timedelta(days=n) for n in range(6)):
            created = [
                future.result(timeout=60)
                for future in [pool.submit(create, day) for _ in range(callers)]
            ]
            assert sorted(created) == [0] * (callers - 1) + [len(PARTITIONED)]


def test_row_lands_in_its_day_partition_and_no_partition_means_no_row(engine: Engine) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, [DAY])
        conn.execute(insert(table("execution")), [execution_row()])
        home = conn.scalar(text("SELECT tableoid::regclass::text FROM execution"))
    assert home == "execution_p20261122"

    with pytest.raises(IntegrityError, match="no partition"), engine.begin() as conn:
        conn.execute(
            insert(table("execution")), [execution_row(id="exec-2", business_date=NEXT_DAY)]
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE break_audit SET note = 'rewritten'",
        "DELETE FROM break_audit",
        "TRUNCATE break_audit",
        "TRUNCATE recon_break CASCADE",
        # Refused even when it would touch nothing.
        "UPDATE break_audit SET note = 'x' WHERE false",
    ],
)
def test_break_audit_is_append_only(engine: Engine, statement: str) -> None:
    with Session(engine) as session, session.begin():
        found = new_break(session)
        session.add(
            BreakAudit(break_id=found.id, actor="recon", action="open", to_status=BreakStatus.OPEN)
        )

    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))

    with engine.connect() as conn:
        assert conn.scalar(text("SELECT note FROM break_audit WHERE action = 'open'")) is None
        assert conn.scalar(text("SELECT count(*) FROM break_audit")) == 1


def insert_twice(engine: Engine, name: str, first: dict[str, Any], second: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(table(name)), [first])
    with engine.begin() as conn:
        conn.execute(insert(table(name)), [second])


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        pytest.param(
            "order_filled",
            order_filled_row(),
            order_filled_row(order_hash="0xother", price=Decimal("0.05")),
            id="order_filled-tx_hash-log_index",
        ),
        pytest.param(
            "execution",
            execution_row(),
            execution_row(source="report_backfill", last_shares=1),
            id="execution-id",
        ),
        pytest.param(
            "fee_refund",
            {
                "business_date": DAY,
                "tx_hash": "0x97b2ae331881",
                "order_hash": "0xbda8ab86c90f",
                "user_address": "0x47a51f21d742",
                "refund": Decimal("9.9904"),
                "fee_charged": Decimal("0.0096"),
                "raw": b"{}",
            },
            {
                "business_date": NEXT_DAY,
                "tx_hash": "0x97b2ae331881",
                "order_hash": "0xbda8ab86c90f",
                "user_address": "0x47a51f21d742",
                "refund": Decimal(0),
                "fee_charged": Decimal(10),
                "raw": b"{}",
            },
            id="fee_refund-tx_hash-order_hash",
        ),
    ],
)
def test_duplicate_natural_key_is_rejected(
    engine: Engine, name: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, [DAY, NEXT_DAY])
    with pytest.raises(IntegrityError, match="duplicate key"):
        insert_twice(engine, name, first, second)


def test_duplicate_break_is_rejected(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        new_break(session)
    with (
        pytest.raises(IntegrityError, match="uq_recon_break_kind_business_date_key"),
        Session(engine) as session,
        session.begin(),
    ):
        new_break(session)


def test_redelivered_trade_state_merges(engine: Engine) -> None:
    row = {
        "business_date": DAY,
        "trade_id": "trade-1",
        "state": "TRADE_STATE_CLEARED",
        "update_time": AT,
        "raw": b"\x08\x02",
    }
    with engine.begin() as conn:
        ensure_partitions(conn, [DAY])
        for _ in range(2):
            conn.execute(
                text(
                    "INSERT INTO trade_capture_state"
                    " (business_date, trade_id, state, update_time, raw)"
                    " VALUES (:business_date, :trade_id, :state, :update_time, :raw)"
                    " ON CONFLICT (business_date, trade_id, state, update_time) DO NOTHING"
                ),
                row,
            )
        assert (
            conn.scalar(
                select(TradeCaptureState.trade_id).where(TradeCaptureState.state == row["state"])
            )
            == "trade-1"
        )
        assert conn.scalar(text("SELECT count(*) FROM trade_capture_state")) == 1


@pytest.mark.parametrize(
    ("name", "row", "constraint"),
    [
        pytest.param(
            "execution",
            execution_row(last_shares=-1),
            "ck_execution_last_shares_non_negative",
            id="negative-last_shares",
        ),
        pytest.param(
            "execution",
            execution_row(source="carrier-pigeon"),
            "ck_execution_source",
            id="unknown-source",
        ),
        pytest.param(
            "order_filled",
            order_filled_row(shares=-2_000_000),
            "ck_order_filled_shares_non_negative",
            id="negative-shares",
        ),
        pytest.param(
            "order_filled",
            order_filled_row(price=Decimal("1.01")),
            "ck_order_filled_price_between_0_and_1",
            id="price-above-1",
        ),
        pytest.param(
            "order_filled",
            order_filled_row(role="both"),
            "ck_order_filled_role",
            id="unknown-role",
        ),
    ],
)
def test_check_constraint_refuses(
    engine: Engine, name: str, row: dict[str, Any], constraint: str
) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, [DAY])
    # Plain SQL, as bulk ingest writes it: the models' enum types would stop a bad role earlier.
    columns, values = ", ".join(row), ", ".join(f":{column}" for column in row)
    with pytest.raises(IntegrityError, match=constraint), engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {name} ({columns}) VALUES ({values})"), row)


@pytest.mark.parametrize(
    ("change", "constraint"),
    [
        pytest.param(
            lambda found: setattr(found, "status", BreakStatus.RESOLVED),
            "ck_recon_break_resolved_iff_resolved_at",
            id="resolved-without-resolved_at",
        ),
        pytest.param(
            lambda found: setattr(found, "occurrences", 0),
            "ck_recon_break_occurrences_positive",
            id="zero-occurrences",
        ),
    ],
)
def test_break_lifecycle_checks(
    engine: Engine, change: Callable[[Break], None], constraint: str
) -> None:
    with Session(engine) as session, session.begin():
        found_id = new_break(session).id
    with (
        pytest.raises(IntegrityError, match=constraint),
        Session(engine) as session,
        session.begin(),
    ):
        change(session.get_one(Break, found_id))


def test_models_round_trip_exact_values(engine: Engine) -> None:
    with engine.begin() as conn:
        ensure_partitions(conn, [DAY])
    with Session(engine) as session, session.begin():
        session.execute(insert(OrderFilled), [order_filled_row()])
        session.execute(insert(Execution), [execution_row()])
    with Session(engine) as session:
        fill = session.scalars(select(OrderFilled)).one()
        execution = session.scalars(select(Execution)).one()
    assert fill.price == Decimal("0.04")
    assert fill.fee == Decimal("0.008")
    assert fill.role is FillRole.MAKER
    assert fill.received_at.tzinfo is not None
    assert execution.commission_notional_collected == -25
    assert execution.source == "dropcopy"
