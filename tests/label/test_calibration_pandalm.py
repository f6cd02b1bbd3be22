"""PandaLM's two shipped verdict files treated as judges: agreement with the human majority
from `calibration`, checked against the same figures computed here straight from the JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from prefdata import ids
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.judge_eval import calibration
from prefdata.quality.pooling import judge_kappas, panel

JUDGE_FILES = {
    "gpt-3.5-turbo": ("gpt-3.5-turbo-testset-v1.json", "gpt_result"),
    "pandalm-7b": ("pandalm-7b-testset-v1.json", "pandalm_result"),
}


def _majority(votes: list[int]) -> int | None:
    counts = Counter(votes).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _kappa(x: list[str], y: list[str]) -> float:
    labels = ["a", "b", "tie"]
    n = len(x)
    p_o = sum(a == b for a, b in zip(x, y, strict=True)) / n
    p_e = sum((x.count(c) / n) * (y.count(c) / n) for c in labels)
    return (p_o - p_e) / (1 - p_e)


def independent(folder: Path) -> dict[str, dict[str, Any]]:
    """Per record (idx): human majority of annotator1..3 vs the judge file's verdict."""
    records = json.loads((folder / "testset-v1.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for name, (file, key) in JUDGE_FILES.items():
        verdicts = {r["idx"]: r[key] for r in json.loads((folder / file).read_text())}
        pairs: list[tuple[str, str]] = []
        for r in records:
            if not (isinstance(r["response1"], str) and isinstance(r["response2"], str)):
                continue
            human = _majority(
                [r[f"annotator{k}"] for k in (1, 2, 3) if r[f"annotator{k}"] is not None]
            )
            verdict = {"1": 1, "2": 2, "0": 0, "Tie": 0}.get(str(verdicts[r["idx"]]))
            if human is None or verdict is None:
                continue
            a, _ = ids.canonical_sides(r["response1"], r["response2"])
            side = {1: "a" if a == r["response1"] else "b", 2: "b" if a == r["response1"] else "a"}
            pairs.append((side.get(human, "tie"), side.get(verdict, "tie")))
        decided = [(h, j) for h, j in pairs if j != "tie"]
        out[name] = {
            "items": len(pairs),
            "accuracy_with_ties": sum(h == j for h, j in pairs) / len(pairs),
            "accuracy_without_ties": sum(h == j for h, j in decided) / len(decided),
            "judge_ties": len(pairs) - len(decided),
            "kappa": _kappa([h for h, _ in pairs], [j for _, j in pairs]),
        }
    return out


@pytest.fixture(scope="module")
def pandalm(shared_data: Path) -> pl.DataFrame:
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json", judges=[folder / f for f, _ in JUDGE_FILES.values()]
    )
    table = imported.tables["annotations"]
    # Records whose responses are not text have no canonical sides; leave them out here as the
    # independent computation does.
    records = json.loads((folder / "testset-v1.json").read_text())
    textual = [
        str(r["idx"])
        for r in records
        if isinstance(r["response1"], str) and isinstance(r["response2"], str)
    ]
    return table.filter(pl.col("record_id").is_in(textual))


def test_shipped_judges_against_the_human_majority(
    shared_data: Path, pandalm: pl.DataFrame
) -> None:
    humans = pandalm.filter(pl.col("annotator_kind") == "human")
    judges = pandalm.filter(pl.col("annotator_kind") == "llm")
    cal = calibration(judges, humans, item_column="record_id", min_human_agreement=0.75)
    expected = independent(shared_data / "pandalm_testset")
    for name, figures in expected.items():
        got = cal["judges"][name]
        assert got["items"] == figures["items"]
        assert got["judge_ties"] == figures["judge_ties"]
        for key in ("accuracy_with_ties", "accuracy_without_ties", "kappa"):
            assert got[key] == pytest.approx(figures[key], abs=1e-12), (name, key)
    # Recorded figures: of 997 text records, 4 have no human majority (e.g. 1-1-1) and
    # GPT-3.5 wrote 25 unparseable verdicts ("garbage"), which are error rows, not labels.
    assert expected["gpt-3.5-turbo"]["items"] == 969 and expected["pandalm-7b"]["items"] == 993
    assert cal["judges"]["gpt-3.5-turbo"]["accuracy_without_ties"] == pytest.approx(
        0.7379, abs=1e-4
    )
    assert cal["judges"]["pandalm-7b"]["kappa"] == pytest.approx(0.4390, abs=1e-4)
    assert cal["judges"]["gpt-3.5-turbo"]["passes"] == (
        expected["gpt-3.5-turbo"]["accuracy_without_ties"] >= 0.75
    )


def test_panel_of_the_two_shipped_judges(pandalm: pl.DataFrame) -> None:
    judges = pandalm.filter(pl.col("annotator_kind") == "llm").with_columns(
        pl.col("record_id").alias("item_id"), pl.lit(None, dtype=pl.String).alias("order")
    )
    kappas = judge_kappas(judges)
    pair = kappas["gpt-3.5-turbo | pandalm-7b"]
    g = dict(
        judges.filter(pl.col("annotator") == "gpt-3.5-turbo")
        .filter(pl.col("label").is_not_null())
        .select("item_id", "label")
        .iter_rows()
    )
    p = dict(
        judges.filter(pl.col("annotator") == "pandalm-7b")
        .filter(pl.col("label").is_not_null())
        .select("item_id", "label")
        .iter_rows()
    )
    shared = sorted(set(g) & set(p))
    assert pair["items"] == len(shared)
    assert pair["kappa"] == pytest.approx(_kappa([g[i] for i in shared], [p[i] for i in shared]))
    pooled, report = panel(judges, method="majority")
    both_agree = sum(g[i] == p[i] for i in shared)
    assert int((pooled["confidence"] == 1.0).sum()) == both_agree + (len(set(g) ^ set(p)))
    assert np.isclose(report["kappas"]["gpt-3.5-turbo | pandalm-7b"]["kappa"], pair["kappa"])
