"""Confidence filtering: no row lost for any option combination (hypothesis), the documented
rule order, KTO-only routing, and real PandaLM consensus confidences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefdata.io.importers.common import pairs_table
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.filter import filter_pairs, kto_only
from prefdata.schema import validate

ISSUE_NAMES = ["truncated_response", "length_ratio", "tie", "inconsistent", "low_consensus"]
maybe_unit = st.none() | st.sampled_from([0.0, 0.25, 0.5, 0.7, 0.9, 1.0])


@st.composite
def cases(draw: st.DrawFn) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    n = draw(st.integers(0, 25))
    pairs = pairs_table(
        [
            {
                "prompt": [{"role": "user", "content": f"q{i}"}],
                "chosen": f"c{i}",
                "rejected": f"r{i}",
                "confidence": draw(maybe_unit),
                "margin": draw(st.none() | st.sampled_from([0.0, 0.5, 1.0, 2.0])),
                "agreement": draw(maybe_unit),
            }
            for i in range(n)
        ],
        source="s",
    )
    pair_ids = pairs["pair_id"].to_list()
    k = draw(st.integers(0, 30))
    issues = pl.DataFrame(
        {
            # some unmatched: an index past the last pair names no pair
            "item_id": [
                pair_ids[j] if j < n else f"unmatched{j}"
                for j in (draw(st.integers(0, n + 2)) for _ in range(k))
            ],
            "issue": [draw(st.sampled_from(ISSUE_NAMES)) for _ in range(k)],
            "score": [0.1] * k,
            "is_issue": [draw(st.booleans()) for _ in range(k)],
            "reason": ["r"] * k,
        },
        schema={
            "item_id": pl.String,
            "issue": pl.String,
            "score": pl.Float64,
            "is_issue": pl.Boolean,
            "reason": pl.String,
        },
    )
    options = {
        "min_confidence": draw(st.none() | st.sampled_from([0.5, 0.7])),
        "min_margin": draw(st.none() | st.sampled_from([0.5, 1.0])),
        "min_agreement": draw(st.none() | st.sampled_from([0.6])),
        "drop_issues": draw(
            st.sampled_from(
                [None, "all", ("truncated_response",), ("length_ratio", "truncated_response")]
            )
        ),
        "ties": draw(st.sampled_from(["drop", "kto"])),
        "unknown_confidence": draw(st.sampled_from(["keep", "drop"])),
        "unknown_margin": draw(st.sampled_from(["keep", "drop"])),
        "unknown_agreement": draw(st.sampled_from(["keep", "drop"])),
    }
    return pairs, issues, options


@settings(max_examples=200, deadline=None)
@given(cases(), st.booleans())
def test_no_row_is_lost_and_kept_rows_pass_every_rule(
    case: tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]], with_issues: bool
) -> None:
    pairs, issues, opts = case
    if not with_issues:
        opts = {**opts, "drop_issues": None}
    kept, rejected, report = _kept_rejected_report(
        pairs, issues=issues if with_issues else None, **opts
    )
    ids_in = pairs["pair_id"].to_list()
    kept_ids, rej_ids = kept["pair_id"].to_list(), rejected["pair_id"].to_list()
    assert len(kept_ids) + len(rej_ids) == len(ids_in)
    assert not set(kept_ids) & set(rej_ids)
    assert sorted(kept_ids + rej_ids) == sorted(ids_in)
    assert kept.columns == pairs.columns
    assert kept_ids == [i for i in ids_in if i in set(kept_ids)]  # input order kept
    assert rejected["reason"].null_count() == 0
    assert report["kept"] + report["rejected"] == report["rows_in"] == pairs.height
    assert sum(v for k, v in report.items() if k.startswith("dropped_")) == rejected.height

    flagged: dict[str, set[str]] = {}
    if with_issues:
        for r in issues.filter(pl.col("is_issue")).iter_rows(named=True):
            flagged.setdefault(r["item_id"], set()).add(r["issue"])
    drop = opts["drop_issues"]
    names = set(ISSUE_NAMES) - {"tie", "inconsistent"} if drop == "all" else set(drop or ())
    for row in kept.iter_rows(named=True):
        f = flagged.get(row["pair_id"], set())
        assert "tie" not in f and "inconsistent" not in f and not (f & names)
        assert row["margin"] != 0.0
        for col in ("confidence", "margin", "agreement"):
            value, low = row[col], opts[f"min_{col}"]
            if value is None:
                assert opts[f"unknown_{col}"] == "keep"
            elif low is not None:
                assert value >= low
    for row in rejected.iter_rows(named=True):
        assert row["reasons"].split("; ")[0] == row["reason"] or row["reason"] == "kto_only"
        if row["reason"] == "kto_only":
            assert opts["ties"] == "kto" and row["reasons"] == "inconsistent"
            assert row["confidence"] >= 0.8


def _kept_rejected_report(
    pairs: pl.DataFrame, **options: Any
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    result = filter_pairs(pairs, **options)
    assert result.rejected is not None
    return result.tables["pairs"], result.rejected, result.report


def _pairs(confidence: list[float | None], margin: list[float | None]) -> pl.DataFrame:
    return pairs_table(
        [
            {
                "prompt": f"q{i}",
                "chosen": f"good {i}",
                "rejected": f"bad {i}",
                "confidence": c,
                "margin": m,
            }
            for i, (c, m) in enumerate(zip(confidence, margin, strict=True))
        ],
        source="t",
    )


def _issues(rows: list[tuple[str, str, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [r[0] for r in rows],
            "issue": [r[1] for r in rows],
            "score": 0.0,
            "is_issue": [r[2] for r in rows],
            "reason": "x",
        },
    )


def test_rule_order_reasons_and_report() -> None:
    pairs = _pairs([0.9, 0.6, None, 0.95, 0.9, 0.3], [1.0, 1.0, 1.0, 0.0, None, 2.0])
    ids = pairs["pair_id"].to_list()
    issues = _issues(
        [
            (ids[0], "truncated_response", True),
            (ids[1], "truncated_response", False),
            (ids[4], "inconsistent", True),
            (ids[5], "length_ratio", True),
            ("elsewhere", "length_ratio", True),
        ]
    )
    kept, rejected, report = _kept_rejected_report(
        pairs,
        issues=issues,
        min_confidence=0.7,
        drop_issues=["truncated_response", "length_ratio"],
    )
    reasons = dict(zip(rejected["pair_id"].to_list(), rejected["reason"].to_list(), strict=True))
    assert reasons == {
        ids[0]: "issue_truncated_response",
        ids[1]: "low_confidence",
        ids[3]: "tie",
        ids[4]: "inconsistent",
        ids[5]: "issue_length_ratio",
    }
    assert rejected.filter(pl.col("pair_id") == ids[5])["reasons"][0] == (
        "issue_length_ratio; low_confidence"
    )
    assert kept["pair_id"].to_list() == [ids[2]]  # unknown confidence kept by default
    assert report["dropped_tie"] == 1 and report["failing_low_confidence"] == 2
    assert report["issues_unmatched"] == 1

    _, single, _ = _kept_rejected_report(pairs, issues=issues, drop_issues="length_ratio")
    assert single.filter(pl.col("reason") == "issue_length_ratio")["pair_id"].to_list() == [ids[5]]
    _, rejected2, _ = _kept_rejected_report(pairs, unknown_confidence="drop")
    assert set(rejected2["reason"].to_list()) == {"tie", "unknown_confidence"}
    with pytest.raises(ValueError, match="needs an issues table"):
        filter_pairs(pairs, drop_issues="all")


def test_inconsistent_pairs_become_kto_only_when_confident() -> None:
    pairs = _pairs([0.9, 0.6, 0.5, 0.85], [1.0, 1.0, 0.0, 1.0])
    ids = pairs["pair_id"].to_list()
    issues = _issues(
        [
            (ids[0], "order_inconsistent", True),
            (ids[1], "inconsistent", True),
            (ids[2], "inconsistent", True),
            (ids[3], "inconsistent", True),
            (ids[3], "truncated_response", True),
        ]
    )
    _, rejected, report = _kept_rejected_report(pairs, issues=issues, ties="kto", drop_issues="all")
    reasons = dict(zip(rejected["pair_id"].to_list(), rejected["reason"].to_list(), strict=True))
    # confident and only inconsistent -> KTO; not confident -> dropped; a tie (margin 0)
    # never becomes KTO; another failing rule wins over the KTO route
    assert reasons == {
        ids[0]: "kto_only",
        ids[1]: "inconsistent",
        ids[2]: "tie",
        ids[3]: "inconsistent",
    }
    kto, kto_report = kto_only(rejected)
    validate(kto, "kto")
    assert kto_report == {"kto_rows": 1}
    assert kto.row(0, named=True)["completion"] == "good 0"
    assert kto["label"].to_list() == [True] and kto["confidence"].to_list() == [0.9]
    assert report["dropped_kto_only"] == 1

    _, dropped, _ = _kept_rejected_report(pairs, issues=issues, ties="drop")
    assert "kto_only" not in dropped["reason"].to_list()


def _raw_pandalm_confidences(path: Path) -> list[float]:
    """Pooled human votes per (prompt, two responses) straight from the raw file, and the
    Beta(1, 1) posterior P(share preferring the plurality winner > 1/2) of each item with a
    winner that is not a tie (the confidence rule of prefdata's PandaLM import)."""
    from scipy.stats import beta

    items: dict[tuple[str, frozenset[str]], dict[str, int]] = {}
    for rec in json.loads(path.read_text()):
        r1, r2 = rec["response1"], rec["response2"]
        if not (isinstance(r1, str) and isinstance(r2, str)) or not r1.strip() or not r2.strip():
            continue
        extra = rec.get("input") or ""
        prompt = rec["instruction"] + ("\n\n" + extra if extra.strip() else "")
        votes = items.setdefault((prompt, frozenset((r1, r2))), {})
        for k in ("annotator1", "annotator2", "annotator3"):
            side = {0: "tie", 1: r1, 2: r2}[rec[k]]
            votes[side] = votes.get(side, 0) + 1
    out = []
    for votes in items.values():
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])
        if ranked[0][0] == "tie" or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
            continue
        losses = sum(n for side, n in votes.items() if side not in ("tie", ranked[0][0]))
        out.append(float(beta.sf(0.5, ranked[0][1] + 1, losses + 1)))
    return out


def test_real_pandalm_confidence_threshold(shared_data: Path) -> None:
    path = shared_data / "pandalm_testset" / "testset-v1.json"
    pairs = import_pandalm(path).tables["pairs"]
    raw = _raw_pandalm_confidences(path)
    assert len(raw) == pairs.height == 760
    for threshold, expected_kept in ((0.9, 675), (0.7, 702)):
        kept, rejected, report = _kept_rejected_report(pairs, min_confidence=threshold)
        assert kept.height == sum(c >= threshold for c in raw) == expected_kept
        assert kept.height + rejected.height == 760
        assert report["dropped_low_confidence"] == rejected.height
        assert kept["confidence"].min() >= threshold
