"""The demo's judgement against the venue's ground truth: an injected break that was not found is
excused only when its evidence lies inside a recorded gap of the source that carries it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from app.demo import ChainTimes, unobservable
from app.domain.breaks import BreakKind

from ._recon_day import NOON, D, Rows, clean_day, gap, h, load

GRACE = timedelta(minutes=10)
LATER = NOON + timedelta(hours=2)


def injected(kind: BreakKind, key: str, **details: Any) -> dict[str, Any]:
    return {"kind": str(kind), "key": key, "business_date": D.isoformat(), "details": details}


def venue_times(tx_hash: str, at: datetime) -> ChainTimes:
    """The venue's record of one confirmed transaction (what the judge asks a VenueStore)."""
    return lambda txs: {tx: at for tx in txs if tx == tx_hash}


def day_with_gaps() -> Rows:
    """txA and E5 at NOON, txB two hours later; the orders feed and the executions stream each
    lost a window around NOON, the legacy feed one around LATER + 1 h."""
    rows = clean_day()
    for table in ("order_filled", "feed_trade"):
        for row in rows[table]:
            if row["tx_hash"] == h("txB"):
                row["event_time"] = LATER
    window = timedelta(seconds=10)
    rows["gap_window"] += [
        gap("feed.orders[all]", NOON - window, NOON + window),
        gap("dropcopy.executions[all]", NOON - window, NOON + window),
        gap("feed.trades[all]", LATER + timedelta(hours=1), LATER + timedelta(hours=1, minutes=5)),
    ]
    return rows


def micros(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000


def test_only_evidence_inside_a_gap_of_its_own_source_excuses_a_missed_break(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        load(conn, day_with_gaps())
        gap_id = {r.source: r.id for r in conn.execute(text("SELECT source, id FROM gap_window"))}
    orders, executions, trades = (
        gap_id[s] for s in ("feed.orders[all]", "dropcopy.executions[all]", "feed.trades[all]")
    )
    in_trades_gap = LATER + timedelta(hours=1, minutes=1)
    pending = str(BreakKind.CHAIN_PENDING_UNCONFIRMED)
    truth = {
        "breaks": [
            injected(BreakKind.CHAIN_TAKER_MISSING, h("txA")),
            injected(BreakKind.CHAIN_MAKER_TAKER_MISMATCH, h("txB")),
            injected(BreakKind.CHAIN_REFUND_ORPHAN, h("zz"), tx_hash=h("txA")),
            injected(BreakKind.EXECUTION_MISSING_FROM_STREAM, "E5"),
            injected(BreakKind.EXECUTION_MISSING_FROM_REPORT, "E1"),
            injected(BreakKind.FEED_PROVIDER_MISSING, f"{h('txZ')}|{h('z1')}"),
            # seen before the orders gap, its confirmation due while the feed was away
            injected(BreakKind.CHAIN_PENDING_UNCONFIRMED, "Q", seen_at_us=micros(NOON - GRACE)),
            # the grace ran out a minute before the orders gap opened
            injected(
                BreakKind.CHAIN_PENDING_UNCONFIRMED,
                "R",
                seen_at_us=micros(NOON - GRACE - timedelta(minutes=1)),
            ),
            # only the legacy feed was away while its confirmation was due
            injected(
                BreakKind.CHAIN_PENDING_UNCONFIRMED,
                "S",
                seen_at_us=micros(in_trades_gap - GRACE),
            ),
        ]
    }
    chain_times = venue_times(h("txZ"), in_trades_gap)
    found = frozenset({(str(BreakKind.CHAIN_REFUND_ORPHAN), h("zz"))})
    with engine.connect() as conn:
        hidden = unobservable(
            conn, D, truth=truth, found=found, chain_times=chain_times, pending_grace=GRACE
        )
    assert hidden == {
        # mined at NOON, inside the orders feed's gap
        (str(BreakKind.CHAIN_TAKER_MISSING), h("txA")): orders,
        # the Report API filled the executions stream's gap in, so the absence cannot show
        (str(BreakKind.EXECUTION_MISSING_FROM_STREAM), "E5"): executions,
        # never stored by ingest: timed from the venue's own store
        (str(BreakKind.FEED_PROVIDER_MISSING), f"{h('txZ')}|{h('z1')}"): trades,
        (pending, "Q"): orders,
    }
