"""Daily net fees per account, wallet and market, replaced in `net_fee_daily` on every run.

- Exchange: commission dollars = commission_notional_collected / (price_scale *
  fractional_qty_scale) of the instrument; what we paid is `gross_fee`, rebates (negative
  commissions) are `refund`. Fills of busted trades are reversed, so they do not count.
- Chain: maker rows only (the taker aggregate repeats the makers' shares, so volume and fills
  are counted once). V1 `fee` is gross and its fee_refund is the `refund`; V2 `fee` is already
  net, with no refunds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, text

from app.recon.rules import BUSTED_TRADE, FILL_TYPES, REFUND_LINKS

# Exact division: a NUMERIC with 12 decimals divided by a power of ten up to 10^12 loses nothing,
# where plain numeric division keeps only about 16 significant digits. Fills whose instrument
# was never received cannot be priced in dollars: they are counted, not guessed.
_EXCHANGE = f"""
WITH per_pair AS (
  SELECT e.account, e.symbol,
         sum(greatest(e.commission_notional_collected, 0)) AS charged,
         sum(greatest(-e.commission_notional_collected, 0)) AS rebated,
         count(*) AS fills
  FROM execution AS e
  WHERE e.business_date = :business_date AND e.exec_type IN {FILL_TYPES}
    AND NOT {BUSTED_TRADE}
  GROUP BY e.account, e.symbol
), dollars AS (
  SELECT p.account, p.symbol, p.fills,
         CAST(p.charged AS numeric(40, 12)) / (i.price_scale * i.fractional_qty_scale) AS gross,
         CAST(p.rebated AS numeric(40, 12)) / (i.price_scale * i.fractional_qty_scale) AS refund
  FROM per_pair AS p LEFT JOIN instrument AS i ON i.symbol = p.symbol
)
SELECT CASE WHEN grouping(account) = 0 THEN 'account' ELSE 'market' END AS scope,
       coalesce(account, symbol) AS scope_key,
       trim_scale(sum(gross)) AS gross_fee, trim_scale(sum(refund)) AS refund,
       coalesce(sum(fills) FILTER (WHERE gross IS NOT NULL), 0) AS fills,
       coalesce(sum(fills) FILTER (WHERE gross IS NULL), 0) AS unpriced
FROM dollars
GROUP BY GROUPING SETS ((account), (symbol))
"""

# Fees from the fills (a parallel scan of the day), refunds from their links (a temp table,
# which no parallel worker may read): summed apart, then joined by scope.
_CHAIN = """
WITH fees AS (
  SELECT CASE WHEN grouping(user_address) = 0 THEN 'wallet' ELSE 'market' END AS scope,
         coalesce(user_address, condition_id) AS scope_key, sum(fee) AS gross_fee,
         count(*) AS fills
  FROM order_filled
  WHERE business_date = :business_date AND role = 'maker'
  GROUP BY GROUPING SETS ((user_address), (condition_id))
), refunds AS (
  SELECT CASE WHEN grouping(fill_user_address) = 0 THEN 'wallet' ELSE 'market' END AS scope,
         coalesce(fill_user_address, fill_condition_id) AS scope_key, sum(refund) AS refund
  FROM recon_refund_link
  WHERE fill_tx_hash IS NOT NULL
  GROUP BY GROUPING SETS ((fill_user_address), (fill_condition_id))
)
SELECT f.scope, f.scope_key, f.gross_fee, coalesce(r.refund, 0) AS refund, f.fills,
       0 AS unpriced
FROM fees AS f
LEFT JOIN refunds AS r ON r.scope = f.scope AND r.scope_key = f.scope_key
"""

_STORE = """
INSERT INTO net_fee_daily (business_date, scope, scope_key, source, gross_fee, refund, net_fee,
                           fills)
VALUES (:business_date, :scope, :scope_key, :source, :gross_fee, :refund, :net_fee, :fills)
"""


@dataclass(frozen=True, slots=True)
class FeeCounts:
    exchange_rows: int
    chain_rows: int
    unpriced_exchange_fills: int

    def as_dict(self) -> dict[str, int]:
        return {
            "exchange_rows": self.exchange_rows,
            "chain_rows": self.chain_rows,
            "unpriced_exchange_fills": self.unpriced_exchange_fills,
        }


def store_net_fees(conn: Connection, business_date: date) -> FeeCounts:
    """Replace the date's `net_fee_daily` rows, in the caller's transaction.

    The sums run as plain SELECTs (Postgres plans no INSERT ... SELECT in parallel) and the
    day's few thousand totals are written from here, as exact Decimals.
    """
    params = {"business_date": business_date}
    conn.execute(text(REFUND_LINKS), params)
    conn.execute(text("DELETE FROM net_fee_daily WHERE business_date = :business_date"), params)
    stored: dict[str, int] = {}
    unpriced = 0
    for source, query in (("exchange", _EXCHANGE), ("chain", _CHAIN)):
        totals = conn.execute(text(query), params).all()
        # Each fill is in one account row and one market row: count the unpriced once.
        unpriced += sum(int(row.unpriced) for row in totals if row.scope == "market")
        rows = [
            {
                "business_date": business_date,
                "scope": row.scope,
                "scope_key": row.scope_key,
                "source": source,
                "gross_fee": row.gross_fee,
                "refund": row.refund,
                "net_fee": row.gross_fee - row.refund,
                "fills": row.fills,
            }
            for row in totals
            if row.gross_fee is not None
        ]
        if rows:
            conn.execute(text(_STORE), rows)
        stored[source] = len(rows)
    return FeeCounts(stored["exchange"], stored["chain"], unpriced)
