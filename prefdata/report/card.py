"""README.md: a Hugging Face dataset card (YAML front matter + Markdown) from a report dict.

Front matter: license, task_categories, tags, size_categories, pretty_name and `configs`
(one default config whose train split is the data file). The body states provenance:
sources, annotators and judges, agreement, filter settings and drop counts, and the main
quality figures, each taken from report.json (nothing is recomputed here). Text that comes
from the data is escaped for Markdown tables and HTML.
"""

from __future__ import annotations

from typing import Any

import yaml

from prefdata.report.html import num, pct

SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)


def size_category(rows: int) -> str:
    """Hugging Face's size_categories value for a row count."""
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1B"


def md(value: object) -> str:
    """Text for a Markdown table cell: no HTML, no cell breaks, no line breaks."""
    text = "" if value is None else str(value)
    for a, b in (
        ("&", "&amp;"),
        ("<", "&lt;"),
        (">", "&gt;"),
        ("|", "\\|"),
        ("`", "\\`"),
        ("\r", " "),
        ("\n", " "),
    ):
        text = text.replace(a, b)
    return text


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def front_matter(report: dict[str, Any]) -> dict[str, Any]:
    data = report.get("compare") or report["data"]
    rows = data["overview"]["rows"]
    contract = data["contract"]
    return {
        "license": report.get("license") or "unknown",
        "pretty_name": report["title"],
        "task_categories": ["text-generation"],
        "tags": ["preference", "rlhf", "dpo" if contract == "pairs" else "kto", "prefdata"],
        "size_categories": [size_category(rows)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [
                    {"split": "train", "path": report.get("data_file") or "data.parquet"}
                ],
            }
        ],
    }


def render(report: dict[str, Any]) -> str:
    """The dataset card text for a report dict (see `prefdata.report.build`)."""
    data = report.get("compare") or report["data"]
    o = data["overview"]
    head = yaml.safe_dump(front_matter(report), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{head}---\n", f"# {md(report['title'])}\n"]
    kind = (
        "preference pairs (prompt, chosen, rejected)"
        if data["contract"] == "pairs"
        else "KTO rows (prompt, completion, desirable or not)"
    )
    parts.append(
        f"{num(o['rows'])} {kind}, {num(o.get('distinct_prompts'))} distinct prompts. "
        f"Card written by prefdata {md(report['prefdata_version'])} on "
        f"{md(report['generated_at'])}; the full QA report is `report.html`, every figure "
        "machine-readable in `report.json`.\n"
    )
    if "compare" in report:
        parts.append(
            f"Figures describe `{md(data['name'])}`; it was derived from "
            f"`{md(report['data']['name'])}` ({num(report['data']['overview']['rows'])} rows).\n"
        )

    parts.append("## Dataset structure\n")
    parts.append(
        _table(["column", "type"], [[f"`{md(k)}`", md(v)] for k, v in o["columns"].items()]) + "\n"
    )
    if data["contract"] == "pairs":
        parts.append(
            "`prompt` is a list of chat messages; `confidence` is the probability that chosen "
            "really is better (null where it was not measured).\n"
        )

    parts.append("## Provenance\n")
    sources = o.get("sources") or {}
    if sources:
        parts.append(
            "Sources:\n\n"
            + _table(["source", "rows"], [[md(k), num(v)] for k, v in sources.items()])
            + "\n"
        )
    prov = o.get("provenance")
    if prov and prov.get("values"):
        rows = [[f"`{md(k)}`", md(", ".join(map(str, v)))] for k, v in prov["values"].items()]
        parts.append(
            "Recorded in `provenance` (judges, rubrics, templates):\n\n"
            + _table(["field", "values"], rows)
            + "\n"
        )
    judges = data.get("judges", {}).get("annotators", {})
    agreement = data.get("agreement")
    anns = o.get("annotations")
    if anns:
        parts.append(
            f"Labels: {num(anns.get('rows'))} votes from {num(anns.get('annotators'))} "
            f"annotators on {num(anns.get('items'))} items.\n"
        )
    if judges:
        rows = []
        for name, a in judges.items():
            hum = a.get("agreement_with_humans") or {}
            pos = a.get("position") or {}
            rows.append(
                [
                    md(name),
                    md(a["annotator_kind"]),
                    num(a["votes"]),
                    num(pos.get("p_first_shown_wins")),
                    num(hum.get("agreement")),
                    num(hum.get("kappa")),
                ]
            )
        parts.append(
            "Annotators and judges:\n\n"
            + _table(
                [
                    "annotator",
                    "kind",
                    "votes",
                    "P(first shown wins)",
                    "agreement with humans",
                    "kappa with humans",
                ],
                rows,
            )
            + "\n"
        )
    if agreement:
        h = agreement["headline"]
        rows = [
            [
                "percent agreement",
                num(h["percent_agreement"]["value"]),
                _ci(h["percent_agreement"]["ci"]),
            ],
            ["Fleiss' kappa", num(h["fleiss_kappa"]["value"]), _ci(h["fleiss_kappa"]["ci"])],
        ]
        for level, s in h["krippendorff_alpha"].items():
            rows.append([f"Krippendorff's alpha ({level})", num(s["value"]), _ci(s["ci"])])
        who = "human annotators" if agreement["scope"] == "human" else "all annotators"
        parts.append(
            f"Agreement between the {who} (95% bootstrap intervals):\n\n"
            + _table(["statistic", "value", "95% interval"], rows)
            + "\n"
        )

    filt = data.get("filtering")
    settings = report.get("filter_settings")
    if filt or settings:
        parts.append("## Filtering\n")
        if settings:
            parts.append(
                "Settings:\n\n"
                + _table(["option", "value"], [[f"`{md(k)}`", md(v)] for k, v in settings.items()])
                + "\n"
            )
        if filt:
            parts.append(
                f"Kept {num(filt['kept'])}, dropped {num(filt['dropped'])} "
                f"({pct(filt['dropped_share'])}).\n\n"
                + _table(
                    ["reason", "rows dropped"],
                    [[md(k), num(v)] for k, v in filt["dropped_by_reason"].items()],
                )
                + "\n"
            )

    parts.append("## Quality\n")
    items = []
    lb = data.get("length_bias")
    if lb:
        ov = lb["overall"]
        items.append(
            f"- P(chosen longer, characters): {num(ov['p_chosen_longer'])} "
            f"(95% interval {_ci([ov['low'], ov['high']])})."
        )
    lengths = data.get("lengths")
    if lengths:
        seq = lengths["fields"]["sequence"]
        items.append(
            f"- Training sequence length ({md(lengths['unit'])}"
            + (f", {md(lengths['tokenizer'])}" if lengths["tokenizer"] else "")
            + f"): median {num(seq.get('p50'))}, p95 {num(seq.get('p95'))}, "
            f"max {num(seq.get('max'))}."
        )
        t = lengths.get("truncation")
        if t:
            items.append(
                f"- Rows longer than {num(t['max_length'])} tokens (truncated by TRL): "
                f"{num(t['rows_over'])} ({pct(t['rows_over_share'])})."
            )
    au = data.get("audit") or report["data"].get("audit")
    if au and "issue_counts" in au:
        counts = ", ".join(f"{md(k)} {num(v)}" for k, v in au["issue_counts"].items()) or "none"
        items.append(f"- Audit: {num(au['items_flagged'])} items flagged ({counts}).")
    if au and au.get("sample"):
        s = au["sample"]
        items.append(
            f"- Reviewed audit sample: {num(s['mislabeled'])} of {num(s['reviewed'])} "
            f"mislabeled, estimated rate {pct(s['rate'])} "
            f"({pct(s['low'])} – {pct(s['high'])})."
        )
    dup = data.get("duplicates")
    if dup:
        c = dup["counts"]
        items.append(
            f"- Duplicates: {num(c['duplicate_pair'])} exact and "
            f"{num(c['near_duplicate_pair'])} near-duplicate pairs, "
            f"{num(c['conflicting_duplicate'])} labelled both ways."
        )
        ov2 = dup.get("overlap")
        if ov2:
            items.append(
                f"- Train/test overlap: {num(ov2['overlap_exact'])} exact, "
                f"{num(ov2['overlap_near'])} near."
            )
    balance = o.get("balance")
    if balance:
        items.append(
            f"- KTO desirable:undesirable {num(balance['desirable'])}:"
            f"{num(balance['undesirable'])} "
            f"({'within' if balance['within_trl_advice'] else 'outside'} TRL's 1:1 to "
            "4:3 advice)."
        )
    parts.append("\n".join(items or ["- No quality figures: the data set is empty."]) + "\n")
    return "\n".join(parts)


def _ci(interval: Any) -> str:
    if not interval or interval[0] is None:
        return "–"
    return f"{interval[0]:.3f} – {interval[1]:.3f}"
