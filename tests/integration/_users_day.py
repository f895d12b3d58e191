"""The recon tests' hand-made day, with a few breaks, reconciled: what users query and report on.

On top of `_recon_day.clean_day()`: trade state history for T1, an execution of order O-E1 that
only the Report API knows (E9: execution_missing_from_stream), a Report API quantity that
disagrees for E3 (execution_quantity_mismatch) and a refund whose arithmetic is off for m2
(chain_refund_arithmetic). The real reconciliation run then opens the breaks and stores the net
fees, so the queries and the report read what production would have written.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Engine, insert, text

from app.db import models
from app.recon.service import reconcile
from tests.integration._recon_day import NOON, D, clean_day, execution, h, load

ORDER = "O-E1"
REPORT_ONLY = "E9"
EXPECTED_BREAKS = {
    ("execution_missing_from_stream", REPORT_ONLY),
    ("execution_quantity_mismatch", "E3"),
    ("chain_refund_arithmetic", h("a2")),
}


def seed_reconciled_day(engine: Engine) -> None:
    rows = clean_day()
    report_only = execution(
        REPORT_ONLY,
        account="ACC1",
        side="SIDE_BUY",
        shares=10,
        px=51,
        at=NOON + timedelta(minutes=2),
    )
    rows["report_execution"].append({**report_only, "order_id": ORDER})
    for row in rows["report_execution"]:
        if row["id"] == "E3":
            row["last_shares"] = 39
    for row in rows["fee_refund"]:
        if row["order_hash"] == h("a2"):
            row["fee_charged"] += Decimal("0.0001")
    with engine.begin() as conn:
        load(conn, rows)
        conn.execute(
            insert(models.TradeCaptureState.__table__),
            [
                {
                    "business_date": D,
                    "trade_id": "T1",
                    "state": state,
                    "update_time": NOON + timedelta(seconds=n),
                    "raw": b"",
                }
                for n, state in enumerate(("TRADE_STATE_NEW", "TRADE_STATE_CLEARED"))
            ],
        )
    reconcile(engine, D, report=None)
    with engine.connect() as conn:
        found = {(r.kind, r.key) for r in conn.execute(text("SELECT kind, key FROM recon_break"))}
    assert found == EXPECTED_BREAKS
