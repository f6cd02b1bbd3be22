"""The dataset card: YAML front matter that Hugging Face reads, plus Markdown whose figures
are the report's."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml
from markdown_it import MarkdownIt

from prefdata.io.importers.common import annotations_table
from prefdata.quality.filter import filter_pairs
from prefdata.report import build_report
from prefdata.report.card import size_category
from tests.report.conftest import HOSTILE, make_pairs, pair_labels


def _data() -> tuple[pl.DataFrame, pl.DataFrame]:
    pairs = make_pairs(
        [
            {
                "prompt": f"question {i}",
                "chosen": f"a careful answer number {i}" + "!" * (i % 3),
                "rejected": f"no {i}",
                "confidence": 0.5 + (i % 5) / 10,
                "source": "web" if i % 2 else HOSTILE,
                "provenance": {"judge": "gpt-x", "rubric": "helpfulness v2"},
            }
            for i in range(30)
        ]
    )
    truth = pair_labels(pairs, ["chosen"] * 30)
    flip = {"a": "b", "b": "a"}
    records = []
    for k, (pid, lab) in enumerate(zip(pairs["pair_id"], truth, strict=True)):
        for who in ("ann1", "ann2", "ann3"):
            wrong = (who == "ann3" and k % 4 == 0) or (who == "ann2" and k % 9 == 0)
            records.append(
                {
                    "item_id": pid,
                    "annotator": who,
                    "annotator_kind": "human",
                    "label": flip[lab] if wrong else lab,
                }
            )
        records.append(
            {
                "item_id": pid,
                "annotator": "judge",
                "annotator_kind": "llm",
                "label": lab if k % 3 else flip[lab],
                "order": "ab" if k % 2 else "ba",
            }
        )
    return pairs, annotations_table(records)


def _split(card: str) -> tuple[dict[str, object], str]:
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta, body


def test_card_front_matter_and_markdown(tmp_path: Path) -> None:
    pairs, votes = _data()
    filtered = filter_pairs(pairs, min_confidence=0.7)
    kept, rejected = filtered.tables["pairs"], filtered.rejected
    report = build_report(
        pairs,
        compare=kept,
        annotations=votes,
        rejected=rejected,
        out_dir=tmp_path,
        tokenizer=None,
        license="apache-2.0",
        filter_settings={"min_confidence": 0.7},
        title="Soup <preferences>",
    )
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    meta, body = _split(card)
    assert meta == {
        "license": "apache-2.0",
        "pretty_name": "Soup <preferences>",
        "task_categories": ["text-generation"],
        "tags": ["preference", "rlhf", "dpo", "prefdata"],
        "size_categories": ["n<1K"],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data.parquet"}]}
        ],
    }
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [
        "Soup &lt;preferences&gt;",
        "Dataset structure",
        "Provenance",
        "Filtering",
        "Quality",
    ]
    # columns, sources, provenance, judges, agreement, filter settings, drop reasons
    assert sum(t.type == "table_open" for t in tokens) == 7
    assert "html_block" not in {t.type for t in tokens}  # no raw HTML from the data
    assert "<script" not in card

    after = report["compare"]
    # Figures in the card are the report's.
    assert f"{after['overview']['rows']} preference pairs" in body
    alpha = after["agreement"]["headline"]["krippendorff_alpha"]["nominal"]["value"]
    assert f"| Krippendorff's alpha (nominal) | {alpha:.3g} |" in body
    filt = after["filtering"]
    assert f"Kept {filt['kept']}, dropped {filt['dropped']}" in body
    assert f"| low_confidence | {filt['dropped_by_reason']['low_confidence']} |" in body
    assert "| `min_confidence` | 0.7 |" in body
    assert "| `judge` | gpt-x |" in body and "| `rubric` | helpfulness v2 |" in body
    judge = after["judges"]["annotators"]["judge"]
    hum = judge["agreement_with_humans"]
    assert (
        f"| judge | llm | {judge['votes']} | {judge['position']['p_first_shown_wins']:.3g} "
        f"| {hum['agreement']:.3g} | {hum['kappa']:.3g} |"
    ) in body


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 2303, 10_000, 999_999, 1_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]
