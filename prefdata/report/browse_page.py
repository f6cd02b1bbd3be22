"""The browsable table of pairs in report.html: its controls, its data block and the one
script that renders it (search, filter by issue / source / score / confidence /
agreement, sort by any column, pages of 25, a row opens to its text, every issue with its
score and reason). Long text shows a preview and "show all"; text with a content warning
shows nothing until asked.

The data is a JSON block (`<script type="application/json">`, never executed; "<", ">" and
"&" escaped so no text can close it). The script builds the table with DOM calls and
`textContent` only (never `innerHTML`), and the page's Content-Security-Policy lets exactly
this script run (by its SHA-256) and nothing else, so a response holding `<script>` is
shown as text. Without JavaScript the page says so; every other section stays readable.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from prefdata.report.markup import esc, num

PAGE_ROWS = 25
COLLAPSE_CHARS = 600
PREVIEW_CHARS = 300


def data_block(f: dict[str, Any]) -> str:
    """The section's figures as a JSON block that no text inside can end early."""
    text = json.dumps(f, ensure_ascii=False, allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" class="browse-data">{text}</script>'


def _included(f: dict[str, Any]) -> str:
    inc = f.get("included") or {}
    if "flagged" not in inc:
        return f"<p>{esc(inc.get('reason', 'No rows.'))}</p>"
    if not f.get("has_issues"):
        return (
            f"<p>No issues table was given, so nothing is flagged: the table holds a random "
            f"sample of {num(inc['sample'])} of the {num(inc['unflagged_total'])} pairs "
            f"(seed {num(inc['seed'])}).</p>"
        )
    every = inc["flagged"] == inc["flagged_total"]
    flagged = (
        f"all {num(inc['flagged_total'])} flagged pairs"
        if every
        else f"{num(inc['flagged'])} of the {num(inc['flagged_total'])} flagged pairs (the "
        + ("most likely mislabels" if inc["order"] == "p" else "pairs with the most flags")
        + f"; the page holds at most {num(inc['max_rows'])}: the full list is the issues table)"
    )
    order = (
        "sorted by the model-based P(swapped), most likely mislabels first"
        if inc["order"] == "p"
        else "sorted by the number of heuristic flags (there is no model-based probability "
        "to rank by; a flag's score of 0 only says that it fired)"
    )
    return (
        f"<p>This table holds {flagged} and, to compare with, a random sample of "
        f"{num(inc['sample'])} of the {num(inc['unflagged_total'])} unflagged pairs (seed "
        f"{num(inc['seed'])}); {order}. Texts longer than {num(inc['text_chars'])} characters "
        "are cut (their full length is shown).</p>"
    )


def table_html(f: dict[str, Any]) -> str:
    """The section: what the table holds, its controls, the table, its data."""
    model = bool(f.get("has_model"))
    p_filter = (
        '<label>P(swapped) ≥ <input class="f-pmin" type="number" min="0" max="1" step="0.05">'
        "</label>"
        if model
        else ""
    )
    controls = (
        '<div class="controls">'
        '<label>search <input class="q" type="search" placeholder="text, id, reason"></label>'
        '<label>show <select class="f-flag"><option value="flagged">flagged pairs</option>'
        '<option value="all">all rows here</option>'
        '<option value="sample">unflagged sample</option></select></label>'
        '<label>issue <select class="f-issue"></select></label>'
        '<label>source <select class="f-source"></select></label>'
        f"{p_filter}"
        '<label>flag score ≤ <input class="f-smax" type="number" min="0" max="1" step="0.05">'
        "</label>"
        '<label>confidence <input class="f-cmin" type="number" min="0" max="1" step="0.05">'
        ' – <input class="f-cmax" type="number" min="0" max="1" step="0.05"></label>'
        '<label>agreement <input class="f-amin" type="number" min="0" max="1" step="0.05">'
        ' – <input class="f-amax" type="number" min="0" max="1" step="0.05"></label>'
        "</div>"
    )
    return (
        '<div class="browse">'
        + _included(f)
        + "<noscript><p>The table of pairs needs JavaScript (the page's own script; "
        "nothing is loaded from the network). Every other section works without it.</p>"
        "</noscript>"
        + controls
        + '<p class="count"></p><div class="tw"><table class="pairs"><thead></thead><tbody>'
        "</tbody></table></div>"
        '<div class="pager"><button type="button" class="prev">previous</button> '
        '<button type="button" class="next">next</button></div>' + data_block(f) + "</div>"
    )


_SCRIPT = """
(function () {
  "use strict";
  var PAGE = @PAGE@, LONG = @LONG@, PREVIEW = @PREVIEW@;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) { return "\\u2013"; }
    if (typeof v === "number") {
      if (v !== 0 && Math.abs(v) < 0.001) { return v.toExponential(1); }
      return Math.abs(v) >= 100 ? String(Math.round(v)) : v.toFixed(3);
    }
    return String(v);
  }
  function numOr(input) {
    var v = input ? parseFloat(input.value) : NaN;
    return isNaN(v) ? null : v;
  }
  function textBlock(label, t, warn) {
    var box = el("div", "tb");
    box.appendChild(el("div", "lbl", label + " \\u00b7 " + t.chars.toLocaleString() + " chars"));
    var body = el("div", "text");
    var cut = t.chars - t.text.length;
    var full = t.text + (cut > 0 ? " \\u2026 (" + cut.toLocaleString() + " more characters)" : "");
    if (warn) {
      var show = el("button", "show", "show text (content warning above)");
      show.type = "button";
      body.hidden = true;
      body.textContent = full;
      show.addEventListener("click", function () { body.hidden = false; show.remove(); });
      box.appendChild(show);
    } else if (t.text.length > LONG) {
      body.textContent = t.text.slice(0, PREVIEW) + " \\u2026";
      var more = el("button", "show", "show all " + t.chars.toLocaleString() + " characters");
      more.type = "button";
      more.addEventListener("click", function () { body.textContent = full; more.remove(); });
      box.appendChild(body);
      box.appendChild(more);
      return box;
    } else {
      body.textContent = full;
    }
    box.appendChild(body);
    return box;
  }
  function setup(root) {
    var data = JSON.parse(root.querySelector("script.browse-data").textContent);
    var rows = data.rows, model = data.has_model;
    var sides = rows.length && rows[0].completion ? ["completion"] : ["chosen", "rejected"];
    var q = root.querySelector(".q"), flag = root.querySelector(".f-flag");
    var issue = root.querySelector(".f-issue"), source = root.querySelector(".f-source");
    var inputs = {};
    ["pmin", "smax", "cmin", "cmax", "amin", "amax"].forEach(function (k) {
      inputs[k] = root.querySelector(".f-" + k);
    });
    function options(select, first, values) {
      first.concat(values).forEach(function (v) {
        var o = el("option", null, v[1]); o.value = v[0]; select.appendChild(o);
      });
    }
    options(issue, [["", "any"], ["\\u0000none", "no issue"]],
            data.issue_names.map(function (n) { return [n, n]; }));
    options(source, [["", "any"]], data.sources.map(function (n) { return [n, n]; }));
    if (!data.has_issues) { flag.value = "all"; }
    rows.forEach(function (r) {
      r._text = [r.id, r.source, r.prompt.text]
        .concat(sides.map(function (s) { return r[s].text; }))
        .concat(r.issues.map(function (i) { return i.issue + " " + (i.reason || ""); }))
        .join("\\n").toLowerCase();
    });
    var cols = [["id", "pair"], ["source", "source"], ["flags", "flags"]];
    if (model) { cols.push(["p", "P(swapped)"]); }
    cols.push(["min_score", "flag score"], ["confidence", "confidence"]);
    cols.push(["agreement", "agreement"]);
    var sortKey = model ? "p" : "flags", sortDesc = true, page = 0, shown = [];
    var head = root.querySelector("thead"), body = root.querySelector("tbody");
    var tr = el("tr");
    tr.appendChild(el("th", null, ""));
    cols.forEach(function (c) {
      var th = el("th", "sortable", c[1]);
      th.dataset.key = c[0];
      th.addEventListener("click", function () {
        sortDesc = sortKey === c[0] ? !sortDesc : c[0] !== "id" && c[0] !== "source";
        sortKey = c[0]; page = 0; update();
      });
      tr.appendChild(th);
    });
    head.appendChild(tr);
    function value(r, k) { return k === "flags" ? r.flags.length : r[k]; }
    function keep(r) {
      var t = q.value.trim().toLowerCase();
      if (t && r._text.indexOf(t) < 0) { return false; }
      if (flag.value === "flagged" && !r.flagged) { return false; }
      if (flag.value === "sample" && r.flagged) { return false; }
      var anyFlag = r.issues.some(function (i) { return i.flagged; });
      if (issue.value === "\\u0000none" && anyFlag) { return false; }
      if (issue.value && issue.value !== "\\u0000none" &&
          !r.issues.some(function (i) { return i.issue === issue.value; })) { return false; }
      if (source.value && String(r.source) !== source.value) { return false; }
      var lim = [["pmin", "p", 1], ["smax", "min_score", -1], ["cmin", "confidence", 1],
                 ["cmax", "confidence", -1], ["amin", "agreement", 1], ["amax", "agreement", -1]];
      for (var i = 0; i < lim.length; i++) {
        var bound = numOr(inputs[lim[i][0]]);
        if (bound === null) { continue; }
        var v = r[lim[i][1]];
        if (v === null || v === undefined) { return false; }
        if (lim[i][2] > 0 ? v < bound : v > bound) { return false; }
      }
      return true;
    }
    function detail(r) {
      var cell = el("td", "detail");
      cell.colSpan = cols.length + 1;
      if (r.warn) { cell.appendChild(el("p", "cw", "Content warning: " + r.warn + ".")); }
      var list = el("ul", "reasons");
      r.issues.forEach(function (i) {
        list.appendChild(el("li", i.flagged ? "flagged" : "info",
          i.issue + " \\u00b7 score " + fmt(i.score) + (i.flagged ? " \\u00b7 flagged" : "") +
          " \\u00b7 " + (i.reason || "")));
      });
      if (!r.issues.length) { list.appendChild(el("li", "info", "no issue rows")); }
      cell.appendChild(list);
      cell.appendChild(textBlock("prompt", r.prompt, r.warn));
      var pair = el("div", "cols");
      sides.forEach(function (s) { pair.appendChild(textBlock(s, r[s], r.warn)); });
      cell.appendChild(pair);
      var meta = "confidence " + fmt(r.confidence) + " \\u00b7 agreement " + fmt(r.agreement) +
        " \\u00b7 margin " + fmt(r.margin) + " \\u00b7 votes " + fmt(r.n_votes) +
        (r.split ? " \\u00b7 split " + r.split : "");
      cell.appendChild(el("p", "note", meta));
      return cell;
    }
    function render() {
      body.textContent = "";
      var start = page * PAGE, slice = shown.slice(start, start + PAGE);
      slice.forEach(function (r) {
        var row = el("tr", "row" + (r.likely_mislabel ? " likely" : ""));
        var open = el("button", "open", "open");
        open.type = "button";
        var td = el("td"); td.appendChild(open); row.appendChild(td);
        cols.forEach(function (c) {
          var v = c[0] === "flags" ? r.flags.join(", ") || "\\u2013" : fmt(r[c[0]]);
          var kind = c[0] === "flags" ? "flags" : typeof r[c[0]] === "number" ? "n nw" : "nw";
          row.appendChild(el("td", kind, v));
        });
        var more = el("tr", "detail-row");
        more.hidden = true;
        open.addEventListener("click", function () {
          if (!more.firstChild) { more.appendChild(detail(r)); }
          more.hidden = !more.hidden;
          open.textContent = more.hidden ? "open" : "close";
        });
        body.appendChild(row);
        body.appendChild(more);
      });
      root.querySelector(".count").textContent = shown.length
        ? shown.length.toLocaleString() + " of " + rows.length.toLocaleString() +
          " rows here match; showing " + (start + 1) + "\\u2013" + (start + slice.length)
        : "no row matches";
      root.querySelector(".prev").disabled = page === 0;
      root.querySelector(".next").disabled = start + PAGE >= shown.length;
      head.querySelectorAll("th.sortable").forEach(function (th) {
        th.classList.toggle("sorted", th.dataset.key === sortKey);
        th.classList.toggle("desc", th.dataset.key === sortKey && sortDesc);
      });
    }
    function update() {
      shown = rows.filter(keep);
      shown.sort(function (a, b) {
        var x = value(a, sortKey), y = value(b, sortKey);
        if (x === y) { return a.id < b.id ? -1 : 1; }
        if (x === null || x === undefined) { return 1; }
        if (y === null || y === undefined) { return -1; }
        var c = x < y ? -1 : 1;
        return sortDesc ? -c : c;
      });
      render();
    }
    [q, flag, issue, source].concat(Object.keys(inputs).map(function (k) { return inputs[k]; }))
      .forEach(function (input) {
        if (input) { input.addEventListener("input", function () { page = 0; update(); }); }
      });
    root.querySelector(".prev").addEventListener("click", function () { page -= 1; render(); });
    root.querySelector(".next").addEventListener("click", function () { page += 1; render(); });
    update();
  }
  document.querySelectorAll(".browse").forEach(setup);
})();
"""
SCRIPT = (
    _SCRIPT.replace("@PAGE@", str(PAGE_ROWS))
    .replace("@LONG@", str(COLLAPSE_CHARS))
    .replace("@PREVIEW@", str(PREVIEW_CHARS))
)


def script_hash() -> str:
    """The CSP source that lets SCRIPT (and nothing else) run."""
    digest = hashlib.sha256(SCRIPT.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"
