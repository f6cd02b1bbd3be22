"""Audit signals from annotations: flips injected into one PandaLM annotator are found,
judges are compared with the human consensus, low posteriors are flagged."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from prefdata.errors import InputError
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.consensus import consensus
from prefdata.quality.disagreement import annotator_disagreement, judge_vs_human, low_consensus
from prefdata.schema import validate


@pytest.fixture(scope="module")
def pandalm(shared_data: Path) -> pl.DataFrame:
    folder = shared_data / "pandalm_testset"
    result = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    return result.tables["annotations"]


def _flip(humans: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """20% of annotator1's non-tie votes turned a <-> b; returns the table and the flipped rows."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(
        ((humans["annotator"] == "annotator1") & (humans["label"] != "tie")).to_numpy()
    )
    flipped = rng.choice(candidates, size=round(0.2 * len(candidates)), replace=False)
    mask = np.zeros(humans.height, dtype=bool)
    mask[flipped] = True
    out = humans.with_columns(
        pl.when(pl.Series(mask))
        .then(pl.col("label").replace({"a": "b", "b": "a"}))
        .otherwise(pl.col("label"))
        .alias("label")
    )
    return out, mask


def _prf(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = int((flag & truth).sum())
    precision = tp / max(int(flag.sum()), 1)
    recall = tp / int(truth.sum())
    return precision, recall, 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flips_in_one_annotator_are_found(pandalm: pl.DataFrame, seed: int) -> None:
    humans = pandalm.filter(pl.col("annotator_kind") == "human")
    flipped, truth = _flip(humans, seed)
    assert truth.sum() == 180  # 20% of annotator1's 902 non-tie votes
    issues, report = annotator_disagreement(flipped)
    validate(issues.select("item_id", "issue", "score", "is_issue", "reason"), "issues")
    # Every vote here has other annotators on its item: every vote is checked, once.
    assert report["votes_checked"] == issues.height == humans.height
    assert sorted(issues["row"].to_list()) == list(range(1, humans.height + 1))
    flag = np.zeros(humans.height, dtype=bool)
    score = np.ones(humans.height)
    flag[issues["row"].to_numpy() - 1] = issues["is_issue"].to_numpy()
    score[issues["row"].to_numpy() - 1] = issues["score"].to_numpy()
    precision, recall, f1 = _prf(flag, truth)
    auroc = roc_auc_score(truth, -score)

    # Baseline: flag a vote when the other annotators' majority on the item is against it.
    # Baseline: the share of the OTHER annotators' votes on the item that match this vote,
    # flagged below one half (the others' majority is against it).
    base_share = _others_share(flipped)
    b_precision, b_recall, b_f1 = _prf(base_share < 0.5, truth)
    base_auroc = roc_auc_score(truth, -base_share)
    # Votes already in the minority before any flip look exactly like flips to any rule that
    # sees only labels; they bound precision.
    natural = _others_share(humans) < 0.5
    print(
        f"\nseed {seed}: {int(truth.sum())} flipped votes of {humans.height}; flagged "
        f"{int(flag.sum())}: precision {precision:.3f} recall {recall:.3f} F1 {f1:.3f} "
        f"AUROC {auroc:.3f} | others'-share baseline: precision {b_precision:.3f} "
        f"recall {b_recall:.3f} F1 {b_f1:.3f} AUROC {base_auroc:.3f} | votes in the "
        f"minority before flipping: {int(natural.sum())}"
    )
    assert recall >= 0.85
    assert precision >= 0.55
    # Weighing votes by the annotators' estimated reliability ranks the flips better than
    # counting the others' votes, and flags no worse at the 0.5 threshold.
    assert auroc >= 0.97 and auroc > base_auroc + 0.01
    assert f1 >= 0.68 and f1 >= b_f1 - 0.01
    # The audit also points at the annotator: annotator1's flagged share stands out.
    shares = {k: v["flagged_share"] for k, v in report["per_annotator"].items()}
    assert shares["annotator1"] > 2 * max(shares["annotator2"], shares["annotator3"])


def _others_share(votes: pl.DataFrame) -> np.ndarray:
    """Per vote: the share of the OTHER annotators' votes on its item with the same label."""
    rows = votes.select("item_id", "annotator", "label").rows()
    by_item: dict[str, list[tuple[str, str]]] = {}
    for item, who, label in rows:
        by_item.setdefault(item, []).append((who, label))
    out = []
    for item, who, label in rows:
        others = [x for a, x in by_item[item] if a != who]
        out.append(sum(x == label for x in others) / len(others))
    return np.array(out)


def test_judge_vs_human_on_pandalm(pandalm: pl.DataFrame) -> None:
    issues, report = judge_vs_human(pandalm)
    validate(issues.select("item_id", "issue", "score", "is_issue", "reason"), "issues")
    # By hand: human majority per item, then each judge vote against it.
    votes = pandalm.filter(pl.col("label").is_not_null())
    human: dict[str, Counter[str]] = {}
    judges: dict[str, list[tuple[str, str]]] = {}
    for r in votes.iter_rows(named=True):
        if r["annotator_kind"] == "human":
            human.setdefault(r["item_id"], Counter())[r["label"]] += 1
        else:
            judges.setdefault(r["item_id"], []).append((r["annotator"], r["label"]))
    assert report["items_compared"] == issues.height == len(judges.keys() & human.keys())
    scores = dict(issues.select("item_id", "score").iter_rows())
    hits: dict[str, list[bool]] = {}
    for item, verdicts in judges.items():
        n = sum(human[item].values())
        # Share of (human vote, judge vote) pairs that agree.
        expected = np.mean([human[item][lab] / n for _, lab in verdicts])
        assert scores[item] == pytest.approx(expected, abs=1e-12)
        (top, c1), *rest = human[item].most_common()
        if rest and rest[0][1] == c1:
            continue
        for name, lab in verdicts:
            hits.setdefault(name, []).append(lab == top)
    for name, hit in hits.items():
        got = report["per_judge"][name]
        assert got["items_with_human_label"] == len(hit)
        assert got["agreement"] == pytest.approx(np.mean(hit), abs=1e-12)
    flagged = issues.filter(pl.col("is_issue"))
    assert flagged.height == report["flagged"] == int((issues["score"] < 0.5).sum()) > 100
    print(
        "\njudges vs human majority: "
        + ", ".join(
            f"{k} agreement {v['agreement']:.3f} kappa {v['kappa']:.3f}"
            for k, v in report["per_judge"].items()
        )
        + f"; {flagged.height} of {issues.height} items flagged"
    )
    assert report["per_judge"]["gpt-3.5-turbo"]["agreement"] > 0.6


def test_low_consensus_threshold_and_ties() -> None:
    rows = [
        ("i1", "x", "a"),
        ("i1", "y", "a"),
        ("i1", "z", "a"),
        ("i2", "x", "a"),
        ("i2", "y", "a"),
        ("i2", "z", "b"),
        ("i3", "x", "a"),
        ("i3", "y", "b"),
    ]
    votes = pl.DataFrame(
        [(i, a, "human", lab) for i, a, lab in rows],
        schema=["item_id", "annotator", "annotator_kind", "label"],
        orient="row",
    )
    post, _ = consensus(votes)
    issues, report = low_consensus(post, threshold=0.7)
    got = {r["item_id"]: r for r in issues.iter_rows(named=True)}
    assert got["i1"]["score"] == 1.0 and not got["i1"]["is_issue"]
    assert got["i2"]["score"] == pytest.approx(2 / 3) and got["i2"]["is_issue"]
    assert "0.667" in got["i2"]["reason"]
    assert got["i3"]["is_issue"] and "no consensus" in got["i3"]["reason"]
    assert report == {
        "issue": "low_consensus",
        "threshold": 0.7,
        "items": 3,
        "flagged": 2,
        "no_consensus": 1,
    }
    with pytest.raises(InputError, match="threshold"):
        low_consensus(post, threshold=1.5)
    # A vote on an item nobody else labelled cannot be checked: counted, not a row.
    single = pl.concat([votes, votes.head(1).with_columns(pl.lit("i9").alias("item_id"))])
    issues, report = annotator_disagreement(single, method="majority")
    assert report["votes_unchecked_no_other_annotator"] == 1
    assert issues.height == single.height - 1
    # z's lone "b" on i2 (share 1/3); the 1-1 split on i3 gives each vote 0.5: not below 0.5.
    assert issues.filter(pl.col("is_issue"))["row"].to_list() == [6]
