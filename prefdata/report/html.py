"""report.html: one self-contained page (inline CSS, SVG and one script; no external
resource, no network).

Every text that comes from the data (prompts, responses, reasons, annotator and source
names, file names) goes through `esc()`, or into the table's JSON data block with "<"
escaped, where the page's script reads it with `textContent`. The page's
Content-Security-Policy allows no network at all and exactly one script (the table's, by its
SHA-256), so a response holding `<script>` or an `<img onerror>` is shown as text and could
not run even if it slipped through.

The sections and their order are prefdata.report.sections.SECTIONS.
"""

from __future__ import annotations

from typing import Any

from prefdata.report.browse_page import SCRIPT, script_hash
from prefdata.report.markup import esc, num, table

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
svg.plot { background: #fff; border: 1px solid var(--line); border-radius: 4px;
           max-width: 100%; height: auto; }
.sides { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 18px; }
.sides > div { min-width: 0; }
.tw { max-width: 100%; overflow-x: auto; }
.cols { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 10px; }
p.reading { font-weight: 500; }
ul.readings { margin: 4px 0 10px 18px; padding: 0; }
details.dup { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px;
              margin: 6px 0; }
details.dup > summary { cursor: pointer; overflow-wrap: anywhere; }
details.cw > summary, details.long > summary { cursor: pointer; color: #2557a7; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 16px; margin: 8px 0; font-size: 13px; }
.controls input[type=number] { width: 64px; }
.controls input[type=search] { width: 220px; max-width: 100%; }
table.pairs { width: 100%; }
table.pairs th.sortable { cursor: pointer; white-space: nowrap; }
table.pairs th.sorted::after { content: " \\25B2"; font-size: 10px; }
table.pairs th.sorted.desc::after { content: " \\25BC"; }
table.pairs td.flags { overflow-wrap: anywhere; }
button.open { white-space: nowrap; }
table.pairs tr.likely td { background: #fff4ec; }
td.detail { background: #fbfbfc; padding: 8px; }
button.show, button.open { font: inherit; font-size: 12px; cursor: pointer; }
p.cw { color: var(--warn); font-weight: 600; }
li.flagged { color: var(--warn); }
.count { font-size: 12.5px; color: var(--muted); }
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
  .tw { overflow: visible; }
  .controls, .pager { display: none; }
}
"""


def csp() -> str:
    """The page's Content-Security-Policy: nothing from the network, one known script."""
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src {script_hash()}"
    )


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


# The rounds table's columns: (key in prefdata.pipeline.rounds.figures, header); a column
# shows only when some round has a value for it.
ROUND_COLUMNS = (
    ("generator", "generated by"),
    ("candidates", "candidates"),
    ("pairs", "pairs"),
    ("true_reward_mean", "labeller's mean score"),
    ("heldout_accuracy", "held-out accuracy"),
    ("agreement", "agreement"),
    ("judge_position_consistency", "judge position consistency"),
    ("mean_confidence", "mean confidence"),
    ("chosen_longer_share", "chosen longer"),
    ("pairs_kept", "pairs kept"),
)


def _rounds_table(rows: list[dict[str, Any]]) -> str:
    columns = [(k, h) for k, h in ROUND_COLUMNS if any(r.get(k) is not None for r in rows)]
    cells = [
        [esc(r["round"])]
        + [esc(r[k]) if isinstance(r.get(k), str) else num(r.get(k)) for k, _ in columns]
        for r in rows
    ]
    note = (
        '<p class="note">Round k samples from the policy round k-1 trained; with a programmatic '
        "labeller that is the true reward, its mean score is the true reward of that policy's "
        "own answers.</p>"
    )
    numeric = [True] + [k != "generator" for k, _ in columns]
    return note + table(["round"] + [h for _, h in columns], cells, numeric)


def render(report: dict[str, Any]) -> str:
    """The whole page for a report dict from `prefdata.report.build.compute_report`."""
    from prefdata.report.sections import SECTIONS

    sets = [report["data"]] + ([report["compare"]] if "compare" in report else [])
    present = [s for s in SECTIONS if any(s.key in d for d in sets)]
    inputs = report.get("inputs", {})
    meta = ", ".join(f"{esc(k)}: {esc(v)}" for k, v in inputs.items() if v)
    nav = ('<a href="#rounds">Rounds</a>' if report.get("rounds") else "") + "".join(
        f'<a href="#{s.key}">{esc(s.title)}</a>' for s in present
    )
    body = [
        f"<header><h1>{esc(report['title'])}</h1>",
        f'<p class="meta">prefdata {esc(report["prefdata_version"])} · '
        f"{esc(report['generated_at'])} · {meta}</p></header>",
        f"<nav>{nav}</nav>",
    ]
    warning = report.get("content_warning")
    if warning:
        body.append(f'<p class="cw">Content warning: {esc(warning)}.</p>')
    if report.get("rounds"):
        body.append(
            '<section id="rounds"><h2>Rounds</h2>' + _rounds_table(report["rounds"]) + "</section>"
        )
    if "comparison" in report:
        body.append(
            '<section id="comparison"><h2>Before and after</h2>'
            + _comparison_table(report["comparison"])
            + "</section>"
        )
    for section in present:
        if len(sets) == 1:
            inner = section.render(sets[0][section.key], sets[0])
        else:
            halves = []
            for d in sets:
                content = (
                    section.render(d[section.key], d)
                    if section.key in d
                    else '<p class="absent">No data for this section.</p>'
                )
                halves.append(f"<div><h3>{esc(d['name'])}</h3>{content}</div>")
            inner = f'<div class="sides">{"".join(halves)}</div>'
        body.append(f'<section id="{section.key}"><h2>{esc(section.title)}</h2>{inner}</section>')
    absent = [s.title for s in SECTIONS if s not in present]
    if absent:
        body.append(f'<p class="note">Sections without data here: {esc(", ".join(absent))}.</p>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp()}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(report['title'])}</title><style>{CSS}</style></head><body>"
        + "".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
