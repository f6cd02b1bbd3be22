"""report.json on real data: every figure against an independent computation.

PandaLM (3 human annotators + 2 LLM judges, real audit, real filter, a reviewed sample) in
comparison mode (before / after filtering) and HH-RLHF (no annotations) as one data set.
`reference.assert_matches` requires the same keys at every level, so a figure the report
adds without a reference here fails the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.audit import audit
from prefdata.quality.filter import filter_pairs
from prefdata.quality.sample import audit_sample
from prefdata.report import compute_report
from prefdata.report.measure import PROVENANCE_KEYS
from prefdata.report.tokens import Tokenizer, load_tokenizer
from tests.report import reference as ref
from tests.report import reference_votes as vref


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = load_tokenizer("smollm2")
    assert tok is not None
    return tok


def _schema(table: pl.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in table.schema.items()}


def _expected(
    pairs: pl.DataFrame,
    *,
    name: str,
    tok: Tokenizer,
    token_lengths: dict[str, dict[str, int]],
    max_length: int,
    annotations: pl.DataFrame | None = None,
    issues: pl.DataFrame | None = None,
    rejected: pl.DataFrame | None = None,
    sample: pl.DataFrame | None = None,
    points: list[list[int]] | None = None,
    token_rows: int | None = None,
) -> dict[str, Any]:
    rows = pairs.to_dicts()
    ids = {p["pair_id"] for p in rows}
    overview = ref.describe_pairs(rows, _schema(pairs))
    overview["provenance"] = ref.provenance(rows, PROVENANCE_KEYS)
    out: dict[str, Any] = {"contract": "pairs", "name": name, "overview": overview}
    measured, seed = rows, None
    if token_rows is not None and len(rows) > token_rows:
        # the documented seeded sample of the rows to tokenize
        picked = np.sort(np.random.default_rng(0).choice(len(rows), token_rows, replace=False))
        measured, seed = [rows[i] for i in picked], 0
    per_pair = [token_lengths[p["pair_id"]] for p in measured]
    out["lengths"] = ref.lengths(
        per_pair, tokenizer_name=tok.name, max_length=max_length, rows=len(rows), seed=seed
    )
    all_points = [[len(p["chosen"]), len(p["rejected"])] for p in rows]
    out["length_bias"] = ref.length_bias(rows, points if points is not None else all_points)
    if annotations is not None:
        votes = annotations.to_dicts()
        mine = [v for v in votes if v["item_id"] in ids]
        overview["annotations"] = ref.describe_votes(mine, _schema(annotations), len(votes))
        usable = [v for v in mine if v["label"] is not None and v["error"] is None]
        out["judges"] = vref.judges(rows, usable)
        rng = np.random.default_rng(7)
        humans = [v for v in usable if v["annotator_kind"] == "human"]
        headline = vref.agreement(humans, labels=vref.ORDER, bootstrap=1000, seed=0, rng=rng)
        everyone = vref.agreement(usable, labels=vref.ORDER, bootstrap=1000, seed=0, rng=rng)
        names = sorted({v["annotator"] for v in usable})
        out["agreement"] = {
            "scope": "human",
            "level": "ordinal",
            "headline": headline,
            "all_votes": everyone,
            "heatmap": vref.heatmap(everyone["cohen_kappa"], names),
            "dawid_skene_accuracy": vref.dawid_skene_accuracy(usable, vref.ORDER),
        }
    out["confidence"] = (
        ref.confidence(rows) if any(p["confidence"] is not None for p in rows) else None
    )
    if out["confidence"] is None:
        del out["confidence"]
    if issues is not None or sample is not None:
        issue_rows = issues.to_dicts() if issues is not None else []
        if issues is not None:
            overview["issues"] = {
                "rows": len(issue_rows),
                "rows_not_in_data": sum(r["item_id"] not in ids for r in issue_rows),
            }
        out["audit"] = ref.audit(
            rows, issue_rows, sample=sample.to_dicts() if sample is not None else None
        )
        if issues is not None:
            out["mislabel"] = ref.mislabel(rows, issue_rows)
    if rejected is not None:
        out["filtering"] = ref.filtering(len(rows), rejected.to_dicts())
    out["duplicates"] = ref.duplicates_from_issues(
        rows, issues.to_dicts() if issues is not None else []
    )
    return out


@pytest.fixture(scope="module")
def pandalm(shared_data: Path, tokenizer: Tokenizer) -> dict[str, Any]:
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    pairs, anns = imported.tables["pairs"], imported.tables["annotations"]
    _audited = audit(pairs, annotations=anns, sample=0)
    issues, _, _ = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    # A reviewed sample: 44 verdicts (every 6th mislabeled), 6 rows not reviewed yet.
    drawn = audit_sample(pairs, n=50, seed=3)
    sample = drawn.with_columns(
        pl.Series(
            "mislabeled", [None if i >= 44 else i % 6 == 0 for i in range(50)], dtype=pl.Boolean
        )
    )
    filtered = filter_pairs(pairs, issues=issues, drop_issues="all", min_confidence=0.9)
    kept, rejected = filtered.tables["pairs"], filtered.rejected
    report = compute_report(
        kept,
        before=pairs,
        annotations=anns,
        issues=issues,
        rejected=rejected,
        sample=sample,
        tokenizer=tokenizer,
        max_length=128,
    )
    lengths = {
        p["pair_id"]: ref.trl_token_lengths(tokenizer.tokenizer, p) for p in pairs.to_dicts()
    }
    return {
        "pairs": pairs,
        "anns": anns,
        "issues": issues,
        "sample": sample,
        "kept": kept,
        "rejected": rejected,
        "report": report,
        "lengths": lengths,
    }


def _browsable(figures: dict[str, Any], pairs: pl.DataFrame, issues: pl.DataFrame) -> None:
    """Every flagged pair of the data set is a row of the page's table, with its text and
    every issue row it has; the rest of the table is unflagged pairs. Then the checked
    sections are taken out, so the rest can be compared key by key."""
    table = figures.pop("pairs")
    mine = issues.filter(pl.col("item_id").is_in(pairs["pair_id"].implode()))
    flagged = set(mine.filter("is_issue")["item_id"].to_list())
    rows = {r["id"]: r for r in table["rows"]}
    assert {i for i, r in rows.items() if r["flagged"]} == flagged
    assert table["included"]["flagged"] == table["included"]["flagged_total"] == len(flagged)
    by_id = {p["pair_id"]: p for p in pairs.to_dicts()}
    for pid, r in rows.items():
        assert r["chosen"]["text"] == by_id[pid]["chosen"][:1500]
        assert r["chosen"]["chars"] == len(by_id[pid]["chosen"])
        want = mine.filter(pl.col("item_id") == pid)
        assert sorted((i["issue"], i["reason"]) for i in r["issues"]) == sorted(
            zip(want["issue"], want["reason"], strict=True)
        )
    preview = figures.pop("filter_preview")
    for run in preview["scenarios"]:
        assert run["kept"] + run["dropped"] == pairs.height
        assert sum(run["dropped_by_reason"].values()) == run["dropped"]
    every = [r for r in preview["scenarios"] if r["settings"] == {"drop_issues": "all"}]
    if flagged:  # dropping every flagged pair drops exactly the flagged pairs
        assert every[0]["dropped"] == len(flagged)
    else:
        assert every == []  # nothing flagged: no such alternative to show


def test_pandalm_before_every_figure(pandalm: dict[str, Any], tokenizer: Tokenizer) -> None:
    report = pandalm["report"]
    expected = _expected(
        pandalm["pairs"],
        name="before: 760 pairs from pandalm",
        tok=tokenizer,
        token_lengths=pandalm["lengths"],
        max_length=128,
        annotations=pandalm["anns"],
        issues=pandalm["issues"],
        sample=pandalm["sample"],
    )
    data = dict(report["data"])
    _browsable(data, pandalm["pairs"], pandalm["issues"])
    ref.assert_matches(data, expected, "data")
    # Spot values against the importer's own counts and the raw file's structure.
    assert report["data"]["overview"]["rows"] == 760
    assert report["data"]["overview"]["annotations"]["votes_total"] == 4995  # 999 x (3 + 2)
    assert report["data"]["lengths"]["truncation"]["rows_over"] > 0  # max_length 128 bites


def test_pandalm_after_every_figure(pandalm: dict[str, Any], tokenizer: Tokenizer) -> None:
    report = pandalm["report"]
    expected = _expected(
        pandalm["kept"],
        name=f"after: {pandalm['kept'].height:,} pairs from pandalm",
        tok=tokenizer,
        token_lengths=pandalm["lengths"],
        max_length=128,
        annotations=pandalm["anns"],
        issues=pandalm["issues"],
        rejected=pandalm["rejected"],
    )
    after = dict(report["compare"])
    _browsable(after, pandalm["kept"], pandalm["issues"])
    ref.assert_matches(after, expected, "compare")
    filt = report["compare"]["filtering"]
    assert filt["kept"] + filt["dropped"] == 760
    assert sum(filt["dropped_by_reason"].values()) == filt["dropped"]


def test_pandalm_comparison_and_inputs(pandalm: dict[str, Any]) -> None:
    report = pandalm["report"]
    before, after = report["data"], report["compare"]
    by_metric = {r["metric"]: r for r in report["comparison"]}
    assert by_metric["rows"] == {
        "metric": "rows",
        "path": "overview.rows",
        "before": 760,
        "after": pandalm["kept"].height,
        "delta": pandalm["kept"].height - 760,
    }
    for row in report["comparison"]:
        assert row["before"] == ref_lookup(before, row["path"])
        assert row["after"] == ref_lookup(after, row["path"])
        if row["delta"] is not None:
            assert row["delta"] == pytest.approx(row["after"] - row["before"])
    # The filter dropped every flagged pair: nothing flagged is left after it.
    assert after["audit"]["items_flagged"] == 0 < before["audit"]["items_flagged"]
    assert report["options"] == {
        "tokenizer": "smollm2 (HuggingFaceTB/SmolLM2-135M-Instruct)",
        "max_length": 128,
        "token_rows": 20_000,
        "max_rows": 5000,
        "sample_rows": 200,
        "text_chars": 1500,
        "bootstrap": 1000,
        "seed": 0,
    }


def ref_lookup(figures: dict[str, Any], path: str) -> Any:
    value: Any = figures
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def test_hh_rlhf_every_figure(shared_data: Path, tokenizer: Tokenizer) -> None:
    imported = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    pairs = imported.tables["pairs"]
    _audited = audit(pairs, sample=0)
    issues, _, _ = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    report = compute_report(
        pairs,
        issues=issues,
        rejected=imported.rejected,
        tokenizer=tokenizer,
        max_length=512,
        token_rows=1000,  # below the row count: the sampled path, and a faster test
    )
    picked = set(np.random.default_rng(0).choice(pairs.height, 1000, replace=False).tolist())
    lengths = {
        p["pair_id"]: ref.trl_token_lengths(tokenizer.tokenizer, p)
        for i, p in enumerate(pairs.to_dicts())
        if i in picked
    }
    # More than 2,000 pairs: the scatter shows the seeded subset the report documents.
    rows = np.sort(np.random.default_rng(0).choice(pairs.height, 2000, replace=False))
    chosen, rejected = pairs["chosen"].to_list(), pairs["rejected"].to_list()
    points = [[len(chosen[i]), len(rejected[i])] for i in rows]
    expected = _expected(
        pairs,
        name="2,303 pairs from hh-rlhf",
        tok=tokenizer,
        token_lengths=lengths,
        max_length=512,
        issues=issues,
        rejected=imported.rejected,
        points=points,
        token_rows=1000,
    )
    data = dict(report["data"])
    _browsable(data, pairs, issues)
    ref.assert_matches(data, expected, "data")
    # No combined mislabel signal without votes or a model: the report says so.
    assert data["mislabel"]["available"] is False
    # MANIFEST: 2,312 records; the importer keeps 2,303 and rejects 9 (counted, not lost).
    assert report["data"]["overview"]["rows"] + report["data"]["filtering"]["dropped"] == 2312
    assert report["data"]["length_bias"]["overall"]["chosen_longer"] == 1021
    assert set(report["data"]) == {
        "contract",
        "name",
        "overview",
        "lengths",
        "length_bias",
        "mislabel",
        "audit",
        "pairs",
        "filter_preview",
        "filtering",
        "duplicates",
    }
