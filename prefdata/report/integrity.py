"""The report's token-integrity section, from the token issues of `prefdata audit --max-length N`
(prefdata.quality.token_integrity): pairs by reason, and the worst examples shown token by
token, re-rendered with the report's tokenizer: where the cut falls and the first token where
the sides differ.

`token_integrity_section` computes the section's data (None when the issues hold no token
rows); `integrity_html` renders it.
"""

from __future__ import annotations

from html import escape
from typing import Any

import polars as pl

from prefdata.quality.token_integrity import FLAGS, chat_messages
from prefdata.report.tokens import Tokenizer

__all__ = ["integrity_html", "token_integrity_section"]

# Worst first: kept by the trainer but teaching nothing, then seen without what tells the
# sides apart, then lost to training altogether.
_SEVERITY = {
    "identical_after_truncation": 0,
    "template_collapse": 0,
    "difference_truncated": 1,
    "empty_after_truncation": 2,
    "prompt_fills_context": 3,
    "dropped_over_length": 4,
}
_AROUND = 6  # tokens shown on each side of the cut and before the first difference


def token_integrity_section(
    pairs: pl.DataFrame, issues: pl.DataFrame, tokenizer: Tokenizer, *, worst: int = 5
) -> dict[str, Any] | None:
    """The section's data: the budget the audit used (`method`, `max_length`, `truncation`),
    `pairs`, `degenerate` (pairs with any token flag) and its share, `counts` (pairs per
    reason), and up to `worst` `examples` (pair_id, flags, token counts, each side's kept
    window and cut, the first difference, and the tokens around both, decoded one by one).
    None when `issues` has no token rows (the audit ran without --max-length)."""
    if not {"cut", "truncation", "method"} <= set(issues.columns):
        return None
    rows = issues.filter(pl.col("issue").is_in(FLAGS) & pl.col("is_issue").fill_null(False))
    rows = rows.filter(pl.col("item_id").is_in(pairs["pair_id"].implode()))
    if not rows.height:
        return None
    first = rows.row(0, named=True)
    budget = {
        "method": first["method"],
        "max_length": first["cut"],
        "truncation": first["truncation"],
    }
    by_pair = rows.group_by("item_id", maintain_order=True).agg(
        pl.col("issue"),
        pl.col("issue").replace_strict(_SEVERITY, return_dtype=pl.Int64).min().alias("severity"),
        (pl.col("position").fill_null(0) - pl.col("cut").fill_null(0)).max().alias("overflow"),
    )
    ranked = by_pair.sort(["severity", "overflow"], descending=[False, True]).head(worst)
    texts = {
        p["pair_id"]: p
        for p in pairs.filter(pl.col("pair_id").is_in(ranked["item_id"].implode())).iter_rows(
            named=True
        )
    }
    counts = rows.group_by("issue").agg(pl.col("item_id").n_unique())
    return {
        **budget,
        "tokenizer": tokenizer.name,
        "pairs": pairs.height,
        "degenerate": by_pair.height,
        "degenerate_share": by_pair.height / pairs.height,
        "counts": {f: n for f in FLAGS for issue, n in counts.iter_rows() if issue == f},
        "examples": [
            _example(texts[r["item_id"]], r["issue"], tokenizer.tokenizer, budget)
            for r in ranked.iter_rows(named=True)
        ],
    }


def _window(length: int, cut: int | None, truncation: str) -> tuple[int, int, int | None]:
    """(start, end, where the cut falls) of what the trainer keeps of a sequence."""
    if cut is None or truncation in ("none", "drop") or length <= cut:
        return 0, length, None
    if truncation == "keep_end":
        return length - cut, length, length - cut
    return 0, cut, cut


def _example(
    pair: dict[str, Any], flags: list[str], tok: Any, budget: dict[str, Any]
) -> dict[str, Any]:
    prompt = chat_messages(pair["prompt"])
    ids = {}
    for side in ("chosen", "rejected"):
        conversation = [*prompt, {"role": "assistant", "content": pair[side] or ""}]
        ids[side] = [
            int(i)
            for i in tok.apply_chat_template(conversation, tokenize=True, return_dict=True)[
                "input_ids"
            ]
        ]
    c, r = ids["chosen"], ids["rejected"]
    d = next((i for i, (a, b) in enumerate(zip(c, r, strict=False)) if a != b), None)
    if d is None and len(c) != len(r):
        d = min(len(c), len(r))

    def pieces(seq: list[int]) -> list[str]:
        return [tok.decode([i]) for i in seq]

    sides = {}
    for side, seq in ids.items():
        start, end, cut = _window(len(seq), budget["max_length"], budget["truncation"])
        at = cut if cut is not None else end
        sides[side] = {
            "tokens": len(seq),
            "window": [start, end],
            "cut": cut,
            "before_cut": pieces(seq[max(0, at - _AROUND) : at]),
            "after_cut": pieces(seq[at : at + _AROUND]),
            "before_diff": [] if d is None else pieces(seq[max(0, d - _AROUND) : d]),
            "at_diff": None if d is None or d >= len(seq) else tok.decode([seq[d]]),
        }
    return {
        "pair_id": pair["pair_id"],
        "flags": [f for f in FLAGS if f in flags],
        "first_diff": d,
        "sides": sides,
    }


# ---- HTML ----------------------------------------------------------------------------------


def _tokens(pieces: list[str]) -> str:
    return " ".join(f"<code>{escape(p)}</code>" for p in pieces)


def integrity_html(section: dict[str, Any]) -> str:
    """The section as an HTML fragment (the page's own card and table styles)."""
    e = escape
    share = section["degenerate_share"]
    parts = [
        f"<p>As TRL's {e(section['method'])} trainer sees the pairs at max_length "
        f"{section['max_length']} (truncation {e(section['truncation'])}), from the audit's "
        f"token issues; examples rendered with {e(str(section['tokenizer']))}.</p>",
        '<div class="cards">'
        f'<div class="card {"warn" if section["degenerate"] else "ok"}"><div class="v">'
        f'{section["degenerate"]} ({share:.1%})</div><div class="k">degenerate pairs</div></div>'
        "</div>",
    ]
    body = "".join(
        f'<tr><td>{e(k)}</td><td class="n">{v}</td></tr>' for k, v in section["counts"].items()
    )
    parts.append(
        '<table><thead><tr><th>reason</th><th class="n">pairs</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )
    rows = []
    for ex in section["examples"]:
        cells = []
        for side in ("chosen", "rejected"):
            s = ex["sides"][side]
            kept = s["window"][1] - s["window"][0]
            where = f"cut at {s['cut']}" if s["cut"] is not None else "not cut; its end"
            diff = (
                f"<br>first difference at {ex['first_diff']}: {_tokens(s['before_diff'])} "
                f"<mark>{e(s['at_diff'] or '(end)')}</mark>"
                if ex["first_diff"] is not None
                else "<br>no difference in tokens"
            )
            cells.append(
                f"{kept} of {s['tokens']} tokens kept; {where}: {_tokens(s['before_cut'])} ✂ "
                f"{_tokens(s['after_cut'])}{diff}"
            )
        rows.append(
            f"<tr><td><code>{e(ex['pair_id'])}</code><br>{e(', '.join(ex['flags']))}</td>"
            f"<td>{cells[0]}</td><td>{cells[1]}</td></tr>"
        )
    if rows:
        parts.append(
            "<h3>Worst examples</h3><table><thead><tr><th>pair</th><th>chosen</th>"
            f"<th>rejected</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts)
