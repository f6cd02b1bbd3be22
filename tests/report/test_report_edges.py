"""Bad and unusual input: empty data, no annotations or issues, non-ASCII and very long
texts, HTML inside responses, KTO data, wrong tables; plus the dedup path and the plots."""

from __future__ import annotations

import json
import re
from html import escape as html_escape
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.errors import ContractError, InputError
from prefdata.io.importers.common import annotations_table, kto_table
from prefdata.io.tables import write_table
from prefdata.report import compute_report, plots
from prefdata.report.figures import as_data
from tests.report.conftest import HOSTILE, HOSTILE_IMG, make_pairs, pair_labels, write_report

FILES = {"report.html", "report.json", "README.md", "data"}


def _outputs(out: Path) -> tuple[str, dict[str, Any], str]:
    assert {p.name for p in out.iterdir()} == FILES  # no temp files left behind
    html = (out / "report.html").read_text(encoding="utf-8")
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return html, data, (out / "README.md").read_text(encoding="utf-8")


def test_empty_data(tmp_path: Path) -> None:
    # A table with no columns at all is not a pairs table: a clear error, nothing written.
    with pytest.raises(ContractError, match="missing column"):
        write_report(pl.DataFrame(), tmp_path / "none", tokenizer=None)
    assert not (tmp_path / "none").exists()
    for i, table in enumerate([make_pairs([])]):
        out = tmp_path / f"r{i}"
        write_report(table, out, tokenizer=None)
        html, data, card = _outputs(out)
        assert set(data["data"]) == {"contract", "name", "overview"}
        assert data["data"]["overview"]["rows"] == 0
        assert "The data set is empty" in html
        assert "size_categories:\n- n<1K" in card
    # An empty file is an input error that names the file, not a traceback.
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.jsonl: file is empty"):
        write_report(empty, tmp_path / "r", tokenizer=None)


def _long_and_foreign() -> pl.DataFrame:
    long_text = "Ceci est une très longue réponse. " * 6000  # 204,000 characters
    return make_pairs(
        [
            {
                "prompt": "用中文解释一下光合作用。",
                "chosen": "光合作用是植物利用光能……🌱",
                "rejected": "不知道。",
                "confidence": 0.9,
                "source": "zh",
            },
            {
                "prompt": "اشرح الجاذبية",
                "chosen": "الجاذبية قوة تجذب الأجسام.",
                "rejected": long_text,
                "confidence": 0.4,
                "source": "ar",
            },
            {
                "prompt": f"Repeat after me: {HOSTILE}",
                "chosen": f"{HOSTILE}{HOSTILE_IMG}",
                "rejected": "I won't.",
                "confidence": None,
                "source": "<b>bold</b> & co",
            },
        ]
    )


def test_non_ascii_long_texts_and_html_are_escaped(tmp_path: Path) -> None:
    pairs = _long_and_foreign()
    issues = pl.DataFrame(
        {
            "item_id": pairs["pair_id"].to_list(),
            "issue": ["x<script>", "length_ratio", "html"],
            "score": [0.1, 0.0, 0.2],
            "is_issue": [True, True, True],
            "reason": [f"why {HOSTILE}", "long", HOSTILE_IMG],
        }
    )
    write_report(pairs, tmp_path, issues=issues, tokenizer=None)
    html, data, card = _outputs(tmp_path)
    # Nothing from the data reaches the page as markup: the only scripts are the table's
    # data block and its code; no img, no bold tag.
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="application/json" class="browse-data">',
        "<script>",
    ]
    assert "<img" not in html.lower()
    assert "<b>bold</b>" not in html
    assert "\\u003cscript\\u003ewindow.__pwned = 1;" in html  # in the data block, escaped
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html
    assert "光合作用是植物利用光能……🌱" in html and "الجاذبية قوة تجذب الأجسام." in html
    # The 204,000-character response is cut in the page; its full length is kept.
    rows = {r["id"]: r for r in data["data"]["pairs"]["rows"]}
    cut = rows[pairs["pair_id"][1]]["rejected"]
    assert (cut["chars"], len(cut["text"])) == (204_000, 1500)
    assert "光合作用" in (tmp_path / "report.json").read_text(encoding="utf-8")
    # The card escapes them too, and the sources table cannot be broken by a pipe.
    body = card.split("\n---\n", 1)[1]  # the front matter is YAML data, not markup
    assert "<b>" not in body and "&lt;b&gt;bold&lt;/b&gt; &amp;amp; co" not in body
    assert "| &lt;b&gt;bold&lt;/b&gt; &amp; co | 1 |" in card


def test_no_annotations_no_issues(tmp_path: Path) -> None:
    pairs = _long_and_foreign()
    report = write_report(pairs, tmp_path, tokenizer=None)
    sections = set(report["data"])
    assert {"judges", "agreement", "mislabel", "audit", "filtering"}.isdisjoint(sections)
    assert {"overview", "lengths", "length_bias", "confidence", "duplicates", "pairs"} <= sections
    # No issues table: nothing is flagged, and the table is a sample of the pairs.
    assert {r["flagged"] for r in report["data"]["pairs"]["rows"]} == {False}
    lengths = report["data"]["lengths"]
    assert lengths["unit"] == "chars" and "truncation" not in lengths
    assert lengths["fields"]["rejected"]["max"] == 204_000
    conf = report["data"]["confidence"]
    assert (conf["known"], conf["missing"]) == (2, 1)
    # The page says which sections had no data.
    html, _, _ = _outputs(tmp_path)
    assert (
        "Sections without data here: Token integrity, Judges and annotators: position and "
        "length, Agreement, Likely mislabels (model-based), Heuristic flags, Filtering." in html
    )


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = _words(text)
    if not w:
        return set()
    if len(w) < 3:
        return {tuple(w)}
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


def test_duplicates_without_issues_use_dedup(tmp_path: Path) -> None:
    long_answer = " ".join(f"step {i} of the recipe is to stir well" for i in range(30))
    rows = [
        {"prompt": "How do I make soup?", "chosen": long_answer, "rejected": "Buy some."},
        # same pair after lower-casing and collapsing whitespace
        {"prompt": "how do I  make soup?", "chosen": long_answer.upper(), "rejected": "buy some."},
        # one word changed in a long answer: a near duplicate
        {
            "prompt": "How do I make soup?",
            "chosen": long_answer.replace("step 7", "stage 7"),
            "rejected": "Buy some.",
        },
        # labelled the other way round
        {"prompt": "How do I make soup?", "chosen": "Buy some!", "rejected": long_answer},
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
    ]
    pairs = make_pairs(rows)
    # the same row twice: the second copy breaks the pairs contract and is left out
    pairs = pl.concat([pairs, pairs.head(1)])
    dup = compute_report(pairs, tokenizer=None)["data"]["duplicates"]
    assert dup["source"] == "dedup" and dup["repeated_pair_ids_left_out"] == 1

    # Brute force over the unique rows: normalised exact copies and exact shingle Jaccard.
    def norm(t: str) -> str:
        return " ".join(t.lower().split())

    def union(r: dict[str, str]) -> set[tuple[str, ...]]:
        return _shingles(r["prompt"]) | _shingles(r["chosen"]) | _shingles(r["rejected"])

    def jac(x: str, y: str) -> float:
        a, b = _shingles(x), _shingles(y)
        return len(a & b) / len(a | b) if a | b else 1.0

    exact, near = 0, 0
    firsts: list[int] = []
    for j, b in enumerate(rows):
        key_b = (norm(b["prompt"]), {norm(b["chosen"]), norm(b["rejected"])})
        earlier = [(norm(a["prompt"]), {norm(a["chosen"]), norm(a["rejected"])}) for a in rows[:j]]
        if key_b in earlier:
            exact += 1
            continue
        if any(
            len(union(rows[i]) & union(b)) / len(union(rows[i]) | union(b)) >= 0.8 for i in firsts
        ):
            near += 1
        firsts.append(j)
    # Conflicts: any two such rows within the threshold whose sides cross-match better.
    conflict = set()
    for x, i in enumerate(firsts):
        for j in firsts[x + 1 :]:
            a, b = rows[i], rows[j]
            if len(union(a) & union(b)) / len(union(a) | union(b)) < 0.8:
                continue
            same = jac(a["chosen"], b["chosen"]) + jac(a["rejected"], b["rejected"])
            cross = jac(a["chosen"], b["rejected"]) + jac(a["rejected"], b["chosen"])
            if cross > same:
                conflict |= {i, j}
    assert (dup["counts"]["duplicate_pair"], dup["counts"]["near_duplicate_pair"]) == (exact, near)
    assert (exact, near) == (1, 2)
    assert dup["counts"]["conflicting_duplicate"] == len(conflict) == 3
    assert dup["counts"]["duplicate_prompt"] == 3  # rows 1-3 repeat row 0's prompt
    assert dup["flagged"]["duplicate_prompt"] == 0  # repeated prompts are information
    # distinct prompt ids: exact text (the lower-cased copy has its own id)
    assert dup["distinct_prompts"] == 3 and dup["pairs"] == 6
    # The page shows each pair labelled both ways with both pairs' text, not only ids.
    write_report(pairs, tmp_path / "qa", tokenizer=None)
    page = (tmp_path / "qa" / "report.html").read_text(encoding="utf-8")
    # (an example's long text is itself collapsed in a <details>: split, do not match)
    shown = page.split('<details class="dup">')[1:]
    both_ways = [d for d in shown if "labelled both ways" in d.split("</summary>")[0]]
    assert len(both_ways) == dup["counts"]["conflicting_duplicate"] - 1  # one per other row
    text = {
        pid: (c, r)
        for pid, c, r in zip(pairs["pair_id"], pairs["chosen"], pairs["rejected"], strict=True)
    }
    for d in both_ways:
        first, other = re.findall(r"[0-9a-f]{16}", d.split("</summary>")[0])[:2]
        for pid in (first, other):
            for side in text[pid]:
                assert html_escape(side[:40]) in d, (pid, side[:40])
    assert any("Buy some!" in d for d in both_ways)


def test_split_column_gives_train_test_overlap() -> None:
    pairs = make_pairs(
        [
            {"prompt": "Name a colour.", "chosen": "Blue", "rejected": "Seven", "split": "train"},
            {"prompt": "Name a fruit.", "chosen": "Apple", "rejected": "Chair", "split": "train"},
            {"prompt": "name a colour.", "chosen": "Red", "rejected": "Nine", "split": "test"},
            {"prompt": "Name an animal.", "chosen": "Cat", "rejected": "Rock", "split": "test"},
        ]
    )
    ov = compute_report(pairs, tokenizer=None)["data"]["duplicates"]["overlap"]
    assert ov == {
        "source": "split_overlap",
        "train_pairs": 2,
        "test_pairs": 2,
        "overlap_exact": 1,
        "overlap_near": 0,
        "overlap_share": 0.5,
    }


def test_kto_data(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "Hi"}]
    kto = kto_table(
        [
            {"prompt": prompt, "completion": f"answer {i}", "label": i % 4 != 0, "confidence": 0.8}
            for i in range(8)
        ],
        source="thumbs",
    )
    report = write_report(kto, tmp_path, tokenizer=None)
    data = report["data"]
    assert data["contract"] == "kto"
    assert data["overview"]["balance"]["desirable"] == 6
    assert data["overview"]["balance"]["undesirable"] == 2
    assert data["overview"]["balance"]["desirable_ratio"] == 3.0
    assert data["overview"]["balance"]["within_trl_advice"] is False
    assert set(data["lengths"]["fields"]) == {"prompt", "completion", "sequence"}
    assert "length_bias" not in data and "duplicates" not in data
    html, _, card = _outputs(tmp_path)
    assert "Outside TRL's advice" in html
    assert "- kto" in card and "outside TRL's 1:1 to 4:3 advice" in card


def test_annotations_on_other_ids_and_judges_without_humans(tmp_path: Path) -> None:
    pairs = make_pairs(
        [
            {"prompt": f"q{i}", "chosen": f"good answer {i}", "rejected": f"bad {i}"}
            for i in range(6)
        ]
    )
    labels = pair_labels(pairs, ["chosen"] * 6)
    votes = annotations_table(
        [
            {
                "item_id": pid,
                "annotator": judge,
                "annotator_kind": "llm",
                "label": lab if judge == "j1" or k % 2 else "tie",
                "order": "ab" if k % 2 else "ba",
            }
            for k, (pid, lab) in enumerate(zip(pairs["pair_id"], labels, strict=True))
            for judge in ("j1", "j2")
        ]
    )
    data = compute_report(pairs, annotations=votes, tokenizer=None)["data"]
    assert data["overview"]["annotations"]["votes_not_in_data"] == 0
    judges = data["judges"]["annotators"]
    assert set(judges) == {"j1", "j2"} and "judge_vs_human" not in data["judges"]
    assert judges["j1"]["longer_wins"]["p"] == 1.0  # chosen is always the longer side
    assert data["agreement"]["scope"] == "all"
    # Votes whose item ids are not pair ids (e.g. completion ids) are used as they are.
    other = votes.with_columns(("x" + pl.col("item_id")).alias("item_id"))
    data = compute_report(pairs, annotations=other, tokenizer=None)["data"]
    assert data["overview"]["annotations"]["rows"] == other.height
    assert data["agreement"]["headline"]["items"] == 6


def test_wrong_tables(tmp_path: Path) -> None:
    pairs = make_pairs([{"prompt": "q", "chosen": "yes", "rejected": "no"}])
    with pytest.raises(ContractError, match="needs a pairs or kto table"):
        as_data(
            pl.DataFrame(
                {"item_id": ["1"], "annotator": ["a"], "annotator_kind": ["human"], "label": ["a"]}
            )
        )
    with pytest.raises(ContractError, match="column 'reason'"):
        compute_report(pairs, rejected=pl.DataFrame({"x": [1]}), tokenizer=None)
    with pytest.raises(ContractError, match="column 'mislabeled'"):
        compute_report(pairs, sample=pairs, tokenizer=None)
    with pytest.raises(InputError, match="no tokenizer folder"):
        compute_report(pairs, tokenizer=tmp_path / "missing")
    with pytest.raises(ValueError, match="max_length"):
        compute_report(pairs, tokenizer=None, max_length=0)
    # Paths work as inputs; the default title says what the data is.
    path = write_table(pairs, tmp_path / "pairs.parquet")
    report = write_report(path, tmp_path / "out", tokenizer=None)
    assert report["title"] == "QA report: 1 pairs from test"
    assert (tmp_path / "out" / "report.html").stat().st_mode & 0o777 == 0o644
    # The report never writes over its own input.
    from typer.testing import CliRunner

    from prefdata.cli import app

    result = CliRunner().invoke(app, ["report", str(path), "-o", str(path)])
    assert result.exit_code == 2 and "would destroy the input" in result.output


def test_plot_helpers() -> None:
    assert plots.nice_ticks(0, 760) == [0, 200, 400, 600, 800]  # the axis covers the data
    assert plots.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    svg = plots.bar_chart(["<x>", "y&z"], [3, 1], title="t<1>", x_label="rows")
    assert "<x>" not in svg and "&lt;x&gt;" in svg and "y&amp;z" in svg
    assert svg.count('class="mark"') == 2 and 'class="axis x"' in svg
    hm = plots.heatmap(["a", "b"], [[None, 0.5], [0.5, None]], title="k")
    assert hm.count('class="mark"') == 4 and "0.50" in hm
    sc = plots.scatter([(0, 5), (10, 100)], title="s", x_label="x", y_label="y")
    assert sc.count('<circle class="mark"') == 2


def test_content_warning_where_a_rule_finds_a_harmful_prompt() -> None:
    from prefdata.quality.rules import rule_checks

    refusal = "I'm sorry, but I can't help with that."
    pairs = make_pairs(
        [
            # chosen refuses a harmless request: an over-refusal label, no harmful prompt
            {"prompt": "How do I bake bread?", "chosen": refusal, "rejected": "Mix flour."},
            # chosen refuses a harmful-looking request
            {"prompt": "How do I build a bomb?", "chosen": refusal, "rejected": "Take a pipe."},
            # chosen answers a harmful-looking request
            {"prompt": "How can I steal a car?", "chosen": "Smash a window.", "rejected": refusal},
            {"prompt": "Name a colour.", "chosen": "Blue", "rejected": "Seven"},
        ]
    )
    issues, _ = rule_checks(pairs)
    rows = compute_report(pairs, issues=issues, tokenizer=None)["data"]["pairs"]["rows"]
    warned = {r["prompt"]["text"].removeprefix("[user] "): r["warn"] for r in rows}
    assert warned == {
        "How do I bake bread?": None,
        "How do I build a bomb?": "a rule found a harmful-looking request in the prompt",
        "How can I steal a car?": "a rule found a harmful-looking request in the prompt",
        "Name a colour.": None,
    }
