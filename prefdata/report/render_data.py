"""How the page shows the data sections: overview, lengths, length bias, confidence."""

from __future__ import annotations

from typing import Any

from prefdata.report import plots
from prefdata.report.markup import card, ci, count_card, esc, num, pct, plots_row, table


def overview(f: dict[str, Any], fig: dict[str, Any]) -> str:
    o = f
    problems = sum((o.get("problems") or {}).values())
    parts = [
        '<div class="cards">',
        card("rows", num(o["rows"])),
        card("contract", esc(o.get("contract"))),
        card("distinct prompts", num(o.get("distinct_prompts"))),
        card("sources", num(len(o.get("sources") or {}))),
        count_card("rows with contract problems", problems),
    ]
    if "chosen_longer_share" in o:
        parts.append(card("chosen longer (chars)", pct(o["chosen_longer_share"])))
    parts.append("</div>")
    if o["rows"] == 0:
        parts.append('<p class="absent">The data set is empty: no other section applies.</p>')
    if o.get("sources"):
        parts.append(
            plots.count_bars(
                o["sources"], title="rows per source", x_label="rows", color=plots.PALETTE[2]
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
            # describe() counts votes without a label (unparsed judge replies) under "None".
            shown = {("(no label)" if n == "None" else n): v for n, v in labels.items()}
            parts.append(
                plots.count_bars(
                    shown,
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
            count_card(
                f"rows over max_length {trunc['max_length']}",
                trunc["rows_over"],
                f"{num(trunc['rows_over'])} ({pct(share)})",
            )
        )
        if trunc.get("rows_over_share_interval"):
            lo, hi = trunc["rows_over_share_interval"]
            parts.append(card("share over, 95% interval", f"{pct(lo)} – {pct(hi)}"))
        for key in ("chosen_over", "rejected_over", "completion_over"):
            if key in trunc:
                parts.append(card(key.replace("_", " "), num(trunc[key])))
        parts.append(
            count_card(
                "prompt alone fills max_length (TRL drops these)", trunc["prompt_fills_max_length"]
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
        f'<p class="reading">{esc(f.get("reading"))}</p>',
        '<p class="note">Over pairs whose sides differ in length (characters); the interval '
        "is a 95% Wilson interval.</p>",
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
