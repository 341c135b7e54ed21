"""Tiny inline-SVG charts (line and bar), so the report needs no plotting library and no network.

Each function returns one ``<svg>`` element as a string, sized in CSS pixels, with a ``<title>``
tooltip on every data mark.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

#: colour-blind-safe series colours (Okabe-Ito)
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 56, 16, 28, 44


@dataclass
class Series:
    """One line of a :func:`line_chart`.

    Attributes:
        name: legend label.
        x, y: data (same length; non-finite ``y`` breaks the line).
        color: CSS colour; default = the palette entry of the series' position.
        dashed: draw dashed (e.g. a baseline).
        markers: draw a dot at each point.
    """

    name: str
    x: Sequence[float]
    y: Sequence[float]
    color: str | None = None
    dashed: bool = False
    markers: bool = True


@dataclass
class Mark:
    """A horizontal (``axis="y"``) or vertical (``axis="x"``) reference line with a label."""

    value: float
    label: str
    axis: str = "y"
    color: str = "#888"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


def _tick_fmt(ticks: Sequence[float]) -> Callable[[float], str]:
    """A formatter with just enough decimals to tell the ticks apart."""
    if len(ticks) < 2:
        return _fmt
    step = min(abs(b - a) for a, b in itertools.pairwise(ticks) if b != a) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if decimals == 0 and max(abs(t) for t in ticks) >= 1000:
        return lambda v: f"{v:,.0f}"
    return lambda v: f"{v:.{decimals}f}"


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    return f"{v:.3f}".rstrip("0").rstrip(".")


def _num(v: float) -> str:
    return f"{v:.1f}"


class _Frame:
    """Maps data to pixels inside the padded plot area (``below`` = extra room for a legend)."""

    def __init__(
        self,
        width: int,
        height: int,
        xlim: tuple[float, float],
        ylim: tuple[float, float],
        below: int = 0,
    ) -> None:
        self.w, self.h = width, height
        self.x0, self.x1 = xlim
        self.y0, self.y1 = ylim
        self.left, self.right = _PAD_LEFT, width - _PAD_RIGHT
        self.top, self.bottom = _PAD_TOP, height - _PAD_BOTTOM - below

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.right - self.left)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.bottom - (y - self.y0) / span * (self.bottom - self.top)


def _axes(
    f: _Frame, xticks: Sequence[float], yticks: Sequence[float], x_label: str, y_label: str
) -> list[str]:
    out = [
        f'<rect x="{f.left}" y="{f.top}" width="{f.right - f.left}" '
        f'height="{f.bottom - f.top}" fill="#fff" stroke="#ccc"/>'
    ]
    yf, xf = _tick_fmt(yticks), _tick_fmt(xticks)
    for t in yticks:
        y = _num(f.py(t))
        out.append(
            f'<line x1="{f.left}" x2="{f.right}" y1="{y}" y2="{y}" stroke="#eee"/>'
            f'<text x="{f.left - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">'
            f"{escape(yf(t))}</text>"
        )
    for t in xticks:
        x = _num(f.px(t))
        out.append(
            f'<line x1="{x}" x2="{x}" y1="{f.bottom}" y2="{f.bottom + 4}" stroke="#999"/>'
            f'<text x="{x}" y="{f.bottom + 16}" text-anchor="middle">{escape(xf(t))}</text>'
        )
    out.append(
        f'<text x="{(f.left + f.right) / 2:.0f}" y="{f.bottom + 36}" text-anchor="middle" '
        f'class="axis-label">{escape(x_label)}</text>'
        f'<text transform="translate(14 {(f.top + f.bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle" class="axis-label">{escape(y_label)}</text>'
    )
    return out


def _svg(width: int, height: int, body: list[str], title: str, css_class: str) -> str:
    return (
        f'<svg class="{css_class}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<text x="{_PAD_LEFT}" y="17" class="chart-title">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    marks: Sequence[Mark] = (),
    width: int = 520,
    height: int = 280,
    y_range: tuple[float, float] | None = None,
) -> str:
    """A line chart of one or more series with optional reference lines.

    Returns:
        ``<svg>`` markup; a chart with no finite point says so inside the frame.
    """
    xs = [float(v) for s in series for v in s.x]
    ys = [float(v) for s in series for v in s.y if math.isfinite(float(v))]
    ys += [m.value for m in marks if m.axis == "y"]
    xs += [m.value for m in marks if m.axis == "x"]
    if not xs or not ys:
        f = _Frame(width, height, (0, 1), (0, 1))
        body = _axes(f, [], [], x_label, y_label)
        body.append(
            f'<text x="{(f.left + f.right) / 2:.0f}" y="{(f.top + f.bottom) / 2:.0f}" '
            'text-anchor="middle">no data</text>'
        )
        return _svg(width, height, body, title, "chart")
    lo, hi = y_range if y_range is not None else (min(ys), max(ys))
    if y_range is None and hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    yticks = nice_ticks(lo, hi, 5)
    xticks = nice_ticks(min(xs), max(xs), 6)
    if all(float(v).is_integer() for v in xs):
        xticks = [t for t in xticks if float(t).is_integer()] or xticks
    # legend rows under the axis label: entries laid out left to right, wrapping
    entries, row_w, rows = [], 0.0, 1
    for s in series:
        w = 30 + 6.2 * len(s.name)
        if row_w and _PAD_LEFT + row_w + w > width - _PAD_RIGHT:
            rows, row_w = rows + 1, 0.0
        entries.append((rows - 1, row_w))
        row_w += w
    below = 16 * rows + 4
    height += below
    f = _Frame(width, height, (xticks[0], xticks[-1]), (yticks[0], yticks[-1]), below=below)
    body = _axes(f, xticks, yticks, x_label, y_label)
    for m in marks:
        if m.axis == "y":
            y = _num(f.py(m.value))
            body.append(
                f'<line x1="{f.left}" x2="{f.right}" y1="{y}" y2="{y}" stroke="{m.color}" '
                f'stroke-dasharray="2 3"><title>{escape(m.label)}</title></line>'
                f'<text x="{f.right - 4}" y="{float(y) - 4:.1f}" text-anchor="end" '
                f'class="mark-label" fill="{m.color}">{escape(m.label)}</text>'
            )
        else:
            x = f.px(m.value)
            # label on the side of the line with more room
            left = x - f.left > f.right - x
            anchor, tx = ("end", x - 4) if left else ("start", x + 4)
            body.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{f.top}" y2="{f.bottom}" '
                f'stroke="{m.color}" stroke-dasharray="2 3"><title>{escape(m.label)}</title>'
                f'</line><text x="{tx:.1f}" y="{f.top + 12}" text-anchor="{anchor}" '
                f'class="mark-label" fill="{m.color}">{escape(m.label)}</text>'
            )
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        runs: list[list[str]] = [[]]
        dots = []
        for xv, yv in zip(s.x, s.y, strict=True):
            if not math.isfinite(float(yv)):
                runs.append([])
                continue
            px, py = _num(f.px(float(xv))), _num(f.py(float(yv)))
            runs[-1].append(f"{px},{py}")
            if s.markers:
                dots.append(
                    f'<circle cx="{px}" cy="{py}" r="2.6" fill="{color}">'
                    f"<title>{escape(s.name)}: x={_fmt(float(xv))}, y={float(yv):.4g}</title>"
                    "</circle>"
                )
        for run in runs:
            if len(run) > 1:
                body.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" '
                    f'stroke-width="1.8"{dash}/>'
                )
        body.extend(dots)
        row, offset = entries[i]
        legend_x = _PAD_LEFT + offset
        ly = f.bottom + 52 + 16 * row
        body.append(
            f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{ly}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
            f'<text x="{legend_x + 23}" y="{ly}" dominant-baseline="middle" class="legend">'
            f"{escape(s.name)}</text>"
        )
    return _svg(width, height, body, title, "chart")


@dataclass
class Bars:
    """Data of a :func:`bar_chart`: one bar per label."""

    labels: Sequence[str]
    values: Sequence[float]
    colors: Sequence[str] = field(default_factory=tuple)


def bar_chart(
    bars: Bars,
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 520,
    height: int = 240,
) -> str:
    """A vertical bar chart (e.g. cluster sizes). Labels are thinned when there are many bars."""
    n = len(bars.values)
    top = max([float(v) for v in bars.values] + [1.0])
    yticks = nice_ticks(0.0, top, 5)
    f = _Frame(width, height, (0, max(n, 1)), (0.0, yticks[-1]))
    body = _axes(f, [], yticks, x_label, y_label)
    slot = (f.right - f.left) / max(n, 1)
    every = max(1, math.ceil(n / 24))
    for i, (label, v) in enumerate(zip(bars.labels, bars.values, strict=True)):
        color = bars.colors[i] if i < len(bars.colors) else PALETTE[0]
        x = f.left + i * slot + slot * 0.15
        y = f.py(float(v))
        body.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{f.bottom - y:.1f}" fill="{color}">'
            f"<title>{escape(str(label))}: {_fmt(float(v))}</title></rect>"
        )
        if i % every == 0:
            body.append(
                f'<text x="{x + slot * 0.35:.1f}" y="{f.bottom + 16}" text-anchor="middle">'
                f"{escape(str(label))}</text>"
            )
    return _svg(width, height, body, title, "chart")
