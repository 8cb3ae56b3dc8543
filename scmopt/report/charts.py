"""The report's charts as inline SVG: search trajectory (lines), score histogram, units per
layer group (stacked bars). Every text is placed inside the view box from its estimated width
and every legend sits outside the plotted area (svg.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

from scmopt.report.svg import (
    COLORS,
    LegendItem,
    Plot,
    empty,
    esc,
    fit,
    fmt_power,
    frame,
    legend,
    nice_ticks,
    text,
    text_width,
    tick_width,
)

W = 560
PLOT_H = 190


def _range(
    lo: float, hi: float, n: int = 5, integer: bool = False
) -> tuple[float, float, list[float]]:
    """A padded range that starts and ends on round ticks, and the ticks."""
    if hi <= lo:
        lo, hi = (lo - 0.5, hi + 0.5) if lo != 0 else (0.0, 1.0)
    ticks = nice_ticks(lo, hi, n)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    if integer and step < 1:
        ticks, step = [float(v) for v in range(math.floor(lo), math.ceil(hi) + 1)], 1.0
    while ticks[0] > lo + 1e-12:
        ticks.insert(0, round(ticks[0] - step, 12))
    while ticks[-1] < hi - 1e-12:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks[0], ticks[-1], ticks


def line_chart(
    title: str,
    xs: Sequence[float],
    series: dict[str, Sequence[float | None]],
    xlabel: str,
    ylabel: str,
    chosen: int | None = None,
    chosen_label: str = "chosen plan",
) -> str:
    """Lines with markers, one per named series over the shared x values (None: not measured
    at that point; the line is dashed across such gaps). `chosen` is the index of the point to
    ring on every series (the plan the search returned), named in the legend by
    `chosen_label`. The legend sits below the x axis, outside the plotted area."""
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not xs or not vals:
        return empty(title, W, 120)
    y0, y1, yticks = _range(min(0.0, min(vals)), max(vals))
    pad = 0.04 * (max(xs) - min(xs)) or 1.0  # markers off the axes
    xlo, xhi = min(xs) - pad, max(xs) + pad
    xticks = [t for t in nice_ticks(min(xs), max(xs), 6) if xlo <= t <= xhi]
    left = 24 + tick_width(yticks) + 8
    right = W - 12 - max(0.0, tick_width(xticks[-1:]) / 2 - 8)
    plot = Plot(left, 40, right, 40 + PLOT_H, xlo, xhi, y0, y1)
    body = [plot.axes(xticks, yticks, xlabel, ylabel)]
    items = []
    for i, (name, ys) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        pts = [
            (k, plot.px(x), plot.py(y))
            for k, (x, y) in enumerate(zip(xs, ys, strict=True))
            if y is not None and math.isfinite(y)
        ]
        if not pts:
            continue
        # solid through consecutive rounds, dashed across rounds that did not measure it
        runs: list[list[tuple[float, float]]] = []
        bridges = []
        for j, (k, x, y) in enumerate(pts):
            if j and k == pts[j - 1][0] + 1:
                runs[-1].append((x, y))
            else:
                if j:
                    bridges.append((pts[j - 1][1:], (x, y)))
                runs.append([(x, y)])
        lines = [
            f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in run)}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
            for run in runs
            if len(run) > 1
        ] + [
            f'<polyline class="bridge" points="{a[0]:.1f},{a[1]:.1f} {b[0]:.1f},{b[1]:.1f}" '
            f'fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="4 3"/>'
            for a, b in bridges
        ]
        body.append(
            f'<g class="series" data-name="{esc(name)}">'
            + "".join(lines)
            + "".join(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for _, x, y in pts
            )
            + "</g>"
        )
        items.append(LegendItem(name, color))
    if any('class="bridge"' in b for b in body):
        items.append(LegendItem("not measured in between", "#777", "dash"))
    if chosen is not None:
        cx = plot.px(xs[chosen])
        body.append(
            f'<g class="chosen"><line x1="{cx:.1f}" y1="{plot.top}" x2="{cx:.1f}" '
            f'y2="{plot.bottom}" stroke="#555" stroke-dasharray="3 3"/>'
        )
        for ys in series.values():
            y = ys[chosen]
            if y is not None and math.isfinite(y):
                body.append(
                    f'<circle cx="{cx:.1f}" cy="{plot.py(y):.1f}" r="6" fill="none" '
                    f'stroke="#222" stroke-width="1.5"/>'
                )
        anchor = "end" if cx > (plot.left + plot.right) / 2 else "start"
        body.append(text(cx + (-4 if anchor == "end" else 4), plot.top - 6, "chosen", 10, anchor,
                         class_="tick") + "</g>")  # fmt: skip
        items.append(LegendItem(chosen_label, "#222", "ring"))
    leg, box = legend(items, plot.left, plot.bottom + 40, plot.right - plot.left)
    body.append(leg)
    return frame(title, "".join(body), W, box.y1 + 6)


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks in log10 space within [lo, hi]: whole decades over two decades or more, else
    1, 2, 5 (or every digit) times a power of ten."""
    if hi - lo >= 2:
        step = math.ceil((hi - lo) / 5)
        return [float(t) for t in range(math.ceil(lo), math.floor(hi) + 1) if t % step == 0]
    decades = range(math.floor(lo) - 1, math.ceil(hi) + 1)
    for digits in ((1,), (1, 2, 5), range(1, 10)):
        ticks = [math.log10(m) + e for e in decades for m in digits]
        ticks = [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]
        if len(ticks) >= 3:
            return ticks
    return ticks


def histogram(title: str, values: Sequence[float], xlabel: str, bins: int = 30) -> str:
    """Histogram of log10 values (scores span orders of magnitude); ticks are powers of ten."""
    logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
    if not logs:
        return empty(title, W, 120)
    lo, hi = min(logs), max(logs)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    xticks = log_ticks(lo, hi)
    plain = all(-2 <= math.floor(t + 1e-9) <= 2 for t in xticks)
    xfmt = partial(fmt_power, plain=plain)
    counts = [0] * bins
    for v in logs:
        counts[min(int((v - lo) / span * bins), bins - 1)] += 1
    _, top, yticks = _range(0, max(counts), 5, integer=True)
    left = 24 + tick_width(yticks) + 8
    right = W - 12 - max(0.0, tick_width(xticks[-1:], xfmt) / 2 - 8)
    plot = Plot(left, 40, right, 40 + PLOT_H, lo, hi, 0, top)
    dropped = len(values) - len(logs)
    label = f"{xlabel} (log scale)" + (f"; {dropped} at 0 not shown" if dropped else "")
    body = [plot.axes(xticks, yticks, label, "units", xfmt=xfmt)]
    bw = (plot.right - plot.left) / bins
    for i, c in enumerate(counts):
        if c:
            y = plot.py(c)
            a, b = 10 ** (lo + span * i / bins), 10 ** (lo + span * (i + 1) / bins)
            body.append(
                f'<rect x="{plot.left + i * bw:.1f}" y="{y:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                f'height="{plot.bottom - y:.1f}" fill="{COLORS[0]}"><title>{c} units with '
                f"{esc(xlabel)} in [{a:.3g}, {b:.3g})</title></rect>"
            )
    return frame(title, "".join(body), W, plot.bottom + 44)


def stacked_bars(
    title: str,
    labels: Sequence[str],
    stacks: dict[str, Sequence[int]],
    tips: Sequence[str] | None = None,
    width: float = 900,
    colors: Sequence[str] = COLORS,
) -> str:
    """Horizontal stacked bars (units kept/folded/constant/frozen per layer group), one row per
    label; labels longer than the label column are shortened around an ellipsis (the full
    text is the row's tooltip) and each bar ends with its total."""
    if not labels:
        return empty(title, width, 80, "no layer groups")
    row = 18
    totals = [sum(s[i] for s in stacks.values()) for i in range(len(labels))]
    top = max(totals, default=1) or 1
    label_w = min(max(text_width(s, 11) for s in labels), 0.4 * width)
    left = 10 + label_w + 6
    right = width - 10 - text_width(f"{top:,}", 10) - 6
    body = []
    for i, label in enumerate(labels):
        y = 30 + i * row
        tip = tips[i] if tips else label
        bar = [f"<title>{esc(tip)}</title>", text(left - 6, y + 12, fit(label, 11, label_w), 11,
                                                  "end", class_="label")]  # fmt: skip
        x = left
        for j, (_, vals) in enumerate(stacks.items()):
            w = (right - left) * vals[i] / top
            if w > 0:
                bar.append(
                    f'<rect x="{x:.1f}" y="{y + 1}" width="{w:.1f}" height="{row - 4}" '
                    f'fill="{colors[j % len(colors)]}"/>'
                )
            x += w
        bar.append(text(x + 4, y + 12, f"{totals[i]:,}", 10, class_="tick"))
        body.append('<g class="bar">' + "".join(bar) + "</g>")
    items = [LegendItem(name, colors[j % len(colors)], "box") for j, name in enumerate(stacks)]
    leg, box = legend(items, left, 30 + len(labels) * row + 8, right - left)
    body.append(leg)
    return frame(title, "".join(body), width, box.y1 + 6)
