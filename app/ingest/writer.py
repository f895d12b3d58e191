"""The batch writer: where at-least-once delivery becomes an exactly-once effect.

One `write()` is one transaction: the batch's events are COPYed (binary) into session-local
staging tables, merged into the fact tables with `INSERT ... SELECT ... ON CONFLICT` on their
natural keys, its dead letters are inserted, and the stream's checkpoint is upserted. A crash
anywhere loses the whole batch and its checkpoint together, so the stream resumes from the last
committed checkpoint and the re-delivered rows merge into nothing new. Confirmed chain fills,
the bulk of a day, skip staging: they are COPYed straight into order_filled, and only if one of
them is stored already does the batch take the staged ON CONFLICT path (`_write_fills`).

Merge rules (the same final tables whatever the order or repetition of deliveries):
- execution, position_change, instrument_state_change, trade_capture_state, feed_trade,
  order_filled (confirmed, keyed on (tx_hash, log_index)), order_filled_pending, fee_refund:
  first delivery wins (DO NOTHING); re-deliveries are identical by the venue's contract.
- trade_capture and instrument hold the current state: the greatest delivery wins, by
  `trade_delivery_order` (BUSTED is terminal, then later update_time, then state precedence) and
  by update_time respectively; the raw bytes break exact ties so arrival order never matters.
- A confirmed order_filled supersedes the pending rows of its (tx_hash, order_hash). Nothing is
  updated for it: readers look the confirmation up (`models.pending_confirmed`), so a pending row
  is written once, in whichever order the two arrive.
- fee_refund takes its business_date from the order_filled of the same (tx_hash, order_hash) if
  stored, else of the same order_hash, else its own timestamp, else the feed's current day (the
  latest order_filled date). A confirmed order_filled arriving later re-dates its refund.

Day partitions are created before the batch transaction, in their own short one: creating a
partition locks its parent ACCESS EXCLUSIVE, which must not be held for a whole batch by one of
several concurrent workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from operator import attrgetter
from typing import Any, cast

import psycopg
from psycopg import errors
from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from app.db.models import NEAR_DAYS
from app.db.partitions import ensure_partitions
from app.domain.events import (
    TRADE_STATE_PRECEDENCE,
    DeadLetter,
    Event,
    ExecutionEvent,
    FeedTradeEvent,
    FeeRefundEvent,
    InstrumentEvent,
    OrderFilledEvent,
    PositionChangeEvent,
    TradeCaptureEvent,
)

log = logging.getLogger(__name__)

# Concurrent workers can deadlock (e.g. one creating a partition while another writes); the
# loser's transaction is rolled back whole, so trying it again is safe.
ATTEMPTS = 3
STAGED = "polyrecon.ingest.staged"  # key in the pooled connection's info: staging tables exist
TEMP_BUFFERS = "32MB"
COPY_LOCK_TIMEOUT = "2s"  # see BatchWriter._write_fills


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a stream resumes; `stream` is the stream and its shard, e.g. 'executions[A,B]'."""

    stream: str
    resume_token: bytes | None
    last_event_time: datetime | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed batch changed.

    `rows`: rows inserted (or, for the current-state tables trade_capture and instrument,
    inserted or replaced) per table, plus `fee_refund_redated` refunds; a duplicate counts
    nothing.
    """

    events: int
    dead_letters: int
    rows: dict[str, int]


@dataclass(frozen=True, slots=True)
class Kind:
    """How one event type is staged and merged."""

    stage: str
    # The staging table's columns, in COPY order: the event's attributes of the same names.
    columns: tuple[str, ...]
    # SELECT that gives the staging table its columns, with the target tables' types.
    shape: str
    # Statements run after the COPY, each with the table name its rowcount is reported under.
    merges: tuple[tuple[str, str], ...]

    def row(self) -> Callable[[Any], tuple[Any, ...]]:
        return attrgetter(*self.columns)


def _rank(column: str) -> str:
    """SQL for TRADE_STATE_PRECEDENCE of a state column."""
    whens = " ".join(
        f"WHEN '{state}' THEN {rank}" for state, rank in TRADE_STATE_PRECEDENCE.items()
    )
    return f"(CASE {column} {whens} END)"


def _list(columns: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{column}" for column in columns)


def _assign(columns: Iterable[str]) -> str:
    return ", ".join(f"{column} = EXCLUDED.{column}" for column in columns)


EXECUTION_COLUMNS = (
    "business_date",
    "id",
    "order_id",
    "clord_id",
    "symbol",
    "side",
    "order_type",
    "time_in_force",
    "order_qty",
    "order_price",
    "cum_qty",
    "leaves_qty",
    "avg_px",
    "order_state",
    "account",
    "participant",
    "exec_type",
    "last_shares",
    "last_px",
    "text",
    "transact_time",
    "trade_id",
    "aggressor",
    "commission_notional_collected",
    "raw",
    "source",
)
EXECUTION = Kind(
    stage="ingest_stage_execution",
    columns=EXECUTION_COLUMNS,
    shape=f"SELECT {_list(EXECUTION_COLUMNS)} FROM execution",
    merges=(
        (
            "execution",
            f"INSERT INTO execution ({_list(EXECUTION_COLUMNS)}) "
            f"SELECT {_list(EXECUTION_COLUMNS)} FROM ingest_stage_execution "
            "ON CONFLICT (business_date, id) DO NOTHING",
        ),
    ),
)

TRADE_COLUMNS = (
    "business_date",
    "id",
    "trade_type",
    "state",
    "text",
    "trade_link_id",
    "update_time",
    "symbol",
    "aggressor_execution_id",
    "passive_execution_id",
    "aggressor_account",
    "passive_account",
    "aggressor_side",
    "last_shares",
    "last_px",
    "aggressor_commission",
    "passive_commission",
    "transact_time",
    "busted",
    "raw",
)
TRADE_REPLACED = tuple(c for c in TRADE_COLUMNS if c not in {"business_date", "id"})
TRADE_CAPTURE = Kind(
    stage="ingest_stage_trade_capture",
    columns=TRADE_COLUMNS,
    shape=f"SELECT {_list(TRADE_COLUMNS)} FROM trade_capture",
    merges=(
        (
            "trade_capture_state",
            "INSERT INTO trade_capture_state (business_date, trade_id, state, update_time, raw) "
            "SELECT business_date, id, state, update_time, raw FROM ingest_stage_trade_capture "
            "ON CONFLICT DO NOTHING",
        ),
        (
            # DISTINCT ON: one row per trade, since ON CONFLICT can't touch a row twice in one
            # statement; ordered so the batch's greatest delivery is the one offered.
            "trade_capture",
            f"INSERT INTO trade_capture AS t ({_list(TRADE_COLUMNS)}) "
            f"SELECT DISTINCT ON (business_date, id) {_list(TRADE_COLUMNS)} "
            "FROM ingest_stage_trade_capture "
            f"ORDER BY business_date, id, busted DESC, update_time DESC, {_rank('state')} DESC, "
            "raw DESC "
            f"ON CONFLICT (business_date, id) DO UPDATE SET {_assign(TRADE_REPLACED)}, "
            "received_at = now() "
            f"WHERE (EXCLUDED.busted, EXCLUDED.update_time, {_rank('EXCLUDED.state')}, "
            "EXCLUDED.raw) "
            "> (t.busted, coalesce(t.update_time, '-infinity'), "
            f"coalesce({_rank('t.state')}, -1), t.raw)",
        ),
    ),
)

INSTRUMENT_COLUMNS = (
    "business_date",
    "symbol",
    "state",
    "name",
    "price_scale",
    "fractional_qty_scale",
    "update_time",
    "raw",
)
INSTRUMENT_CURRENT = INSTRUMENT_COLUMNS[1:]
INSTRUMENT = Kind(
    stage="ingest_stage_instrument",
    columns=INSTRUMENT_COLUMNS,
    shape=f"SELECT {_list(INSTRUMENT_COLUMNS)} FROM instrument_state_change",
    merges=(
        (
            "instrument_state_change",
            f"INSERT INTO instrument_state_change ({_list(INSTRUMENT_COLUMNS)}) "
            f"SELECT {_list(INSTRUMENT_COLUMNS)} FROM ingest_stage_instrument "
            "ON CONFLICT DO NOTHING",
        ),
        (
            "instrument",
            f"INSERT INTO instrument AS i ({_list(INSTRUMENT_CURRENT)}) "
            f"SELECT DISTINCT ON (symbol) {_list(INSTRUMENT_CURRENT)} "
            "FROM ingest_stage_instrument ORDER BY symbol, update_time DESC, raw DESC "
            f"ON CONFLICT (symbol) DO UPDATE SET {_assign(INSTRUMENT_CURRENT[1:])}, "
            "received_at = now() "
            "WHERE (EXCLUDED.update_time, EXCLUDED.raw) "
            "> (coalesce(i.update_time, '-infinity'), i.raw)",
        ),
    ),
)

POSITION_COLUMNS = (
    "business_date",
    "account",
    "symbol",
    "net_position",
    "qty_bought",
    "qty_sold",
    "cost",
    "realized",
    "bod_position",
    "update_time",
    "change_time",
    "raw",
)
POSITION_CHANGE = Kind(
    stage="ingest_stage_position_change",
    columns=POSITION_COLUMNS,
    shape=f"SELECT {_list(POSITION_COLUMNS)} FROM position_change",
    merges=(
        (
            "position_change",
            f"INSERT INTO position_change ({_list(POSITION_COLUMNS)}) "
            f"SELECT {_list(POSITION_COLUMNS)} FROM ingest_stage_position_change "
            "ON CONFLICT DO NOTHING",
        ),
    ),
)

FILL_COLUMNS = (
    "business_date",
    "tx_hash",
    "order_hash",
    "token_id",
    "token_label",
    "complement_token_id",
    "complement_token_label",
    "side",
    "market_slug",
    "condition_id",
    "market_id",
    "title",
    "outcome",
    "outcome_index",
    "is_neg_risk",
    "shares",
    "shares_normalized",
    "price",
    "fee",
    "user_address",
    "taker_address",
    "role",
    "version",
    "builder",
    "metadata",
    "event_time",
    "raw",
)
# Confirmed fills are the bulk of a day. They are COPYed straight into order_filled (see
# BatchWriter._write_fills); staging holds only their keys, to re-date their refunds.
FILL_KEY_COLUMNS = ("status", "business_date", "tx_hash", "order_hash")
CONFIRMED_FILL_COLUMNS = (*FILL_COLUMNS, "log_index")
# The fallback when a confirmed fill is already stored: stage the whole rows, merge as usual.
FILLS_MERGE = (
    f"INSERT INTO order_filled ({_list(CONFIRMED_FILL_COLUMNS)}) "
    f"SELECT {_list(CONFIRMED_FILL_COLUMNS)} FROM ingest_stage_order_filled "
    "WHERE status = 'confirmed' AND log_index IS NOT NULL "  # not the rows of keys only
    "ON CONFLICT (business_date, tx_hash, log_index) DO NOTHING"
)
ORDER_FILLED = Kind(
    stage="ingest_stage_order_filled",
    columns=("status", *CONFIRMED_FILL_COLUMNS),
    shape=f"SELECT NULL::text AS status, {_list(CONFIRMED_FILL_COLUMNS)} FROM order_filled",
    merges=(
        (
            "order_filled_pending",
            f"INSERT INTO order_filled_pending ({_list(FILL_COLUMNS)}) "
            f"SELECT {_list(FILL_COLUMNS)} FROM ingest_stage_order_filled "
            "WHERE status = 'pending' "
            "ON CONFLICT (business_date, tx_hash, order_hash) DO NOTHING",
        ),
        (
            "fee_refund_redated",
            "UPDATE fee_refund AS f SET business_date = c.business_date "
            "FROM ingest_stage_order_filled AS c "
            "WHERE c.status = 'confirmed' AND f.tx_hash = c.tx_hash "
            "AND f.order_hash = c.order_hash AND f.business_date <> c.business_date",
        ),
    ),
)

REFUND_COLUMNS = (
    "tx_hash",
    "order_hash",
    "user_address",
    "token_id",
    "condition_id",
    "market_slug",
    "title",
    "refund",
    "fee_charged",
    "event_time",
    "raw",
)
FEE_REFUND = Kind(
    stage="ingest_stage_fee_refund",
    columns=REFUND_COLUMNS,
    shape=f"SELECT {_list(REFUND_COLUMNS)} FROM fee_refund",
    merges=(
        (
            "fee_refund",
            f"INSERT INTO fee_refund (business_date, {_list(REFUND_COLUMNS)}) "
            "SELECT coalesce("
            "(SELECT o.business_date FROM order_filled AS o "
            "WHERE o.order_hash = s.order_hash "
            f"AND o.business_date {NEAR_DAYS.format(day='s.day')} "
            "ORDER BY o.tx_hash = s.tx_hash DESC, o.business_date LIMIT 1), s.day), "
            f"{_list(REFUND_COLUMNS, 's.')} "
            "FROM (SELECT r.*, coalesce((r.event_time AT TIME ZONE 'UTC')::date, feed.day, "
            "(now() AT TIME ZONE 'UTC')::date) AS day "
            "FROM ingest_stage_fee_refund AS r, "
            "(SELECT max(business_date) AS day FROM order_filled) AS feed) AS s "
            "ON CONFLICT (tx_hash, order_hash) DO NOTHING",
        ),
    ),
)

FEED_TRADE_COLUMNS = (
    "business_date",
    "tx_hash",
    "order_hash",
    "asset_id",
    "condition_id",
    "market_slug",
    "title",
    "outcome",
    "shares",
    "shares_normalized",
    "price",
    "user_address",
    "taker_address",
    "event_time",
    "feed_source",
    "raw",
)
FEED_TRADE = Kind(
    stage="ingest_stage_feed_trade",
    columns=FEED_TRADE_COLUMNS,
    shape=f"SELECT {_list(FEED_TRADE_COLUMNS)} FROM feed_trade",
    merges=(
        (
            "feed_trade",
            f"INSERT INTO feed_trade ({_list(FEED_TRADE_COLUMNS)}) "
            f"SELECT {_list(FEED_TRADE_COLUMNS)} FROM ingest_stage_feed_trade "
            "ON CONFLICT DO NOTHING",
        ),
    ),
)

# Merge order matters: confirmed fills before refunds (so a refund finds its fill in the same
# batch); everything else is independent.
KINDS: dict[type, Kind] = {
    ExecutionEvent: EXECUTION,
    TradeCaptureEvent: TRADE_CAPTURE,
    InstrumentEvent: INSTRUMENT,
    PositionChangeEvent: POSITION_CHANGE,
    OrderFilledEvent: ORDER_FILLED,
    FeeRefundEvent: FEE_REFUND,
    FeedTradeEvent: FEED_TRADE,
}
ROWS = {kind.stage: kind.row() for kind in KINDS.values()}
FILL_KEY_ROW = attrgetter(*FILL_KEY_COLUMNS)
FillKey = tuple[date, str, int | None]
_fill_key: Callable[[OrderFilledEvent], FillKey] = attrgetter(
    "business_date", "tx_hash", "log_index"
)
FILL_ROW = attrgetter(*CONFIRMED_FILL_COLUMNS)

CHECKPOINT_UPSERT = (
    "INSERT INTO stream_checkpoint AS c (stream, resume_token, last_event_time, events_total) "
    "VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (stream) DO UPDATE SET resume_token = EXCLUDED.resume_token, "
    "last_event_time = greatest(c.last_event_time, EXCLUDED.last_event_time), "
    "events_total = c.events_total + EXCLUDED.events_total, updated_at = now()"
)


def _partition_days(events: Iterable[Event]) -> set[date]:
    return {e.business_date for e in events if not isinstance(e, FeeRefundEvent)}


def _printable(text: str) -> str:
    # Postgres text can't hold NUL, and a reason or source is free text from anywhere.
    return text.replace("\x00", "\\x00")


def _missing_partition(exc: errors.CheckViolation) -> bool:
    return (exc.diag.message_primary or "").startswith("no partition of relation")


class BatchWriter:
    """Writes batches of events for one or more streams; thread-safe (one connection per call).

    `synchronous_commit=False` lets a commit return before its WAL is flushed: a Postgres crash
    may then lose the last fraction of a second of batches, but never part of one, and their
    checkpoint goes with them. Never for the websocket feeds, which have no replay. Not safe for
    the DropCopy streams either as the worker runs them: after a Postgres crash the sink retries
    the batch in hand and the stream carries on from its position in memory, so the batches
    lost with the crash would never be asked for again. It would take re-opening every stream
    from its stored checkpoint after each database outage. The worker therefore commits
    synchronously; the flush is a wait, not CPU, and one per 5,000-row batch.
    """

    def __init__(self, engine: Engine, *, synchronous_commit: bool = True) -> None:
        self._engine = engine
        self._synchronous_commit = synchronous_commit
        self._days: set[date] = set()  # partitions known to exist
        self._types: dict[str, list[int]] = {}  # "table (columns)" -> type OIDs, for COPY

    def write(
        self,
        events: Sequence[Event],
        dead: Sequence[DeadLetter],
        checkpoint: Checkpoint | None,
        *,
        before_merge: Callable[[], None] | None = None,
        behind: Sequence[Event] = (),
    ) -> WriteResult:
        """Store the batch, its dead letters and its checkpoint in one transaction.

        `before_merge` is called once the batch is staged, before it is merged and committed:
        a caller writing several batches of one stream at once waits there for the previous
        one to commit, so their COPYs overlap while their merges and checkpoints stay in order.
        If it raises, the transaction is rolled back. `behind` is that previous batch, which
        this one commits only after: its confirmed fills are left to it (see `_write_fills`)."""
        batches: dict[Kind, list[Event]] = {}
        for event in events:
            batches.setdefault(KINDS[type(event)], []).append(event)
        ordered = [(kind, batches[kind]) for kind in KINDS.values() if kind in batches]
        days = _partition_days(events)
        skip = {
            _fill_key(e)
            for e in behind
            if isinstance(e, OrderFilledEvent) and e.status == "confirmed"
        }
        for _ in range(ATTEMPTS - 1):
            self._ensure_partitions(days)
            try:
                rows = self._transaction(
                    ordered, dead, checkpoint, len(events), before_merge=before_merge, skip=skip
                )
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                log.warning("batch write conflicted (%s); retrying", type(exc).__name__)
            except errors.CheckViolation as exc:
                # A partition we knew about was dropped since: forget what we know and redo.
                if not _missing_partition(exc):
                    raise
                self._days.clear()
            else:
                return WriteResult(events=len(events), dead_letters=len(dead), rows=rows)
        self._ensure_partitions(days)
        rows = self._transaction(
            ordered, dead, checkpoint, len(events), before_merge=before_merge, skip=skip
        )
        return WriteResult(events=len(events), dead_letters=len(dead), rows=rows)

    def record_gap(self, source: str, start: datetime, end: datetime, reason: str) -> None:
        """Note a window `source` may have missed, for the Report API backfill."""
        if end < start:
            raise ValueError(f"gap for {source} ends ({end}) before it starts ({start})")
        with self._connection() as (_, pg), pg.cursor() as cur:
            cur.execute(
                "INSERT INTO gap_window (source, start_time, end_time, reason) "
                "VALUES (%s, %s, %s, %s)",
                (source, start, end, _printable(reason)),
            )
            pg.commit()

    def load_checkpoint(self, stream: str) -> Checkpoint | None:
        with self._connection() as (_, pg), pg.cursor() as cur:
            cur.execute(
                "SELECT resume_token, last_event_time FROM stream_checkpoint WHERE stream = %s",
                (stream,),
            )
            found = cur.fetchone()
            pg.rollback()
        if found is None:
            return None
        return Checkpoint(stream=stream, resume_token=found[0], last_event_time=found[1])

    def _ensure_partitions(self, days: set[date]) -> None:
        missing = days - self._days
        if not missing:
            return
        with self._engine.begin() as conn:
            ensure_partitions(conn, missing)
        self._days |= missing

    def _transaction(
        self,
        batches: list[tuple[Kind, list[Event]]],
        dead: Sequence[DeadLetter],
        checkpoint: Checkpoint | None,
        total: int,
        *,
        before_merge: Callable[[], None] | None,
        skip: set[FillKey],
    ) -> dict[str, int]:
        with self._connection() as (pooled, pg):
            if not pooled.info.get(STAGED):
                self._create_staging(pg)
                pooled.info[STAGED] = True
            rows, merges = self._stage(pg, batches, dead, skip)
            if before_merge is not None:
                before_merge()
            # The merges go in one round trip (COPY can't be pipelined); the server still runs
            # them in order, so a refund sees the fills merged just before it.
            merged: list[tuple[str, psycopg.Cursor[Any]]] = []
            with pg.pipeline():
                if not self._synchronous_commit:
                    pg.execute("SET LOCAL synchronous_commit = off")
                for table, sql in merges:
                    merged.append((table, pg.execute(sql)))
                if checkpoint is not None:
                    pg.execute(
                        CHECKPOINT_UPSERT,
                        (
                            _printable(checkpoint.stream),
                            checkpoint.resume_token,
                            checkpoint.last_event_time,
                            total,
                        ),
                    )
            for table, cursor in merged:
                rows[table] = rows.get(table, 0) + max(cursor.rowcount, 0)
                cursor.close()
            pg.commit()
        return rows

    def _stage(
        self,
        pg: psycopg.Connection[Any],
        batches: list[tuple[Kind, list[Event]]],
        dead: Sequence[DeadLetter],
        skip: set[FillKey],
    ) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """COPY the batch into staging (confirmed fills straight into order_filled, see
        `_write_fills`) and its dead letters into their table. Returns the rows written so far
        per table and the merges still to run, in order, each with the table it counts for."""
        rows: dict[str, int] = {}
        merges: list[tuple[str, str]] = []
        with pg.cursor() as cur:
            for kind, events in batches:
                if kind is not ORDER_FILLED:
                    self._copy(cur, kind.stage, kind.columns, map(ROWS[kind.stage], events))
                elif (copied := self._write_fills(pg, cur, events, skip)) is not None:
                    rows["order_filled"] = copied
                else:
                    merges.append(("order_filled", FILLS_MERGE))
                merges.extend(kind.merges)
            if dead:
                letters = ((_printable(d.source), _printable(d.reason), d.raw) for d in dead)
                self._copy(cur, "dead_letter", ("source", "reason", "raw"), letters)
                rows["dead_letter"] = len(dead)
        return rows, merges

    def _write_fills(
        self,
        pg: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        events: list[Event],
        skip: set[FillKey],
    ) -> int | None:
        """Stage the pending fills whole and the confirmed ones by key, and COPY the confirmed
        ones straight into order_filled: a staged INSERT ... ON CONFLICT costs Postgres a second
        write of each row and a probe of the key before the insert. Returns how many were
        COPYed, or None if they were staged whole instead, for FILLS_MERGE.

        Only the first delivery of each key is COPYed, and none of `skip`, the fills of the
        batch still in flight before this one: this COPY runs before the turn, and a fill also
        held uncommitted by that batch would wait for its commit, which may wait for this
        batch's turn (a deadlock Postgres can't see). That batch stores them, or fails, and
        then this one is rolled back too. A fill stored before (a re-delivery) fails the COPY:
        the savepoint takes it back and the batch's fills are staged whole, to be merged with
        ON CONFLICT DO NOTHING in the turn; so does a wait for a lock past COPY_LOCK_TIMEOUT."""
        confirmed: dict[FillKey, OrderFilledEvent] = {}
        pending: list[OrderFilledEvent] = []
        keys: list[OrderFilledEvent] = []
        for event in cast(list[OrderFilledEvent], events):  # KINDS routed them here by type
            if event.status == "confirmed":
                keys.append(event)
                key = _fill_key(event)
                if key not in skip:
                    confirmed.setdefault(key, event)
            else:
                pending.append(event)
        stage = ORDER_FILLED.stage
        if pending:
            self._copy(cur, stage, ORDER_FILLED.columns, map(ROWS[stage], pending))
        if keys:
            self._copy(cur, stage, FILL_KEY_COLUMNS, map(FILL_KEY_ROW, keys))
        if not confirmed:
            return 0
        try:
            with pg.transaction(), pg.cursor() as fills:
                # Another worker holding one of these fills uncommitted (shards that overlap)
                # could be waiting on this one the same way: give up waiting, merge in turn.
                fills.execute(f"SET LOCAL lock_timeout = '{COPY_LOCK_TIMEOUT}'")
                self._copy(
                    fills, "order_filled", CONFIRMED_FILL_COLUMNS, map(FILL_ROW, confirmed.values())
                )
                fills.execute("SET LOCAL lock_timeout = DEFAULT")
            return len(confirmed)
        except (errors.UniqueViolation, errors.LockNotAvailable) as exc:
            log.debug("staging the batch's confirmed fills to merge them: %s", type(exc).__name__)
        self._copy(cur, stage, ORDER_FILLED.columns, map(ROWS[stage], confirmed.values()))
        return None

    def _copy(
        self,
        cur: psycopg.Cursor[Any],
        table: str,
        columns: tuple[str, ...],
        rows: Iterable[tuple[Any, ...]],
    ) -> None:
        names = _list(columns)
        types = self._types.get(f"{table} ({names})")
        if types is None:
            # Binary COPY needs each column's exact type: the target table's, read once.
            cur.execute(f"SELECT {names} FROM {table} LIMIT 0")
            types = self._types[f"{table} ({names})"] = [c.type_code for c in cur.description or ()]
        with cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)

    @staticmethod
    def _create_staging(pg: psycopg.Connection[Any]) -> None:
        """Session-local staging tables shaped like their targets, emptied at every commit."""
        with pg.cursor() as cur:
            # Room for a 5000-row batch of ~2 KB chain rows in memory. Only settable before the
            # session first touches a temporary table: usually now, but if someone else sharing
            # the engine got there first, the default just means staging spills to disk.
            cur.execute(
                f"DO $$ BEGIN PERFORM set_config('temp_buffers', '{TEMP_BUFFERS}', false); "
                "EXCEPTION WHEN invalid_parameter_value THEN NULL; END $$"
            )
            # A chain row with its raw frame passes the TOAST threshold, so every row is
            # compressed once, as it is COPYed into staging (the merge copies the compressed
            # value). pglz, the server default, costs about a third of the database's time per
            # chain event; lz4 a fraction of that, for about the same size. Columns without a
            # compression of their own use the session's default when the value is written.
            # A server built without lz4 refuses the value and keeps pglz.
            cur.execute(
                "DO $$ BEGIN PERFORM set_config('default_toast_compression', 'lz4', false); "
                "EXCEPTION WHEN invalid_parameter_value THEN NULL; END $$"
            )
            # The merges' cost estimates grow with the day's tables until they pass
            # jit_above_cost; then every batch would pay tens of ms compiling plans that run once.
            cur.execute("SET jit = off")
            for kind in KINDS.values():
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {kind.stage} ON COMMIT DELETE ROWS AS "
                    f"{kind.shape} WITH NO DATA"
                )
        pg.commit()

    def _connection(self) -> _Pooled:
        return _Pooled(self._engine)


class _Pooled:
    """A pooled connection as (pool handle, psycopg connection): rolled back if left open,
    thrown away if broken (a restarted server), always returned to the pool."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __enter__(self) -> tuple[PoolProxiedConnection, psycopg.Connection[Any]]:
        self._pooled = self._engine.raw_connection()
        pg = self._pooled.driver_connection
        if not isinstance(pg, psycopg.Connection):
            self._pooled.close()
            raise TypeError(f"BatchWriter needs a psycopg 3 engine, got {type(pg).__name__}")
        self._pg = pg
        return self._pooled, pg

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        try:
            if self._pg.broken:
                self._pooled.invalidate(exc)
            elif exc is not None:
                self._pg.rollback()
        finally:
            self._pooled.close()
