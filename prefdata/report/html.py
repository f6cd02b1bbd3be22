"""report.html: one self-contained page (inline CSS and SVG, no script, no external resource).

Every text that comes from the data (prompts, responses, reasons, annotator and source
names, file names) goes through `esc()`; the page also carries a Content-Security-Policy
that allows no script and no network at all, so a response holding `<script>` or an
`<img onerror>` is shown as text and could not run even if it slipped through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from prefdata.report import plots
from prefdata.report.integrity import integrity_html

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --fg:#1d1d1f; --muted:#5f6368; --line:#d9d9de; --bg:#fff; --soft:#f5f6f8;
        --warn:#a14600; --ok:#1e7b34; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1180px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 0 0 8px; padding-top: 8px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 14px 0 6px; }
p.meta, .note { color: var(--muted); font-size: 12px; }
nav { margin: 10px 0 18px; font-size: 13px; }
nav a { margin-right: 12px; color: #2557a7; text-decoration: none; }
section { margin: 22px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { background: var(--soft); border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.card .v { font-size: 18px; font-weight: 600; }
.card .k { font-size: 11px; color: var(--muted); }
.card.warn .v { color: var(--warn); } .card.ok .v { color: var(--ok); }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px 3px 0; text-align: left;
         vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
svg.plot { background: #fff; border: 1px solid var(--line); border-radius: 4px; }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.sides > div { min-width: 0; overflow-x: auto; }
.pair { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; margin: 10px 0;
        break-inside: avoid; }
.pair .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--soft);
        border-radius: 4px; padding: 6px 8px; font-size: 12.5px; max-height: 320px;
        overflow-y: auto; margin: 2px 0; }
.lbl { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
ul.reasons { margin: 4px 0 0 18px; padding: 0; font-size: 12.5px; }
.absent { color: var(--muted); font-style: italic; }
.nw { white-space: nowrap; }
@media print {
  nav { display: none; }
  body { max-width: none; padding: 0; }
  section { break-inside: auto; }
  .text { max-height: none; overflow: visible; }
  .sides { grid-template-columns: 1fr; }
  .sides > div { overflow: visible; }
}
"""

SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Overview"),
    ("lengths", "Lengths"),
    ("token_integrity", "Token integrity"),
    ("length_bias", "Length bias"),
    ("judges", "Judges"),
    ("agreement", "Agreement"),
    ("confidence", "Confidence"),
    ("audit", "Audit"),
    ("filtering", "Filtering"),
    ("duplicates", "Duplicates and train/test overlap"),
)


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


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool] | None = None
) -> str:
    """An HTML table; cells are already-escaped HTML; `numeric` right-aligns columns."""
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
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plots_row(*svgs: str) -> str:
    return '<div class="plots">' + "".join(svgs) + "</div>"


# ------------------------------------------------------------------------------- sections


def overview(f: dict[str, Any], fig: dict[str, Any]) -> str:
    o = f
    problems = sum((o.get("problems") or {}).values())
    parts = [
        '<div class="cards">',
        card("rows", num(o["rows"])),
        card("contract", esc(o.get("contract"))),
        card("distinct prompts", num(o.get("distinct_prompts"))),
        card("sources", num(len(o.get("sources") or {}))),
        card("rows with contract problems", num(problems), "warn" if problems else "ok"),
    ]
    if "chosen_longer_share" in o:
        parts.append(card("chosen longer (chars)", pct(o["chosen_longer_share"])))
    parts.append("</div>")
    if o["rows"] == 0:
        parts.append('<p class="absent">The data set is empty: no other section applies.</p>')
    if o.get("sources"):
        names = list(o["sources"])
        parts.append(
            plots.bar_chart(
                names,
                [o["sources"][n] for n in names],
                title="rows per source",
                x_label="rows",
                color=plots.PALETTE[2],
            )
        )
    if o.get("problems"):
        parts.append("<h3>Contract problems</h3>")
        parts.append(
            table(
                ["problem", "rows"],
                [[esc(k), num(v)] for k, v in o["problems"].items()],
                [False, True],
            )
        )
    conf = o.get("confidence")
    if conf and conf.get("known"):
        parts.append(
            f"<p>Confidence known for {num(conf['known'])} rows: mean {num(conf['mean'])}, "
            f"range {num(conf['min'])} – {num(conf['max'])}.</p>"
        )
    balance = o.get("balance")
    if balance:
        ok = balance["within_trl_advice"]
        parts.append('<h3>KTO balance</h3><div class="cards">')
        parts.append(card("desirable", num(balance["desirable"])))
        parts.append(card("undesirable", num(balance["undesirable"])))
        parts.append(
            card("desirable : undesirable", num(balance["desirable_ratio"]), "ok" if ok else "warn")
        )
        parts.append("</div>")
        parts.append(
            f"<p>{'Within' if ok else 'Outside'} TRL's advice: {esc(balance['trl_advice'])}. "
            "Outside it, set KTOConfig's desirable_weight / undesirable_weight so that "
            "weighted counts fall in range.</p>"
        )
    anns = o.get("annotations")
    if anns:
        parts.append("<h3>Annotations</h3>")
        parts.append(
            f"<p>{num(anns.get('rows'))} votes on this data set from "
            f"{num(anns.get('annotators'))} annotators over {num(anns.get('items'))} items "
            f"({num(anns['usable_votes'])} usable: with a label and no error); "
            f"{num(anns['votes_not_in_data'])} of {num(anns['votes_total'])} votes are on "
            "items not in this data set and are left out.</p>"
        )
        labels = anns.get("labels") or {}
        if labels:
            names = list(labels)
            # describe() counts votes without a label (unparsed judge replies) under "None".
            shown = ["(no label)" if n == "None" else n for n in names]
            parts.append(
                plots.bar_chart(
                    shown,
                    [labels[n] for n in names],
                    title="label balance (all votes)",
                    x_label="votes",
                    color=plots.PALETTE[1],
                )
            )
    issues = o.get("issues")
    if issues:
        parts.append(
            f"<p>Issues table: {num(issues['rows'])} rows, {num(issues['rows_not_in_data'])} "
            "on items not in this data set (left out).</p>"
        )
    return "".join(parts)


def lengths(f: dict[str, Any], fig: dict[str, Any]) -> str:
    unit = f["unit"]
    fields = f["fields"]
    names = list(fields)
    stats = ["count", "mean", "min", "p50", "p90", "p95", "p99", "max"]
    rows = [[esc(n)] + [num(fields[n].get(s)) for s in stats] for n in names]
    parts = []
    if unit == "tokens":
        parts.append(
            f"<p>Tokens with {esc(f['tokenizer'])}, counted as TRL's DPO/KTO trainer "
            "renders each example through the chat template; `sequence` is the "
            "longer of the row's full training sequences.</p>"
        )
    else:
        parts.append("<p>Characters (no tokenizer given, so no truncation figures).</p>")
    measured = f.get("measured") or {}
    if measured.get("sampled"):
        parts.append(
            f"<p>Tokens counted on a random sample of {num(measured['rows_measured'])} of "
            f"{num(measured['rows'])} rows (seed {num(measured['seed'])}): the figures below "
            "are estimates.</p>"
        )
    parts.append(table(["field", *stats], rows, [False] + [True] * len(stats)))
    trunc = f.get("truncation")
    if trunc:
        share = trunc["rows_over_share"]
        parts.append('<div class="cards">')
        parts.append(
            card(
                f"rows over max_length {trunc['max_length']}",
                f"{num(trunc['rows_over'])} ({pct(share)})",
                "warn" if trunc["rows_over"] else "ok",
            )
        )
        if trunc.get("rows_over_share_interval"):
            lo, hi = trunc["rows_over_share_interval"]
            parts.append(card("share over, 95% interval", f"{pct(lo)} – {pct(hi)}"))
        for key in ("chosen_over", "rejected_over", "completion_over"):
            if key in trunc:
                parts.append(card(key.replace("_", " "), num(trunc[key])))
        parts.append(
            card(
                "prompt alone fills max_length (TRL drops these)",
                num(trunc["prompt_fills_max_length"]),
                "warn" if trunc["prompt_fills_max_length"] else "ok",
            )
        )
        parts.append("</div>")
    hist = f["histogram"]
    svgs = []
    for n in names:
        marker = trunc["max_length"] if trunc and n == "sequence" else None
        svgs.append(
            plots.histogram(
                hist["edges"],
                hist["counts"][n],
                title=f"{n} length",
                x_label=unit,
                overflow=hist["open_last_bin"],
                marker=marker,
                marker_label=f"max_length {marker}" if marker else "",
                color=plots.PALETTE[names.index(n) % len(plots.PALETTE)],
            )
        )
    parts.append(plots_row(*svgs))
    parts.append(
        f'<p class="note">Shared bins of {esc(hist["edges"][1])} {esc(unit)}; the '
        "last bin holds everything beyond the largest 99th percentile.</p>"
    )
    return "".join(parts)


def length_bias(f: dict[str, Any], fig: dict[str, Any]) -> str:
    o = f["overall"]
    parts = [
        '<div class="cards">',
        card("P(chosen longer)", num(o["p_chosen_longer"])),
        card("95% interval", ci(o["low"], o["high"])),
        card("pairs with equal length", num(o["equal_length"])),
        card("mean ln(len chosen / len rejected)", num(o["mean_log_length_ratio"])),
        "</div>",
        "<p>Over pairs whose sides differ in length (characters). Far from 0.5, labels prefer "
        "length: a model trained on them learns that longer is better.</p>",
    ]
    by = f.get("by_source") or {}
    if len(by) > 1:
        parts.append(
            table(
                ["source", "pairs", "P(chosen longer)", "95% interval"],
                [
                    [esc(s), num(b["pairs"]), num(b["p_chosen_longer"]), ci(b["low"], b["high"])]
                    for s, b in by.items()
                ],
                [False, True, True, False],
            )
        )
    sc = f["scatter"]
    parts.append(
        plots.scatter(
            [tuple(p) for p in sc["points"]],
            title=f"chosen vs rejected length ({num(len(sc['points']))} of "
            f"{num(sc['total'])} pairs)",
            x_label="chosen (chars, log)",
            y_label="rejected (chars, log)",
        )
    )
    parts.append('<p class="note">Points below the dashed line: chosen is longer.</p>')
    return "".join(parts)


def judges(f: dict[str, Any], fig: dict[str, Any]) -> str:
    ann = f["annotators"]
    names = list(ann)
    rows = []
    for n in names:
        a = ann[n]
        pos, cons, lw, hum = (
            a["position"],
            a["position_consistency"],
            a["longer_wins"],
            a["agreement_with_humans"],
        )
        rows.append(
            [
                esc(n),
                esc(a["annotator_kind"]),
                num(a["votes"]),
                num(pos["p_first_shown_wins"]) if pos else "–",
                ci(pos["low"], pos["high"]) if pos else "–",
                num(pos["p_value"]) if pos else "–",
                f"{num(cons['consistent'])} / {num(cons['items_both_orders'])}" if cons else "–",
                num(lw["p"]) if lw else "–",
                ci(lw["low"], lw["high"]) if lw else "–",
                num(hum["agreement"]) if hum else "–",
                num(hum["kappa"]) if hum else "–",
            ]
        )
    parts = [
        "<p>P(first wins): share of a/b votes for the response shown first (ties apart); "
        "position consistency: items voted on in both orders whose labels all agree; "
        "P(longer wins): share of a/b votes for the longer side (pairs of this data set whose "
        "sides differ in length); agreement and kappa with the human consensus label.</p>",
        table(
            [
                "annotator",
                "kind",
                "votes",
                "P(first wins)",
                "95% interval",
                "p (vs 0.5)",
                "consistent / both orders",
                "P(longer wins)",
                "95% interval",
                "agreement with humans",
                "kappa with humans",
            ],
            rows,
            [False, False, True, True, False, True, False, True, False, True, True],
        ),
    ]
    svgs = []
    with_pos = [n for n in names if ann[n]["position"]]
    if with_pos:
        svgs.append(
            plots.intervals(
                with_pos,
                [ann[n]["position"]["p_first_shown_wins"] for n in with_pos],
                [ann[n]["position"]["low"] for n in with_pos],
                [ann[n]["position"]["high"] for n in with_pos],
                title="P(first shown wins), 95% interval",
                x_label="probability",
                reference=0.5,
            )
        )
    with_len = [n for n in names if ann[n]["longer_wins"]]
    if with_len:
        svgs.append(
            plots.intervals(
                with_len,
                [ann[n]["longer_wins"]["p"] for n in with_len],
                [ann[n]["longer_wins"]["low"] for n in with_len],
                [ann[n]["longer_wins"]["high"] for n in with_len],
                title="P(longer wins), 95% interval",
                x_label="probability",
                reference=0.5,
            )
        )
    parts.append(plots_row(*svgs))
    jh = f.get("judge_vs_human")
    if jh:
        parts.append(
            f"<p>Judge vs human consensus: {num(jh['items_compared'])} items compared, "
            f"{num(jh['flagged'])} flagged (judges' mean agreement with the human vote "
            f"below {num(jh['threshold'])}).</p>"
        )
    return "".join(parts)


def _stat_row(name: str, s: dict[str, Any] | None, extra: str = "") -> list[str]:
    if not s:
        return [esc(name), "–", "–", "–"]
    return [
        esc(name) + extra,
        num(s.get("value")),
        ci(*(s.get("ci") or (None, None))),
        num(s.get("items")),
    ]


def agreement_block(f: dict[str, Any], fig: dict[str, Any]) -> str:
    h = f["headline"]
    who = "human annotators" if f["scope"] == "human" else "all annotators"
    rows = [_stat_row("percent agreement", h["percent_agreement"])]
    fl = h["fleiss_kappa"]
    rows.append(
        _stat_row(
            "Fleiss' kappa",
            fl,
            f" ({num(fl.get('votes_per_item'))} votes per item)"
            if fl.get("votes_per_item")
            else "",
        )
    )
    for level, s in h["krippendorff_alpha"].items():
        rows.append(_stat_row(f"Krippendorff's alpha ({level})", s))
    for entry in h["cohen_kappa"]:
        rows.append(_stat_row("Cohen's kappa " + " × ".join(entry["annotators"]), entry))
    parts = [
        f"<p>Headline over the {who} ({num(h['votes'])} votes, {num(h['items'])} items, "
        f"labels {esc(', '.join(h['labels']))}); 95% bootstrap intervals over items "
        f"({num(h['bootstrap'])} resamples).</p>",
        table(["statistic", "value", "95% interval", "items"], rows, [False, True, False, True]),
    ]
    hm = f["heatmap"]
    per = f["all_votes"]["per_annotator"]
    ds = f["dawid_skene_accuracy"]
    svgs = [plots.heatmap(hm["annotators"], hm["kappa"], title="Cohen's kappa, every pair")]
    svgs.append(
        plots.intervals(
            [p["annotator"] for p in per],
            [p["kappa_with_consensus"]["value"] for p in per],
            [(p["kappa_with_consensus"]["ci"] or [None, None])[0] for p in per],
            [(p["kappa_with_consensus"]["ci"] or [None, None])[1] for p in per],
            title="kappa with the others' majority, 95% interval",
            x_label="kappa",
            domain=(0.0, 1.0),
        )
    )
    parts.append(plots_row(*svgs))
    parts.append("<h3>Per annotator</h3>")
    parts.append(
        table(
            [
                "annotator",
                "kind",
                "votes",
                "items compared",
                "agreement with others' majority",
                "95% interval",
                "kappa with others' majority",
                "95% interval",
                "Dawid-Skene accuracy",
            ],
            [
                [
                    esc(p["annotator"]),
                    esc(p["annotator_kind"]),
                    num(p["votes"]),
                    num(p["items_compared"]),
                    num(p["agreement_with_consensus"]["value"]),
                    ci(*(p["agreement_with_consensus"]["ci"] or (None, None))),
                    num(p["kappa_with_consensus"]["value"]),
                    ci(*(p["kappa_with_consensus"]["ci"] or (None, None))),
                    num(ds.get(p["annotator"])),
                ]
                for p in per
            ],
            [False, False, True, True, True, False, True, False, True],
        )
    )
    return "".join(parts)


def confidence(f: dict[str, Any], fig: dict[str, Any]) -> str:
    hist = f["histogram"]
    th = f["thresholds"]
    parts = [
        '<div class="cards">',
        card("confidence known", num(f["known"])),
        card("confidence missing", num(f["missing"])),
        card("mean confidence", num(f["mean"])),
        "</div>",
        plots_row(
            plots.histogram(
                hist["edges"],
                hist["counts"],
                title="confidence",
                x_label="P(chosen is better)",
                color=plots.PALETTE[2],
            ),
            plots.bar_chart(
                [f"≥ {t['threshold']}" for t in th],
                [t["kept"] for t in th],
                title="rows kept by min_confidence",
                x_label="rows kept",
                color=plots.PALETTE[2],
            ),
        ),
        table(
            ["min_confidence", "kept", "dropped"],
            [[num(t["threshold"]), num(t["kept"]), num(t["dropped"])] for t in th],
            [True, True, True],
        ),
        '<p class="note">As `prefdata filter --min-confidence` counts them: a row without a '
        "confidence passes the threshold.</p>",
    ]
    return "".join(parts)


def _text_block(label: str, ex: dict[str, Any] | None) -> str:
    if not ex:
        return ""
    more = f' <span class="note">(… {num(ex["cut"])} more characters)</span>' if ex["cut"] else ""
    return (
        f'<div><div class="lbl">{esc(label)} · {num(ex["chars"])} chars</div>'
        f'<div class="text">{esc(ex["text"])}{more}</div></div>'
    )


def audit(f: dict[str, Any], fig: dict[str, Any]) -> str:
    parts = []
    if "issue_counts" in f:
        rows_total = fig["overview"]["rows"]
        parts.append('<div class="cards">')
        parts.append(
            card(
                "items flagged",
                f"{num(f['items_flagged'])} ({pct(f['items_flagged_share'])})",
                "warn" if f["items_flagged"] else "ok",
            )
        )
        parts.append(card("issue rows", num(f["issue_rows"])))
        parts.append(card("rows in the data set", num(rows_total)))
        parts.append("</div>")
        counts = f["issue_counts"]
        if counts:
            names = sorted(counts, key=lambda k: (-counts[k], k))
            parts.append(
                plots.bar_chart(
                    names,
                    [counts[n] for n in names],
                    title="flagged rows by issue",
                    x_label="rows",
                    color=plots.PALETTE[3],
                )
            )
        info = {k: v for k, v in f["rows_per_issue"].items() if k not in counts}
        if info:
            parts.append(
                "<p>Rows recorded but not flagged as issues: "
                + ", ".join(f"{esc(k)} {num(v)}" for k, v in info.items())
                + ".</p>"
            )
    sample = f.get("sample")
    if sample:
        warn = sample["warn"]
        parts.append('<h3>Reviewed audit sample</h3><div class="cards">')
        parts.append(card("estimated mislabel rate", pct(sample["rate"]), "warn" if warn else "ok"))
        parts.append(
            card(
                f"{int(sample['confidence'] * 100)}% interval",
                f"{pct(sample['low'])} – {pct(sample['high'])}",
            )
        )
        parts.append(
            card("reviewed", f"{num(sample['mislabeled'])} mislabeled of {num(sample['reviewed'])}")
        )
        parts.append("</div>")
        parts.append(
            f"<p>Wilson interval ({esc(sample['method'])}); "
            f"{'above' if warn else 'not above'} the {pct(sample['warn_above'])} rule of thumb"
            f"{' (the whole interval is above it)' if sample['above_confidently'] else ''}."
            f" {num(sample['not_reviewed'])} sampled rows not reviewed yet.</p>"
        )
    top = f.get("top") or []
    if top:
        parts.append(f"<h3>Top {len(top)} flagged items (lowest score first)</h3>")
        for t in top:
            reasons = "".join(f"<li>{esc(r)}</li>" for r in t["reasons"])
            cols = ("chosen", "rejected") if "chosen" in t else ("completion",)
            parts.append(
                f'<div class="pair"><div><b>{esc(t["item_id"])}</b> · score '
                f"{num(t['score'])} · {esc(', '.join(t['issues']))}</div>"
                + _text_block("prompt", t.get("prompt"))
                + '<div class="cols">'
                + "".join(_text_block(c, t.get(c)) for c in cols)
                + f'</div><div class="lbl">why</div><ul class="reasons">{reasons}</ul></div>'
            )
    return "".join(parts)


def filtering(f: dict[str, Any], fig: dict[str, Any]) -> str:
    parts = [
        '<div class="cards">',
        card("kept", num(f["kept"])),
        card("dropped", f"{num(f['dropped'])} ({pct(f['dropped_share'])})"),
        "</div>",
    ]
    by = f["dropped_by_reason"]
    if by:
        names = list(by)
        parts.append(
            plots.bar_chart(
                names,
                [by[n] for n in names],
                title="dropped rows by first reason",
                x_label="rows",
                color=plots.PALETTE[1],
            )
        )
    every = f.get("failing_by_rule")
    if every:
        parts.append("<h3>Rows failing each rule (a row can fail several)</h3>")
        parts.append(
            table(["rule", "rows"], [[esc(k), num(v)] for k, v in every.items()], [False, True])
        )
    return "".join(parts)


def duplicates(f: dict[str, Any], fig: dict[str, Any]) -> str:
    counts = f["counts"]
    names = list(counts)
    source = (
        "the issues table"
        if f["source"] == "issues"
        else f"prefdata's MinHash dedup (Jaccard ≥ 0.8, {f['bands']} bands × {f['rows']} rows)"
    )
    parts = [
        f"<p>From {esc(source)}. {num(f['distinct_prompts'])} distinct prompts in "
        f"{num(f['pairs'])} pairs; several pairs per prompt are normal (repeated prompts are "
        "information, not issues).</p>",
        plots.bar_chart(
            names,
            [counts[n] for n in names],
            title="duplicate rows by kind",
            x_label="rows",
            color=plots.PALETTE[4],
        ),
    ]
    ov = f.get("overlap")
    if ov:
        parts.append('<h3>Train/test overlap</h3><div class="cards">')
        parts.append(
            card(
                "test prompts also in train (exact)",
                num(ov["overlap_exact"]),
                "warn" if ov["overlap_exact"] else "ok",
            )
        )
        parts.append(
            card(
                "near (Jaccard ≥ 0.8)",
                num(ov["overlap_near"]),
                "warn" if ov["overlap_near"] else "ok",
            )
        )
        if "overlap_share" in ov:
            parts.append(card("share of test pairs", pct(ov["overlap_share"])))
        parts.append("</div>")
    if f["examples"]:
        parts.append("<h3>Examples</h3>")
        parts.append(
            table(
                ["item", "issue", "reason"],
                [[esc(e["item_id"]), esc(e["issue"]), esc(e["reason"])] for e in f["examples"]],
            )
        )
    return "".join(parts)


RENDER: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "overview": lambda f, fig: overview(f["overview"], f),
    "lengths": lambda f, fig: lengths(f["lengths"], f),
    "token_integrity": lambda f, fig: integrity_html(f["token_integrity"]),
    "length_bias": lambda f, fig: length_bias(f["length_bias"], f),
    "judges": lambda f, fig: judges(f["judges"], f),
    "agreement": lambda f, fig: agreement_block(f["agreement"], f),
    "confidence": lambda f, fig: confidence(f["confidence"], f),
    "audit": lambda f, fig: audit(f["audit"], f),
    "filtering": lambda f, fig: filtering(f["filtering"], f),
    "duplicates": lambda f, fig: duplicates(f["duplicates"], f),
}


def _comparison_table(rows: list[dict[str, Any]]) -> str:
    return table(
        ["figure", "before", "after", "change"],
        [
            [
                esc(r["metric"]),
                num(r["before"]),
                num(r["after"]),
                ("+" if (r["delta"] or 0) > 0 else "") + num(r["delta"]),
            ]
            for r in rows
        ],
        [False, True, True, True],
    )


def render(report: dict[str, Any]) -> str:
    """The whole page for a report dict from `prefdata.report.build.compute_report`."""
    sets = [report["data"]] + ([report["compare"]] if "compare" in report else [])
    present = [(key, title) for key, title in SECTIONS if any(key in s for s in sets)]
    inputs = report.get("inputs", {})
    meta = ", ".join(f"{esc(k)}: {esc(v)}" for k, v in inputs.items() if v)
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in present)
    body = [
        f"<header><h1>{esc(report['title'])}</h1>",
        f'<p class="meta">prefdata {esc(report["prefdata_version"])} · '
        f"{esc(report['generated_at'])} · {meta}</p></header>",
        f"<nav>{nav}</nav>",
    ]
    if "comparison" in report:
        body.append(
            '<section id="comparison"><h2>Before and after</h2>'
            + _comparison_table(report["comparison"])
            + "</section>"
        )
    for key, title in present:
        if len(sets) == 1:
            inner = RENDER[key](sets[0], sets[0])
        else:
            halves = []
            for s in sets:
                content = (
                    RENDER[key](s, s)
                    if key in s
                    else '<p class="absent">No data for this section.</p>'
                )
                halves.append(f"<div><h3>{esc(s['name'])}</h3>{content}</div>")
            inner = f'<div class="sides">{"".join(halves)}</div>'
        body.append(f'<section id="{key}"><h2>{esc(title)}</h2>{inner}</section>')
    absent = [title for key, title in SECTIONS if (key, title) not in present]
    if absent:
        body.append(f'<p class="note">Sections without data here: {esc(", ".join(absent))}.</p>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(report['title'])}</title><style>{CSS}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )
