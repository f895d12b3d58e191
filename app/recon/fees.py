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
WITH per_pair AS MATERIALIZED (
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
  FROM per_pair AS p JOIN instrument AS i ON i.symbol = p.symbol
), stored AS (
  INSERT INTO net_fee_daily (business_date, scope, scope_key, source, gross_fee, refund,
                             net_fee, fills)
  SELECT :business_date,
         CASE WHEN grouping(account) = 0 THEN 'account' ELSE 'market' END,
         coalesce(account, symbol), 'exchange',
         trim_scale(sum(gross)), trim_scale(sum(refund)), trim_scale(sum(gross) - sum(refund)),
         sum(fills)
  FROM dollars
  GROUP BY GROUPING SETS ((account), (symbol))
  RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS stored,
       (SELECT coalesce(sum(p.fills), 0) FROM per_pair AS p
        WHERE NOT EXISTS (SELECT 1 FROM instrument AS i WHERE i.symbol = p.symbol)) AS unpriced
"""

_CHAIN = """
INSERT INTO net_fee_daily (business_date, scope, scope_key, source, gross_fee, refund, net_fee,
                           fills)
WITH refunds AS (
  SELECT fill_tx_hash, fill_log_index, sum(refund) AS refund
  FROM recon_refund_link WHERE fill_tx_hash IS NOT NULL
  GROUP BY fill_tx_hash, fill_log_index
), fills AS (
  SELECT o.user_address, o.condition_id, o.fee, coalesce(r.refund, 0) AS refund
  FROM order_filled AS o
  LEFT JOIN refunds AS r ON r.fill_tx_hash = o.tx_hash AND r.fill_log_index = o.log_index
  WHERE o.business_date = :business_date AND o.role = 'maker'
)
SELECT :business_date,
       CASE WHEN grouping(user_address) = 0 THEN 'wallet' ELSE 'market' END,
       coalesce(user_address, condition_id), 'chain',
       sum(fee), sum(refund), sum(fee) - sum(refund), count(*)
FROM fills
GROUP BY GROUPING SETS ((user_address), (condition_id))
RETURNING 1
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
    """Replace the date's `net_fee_daily` rows, in the caller's transaction."""
    params = {"business_date": business_date}
    conn.execute(text(REFUND_LINKS), params)
    conn.execute(text("DELETE FROM net_fee_daily WHERE business_date = :business_date"), params)
    exchange = conn.execute(text(_EXCHANGE), params).one()
    chain = len(conn.execute(text(_CHAIN), params).all())
    return FeeCounts(exchange.stored, chain, int(exchange.unpriced))
