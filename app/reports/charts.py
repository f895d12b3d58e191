"""Inline SVG charts for the nightly report, drawn from exact values (no float, no JS, no CDN).

Every bar carries `data-series`/`data-value` (what a test or a scraper reads back) and a
`<title>` (what a reader hovering it sees). All text is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from html import escape

PALETTE = ("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b")
NEGATIVE = "#dc2626"
POSITIVE = "#2563eb"
AXIS = "#94a3b8"
GRID = "#e2e8f0"
TEXT = "#334155"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif"

Number = int | Decimal
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: tuple[Number, ...]


def nice_step(value: Decimal, *, integral: bool) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 times 10^k at or above `value`, for round axis ticks;
    counts (`integral`) get whole-number steps only."""
    if value <= 0 or (integral and value <= 1):
        return Decimal(1)
    exponent = value.adjusted()
    steps = (1, 2, 5, 10) if integral and exponent == 0 else (1, 2, Decimal("2.5"), 5, 10)
    for step in steps:
        candidate = Decimal(step).scaleb(exponent)
        if candidate >= value:
            return candidate.normalize()
    raise AssertionError("10 times 10^adjusted always exceeds the value")


def fmt_number(value: Number) -> str:
    """Thousands separated; Decimals keep their digits (trailing zeros trimmed)."""
    if isinstance(value, int):
        return f"{value:,}"
    if value == value.to_integral_value():
        return f"{value.quantize(Decimal(1)):,}"
    return f"{value.normalize():,f}"


def display_round(value: Decimal) -> Decimal:
    """Fewer digits for a label (data-value and the CSV keep them all): cents from a dollar up,
    four decimals below (fees of single fills are fractions of a cent)."""
    step = CENT if abs(value) >= 1 else Decimal("0.0001")
    return value.quantize(step, rounding=ROUND_HALF_EVEN).normalize()


def _px(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))}"


def _svg_open(width: int, height: int, title: str) -> list[str]:
    label = escape(title)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{label}" class="chart" style="{FONT}">',
        f"<title>{label}</title>",
        f'<text x="0" y="16" font-size="14" font-weight="600" fill="{TEXT}">{label}</text>',
    ]


def column_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    width: int = 860,
    height: int = 260,
) -> str:
    """Grouped vertical bars: one group per category (e.g. hour), one bar per series."""
    if any(len(s.values) != len(categories) for s in series):
        raise ValueError("every series needs one value per category")
    if any(v < 0 for s in series for v in s.values):
        raise ValueError("column charts show counts: no negative values")
    left, right, top, bottom = 48, 8, 44, 28
    plot_w, plot_h = Decimal(width - left - right), Decimal(height - top - bottom)
    peak = max((Decimal(v) for s in series for v in s.values), default=Decimal(0))
    integral = all(isinstance(v, int) for s in series for v in s.values)
    axis_max = nice_step(peak / 4, integral=integral) * 4
    out = _svg_open(width, height, title)
    for i, s in enumerate(series):
        key_x = left + i * 150
        out.append(
            f'<rect x="{key_x}" y="26" width="10" height="10" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{key_x + 14}" y="35" font-size="11" fill="{TEXT}">{escape(s.name)}</text>'
        )
    for k in range(5):
        tick = axis_max * k / 4
        y = top + plot_h - plot_h * k / 4
        out.append(
            f'<line x1="{left}" x2="{width - right}" y1="{_px(y)}" y2="{_px(y)}" '
            f'stroke="{GRID if k else AXIS}"/>'
            f'<text x="{left - 6}" y="{_px(y + 4)}" font-size="10" text-anchor="end" '
            f'fill="{TEXT}">{fmt_number(tick)}</text>'
        )
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * Decimal("0.8") / max(len(series), 1)
    for c, category in enumerate(categories):
        gx = left + group_w * c + group_w * Decimal("0.1")
        for i, s in enumerate(series):
            value = Decimal(s.values[c])
            h = plot_h * value / axis_max
            x = gx + bar_w * i
            out.append(
                f'<rect class="bar" x="{_px(x)}" y="{_px(top + plot_h - h)}" '
                f'width="{_px(bar_w)}" height="{_px(h)}" fill="{PALETTE[i % len(PALETTE)]}" '
                f'data-series="{escape(s.name)}" data-category="{escape(category)}" '
                f'data-value="{s.values[c]}"><title>{escape(s.name)} {escape(category)}: '
                f"{fmt_number(s.values[c])}</title></rect>"
            )
        if len(categories) <= 12 or c % 2 == 0:
            out.append(
                f'<text x="{_px(gx + group_w * Decimal("0.4"))}" y="{height - bottom + 14}" '
                f'font-size="10" text-anchor="middle" fill="{TEXT}">{escape(category)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    title: str,
    items: Sequence[tuple[str, Decimal]],
    *,
    width: int = 420,
    unit: str = "$",
) -> str:
    """Horizontal bars around a zero line: negative values (rebates) extend left, in red."""
    row_h, top, label_w, value_w = 22, 30, 150, 70
    height = top + row_h * max(len(items), 1) + 10
    out = _svg_open(width, height, title)
    if not items:
        out.append(
            f'<text x="0" y="{top + 14}" font-size="12" fill="{TEXT}">No data for this day.</text>'
        )
        out.append("</svg>")
        return "".join(out)
    plot_x = Decimal(label_w)
    plot_w = Decimal(width - label_w - value_w)
    low = min((v for _, v in items), default=Decimal(0)).min(Decimal(0))
    high = max((v for _, v in items), default=Decimal(0)).max(Decimal(0))
    span = (high - low) or Decimal(1)
    zero_x = plot_x + plot_w * (-low) / span
    for r, (label, value) in enumerate(items):
        y = top + row_h * r
        x0 = zero_x + plot_w * min(value, Decimal(0)) / span
        w = plot_w * abs(value) / span
        shown = label if len(label) <= 24 else label[:23] + "…"
        amount = f"{unit}{fmt_number(display_round(value))}"
        out.append(
            f'<text x="{label_w - 6}" y="{y + 15}" font-size="11" text-anchor="end" '
            f'fill="{TEXT}"><title>{escape(label)}</title>{escape(shown)}</text>'
            f'<rect class="bar" x="{_px(x0)}" y="{y + 4}" width="{_px(w)}" height="{row_h - 8}" '
            f'fill="{NEGATIVE if value < 0 else POSITIVE}" data-series="{escape(title)}" '
            f'data-category="{escape(label)}" data-value="{value}">'
            f"<title>{escape(label)}: {escape(amount)}</title></rect>"
            f'<text x="{width - value_w + 6}" y="{y + 15}" font-size="11" fill="{TEXT}">'
            f"{escape(amount)}</text>"
        )
    out.append(
        f'<line x1="{_px(zero_x)}" x2="{_px(zero_x)}" y1="{top}" y2="{height - 10}" '
        f'stroke="{AXIS}"/>'
    )
    out.append("</svg>")
    return "".join(out)
