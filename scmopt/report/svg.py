"""SVG primitives for the self-contained HTML report (no plotting dependency): text metrics,
boxes, frames, ticks, axes and legends. Charts are in charts.py, the abstraction graph in
abstraction.py.

Text is laid out from estimated widths: Arial advance widths (Liberation Sans and Helvetica
have the same metrics) times `SLACK`, so that the wider fallback a browser may pick for
`sans-serif` (DejaVu Sans) still fits. Everything that places text goes through `text_box`,
and the tests check the layout with the same function.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

FONT = "Arial, 'Liberation Sans', Helvetica, sans-serif"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
SLACK = 1.1

# advance widths in 1/1000 em
_NARROW = {c: 278 for c in " !,./:;I[\\]fijlt|"} | {c: 333 for c in "()-r`{}"} | {"'": 191}
_WIDE = {c: 833 for c in "mM%"} | {"W": 944, "w": 722, "@": 1015, "—": 1000, "…": 1000}
_WIDTHS = (
    {c: 556 for c in "0123456789abdeghnopqu_$#?+=<>~^*"}
    | {c: 500 for c in "cksvxyzJ"}
    | {c: 667 for c in "ABEKPSVXY&"}
    | {c: 722 for c in "CDHNRUw"}
    | {c: 778 for c in "GOQ"}
    | {c: 611 for c in "FTZ"}
    | {"L": 556, '"': 355, "·": 278, "→": 1000, "≤": 549, "≥": 549, "×": 584, "−": 584}
    | {c: 420 for c in "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"}
    | _NARROW
    | _WIDE
)
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def text_width(s: str, size: float) -> float:
    """Estimated rendered width of `s` at font size `size` (px)."""
    return SLACK * size * sum(_WIDTHS.get(c, 600) for c in s) / 1000


def fit(s: str, size: float, width: float) -> str:
    """`s`, or its start and end around an ellipsis, within `width` px."""
    if text_width(s, size) <= width:
        return s
    head, tail = s[: len(s) // 2], s[len(s) // 2 :]
    while head or tail:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        if text_width(head + "…" + tail, size) <= width:
            return head + "…" + tail
    return ""


@dataclass(frozen=True)
class Box:
    """An axis-aligned rectangle, x to the right and y down."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )

    def inside(self, other: Box) -> bool:
        return (
            self.x0 >= other.x0
            and self.x1 <= other.x1
            and self.y0 >= other.y0
            and self.y1 <= other.y1
        )

    def union(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def hits_segment(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """True when the segment a-b passes through the box (Liang-Barsky clipping)."""
        (ax, ay), (bx, by) = a, b
        t0, t1 = 0.0, 1.0
        for p, q in (
            (ax - bx, ax - self.x0),
            (bx - ax, self.x1 - ax),
            (ay - by, ay - self.y0),
            (by - ay, self.y1 - ay),
        ):
            if p == 0:
                if q < 0:
                    return False
            elif p < 0:
                t0 = max(t0, q / p)
            else:
                t1 = min(t1, q / p)
        return t0 <= t1


def text_box(x: float, y: float, s: str, size: float, anchor: str = "start") -> Box:
    """Box of a text element at (x, y) (y is the baseline) with the given text-anchor."""
    w = text_width(s, size)
    left = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
    return Box(left, y - 0.8 * size, left + w, y + 0.25 * size)


def esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def text(
    x: float, y: float, s: str, size: float = 11, anchor: str = "start", **attrs: object
) -> str:
    """A <text>; keyword attributes are written as given (class_ -> class, data_x -> data-x)."""
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" text-anchor="{anchor}"{extra}>'
        f"{esc(s)}</text>"
    )


def frame(title: str, body: str, width: float, height: float, kind: str = "chart") -> str:
    """The <svg> element: a title on top, `body` inside, a view box of width x height."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{kind}" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="{FONT}">'
        + text(width / 2, 17, title, 13, "middle", font_weight="bold", class_="title")
        + body
        + "</svg>"
    )


def empty(title: str, width: float, height: float, message: str = "no data") -> str:
    return frame(
        title, text(width / 2, height / 2, message, 12, "middle", fill="#666"), width, height
    )


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round values covering [lo, hi] (steps of 1, 2, 2.5 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def fmt_tick(v: float) -> str:
    return f"{v:.4g}" if v != 0 else "0"


def fmt_power(v: float, plain: bool = False) -> str:
    """A log10 tick as the value: -3 -> 10⁻³, log10(2e-3) -> 2×10⁻³; `plain`: 0.002."""
    if plain:
        return f"{10**v:.3g}"
    e = math.floor(v + 1e-9)
    m = 10 ** (v - e)
    exp = "10" + str(e).translate(_SUPERSCRIPT)
    return exp if abs(m - 1) < 1e-6 else f"{m:.2g}×{exp}"


@dataclass
class Plot:
    """The data rectangle of a chart and its linear scales."""

    left: float
    top: float
    right: float
    bottom: float
    x0: float
    x1: float
    y0: float
    y1: float

    def px(self, x: float) -> float:
        span = self.x1 - self.x0
        return (
            (self.left + self.right) / 2
            if span == 0
            else self.left + (x - self.x0) * (self.right - self.left) / span
        )

    def py(self, y: float) -> float:
        span = self.y1 - self.y0
        return (
            (self.top + self.bottom) / 2
            if span == 0
            else self.bottom - (y - self.y0) * (self.bottom - self.top) / span
        )

    @property
    def box(self) -> Box:
        return Box(self.left, self.top, self.right, self.bottom)

    def axes(
        self,
        xticks: Sequence[float],
        yticks: Sequence[float],
        xlabel: str,
        ylabel: str,
        xfmt=fmt_tick,
        yfmt=fmt_tick,
    ) -> str:
        """Axis lines, light grid lines, tick labels (class "tick") and axis labels."""
        parts = [
            _line(self.left, self.bottom, self.right, self.bottom),
            _line(self.left, self.bottom, self.left, self.top),
        ]
        for t in xticks:
            x = self.px(t)
            parts.append(_line(x, self.bottom, x, self.bottom + 4))
            parts.append(text(x, self.bottom + 15, xfmt(t), 10, "middle", class_="tick"))
        for t in yticks:
            y = self.py(t)
            parts.append(_line(self.left, y, self.right, y, "#eee"))
            parts.append(_line(self.left - 4, y, self.left, y))
            parts.append(text(self.left - 6, y + 3.5, yfmt(t), 10, "end", class_="tick"))
        parts.append(
            text(
                (self.left + self.right) / 2, self.bottom + 31, xlabel, 11, "middle", class_="label"
            )
        )
        ymid = (self.top + self.bottom) / 2
        parts.append(
            text(
                13,
                ymid,
                ylabel,
                11,
                "middle",
                class_="label",
                transform=f"rotate(-90 13 {ymid:.1f})",
            )
        )
        return "".join(parts)


def _line(x1: float, y1: float, x2: float, y2: float, color: str = "#333", extra: str = "") -> str:
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}"{extra}/>'
    )


def tick_width(ticks: Sequence[float], fmt=fmt_tick, size: float = 10) -> float:
    return max((text_width(fmt(t), size) for t in ticks), default=0.0)


@dataclass
class LegendItem:
    name: str
    color: str
    mark: str = "line"  # line (with a dot), plain (line only), box, ring, dash
    dash: str = "5 3"  # the dash pattern of a "dash" mark


def legend(
    items: Sequence[LegendItem], x: float, y: float, width: float, size: float = 11
) -> tuple[str, Box]:
    """Swatches and names in rows from (x, y) (top-left), wrapping at `width`; the <g
    class="legend"> and its box."""
    parts, cx, cy, row = [], x, y, size + 6
    right = x
    for it in items:
        w = 22 + text_width(it.name, size) + 14
        if cx > x and cx + w > x + width:
            cx, cy = x, cy + row
        mid = cy + row / 2 - 1
        c = it.color
        if it.mark == "box":
            parts.append(
                f'<rect x="{cx + 4:.1f}" y="{mid - 5:.1f}" width="10" height="10" fill="{c}"/>'
            )
        elif it.mark == "ring":
            parts.append(
                f'<circle cx="{cx + 9:.1f}" cy="{mid:.1f}" r="5" fill="none" stroke="{c}" '
                'stroke-width="2"/>'
            )
        else:
            dash = f' stroke-dasharray="{it.dash}"' if it.mark == "dash" else ""
            parts.append(_line(cx, mid, cx + 18, mid, c, f' stroke-width="2"{dash}'))
            if it.mark == "line":
                parts.append(f'<circle cx="{cx + 9:.1f}" cy="{mid:.1f}" r="2.5" fill="{c}"/>')
        parts.append(text(cx + 22, mid + size * 0.35, it.name, size))
        right = max(right, cx + w - 14)
        cx += w
    box = Box(x, y, right, cy + row)
    return '<g class="legend">' + "".join(parts) + "</g>", box
