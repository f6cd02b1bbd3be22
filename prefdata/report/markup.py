"""HTML building blocks of the report page. Every text that comes from the data goes through
`esc()`; numbers through `num()` / `pct()` / `ci()`."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

# Texts longer than this are collapsed behind "show" (a short preview stays visible).
COLLAPSE_CHARS = 600
PREVIEW_CHARS = 300


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    """A number for a table: ints with separators, floats to `digits` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return esc(value)


def pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def ci(low: Any, high: Any) -> str:
    if low is None or high is None:
        return "–"
    # An en dash allows a line break after it even before a no-break space.
    return f'<span class="nw">{low:.3f} – {high:.3f}</span>'


def card(key: str, value: str, cls: str = "") -> str:
    return (
        f'<div class="card {cls}"><div class="v">{value}</div><div class="k">{esc(key)}</div></div>'
    )


def count_card(key: str, count: Any, value: str | None = None) -> str:
    """A card for a count of problems: "warn" when there is any, "ok" at zero. `value` is what
    it shows (default: the count)."""
    return card(key, num(count) if value is None else value, "warn" if count else "ok")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] | None = None
) -> str:
    """An HTML table (scrolling sideways inside its own box when it is wider than the page);
    cells are already-escaped HTML; `numeric` right-aligns columns."""
    numeric = list(numeric or [False] * len(headers))
    head = "".join(
        f'<th class="{"n" if n else ""}">{esc(h)}</th>'
        for h, n in zip(headers, numeric, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"n" if n else ""}">{c}</td>' for c, n in zip(r, numeric, strict=True)
        )
        + "</tr>"
        for r in rows
    )
    return (
        f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def plots_row(*svgs: str) -> str:
    return '<div class="plots">' + "".join(svgs) + "</div>"


def text_block(
    label: str, text: str | None, chars: int | None = None, warn: str | None = None
) -> str:
    """A labelled text (prompt, chosen, rejected) for a static section. Long text shows a
    preview and the rest behind "show"; with `warn` (a content warning) nothing shows until
    the reader asks for it."""
    text = text or ""
    total = chars if chars is not None else len(text)
    cut = total - len(text)
    more = f' <span class="note">(… {num(cut)} more characters)</span>' if cut > 0 else ""
    head = f'<div class="lbl">{esc(label)} · {num(total)} chars</div>'
    if warn:
        return (
            f'<div>{head}<details class="cw"><summary>show (content warning: {esc(warn)})'
            f'</summary><div class="text">{esc(text)}{more}</div></details></div>'
        )
    if len(text) > COLLAPSE_CHARS:
        return (
            f'<div>{head}<details class="long"><summary><span class="text preview">'
            f"{esc(text[:PREVIEW_CHARS])}…</span> show all</summary>"
            f'<div class="text">{esc(text)}{more}</div></details></div>'
        )
    return f'<div>{head}<div class="text">{esc(text)}{more}</div></div>'
