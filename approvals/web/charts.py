"""Charts for the dashboard as plain geometry; templates draw them as inline SVG (no JavaScript).

Numbers are formatted here (no locale can turn 1.5 into "1,5" in an SVG
attribute); every label stays plain text and is escaped by the template.
"""

from __future__ import annotations

from dataclasses import dataclass

from approvals.selectors.dashboard import Day, RateRow


@dataclass(frozen=True)
class Rect:
    x: str
    y: str
    width: str
    height: str
    kind: str  # CSS class: approved, rejected, expired, track
    title: str


@dataclass(frozen=True)
class Label:
    x: str
    y: str
    text: str
    anchor: str = "start"
    title: str = ""


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    rects: list[Rect]
    labels: list[Label]
    lines: list[tuple[str, str, str, str]]  # x1, y1, x2, y2 (grid)
    summary: str


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _nice_max(value: int) -> int:
    if value <= 4:
        return 4
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        top = int(step * magnitude)
        if top >= value:
            return top
    return value


def daily_chart(days: list[Day], *, width: int = 1000, height: int = 240) -> Chart:
    """Stacked columns per day: approved, rejected, expired."""
    left, right, top, bottom = 36, 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((d.total for d in days), default=0))
    slot = plot_w / max(1, len(days))
    bar_w = max(2.0, min(28.0, slot * 0.7))
    rects, labels, lines = [], [], []
    for i in range(5):
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        lines.append((_n(left), _n(y), _n(width - right), _n(y)))
        labels.append(Label(_n(left - 6), _n(y + 4), _n(value), anchor="end"))
    every = 1 if len(days) <= 10 else 5
    for i, day in enumerate(days):
        x = left + slot * i + (slot - bar_w) / 2
        base = top + plot_h
        when = day.day.strftime("%a %d %b")
        for kind, count in (("approved", day.approved), ("rejected", day.rejected), ("expired", day.expired)):
            if not count:
                continue
            h = plot_h * count / peak
            base -= h
            rects.append(Rect(_n(x), _n(base), _n(bar_w), _n(h), kind, f"{when}: {count} {kind}"))
        if i % every == 0 or i == len(days) - 1:
            labels.append(Label(_n(x + bar_w / 2), _n(height - 8), day.day.strftime("%d %b"), anchor="middle"))
    total = sum(d.total for d in days)
    summary = (
        f"Outcomes per day over {len(days)} days: {sum(d.approved for d in days)} approved, "
        f"{sum(d.rejected for d in days)} rejected, {sum(d.expired for d in days)} expired ({total} in all)."
    )
    return Chart(width, height, rects, labels, lines, summary)


def rate_chart(rows: list[RateRow], *, width: int = 520, what: str = "") -> Chart:
    """One horizontal bar per row: the approved share, then the rejected share, and the rate."""
    label_w, value_w, row_h, bar_h = 150, 92, 30, 16
    bar_w = width - label_w - value_w
    height = max(row_h, row_h * len(rows)) + 4
    rects, labels = [], []
    for i, row in enumerate(rows):
        y = 2 + i * row_h
        bar_y = y + (row_h - bar_h) / 2
        name = row.label if len(row.label) <= 20 else row.label[:19] + "…"
        labels.append(Label("0", _n(bar_y + 12), name, title=row.label))
        rects.append(Rect(_n(label_w), _n(bar_y), _n(bar_w), _n(bar_h), "track", ""))
        if row.total:
            approved_w = bar_w * row.approved / row.total
            if row.approved:
                rects.append(
                    Rect(
                        _n(label_w),
                        _n(bar_y),
                        _n(approved_w),
                        _n(bar_h),
                        "approved",
                        f"{row.label}: {row.approved} approved",
                    )
                )
            if row.rejected:
                rects.append(
                    Rect(
                        _n(label_w + approved_w),
                        _n(bar_y),
                        _n(bar_w - approved_w),
                        _n(bar_h),
                        "rejected",
                        f"{row.label}: {row.rejected} rejected",
                    )
                )
        rate = f"{round(100 * row.rate)}%" if row.rate is not None else "n/a"
        labels.append(Label(_n(width - 2), _n(bar_y + 12), f"{rate} of {row.total}", anchor="end"))
    summary = f"Approval rate by {what}: " + "; ".join(
        f"{r.label} {round(100 * r.rate)}% of {r.total}" for r in rows if r.rate is not None
    )
    return Chart(width, height, rects, labels, [], summary if rows else f"No decisions by {what} yet.")
