"""`recon query …`: compliance queries. Thin: parse options, run one query, print it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer

from app.db.base import FeeScope, FeeSource
from app.query.output import OutputFormat, emit
from app.query.queries import (
    DEFAULT_LIMIT,
    FeeFilter,
    ResultSet,
    Side,
    TradeFilter,
    fees,
    order_trail,
    trades,
    wallet_activity,
)

query = typer.Typer(
    help="Compliance queries: order trail, trades, fees, wallet.", no_args_is_help=True
)

CsvFlag = Annotated[bool, typer.Option("--csv", help="Print CSV.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (exact decimals as strings).")]
Limit = Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")]
Start = Annotated[str | None, typer.Option(help="From this time (ISO; UTC if no zone).")]
End = Annotated[str | None, typer.Option(help="Before this time (ISO; UTC if no zone).")]
BusinessDate = Annotated[str | None, typer.Option("--date", help="Business date YYYY-MM-DD.")]


def _format(csv: bool, json: bool) -> OutputFormat:
    if csv and json:
        raise typer.BadParameter("choose one of --csv and --json")
    return OutputFormat.CSV if csv else OutputFormat.JSON if json else OutputFormat.TABLE


def _instant(value: str | None, name: str) -> datetime | None:
    """ISO date or date-time; without a zone it is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{name}: not an ISO date or date-time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{name}: not a date (YYYY-MM-DD): {value!r}") from None


def _hex(value: str | None) -> str | None:
    """Ingest stores chain addresses and hashes lower-case; accept them as users paste them."""
    if value is None:
        return None
    value = value.strip()
    return value.lower() if value[:2].lower() == "0x" else value


def _print(title: str, fmt: OutputFormat, result: ResultSet) -> None:
    emit(result, fmt, title)


@query.command("order-trail")
def order_trail_cmd(
    order_id: Annotated[str, typer.Argument(help="The venue's order id.")],
    *,
    csv: CsvFlag = False,
    json: JsonFlag = False,
) -> None:
    """Every execution, trade, trade state change and break of an order, in time order."""
    from app.db.session import get_engine

    fmt = _format(csv, json)
    with get_engine().connect() as conn:
        result = order_trail(conn, order_id)
    _print(f"order {order_id}", fmt, result)


@query.command("trades")
def trades_cmd(
    *,
    account: Annotated[str | None, typer.Option(help="Exchange account.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Exchange instrument symbol.")] = None,
    market: Annotated[str | None, typer.Option(help="Chain market condition id (0x…).")] = None,
    wallet: Annotated[str | None, typer.Option(help="Chain wallet, as maker or taker.")] = None,
    side: Annotated[Side | None, typer.Option(case_sensitive=False, help="BUY or SELL.")] = None,
    start: Start = None,
    end: End = None,
    business_date: BusinessDate = None,
    min_notional: Annotated[str | None, typer.Option(help="Minimum notional, dollars.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    csv: CsvFlag = False,
    json: JsonFlag = False,
) -> None:
    """Exchange fills and on-chain maker fills, newest first, filtered."""
    from app.db.session import get_engine

    fmt = _format(csv, json)
    try:
        notional = None if min_notional is None else Decimal(min_notional)
    except InvalidOperation:
        raise typer.BadParameter(f"--min-notional: not a number: {min_notional!r}") from None
    trade_filter = TradeFilter(
        account=account,
        symbol=symbol,
        market=_hex(market),
        wallet=_hex(wallet),
        side=side,
        start=_instant(start, "--start"),
        end=_instant(end, "--end"),
        business_date=_date(business_date, "--date"),
        min_notional=notional,
        limit=limit,
    )
    try:
        with get_engine().connect() as conn:
            result = trades(conn, trade_filter)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _print("trades", fmt, result)


@query.command("fees")
def fees_cmd(
    *,
    scope: Annotated[FeeScope | None, typer.Option(help="account, wallet or market.")] = None,
    key: Annotated[str | None, typer.Option(help="The account, wallet or market.")] = None,
    source: Annotated[FeeSource | None, typer.Option(help="exchange or chain.")] = None,
    start: Annotated[str | None, typer.Option(help="First business date YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last business date YYYY-MM-DD.")] = None,
    business_date: BusinessDate = None,
    total: Annotated[bool, typer.Option("--total", help="Sum over the dates.")] = False,
    limit: Limit = DEFAULT_LIMIT,
    csv: CsvFlag = False,
    json: JsonFlag = False,
) -> None:
    """Net fees by account, wallet or market and day (from net_fee_daily)."""
    from app.db.session import get_engine

    fmt = _format(csv, json)
    day = _date(business_date, "--date")
    fee_filter = FeeFilter(
        scope=scope,
        key=_hex(key),
        source=source,
        start_date=day or _date(start, "--start"),
        end_date=day or _date(end, "--end"),
        total=total,
        limit=limit,
    )
    with get_engine().connect() as conn:
        result = fees(conn, fee_filter)
    _print("net fees", fmt, result)


@query.command("wallet")
def wallet_cmd(
    address: Annotated[str, typer.Argument(help="Wallet address (0x…).")],
    *,
    start: Start = None,
    end: End = None,
    limit: Limit = DEFAULT_LIMIT,
    csv: CsvFlag = False,
    json: JsonFlag = False,
) -> None:
    """A wallet's on-chain activity: fills as maker and as taker, fee refunds."""
    from app.db.session import get_engine

    fmt = _format(csv, json)
    wallet = _hex(address) or ""
    with get_engine().connect() as conn:
        result = wallet_activity(
            conn,
            wallet,
            start=_instant(start, "--start"),
            end=_instant(end, "--end"),
            limit=limit,
        )
    _print(f"wallet {wallet}", fmt, result)
