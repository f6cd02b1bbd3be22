"""Inline SVG plots for the QA report: histogram, scatter, heatmap, bar chart, interval plot.

Every plot is one `<svg class="plot">` string with a `<title>`, an x axis and a y axis
(`<g class="axis x">` / `<g class="axis y">`: a line, ticks and tick labels, an axis label)
and its marks (`class="mark"`). Written by hand so the report needs no plotting library, no
script and no network: the file opens offline, prints, and renders the same everywhere.
All text (labels, names that come from the data) is XML-escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

# Colours chosen to stay distinct in greyscale print and for common colour blindness.
PALETTE = ("#3b6fb6", "#d9822b", "#2a9d8f", "#b5446e", "#6c757d", "#8a6d3b")
_FONT = 'font-family="system-ui, sans-serif"'


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _label_margin(labels: Sequence[object]) -> int:
    """The left margin (px) that fits the longest shortened category label."""
    longest = max([len(_short(x)) for x in labels] + [4])
    return min(14 + 6 * longest, 200)


def _short(text: object, limit: int = 30) -> str:
    """A tick label that fits the margin; the full text stays in the mark's tooltip."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: float) -> str:
    """Short tick text: 1200 -> 1.2k, 0.25 -> 0.25."""
    if value == 0:
        return "0"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:g}M"
    if a >= 1e4:
        return f"{value / 1e3:g}k"
    if a >= 1:
        return f"{value:g}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    # From the last step at or below lo to the first at or above hi: the axis covers the data.
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


@dataclass(frozen=True)
class Scale:
    """Maps data values in [lo, hi] to pixels in [start, end] (log10 when `log`)."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False

    def _t(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def __call__(self, value: float) -> float:
        lo, hi = self._t(self.lo), self._t(self.hi)
        span = hi - lo or 1.0
        return self.start + (self._t(value) - lo) / span * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        if not self.log:
            return nice_ticks(self.lo, self.hi, count)
        first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
        return [10.0**k for k in range(first, last + 1) if self.lo <= 10.0**k <= self.hi]


TITLE_X = 8
TITLE_LINE = 15
# Width of one character of the 12 px bold title, a little above the widest common
# sans-serif fonts' average, so a wrapped line never runs past the edge.
TITLE_CHAR = 7.4


def wrap_title(title: str, width: float) -> list[str]:
    """`title` in lines of at most `width` pixels (estimated), broken between words."""
    limit = max(8, int(width / TITLE_CHAR))
    lines: list[str] = []
    line = ""
    for word in title.split():
        while len(word) > limit:  # a word longer than a line: cut it
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:limit])
            word = word[limit:]
        candidate = f"{line} {word}".strip()
        if len(candidate) <= limit:
            line = candidate
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines


def _tick_marks(
    scale: Scale, ticks: Sequence[float] | None, tick_labels: Sequence[str] | None
) -> tuple[list[float], list[str]]:
    """An axis's tick values (the scale's own unless given) and their texts (formatted
    values unless given)."""
    values = list(ticks) if ticks is not None else scale.ticks()
    texts = list(tick_labels) if tick_labels is not None else [_fmt(v) for v in values]
    return values, texts


class Canvas:
    """An SVG being built: a plot area inside margins, with axes drawn from scales."""

    def __init__(
        self,
        title: str,
        width: int = 420,
        height: int = 260,
        *,
        left: int = 56,
        right: int = 16,
        top: int = 30,
        bottom: int = 46,
    ) -> None:
        self.title = title
        # A title too long for one line wraps; the plot area keeps its size and moves down,
        # so no title is ever cut at the SVG's edge.
        self.title_lines = wrap_title(title, width - 2 * TITLE_X)
        extra = TITLE_LINE * (len(self.title_lines) - 1)
        height += extra
        top += extra
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top  # y grows downwards in SVG
        self.parts: list[str] = []

    def add(self, svg: str) -> None:
        self.parts.append(svg)

    def x_axis(
        self,
        scale: Scale,
        label: str,
        *,
        ticks: Sequence[float] | None = None,
        tick_labels: Sequence[str] | None = None,
    ) -> None:
        values, texts = _tick_marks(scale, ticks, tick_labels)
        out = [
            '<g class="axis x">',
            f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x1}" y2="{self.y0}" stroke="#333"/>',
        ]
        for v, t in zip(values, texts, strict=True):
            x = scale(v)
            out.append(
                f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{self.y0 + 4}" stroke="#333"/>'
                f'<text class="tick" x="{x:.1f}" y="{self.y0 + 16}" text-anchor="middle" '
                f'font-size="10" {_FONT}>{_e(t)}</text>'
            )
        out.append(
            f'<text class="label" x="{(self.x0 + self.x1) / 2:.1f}" y="{self.height - 8}" '
            f'text-anchor="middle" font-size="11" {_FONT}>{_e(label)}</text></g>'
        )
        self.add("".join(out))

    def label_axis(self, names: Sequence[str], centers: Sequence[float]) -> None:
        """A y axis of category names (bar chart, interval plot): one tick label per row,
        centred at `centers`, no numeric scale."""
        ticks = "".join(
            f'<text class="tick" x="{self.x0 - 6}" y="{y + 3:.1f}" text-anchor="end" '
            f'font-size="10" {_FONT}>{_e(_short(name))}</text>'
            for name, y in zip(names, centers, strict=True)
        )
        self.add(
            f'<g class="axis y"><line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" '
            f'y2="{self.y1}" stroke="#333"/>{ticks}</g>'
        )

    def y_axis(
        self,
        scale: Scale,
        label: str,
        *,
        ticks: Sequence[float] | None = None,
        tick_labels: Sequence[str] | None = None,
        grid: bool = True,
    ) -> None:
        values, texts = _tick_marks(scale, ticks, tick_labels)
        out = [
            '<g class="axis y">',
            f'<line x1="{self.x0}" y1="{self.y0}" x2="{self.x0}" y2="{self.y1}" stroke="#333"/>',
        ]
        for v, t in zip(values, texts, strict=True):
            y = scale(v)
            if grid:
                out.append(
                    f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" y2="{y:.1f}" '
                    'stroke="#e5e5e5"/>'
                )
            out.append(
                f'<line x1="{self.x0 - 4}" y1="{y:.1f}" x2="{self.x0}" y2="{y:.1f}" stroke="#333"/>'
                f'<text class="tick" x="{self.x0 - 6}" y="{y + 3:.1f}" text-anchor="end" '
                f'font-size="10" {_FONT}>{_e(t)}</text>'
            )
        mid = (self.y0 + self.y1) / 2
        out.append(
            f'<text class="label" x="12" y="{mid:.1f}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 12 {mid:.1f})" {_FONT}>{_e(label)}</text></g>'
        )
        self.add("".join(out))

    def render(self) -> str:
        lines = "".join(
            f'<tspan x="{TITLE_X}" dy="{0 if i == 0 else TITLE_LINE}">{_e(line)}</tspan>'
            for i, line in enumerate(self.title_lines)
        )
        return (
            f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{_e(self.title)}" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}"><title>{_e(self.title)}</title>'
            f'<text class="plot-title" x="{TITLE_X}" y="16" font-size="12" font-weight="600" '
            f"{_FONT}>{lines}</text>" + "".join(self.parts) + "</svg>"
        )


def histogram(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    x_label: str,
    y_label: str = "count",
    marker: float | None = None,
    marker_label: str = "",
    overflow: bool = False,
    color: str = PALETTE[0],
) -> str:
    """Vertical bars over bins [edges[i], edges[i+1]); `overflow`: the last bin is open-ended
    (its tick says "≥"); `marker`: a dashed vertical line (e.g. the max length)."""
    c = Canvas(title)
    lo, hi = float(edges[0]), float(edges[-1])
    xs = Scale(lo, hi if hi > lo else lo + 1, c.x0, c.x1)
    top = max([*counts, 1])
    ys = Scale(0, nice_ticks(0, top)[-1] if top else 1, c.y0, c.y1)
    c.y_axis(ys, y_label)
    bars = []
    for i, n in enumerate(counts):
        x_a, x_b = xs(edges[i]), xs(edges[i + 1])
        h = c.y0 - ys(n)
        tip = f"{_fmt(edges[i])}–{_fmt(edges[i + 1])}: {n}"
        if overflow and i == len(counts) - 1:
            tip = f"≥ {_fmt(edges[i])}: {n}"
        bars.append(
            f'<rect class="mark" x="{x_a + 0.5:.1f}" y="{ys(n):.1f}" '
            f'width="{max(x_b - x_a - 1, 0.5):.1f}" height="{max(h, 0):.1f}" fill="{color}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    c.add("".join(bars))
    ticks = xs.ticks()
    labels = [_fmt(t) for t in ticks]
    if overflow and ticks and ticks[-1] >= edges[-2]:
        labels[-1] = "≥" + _fmt(edges[-2])
    c.x_axis(xs, x_label, ticks=ticks, tick_labels=labels)
    if marker is not None and lo <= marker <= hi:
        x = xs(marker)
        c.add(
            f'<g class="marker"><line x1="{x:.1f}" y1="{c.y0}" x2="{x:.1f}" y2="{c.y1}" '
            f'stroke="#c0392b" stroke-dasharray="4 3"/><text x="{x - 3:.1f}" y="{c.y1 + 10}" '
            f'text-anchor="end" font-size="10" fill="#c0392b" {_FONT}>{_e(marker_label)}</text></g>'
        )
    return c.render()


def scatter(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    log: bool = True,
    diagonal: bool = True,
) -> str:
    """Points (x, y); log10 axes by default (values below 1 are drawn at 1); a dashed y = x."""
    c = Canvas(title, width=360, height=320, bottom=46)
    floor = 1.0 if log else 0.0
    xs_ = [max(float(x), floor) for x, _ in points] or [1.0]
    ys_ = [max(float(y), floor) for _, y in points] or [1.0]
    top = max(max(xs_), max(ys_), 10.0)
    if log:
        lo, hi = 1.0, 10.0 ** math.ceil(math.log10(top))
    else:
        lo, hi = 0.0, nice_ticks(0, top)[-1]
    sx = Scale(lo, hi, c.x0, c.x1, log=log)
    sy = Scale(lo, hi, c.y0, c.y1, log=log)
    c.y_axis(sy, y_label)
    c.x_axis(sx, x_label)
    if diagonal:
        c.add(
            f'<line class="reference" x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" '
            f'y2="{sy(hi):.1f}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    dots = (
        [
            f'<circle class="mark" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="1.8" '
            f'fill="{PALETTE[0]}" fill-opacity="0.45"/>'
            for x, y in zip(xs_, ys_, strict=True)
        ]
        if points
        else []
    )
    c.add("".join(dots))
    return c.render()


def _diverging(value: float, vmin: float, vmax: float) -> str:
    """Blue for high, orange for low, white in the middle."""
    mid = (vmin + vmax) / 2
    t = max(-1.0, min(1.0, (value - mid) / ((vmax - vmin) / 2 or 1)))
    if t >= 0:
        r, g, b = (int(255 + (c2 - 255) * t) for c2 in (59, 111, 182))
    else:
        r, g, b = (int(255 + (c2 - 255) * -t) for c2 in (217, 130, 43))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    labels: Sequence[str],
    matrix: Sequence[Sequence[float | None]],
    *,
    title: str,
    x_label: str = "annotator",
    y_label: str = "annotator",
    vmin: float = -1.0,
    vmax: float = 1.0,
) -> str:
    """A square matrix of values (None = no value, drawn grey) with each cell's value printed."""
    n = max(len(labels), 1)
    longest = max([len(_short(x)) for x in labels] + [4])
    left = min(26 + 6 * longest, 180)
    cell = max(min(320 // n, 56), 14)
    width = left + cell * n + 20
    bottom = 30 + min(6 * longest, 120)
    c = Canvas(title, width=width, height=34 + cell * n + bottom, left=left, top=30, bottom=bottom)
    marks = []
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            x, y = c.x0 + j * cell, c.y1 + i * cell
            fill = "#dddddd" if value is None else _diverging(value, vmin, vmax)
            text = "–" if value is None else f"{value:.2f}"
            tip = f"{labels[i]} × {labels[j]}: {text}"
            marks.append(
                f'<rect class="mark" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                f'stroke="#fff"><title>{_e(tip)}</title></rect>'
            )
            if cell >= 28:
                marks.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 3:.1f}" text-anchor="middle" '
                    f'font-size="10" {_FONT}>{_e(text)}</text>'
                )
    c.add("".join(marks))
    y_ticks = [
        f'<text class="tick" x="{c.x0 - 4}" y="{c.y1 + (i + 0.5) * cell + 3:.1f}" '
        f'text-anchor="end" font-size="10" {_FONT}>{_e(_short(name))}</text>'
        for i, name in enumerate(labels)
    ]
    grid_bottom = c.y1 + cell * len(labels)
    mid = (c.y1 + grid_bottom) / 2
    x_ticks = [
        f'<text class="tick" x="{c.x0 + (j + 0.5) * cell:.1f}" y="{grid_bottom + 10}" '
        f'text-anchor="end" font-size="10" transform="rotate(-40 {c.x0 + (j + 0.5) * cell:.1f} '
        f'{grid_bottom + 10})" {_FONT}>{_e(_short(name))}</text>'
        for j, name in enumerate(labels)
    ]
    c.add(
        f'<g class="axis y"><line x1="{c.x0}" y1="{c.y1}" x2="{c.x0}" y2="{grid_bottom}" '
        f'stroke="#333"/>{"".join(y_ticks)}<text class="label" x="12" y="{mid:.1f}" '
        f'text-anchor="middle" font-size="11" transform="rotate(-90 12 {mid:.1f})" {_FONT}>'
        f"{_e(y_label)}</text></g>"
        f'<g class="axis x"><line x1="{c.x0}" y1="{grid_bottom}" '
        f'x2="{c.x0 + cell * len(labels)}" y2="{grid_bottom}" stroke="#333"/>{"".join(x_ticks)}'
        f'<text class="label" x="{c.x0 + cell * len(labels) / 2:.1f}" y="{c.height - 6}" '
        f'text-anchor="middle" font-size="10" {_FONT}>{_e(x_label)}</text></g>'
    )
    return c.render()


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    x_label: str,
    color: str = PALETTE[0],
    value_format: str = "{:g}",
) -> str:
    """Horizontal bars, one per label, with the value printed after each bar."""
    n = max(len(labels), 1)
    left = _label_margin(labels)
    bar = 18
    c = Canvas(title, width=max(440, left + 260), height=40 + 46 + bar * n, left=left, right=56)
    top = max([*values, 0]) or 1
    xs = Scale(0, nice_ticks(0, top)[-1], c.x0, c.x1)
    band = (c.y0 - c.y1) / n
    marks: list[str] = []
    centers: list[float] = []
    for i, (name, value) in enumerate(zip(labels, values, strict=True)):
        y = c.y1 + i * band
        w = xs(value) - c.x0
        marks.append(
            f'<rect class="mark" x="{c.x0}" y="{y + 2:.1f}" width="{max(w, 0.5):.1f}" '
            f'height="{band - 4:.1f}" fill="{color}"><title>{_e(name)}: '
            f"{_e(value_format.format(value))}</title></rect>"
            f'<text x="{c.x0 + w + 4:.1f}" y="{y + band / 2 + 3:.1f}" font-size="10" {_FONT}>'
            f"{_e(value_format.format(value))}</text>"
        )
        centers.append(y + band / 2)
    c.add("".join(marks))
    c.x_axis(xs, x_label)
    c.label_axis(labels, centers)
    return c.render()


def count_bars(counts: Mapping[str, float], *, title: str, x_label: str, color: str) -> str:
    """`bar_chart` of a {label: count} mapping, one bar per key in the mapping's order."""
    return bar_chart(list(counts), list(counts.values()), title=title, x_label=x_label, color=color)


def intervals(
    labels: Sequence[str],
    values: Sequence[float | None],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    *,
    title: str,
    x_label: str,
    domain: tuple[float, float] = (0.0, 1.0),
    reference: float | None = None,
) -> str:
    """One row per label: a dot at the value and a line over its interval (forest plot);
    `reference`: a dashed vertical line (e.g. 0.5 for "no preference")."""
    n = max(len(labels), 1)
    left = _label_margin(labels)
    c = Canvas(title, width=max(440, left + 260), height=40 + 46 + 22 * n, left=left)
    lo = min([domain[0], *(v for v in lows if v is not None)])
    xs = Scale(lo, domain[1], c.x0, c.x1)
    band = (c.y0 - c.y1) / n
    marks: list[str] = []
    centers: list[float] = []
    if reference is not None:
        marks.append(
            f'<line class="reference" x1="{xs(reference):.1f}" y1="{c.y1}" '
            f'x2="{xs(reference):.1f}" y2="{c.y0}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    for i, name in enumerate(labels):
        y = c.y1 + (i + 0.5) * band
        centers.append(y)
        value, low, high = values[i], lows[i], highs[i]
        if low is not None and high is not None:
            marks.append(
                f'<line class="mark" x1="{xs(low):.1f}" y1="{y:.1f}" x2="{xs(high):.1f}" '
                f'y2="{y:.1f}" stroke="{PALETTE[0]}" stroke-width="2"/>'
            )
        if value is not None:
            tip = f"{name}: {value:.3f}" + (
                f" ({low:.3f}–{high:.3f})" if low is not None and high is not None else ""
            )
            marks.append(
                f'<circle class="mark" cx="{xs(value):.1f}" cy="{y:.1f}" r="4" '
                f'fill="{PALETTE[1]}"><title>{_e(tip)}</title></circle>'
            )
    c.add("".join(marks))
    c.x_axis(xs, x_label)
    c.label_axis(labels, centers)
    return c.render()
