"""README.md: a Hugging Face dataset card (YAML front matter + Markdown) from a report dict.

Front matter: license (the `--license` given, else the sources' licences: each importer of a
known public data set records it in the rows' provenance, and prefdata.io.importers.sources
knows it by source name; "unknown" when nothing tells it), task_categories, tags,
size_categories, pretty_name and `configs` (one default config whose `data_files` are the
files the report wrote beside the card, `data/<split>.parquet`, one per value of the `split`
column). The body: the sources with their links and citations, a content warning when a
source is known to hold offensive text or a rule flagged harmful prompts, the data's
structure, the curation steps with their settings (labels, audit, filter), the quality
figures and the limitations they imply, each taken from report.json (nothing is recomputed
here). Text that comes from the data is escaped for Markdown tables and HTML.
"""

from __future__ import annotations

from typing import Any

import yaml

from prefdata.io.importers.sources import source_info
from prefdata.report import interpret
from prefdata.report.markup import num, pct

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


def _shown(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the card describes: the data set after, when there are two."""
    shown: dict[str, Any] = report.get("compare") or report["data"]
    return shown


def about(report: dict[str, Any]) -> dict[str, Any]:
    """What the card knows of the data's origin: the known sources (title, licence, link,
    citation, rows), the licences recorded in the rows, and the content warning (or None)."""
    data = _shown(report)
    o = data["overview"]
    prov = (o.get("provenance") or {}).get("values") or {}
    names = list(o.get("sources") or {}) + [str(v) for v in prov.get("dataset", [])]
    sources: list[dict[str, Any]] = []
    for name in dict.fromkeys(names):
        info = source_info(name)
        if info is None or any(s["title"] == info.title for s in sources):
            continue
        sources.append(
            {
                "name": name,
                "title": info.title,
                "license": info.license,
                "url": info.url,
                "citation": info.citation,
                "rows": (o.get("sources") or {}).get(name),
                "content_warning": info.content_warning,
            }
        )
    recorded = [str(v) for v in prov.get("license", [])]
    warnings = [s["content_warning"] for s in sources if s["content_warning"]]
    harmful = _harmful_flags(data)
    if harmful:
        warnings.append(f"a rule found harmful-looking requests in {harmful:,} prompts")
    return {
        "sources": sources,
        "licenses": list(dict.fromkeys(recorded + [s["license"] for s in sources])),
        "content_warning": "; ".join(warnings) or None,
    }


def _harmful_flags(data: dict[str, Any]) -> int:
    rows = (data.get("pairs") or {}).get("rows") or []
    return sum(
        1
        for r in rows
        if any(
            i["issue"] == "refusal_vs_answer" and "harmful" in (i["reason"] or "")
            for i in r["issues"]
        )
    )


def front_matter(report: dict[str, Any]) -> dict[str, Any]:
    data = _shown(report)
    rows = data["overview"]["rows"]
    contract = data["contract"]
    licenses = about(report)["licenses"]
    license_value: str | list[str] = report.get("license") or (
        licenses[0] if len(licenses) == 1 else licenses or "unknown"
    )
    meta: dict[str, Any] = {
        "license": license_value,
        "pretty_name": report["title"],
        "task_categories": ["text-generation"],
        "tags": ["preference", "rlhf", "dpo" if contract == "pairs" else "kto", "prefdata"],
        "size_categories": [size_category(rows)],
    }
    files = report.get("data_files") or {}
    if files:
        meta["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": path} for name, path in files.items()],
            }
        ]
    return meta


def render(report: dict[str, Any]) -> str:
    """The dataset card text for a report dict (see `prefdata.report.build`)."""
    data = _shown(report)
    info = about(report)
    head = yaml.safe_dump(front_matter(report), sort_keys=False, allow_unicode=True)
    parts = [f"---\n{head}---\n", f"# {md(report['title'])}\n"]
    parts += _intro(report, data)
    if info["content_warning"]:
        parts.append(f"> **Content warning:** {md(info['content_warning'])}.\n")
    parts += _structure(report, data)
    parts += _sources(data, info)
    parts += _curation(report, data)
    parts.append("## Quality\n")
    parts.append(
        "\n".join(_quality(report, data) or ["- No quality figures: the data set is empty."]) + "\n"
    )
    parts.append("## Limitations\n")
    parts.append("\n".join(_limitations(data, info)) + "\n")
    return "\n".join(parts)


def _intro(report: dict[str, Any], data: dict[str, Any]) -> list[str]:
    o = data["overview"]
    kind = (
        "preference pairs (prompt, chosen, rejected)"
        if data["contract"] == "pairs"
        else "KTO rows (prompt, completion, desirable or not)"
    )
    out = [
        f"{num(o['rows'])} {kind}, {num(o.get('distinct_prompts'))} distinct prompts. "
        f"Card written by prefdata {md(report['prefdata_version'])} on "
        f"{md(report['generated_at'])}; the full QA report is `report.html`, every figure "
        "machine-readable in `report.json`.\n"
    ]
    if "compare" in report:
        out.append(
            f"Figures describe `{md(data['name'])}`; it was derived from "
            f"`{md(report['data']['name'])}` ({num(report['data']['overview']['rows'])} rows).\n"
        )
    return out


def _structure(report: dict[str, Any], data: dict[str, Any]) -> list[str]:
    o = data["overview"]
    out = ["## Dataset structure\n"]
    files = report.get("data_files") or {}
    if files:
        out.append(
            "Files (the `data_files` of the default config; a row's split is its `split` "
            "column, else what its source file's name says, else train):\n\n"
            + _table(["split", "file"], [[md(k), f"`{md(v)}`"] for k, v in files.items()])
            + "\n"
        )
    out.append(
        _table(["column", "type"], [[f"`{md(k)}`", md(v)] for k, v in o["columns"].items()]) + "\n"
    )
    if data["contract"] == "pairs":
        out.append(
            "`prompt` is a list of chat messages; `confidence` is the probability that chosen "
            "really is better (null where it was not measured).\n"
        )
    return out


def _sources(data: dict[str, Any], info: dict[str, Any]) -> list[str]:
    o = data["overview"]
    out = ["## Sources\n"]
    sources = o.get("sources") or {}
    known = {s["name"]: s for s in info["sources"]}
    if sources:
        rows = []
        for name, count in sources.items():
            s = known.get(name)
            rows.append(
                [
                    md(name),
                    num(count),
                    md(s["title"]) if s else "–",
                    md(s["license"]) if s else "not known",
                    f"<{s['url']}>" if s else "–",
                ]
            )
        out.append(_table(["source", "rows", "data set", "licence", "link"], rows) + "\n")
    if info["licenses"]:
        out.append(f"Licences recorded: {md(', '.join(info['licenses']))}.\n")
    cites = [s for s in info["sources"] if s["citation"]]
    if cites:
        out.append("Cite the sources:\n")
        out += [f"```bibtex\n{s['citation']}\n```\n" for s in cites]
    prov = o.get("provenance")
    if prov and prov.get("values"):
        rows = [[f"`{md(k)}`", md(", ".join(map(str, v)))] for k, v in prov["values"].items()]
        out.append(
            "Recorded in `provenance` (judges, rubrics, templates, origin):\n\n"
            + _table(["field", "values"], rows)
            + "\n"
        )
    return out


def _curation(report: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """The steps the data went through, each with its settings and what it did."""
    o = data["overview"]
    out = ["## Curation\n"]
    step = 0

    def heading(text: str) -> None:
        nonlocal step
        step += 1
        out.append(f"### {step}. {text}\n")

    judges = (data.get("judges") or {}).get("annotators", {})
    humans = (data.get("judges") or {}).get("humans", {})
    agreement = data.get("agreement")
    anns = o.get("annotations")
    if anns:
        heading("Labels")
        out.append(
            f"{num(anns.get('rows'))} votes from {num(anns.get('annotators'))} annotators on "
            f"{num(anns.get('items'))} items.\n"
        )
        for title, group, is_judge in (
            ("LLM judges", judges, True),
            ("Human annotators", humans, False),
        ):
            if not group:
                continue
            rows = []
            for name, a in group.items():
                pos = a.get("position") or {}
                row = [
                    md(name),
                    md(a["annotator_kind"]),
                    num(a["votes"]),
                    num(pos.get("p_first_shown_wins")),
                ]
                if is_judge:
                    hum = a.get("agreement_with_humans") or {}
                    row += [num(hum.get("agreement")), num(hum.get("kappa"))]
                rows.append(row)
            head = ["annotator", "kind", "votes", "P(first shown wins)"]
            if is_judge:
                head += ["agreement with humans", "kappa with humans"]
            out.append(f"{title}:\n\n" + _table(head, rows) + "\n")
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
            for level, st in h["krippendorff_alpha"].items():
                rows.append([f"Krippendorff's alpha ({level})", num(st["value"]), _ci(st["ci"])])
            who = "human annotators" if agreement["scope"] == "human" else "all annotators"
            out.append(
                f"Agreement between the {who} (95% bootstrap intervals):\n\n"
                + _table(["statistic", "value", "95% interval"], rows)
                + "\n"
            )
    flags = data.get("audit") or report["data"].get("audit")
    mis = data.get("mislabel")
    if flags or mis:
        heading("Audit (`prefdata audit`)")
        if flags and "issue_counts" in flags:
            counts = (
                ", ".join(f"{md(k)} {num(v)}" for k, v in flags["issue_counts"].items()) or "none"
            )
            out.append(
                f"Heuristic checks flagged {num(flags['items_flagged'])} pairs ({counts}).\n"
            )
        if mis and mis.get("available"):
            out.append(
                f"Model-based mislabel probability from {md(', '.join(mis['signals']))}: "
                f"{num(mis['flagged'])} pairs flagged as likely mislabels; expected swapped "
                f"labels {num(mis['expected_mislabeled'])} of {num(mis['pairs'])}.\n"
            )
        elif mis:
            out.append("No model-based mislabel signal was available.\n")
    filt = data.get("filtering")
    settings = report.get("filter_settings")
    if filt or settings:
        heading("Filter (`prefdata filter`)")
        if settings:
            out.append(
                "Settings:\n\n"
                + _table(["option", "value"], [[f"`{md(k)}`", md(v)] for k, v in settings.items()])
                + "\n"
            )
        if filt:
            out.append(
                f"Kept {num(filt['kept'])}, dropped {num(filt['dropped'])} "
                f"({pct(filt['dropped_share'])}).\n\n"
                + _table(
                    ["reason", "rows dropped"],
                    [[md(k), num(v)] for k, v in filt["dropped_by_reason"].items()],
                )
                + "\n"
            )
    if step == 0:
        out.append("No labelling, audit or filter step is recorded for this data.\n")
    return out


def _quality(report: dict[str, Any], data: dict[str, Any]) -> list[str]:
    o = data["overview"]
    items = []
    lb = data.get("length_bias")
    if lb:
        items.append(f"- Length: {md(lb.get('reading'))}")
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
    if au and au.get("sample"):
        st = au["sample"]
        items.append(
            f"- Reviewed audit sample: {num(st['mislabeled'])} of {num(st['reviewed'])} "
            f"mislabeled, estimated rate {pct(st['rate'])} "
            f"({pct(st['low'])} – {pct(st['high'])})."
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
    return items


def _limitations(data: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """What the figures say a user of this data should keep in mind."""
    items = []
    if info["content_warning"]:
        items.append(
            f"- Offensive content: {md(info['content_warning'])}. Do not show it to people "
            "without warning them; train on it for harmlessness, not for style."
        )
    lb = (data.get("length_bias") or {}).get("overall") or {}
    side = interpret.side_of_half(lb.get("low"), lb.get("high"))
    if side in ("above", "below"):  # only when the whole interval lies on one side of 0.5
        direction = "longer" if side == "above" else "shorter"
        items.append(
            f"- The labels prefer the {direction} response (P(chosen longer) "
            f"{num(lb['p_chosen_longer'])}, 95% interval {_ci([lb['low'], lb['high']])}): a "
            f"model trained on them will lean towards {direction} answers."
        )
    mis = data.get("mislabel") or {}
    if mis.get("available"):
        items.append(
            f"- Label noise: the audit expects about {num(mis['expected_mislabeled'])} of "
            f"{num(mis['pairs'])} labels to be swapped ({pct(mis['mean_p'])})."
        )
    elif mis:
        items.append("- Label noise was not estimated: no model-based signal was available.")
    dup = (data.get("duplicates") or {}).get("counts") or {}
    if dup.get("conflicting_duplicate"):
        items.append(
            f"- {num(dup['conflicting_duplicate'])} rows are duplicates labelled both ways; "
            "they contradict each other in training."
        )
    agreement = data.get("agreement")
    if agreement is None and data["overview"].get("annotations") is None:
        items.append("- No per-annotator votes came with the data: agreement is not measured.")
    trunc = (data.get("lengths") or {}).get("truncation") or {}
    if trunc.get("rows_over"):
        items.append(
            f"- {num(trunc['rows_over'])} rows ({pct(trunc['rows_over_share'])}) are longer "
            f"than max_length {num(trunc['max_length'])} and would be truncated."
        )
    if not info["sources"]:
        items.append(
            "- The sources are not known to prefdata: check their licence and terms before "
            "publishing (`--license` sets the card's)."
        )
    items.append(
        "- The labels are the sources' (and their annotators') judgements; prefdata's checks "
        "find likely errors, they do not prove the rest right."
    )
    return items


def _ci(interval: Any) -> str:
    if not interval or interval[0] is None:
        return "–"
    return f"{interval[0]:.3f} – {interval[1]:.3f}"
