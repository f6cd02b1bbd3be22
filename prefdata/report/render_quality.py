"""How the page shows the quality sections: judges and human annotators (separate tables),
agreement, likely mislabels (model-based) apart from heuristic flags, the browsable table of
pairs, what filter would drop, what a filter dropped, duplicates with their text."""

from __future__ import annotations

from typing import Any

from prefdata.report import plots
from prefdata.report.markup import (
    card,
    ci,
    count_card,
    esc,
    num,
    pct,
    plots_row,
    table,
    text_block,
)


def _bias_rows(group: dict[str, Any], *, judges: bool) -> list[list[str]]:
    rows = []
    for n, a in group.items():
        pos, cons, lw = a["position"], a["position_consistency"], a["longer_wins"]
        row = [
            esc(n),
            esc(a["annotator_kind"]),
            num(a["votes"]),
            num(pos["p_first_shown_wins"]) if pos else "–",
            ci(pos["low"], pos["high"]) if pos else "–",
            f"{num(cons['consistent'])} / {num(cons['items_both_orders'])}" if cons else "–",
            num(lw["p"]) if lw else "–",
            ci(lw["low"], lw["high"]) if lw else "–",
        ]
        if judges:
            hum = a.get("agreement_with_humans")
            row += [num(hum["agreement"]) if hum else "–", num(hum["kappa"]) if hum else "–"]
        rows.append(row)
    return rows


_BIAS_HEAD = [
    "kind",
    "votes",
    "P(first wins)",
    "95% interval",
    "consistent / both orders",
    "P(longer wins)",
    "95% interval",
]


def _readings(group: dict[str, Any]) -> str:
    lines = [
        a[k]["reading"]
        for a in group.values()
        for k in ("position", "longer_wins")
        if a.get(k) and a[k].get("reading")
    ]
    return "".join(f"<li>{esc(line)}</li>" for line in lines)


def judges(f: dict[str, Any], fig: dict[str, Any]) -> str:
    """LLM judges and human annotators in two tables, each with what its intervals say."""
    parts = [
        "<p>P(first wins): share of a/b votes for the response shown first (ties apart); "
        "position consistency: items voted on in both orders whose labels all agree; "
        "P(longer wins): share of a/b votes for the longer side (pairs of this data set whose "
        "sides differ in length). 95% Wilson intervals.</p>"
    ]
    for key, title, is_judge in (
        ("annotators", "LLM judges", True),
        ("humans", "Human annotators", False),
    ):
        group = f.get(key) or {}
        if not group:
            continue
        head = ["judge" if is_judge else "annotator", *_BIAS_HEAD]
        if is_judge:
            head += ["agreement with humans", "kappa with humans"]
        numeric = [False, False, True, True, False, False, True, False] + [True, True] * is_judge
        parts.append(f"<h3>{title}</h3>")
        parts.append(table(head, _bias_rows(group, judges=is_judge), numeric))
        readings = _readings(group)
        if readings:
            parts.append(f'<ul class="readings">{readings}</ul>')
        svgs = []
        for key, p_key, what in (
            ("position", "p_first_shown_wins", "P(first shown wins)"),
            ("longer_wins", "p", "P(longer wins)"),
        ):
            shown = [n for n in group if group[n][key]]
            if shown:
                svgs.append(
                    plots.intervals(
                        shown,
                        [group[n][key][p_key] for n in shown],
                        [group[n][key]["low"] for n in shown],
                        [group[n][key]["high"] for n in shown],
                        title=f"{title}: {what}, 95% interval",
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


def agreement(f: dict[str, Any], fig: dict[str, Any]) -> str:
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


def mislabel(f: dict[str, Any], fig: dict[str, Any]) -> str:
    """The model-based P(swapped), or why there is none."""
    if not f.get("available"):
        return f'<p class="reading">{esc(f.get("why"))}</p>'
    parts = [
        '<div class="cards">',
        count_card(
            "likely mislabels (flagged)",
            f["flagged"],
            f"{num(f['flagged'])} ({pct(f['flagged_share'])})",
        ),
        card("expected mislabeled pairs (sum of P)", num(f["expected_mislabeled"])),
        card("mean P(swapped)", num(f["mean_p"])),
        card("smallest flagged P", num(f["threshold"])),
        "</div>",
        "<p>The combined audit's out-of-fold probability that chosen and rejected are "
        f"swapped, for {num(f['pairs'])} pairs, from the signals "
        + esc(", ".join(f"{k} ({v:,} pairs)" for k, v in f["signals"].items()) or "–")
        + ". The table of pairs below is sorted by it.</p>",
    ]
    hist = f["histogram"]
    parts.append(
        plots_row(
            plots.histogram(
                hist["edges"],
                hist["counts"],
                title="P(chosen and rejected swapped)",
                x_label="probability",
                color=plots.PALETTE[3],
            )
        )
    )
    return "".join(parts)


def flags(f: dict[str, Any], fig: dict[str, Any]) -> str:
    """Heuristic flags: counts by issue (not a ranking), and a reviewed sample's rate."""
    parts = []
    if "issue_counts" in f:
        parts.append('<div class="cards">')
        parts.append(
            count_card(
                "pairs flagged by a heuristic",
                f["items_flagged"],
                f"{num(f['items_flagged'])} ({pct(f['items_flagged_share'])})",
            )
        )
        parts.append(card("issue rows", num(f["issue_rows"])))
        parts.append(card("rows in the data set", num(fig["overview"]["rows"])))
        parts.append("</div>")
        parts.append(
            "<p>Rule checks, duplicates and disagreement. A flag says that a check fired; "
            "many flagged pairs are labelled right (a short refusal against a long harmful "
            "answer trips the length-ratio rule). Read them in the table of pairs.</p>"
        )
        counts = f["issue_counts"]
        if counts:
            most_first = sorted(counts, key=lambda k: (-counts[k], k))
            parts.append(
                plots.count_bars(
                    {n: counts[n] for n in most_first},
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
        above = (
            "the whole interval is above"
            if sample["above_confidently"]
            else "above, but the interval reaches below,"
            if warn
            else "not above"
        )
        parts.append(
            f"<p>Wilson interval ({esc(sample['method'])}): the estimate is {above} the "
            f"{pct(sample['warn_above'])} rule of thumb. {num(sample['not_reviewed'])} sampled "
            "rows not reviewed yet.</p>"
        )
    return "".join(parts)


def pairs(f: dict[str, Any], fig: dict[str, Any]) -> str:
    """The browsable table (rendered by the page's script from its data block)."""
    from prefdata.report.browse_page import table_html

    return table_html(f)


def filter_preview(f: dict[str, Any], fig: dict[str, Any]) -> str:
    """What prefdata filter would keep and drop, by first reason, per setting."""
    runs = f["scenarios"]
    reasons = sorted({r for run in runs for r in run.get("dropped_by_reason", {})})
    head = ["", *[run["name"] for run in runs]]
    rows = [
        ["settings"]
        + [
            esc(", ".join(f"{k}={v}" for k, v in run["settings"].items()) or "(none)")
            for run in runs
        ],
        ["kept"] + [num(run.get("kept")) for run in runs],
        ["dropped"] + [num(run.get("dropped")) for run in runs],
    ]
    rows += [
        [f"dropped: {esc(reason)}"]
        + [num(run.get("dropped_by_reason", {}).get(reason, 0)) for run in runs]
        for reason in reasons
    ]
    errors = [f"<li>{esc(run['name'])}: {esc(run['error'])}</li>" for run in runs if "error" in run]
    return (
        f"<p>Counts of the {num(f['rows'])} rows as <code>prefdata filter</code> would treat "
        "them (computed with the filter itself); a row counts under the first rule it "
        "fails.</p>"
        + table(head, rows, [False] + [True] * len(runs))
        + (f'<ul class="note">{"".join(errors)}</ul>' if errors else "")
    )


def filtering(f: dict[str, Any], fig: dict[str, Any]) -> str:
    parts = [
        '<div class="cards">',
        card("kept", num(f["kept"])),
        card("dropped", f"{num(f['dropped'])} ({pct(f['dropped_share'])})"),
        "</div>",
    ]
    by = f["dropped_by_reason"]
    if by:
        parts.append(
            plots.count_bars(
                by,
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


_DUP_TITLES = {
    "conflicting_duplicate": "labelled both ways",
    "duplicate_pair": "exact duplicate",
    "near_duplicate_pair": "near duplicate",
}


def _pair_texts(label: str, texts: dict[str, Any] | None, warn: str | None) -> str:
    if not texts:
        return f'<p class="absent">{esc(label)}: not in this data set.</p>'
    return (
        f'<div class="lbl">{esc(label)}</div>'
        + text_block("prompt", texts["prompt"]["text"], texts["prompt"]["chars"], warn)
        + '<div class="cols">'
        + text_block("chosen", texts["chosen"]["text"], texts["chosen"]["chars"], warn)
        + text_block("rejected", texts["rejected"]["text"], texts["rejected"]["chars"], warn)
        + "</div>"
    )


def _source_warning(texts: dict[str, Any] | None) -> str | None:
    from prefdata.io.importers.sources import source_info

    info = source_info(str((texts or {}).get("source") or ""))
    return info.content_warning if info else None


def duplicates(f: dict[str, Any], fig: dict[str, Any]) -> str:
    counts = f["counts"]
    source = (
        "the issues table"
        if f["source"] == "issues"
        else f"prefdata's MinHash dedup (Jaccard ≥ 0.8, {f['bands']} bands × {f['rows']} rows)"
    )
    parts = [
        f"<p>From {esc(source)}. {num(f['distinct_prompts'])} distinct prompts in "
        f"{num(f['pairs'])} pairs; several pairs per prompt are normal (repeated prompts are "
        f"information, not issues). <b>{num(counts['conflicting_duplicate'])}</b> rows are "
        "duplicates labelled both ways (one row's chosen is the other's rejected).</p>",
        plots.count_bars(
            counts,
            title="duplicate rows by kind",
            x_label="rows",
            color=plots.PALETTE[4],
        ),
    ]
    ov = f.get("overlap")
    if ov:
        parts.append('<h3>Train/test overlap</h3><div class="cards">')
        parts.append(count_card("test prompts also in train (exact)", ov["overlap_exact"]))
        parts.append(count_card("near (Jaccard ≥ 0.8)", ov["overlap_near"]))
        if "overlap_share" in ov:
            parts.append(card("share of test pairs", pct(ov["overlap_share"])))
        parts.append("</div>")
    examples = f.get("examples") or []
    if examples:
        shown = {k: sum(1 for e in examples if e["issue"] == k) for k in _DUP_TITLES}
        parts.append(
            "<h3>Examples, with both pairs' text</h3><p>"
            + ", ".join(f"{num(v)} {esc(_DUP_TITLES[k])}" for k, v in shown.items() if v)
            + " (every pair labelled both ways, up to 100; up to 10 of the others).</p>"
        )
        for e in examples:
            warn = _source_warning(e.get("item")) or _source_warning(e.get("other"))
            parts.append(
                f'<details class="dup"><summary><b>{esc(_DUP_TITLES.get(e["issue"], e["issue"]))}'
                f"</b> · {esc(e['item_id'])} and {esc(e['other_id'] or '?')} · "
                f"{esc(e['reason'])}</summary>"
                + _pair_texts(f"pair {e['item_id']}", e.get("item"), warn)
                + _pair_texts(f"pair {e['other_id']}", e.get("other"), warn)
                + "</details>"
            )
    return "".join(parts)
