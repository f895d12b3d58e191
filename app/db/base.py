"""The one declarative base: naming convention, reusable column types and our own status values.

Venue enum values (`SIDE_BUY`, `TRADE_STATE_BUSTED`, ...) are stored as plain text and are not
enumerated here: the venue owns them and may add values we must still store. The StrEnums below
are values *we* define; each one backs a CHECK constraint built by `one_of()`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonObject = dict[str, Any]


class Base(DeclarativeBase):
    # Exact money by default: every int is bigint, every Decimal NUMERIC, every time timestamptz.
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 -- SQLAlchemy reads this class attribute as declared
        str: Text,
        int: BigInteger,
        Decimal: Numeric,
        datetime: DateTime(timezone=True),
        date: Date,
        bytes: LargeBinary,
        JsonObject: JSONB,
    }


# Plain `Mapped[int]` is bigint (venue raw units, counts); these are the narrower exceptions.
Int32 = Annotated[int, mapped_column(Integer)]
Int16 = Annotated[int, mapped_column(SmallInteger)]
DefaultNow = Annotated[datetime, mapped_column(server_default=func.now())]
JsonEmpty = Annotated[JsonObject, mapped_column(server_default=text("'{}'::jsonb"))]
BigSerial = Annotated[int, mapped_column(primary_key=True, autoincrement=True)]


class BreakStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ExecutionSource(StrEnum):
    """Where an `execution` row came from: the live stream or a Report API gap fill."""

    DROPCOPY = "dropcopy"
    REPORT_BACKFILL = "report_backfill"


class FillRole(StrEnum):
    """An on-chain `order_filled` row is per maker, or the taker's aggregate of the same shares."""

    MAKER = "maker"
    TAKER = "taker"


class FeeScope(StrEnum):
    ACCOUNT = "account"
    WALLET = "wallet"
    MARKET = "market"


class FeeSource(StrEnum):
    EXCHANGE = "exchange"
    CHAIN = "chain"


E = TypeVar("E", bound=StrEnum)


class TextEnum(TypeDecorator[E]):
    """A StrEnum stored as plain `text` (readable, no Postgres enum type to migrate)."""

    impl = Text
    cache_ok = True

    def __init__(self, enum_type: type[E]) -> None:
        super().__init__()
        self.enum_type = enum_type

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_type(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_type(value)


def one_of(column: str, values: type[StrEnum], *, nullable: bool = False) -> CheckConstraint:
    """CHECK that `column` holds one of the enum's values; named `ck_<table>_<column>`."""
    allowed = ", ".join(f"'{member.value}'" for member in values)
    condition = f"{column} IN ({allowed})"
    if nullable:
        condition = f"{column} IS NULL OR {condition}"
    return CheckConstraint(condition, name=column)
