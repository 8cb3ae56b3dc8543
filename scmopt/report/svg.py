"""Minimal inline-SVG charts for the self-contained HTML report (no plotting dependency)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

W, H, PAD = 560, 260, 44
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def _frame(title: str, body: str, width: int = W, height: int = H) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f"{html.escape(title)}</text>{body}</svg>"
    )


def _axes(x0: float, x1: float, y0: float, y1: float, xlabel: str, ylabel: str) -> str:
    parts = [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="28" stroke="#333"/>',
        f'<text x="{(W + PAD) / 2}" y="{H - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="12" y="{H / 2}" text-anchor="middle" transform="rotate(-90 12 {H / 2})">'
        f"{html.escape(ylabel)}</text>",
    ]
    for i in range(5):
        fx, fy = x0 + (x1 - x0) * i / 4, y0 + (y1 - y0) * i / 4
        px = PAD + (W - 10 - PAD) * i / 4
        py = H - PAD - (H - PAD - 28) * i / 4
        parts.append(f'<text x="{px}" y="{H - PAD + 14}" text-anchor="middle">{fx:.3g}</text>')
        parts.append(f'<text x="{PAD - 4}" y="{py + 4}" text-anchor="end">{fy:.3g}</text>')
    return "".join(parts)


def _scale(v: float, lo: float, hi: float, a: float, b: float) -> float:
    return a if hi == lo else a + (v - lo) * (b - a) / (hi - lo)


def line_chart(
    title: str, xs: Sequence[float], series: dict[str, Sequence[float]], xlabel: str, ylabel: str
) -> str:
    """Lines with markers, one per named series, sharing the x values."""
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not xs or not vals:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no data</text>')
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(vals)), max(vals) * 1.05 or 1.0
    body = [_axes(x0, x1, y0, y1, xlabel, ylabel)]
    for i, (name, ys) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        pts = [
            (_scale(x, x0, x1, PAD, W - 10), _scale(y, y0, y1, H - PAD, 28))
            for x, y in zip(xs, ys, strict=True)
            if y is not None and math.isfinite(y)
        ]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        body.append(
            f'<text x="{W - 14}" y="{34 + 14 * i}" text-anchor="end" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    return _frame(title, "".join(body))


def stacked_bars(title: str, labels: Sequence[str], stacks: dict[str, Sequence[int]]) -> str:
    """Horizontal stacked bars (e.g. units kept/constant/folded/frozen per layer group)."""
    row = 16
    height = 60 + row * len(labels)
    totals = [sum(s[i] for s in stacks.values()) for i in range(len(labels))]
    top = max(totals, default=1) or 1
    left, right = 150, W - 20
    body = []
    for i, label in enumerate(labels):
        y = 30 + i * row
        body.append(
            f'<text x="{left - 6}" y="{y + 11}" text-anchor="end">{html.escape(label[:24])}</text>'
        )
        x = left
        for j, (_, vals) in enumerate(stacks.items()):
            w = (right - left) * vals[i] / top
            if w > 0:
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 3}" '
                    f'fill="{COLORS[j % len(COLORS)]}"/>'
                )
            x += w
    for j, name in enumerate(stacks):
        body.append(
            f'<rect x="{left + 110 * j}" y="{height - 18}" width="10" height="10" '
            f'fill="{COLORS[j % len(COLORS)]}"/><text x="{left + 14 + 110 * j}" '
            f'y="{height - 9}">{html.escape(name)}</text>'
        )
    return _frame(title, "".join(body), height=height)


def histogram(title: str, values: Sequence[float], xlabel: str, bins: int = 30) -> str:
    """Histogram of log10 values (scores span orders of magnitude)."""
    logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
    if not logs:
        return _frame(title, '<text x="50%" y="50%" text-anchor="middle">no data</text>')
    lo, hi = min(logs), max(logs) + 1e-9
    counts = [0] * bins
    for v in logs:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    top = max(counts)
    body = [_axes(lo, hi, 0, top, f"log10 {xlabel}", "units")]
    bw = (W - 10 - PAD) / bins
    for i, c in enumerate(counts):
        h = (H - PAD - 28) * c / top
        body.append(
            f'<rect x="{PAD + i * bw:.1f}" y="{H - PAD - h:.1f}" width="{bw - 1:.1f}" '
            f'height="{h:.1f}" fill="{COLORS[0]}"/>'
        )
    return _frame(title, "".join(body))


def layered_graph(
    title: str, layers: list[list[tuple[str, str, str, float]]], edges: list[tuple[str, str]]
) -> str:
    """Nodes in columns (topological layers): key, label, tooltip, fill level in [0, 1]."""
    cols = max(len(layers), 1)
    rows = max((len(layer) for layer in layers), default=1)
    width = max(W, 120 * cols + 40)
    height = max(160, 46 * rows + 60)
    pos = {}
    for ci, layer in enumerate(layers):
        for ri, (name, _, _, _) in enumerate(layer):
            x = 20 + ci * (width - 120) / max(cols - 1, 1)
            y = 40 + (ri + 0.5) * (height - 60) / len(layer)
            pos[name] = (x, y)
    body = []
    for a, b in edges:
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            body.append(
                f'<line x1="{x1 + 40}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#999" '
                f'stroke-width="1"/>'
            )
    for layer in layers:
        for name, label, tip, level in layer:
            x, y = pos[name]
            body.append(
                f"<g><title>{html.escape(tip)}</title>"
                f'<rect x="{x}" y="{y - 14}" width="80" height="28" rx="4" fill="#eee" '
                f'stroke="#555"/><rect x="{x}" y="{y - 14}" width="{80 * level:.1f}" '
                f'height="28" rx="4" fill="{COLORS[2]}" opacity="0.6"/>'
                f'<text x="{x + 40}" y="{y + 4}" text-anchor="middle">'
                f"{html.escape(label[:16])}</text></g>"
            )
    return _frame(title, "".join(body), width=int(width), height=int(height))
