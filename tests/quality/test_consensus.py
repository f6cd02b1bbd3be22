"""Majority vote and Dawid-Skene: simulated annotators with known confusion matrices, a
plain-Python EM as reference, PandaLM's real votes, and re-orienting pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from prefdata import ids
from prefdata.errors import InputError
from prefdata.io.importers.common import Imported
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.consensus import consensus, pairs_from_consensus
from prefdata.schema import validate
from tests.reference_em import dawid_skene_em, posterior

LABELS = ["a", "b", "tie"]


def _confusion(accuracy: float) -> np.ndarray:
    k = len(LABELS)
    c = np.full((k, k), (1 - accuracy) / (k - 1))
    np.fill_diagonal(c, accuracy)
    return c


# Five annotators: good, fair, weak, a spammer who answers at random, and one biased
# towards "tie". Each labels a random 60% of the items.
TRUE_CONFUSION = [
    _confusion(0.9),
    _confusion(0.8),
    _confusion(0.65),
    np.full((3, 3), 1 / 3),
    np.array([[0.7, 0.05, 0.25], [0.05, 0.7, 0.25], [0.1, 0.1, 0.8]]),
]
PRIORS = np.array([0.45, 0.4, 0.15])


@pytest.fixture(scope="module")
def simulated() -> tuple[pl.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(2024)
    n = 2000
    truth = rng.choice(3, size=n, p=PRIORS)
    rows = []
    for j, conf in enumerate(TRUE_CONFUSION):
        for u in np.flatnonzero(rng.random(n) < 0.6):
            rows.append((f"item{u}", f"ann{j}", "human", LABELS[rng.choice(3, p=conf[truth[u]])]))
    votes = pl.DataFrame(
        rows, schema=["item_id", "annotator", "annotator_kind", "label"], orient="row"
    )
    return votes, {f"item{u}": LABELS[t] for u, t in enumerate(truth)}


def test_dawid_skene_recovers_confusion_and_beats_majority(
    simulated: tuple[pl.DataFrame, dict[str, str]],
) -> None:
    votes, truth = simulated
    ds, report = consensus(votes, method="dawid-skene", labels=LABELS)
    assert report["converged"] and report["iterations"] < 500
    errors = []
    for j, conf in enumerate(TRUE_CONFUSION):
        est = np.array(report["annotators"][f"ann{j}"]["confusion"])
        assert est.shape == (3, 3) and np.allclose(est.sum(axis=1), 1)
        errors.append(np.abs(est - conf))
        # Accuracy = prior-weighted diagonal: the spammer is found (1/3), the good one too.
        assert report["annotators"][f"ann{j}"]["accuracy"] == pytest.approx(
            PRIORS @ np.diag(conf), abs=0.04
        )
    err = np.stack(errors)
    # About 1,200 items per annotator, ~180 of them true "tie": sampling error alone is a
    # few points per cell.
    assert err.mean() < 0.03 and err.max() < 0.12
    priors = np.array([report["class_priors"][x] for x in LABELS])
    assert np.abs(priors - PRIORS).max() < 0.03

    majority, _ = consensus(votes, method="majority", labels=LABELS)
    rng = np.random.default_rng(0)
    # Majority gets a fair chance: its ties broken at random among the top labels.
    shares = majority.select([f"p_{x}" for x in LABELS]).to_numpy()
    top = shares == shares.max(axis=1, keepdims=True)
    pick = np.array([rng.choice(np.flatnonzero(row)) for row in top])
    gold = np.array([LABELS.index(truth[i]) for i in majority["item_id"]])
    majority_acc = float((pick == gold).mean())
    ds_pred = ds["label"].replace_strict(LABELS, [0, 1, 2]).to_numpy()
    ds_acc = float((ds_pred == np.array([LABELS.index(truth[i]) for i in ds["item_id"]])).mean())
    print(f"\naccuracy on simulated annotators: majority {majority_acc:.3f}, DS {ds_acc:.3f}")
    assert ds_acc > majority_acc + 0.05
    assert ds["label"].null_count() == 0
    assert majority["label"].null_count() > 0  # ties exist and are not guessed


def _reference_em(
    votes: list[tuple[str, str, str]], labels: list[str], iterations: int, smoothing: float
) -> dict[str, list[float]]:
    """Posteriors after `iterations` rounds of the plain-Python EM, then one more E-step
    (as consensus reports them)."""
    by_item: dict[str, list[tuple[str, int]]] = {i: [] for i in sorted({i for i, _, _ in votes})}
    for i, a, lab in votes:
        by_item[i].append((a, labels.index(lab)))
    _, prior, conf = dawid_skene_em(by_item, len(labels), smoothing=smoothing, max_iter=iterations)
    return {i: posterior(item_votes, prior, conf) for i, item_votes in by_item.items()}


def test_dawid_skene_equals_plain_python_em(
    simulated: tuple[pl.DataFrame, dict[str, str]],
) -> None:
    votes, _ = simulated
    # A subset, with one annotator voting twice on some items.
    small = votes.filter(pl.col("item_id").str.slice(4).cast(pl.Int64) < 150)
    small = pl.concat([small, small.filter(pl.col("annotator") == "ann1").head(20)])
    for smoothing in (1.0, 0.3):
        # tol=0: runs exactly max_iter iterations, like the reference.
        ds, report = consensus(
            small, method="dawid-skene", labels=LABELS, max_iter=7, tol=0.0, smoothing=smoothing
        )
        assert report["iterations"] == 7 and not report["converged"]
        ref = _reference_em(
            [tuple(r) for r in small.select("item_id", "annotator", "label").iter_rows()],
            LABELS,
            7,
            smoothing,
        )
        got = {r["item_id"]: [r[f"p_{x}"] for x in LABELS] for r in ds.iter_rows(named=True)}
        assert got.keys() == ref.keys()
        for item, p in ref.items():
            assert got[item] == pytest.approx(p, abs=1e-9)


@pytest.fixture(scope="module")
def pandalm(shared_data: Path) -> Imported:
    return import_pandalm(shared_data / "pandalm_testset" / "testset-v1.json")


def test_pandalm_dawid_skene_agrees_with_majority(pandalm: Imported) -> None:
    votes = pandalm.tables["annotations"]
    majority, m_report = consensus(votes, method="majority")
    ds, d_report = consensus(votes, method="dawid-skene")
    assert majority.height == ds.height == pandalm.report["items"] == 863
    joined = majority.join(ds, on="item_id", suffix="_ds")
    same = (joined["label"] == joined["label_ds"]).fill_null(False).mean()
    print(
        f"\nPandaLM: DS and majority agree on {same:.3%} of {joined.height} items; "
        f"DS took {d_report['iterations']} iterations"
    )
    assert same > 0.95
    assert d_report["converged"]
    # Majority posteriors are the vote shares; the label is the strict plurality.
    counts = votes.group_by("item_id").agg(
        pl.len().alias("n"), *[(pl.col("label") == x).sum().alias(x) for x in LABELS]
    )
    check = majority.join(counts, on="item_id")
    for x in LABELS:
        assert np.allclose(check[f"p_{x}"], check[x] / check["n"])
    assert (check["n_votes"] == check["n"]).all()
    # The importer's tie-majority items (79) are the items whose consensus is "tie".
    assert m_report["label_counts"]["tie"] == pandalm.report["items_tie_majority"] == 79
    assert m_report["items_no_consensus"] == pandalm.report["items_no_majority"] == 0
    # Each human annotator agrees with the crowd on ~96% (PandaLM was filtered for that).
    for name in ("annotator1", "annotator2", "annotator3"):
        assert 0.9 < d_report["annotators"][name]["accuracy"] < 1.0


def test_pairs_from_consensus_orients_and_sets_aside(pandalm: Imported) -> None:
    votes = pandalm.tables["annotations"]
    pairs = pandalm.tables["pairs"]
    ds, _ = consensus(votes, method="dawid-skene")
    kept, aside, report = pairs_from_consensus(pairs, ds, method="dawid-skene")
    # The importer already picked the plurality side: nothing moves.
    assert report == {
        "pairs_in": 760,
        "pairs_out": 760,
        "swapped": 0,
        "set_aside_tie": 0,
        "set_aside_no_consensus": 0,
        "set_aside_no_votes": 0,
        "set_aside_one_order_only": 0,
    }
    assert (kept["chosen"] == pairs["chosen"]).all()

    # Invert every vote: every pair must swap, with the confidence of the new winner.
    flipped = votes.with_columns(pl.col("label").replace({"a": "b", "b": "a"}))
    post, _ = consensus(flipped, method="dawid-skene")
    # Add a pair nobody voted on, and turn one item's consensus into a tie and one into a split.
    extra = pairs.head(1).with_columns(
        pl.lit("no-votes-pair").alias("pair_id"), pl.lit("x").alias("chosen")
    )
    some = pairs["pair_id"].to_list()
    post = post.with_columns(
        pl.when(pl.col("item_id") == some[1])
        .then(pl.lit("tie"))
        .when(pl.col("item_id") == some[2])
        .then(pl.lit(None))
        .otherwise(pl.col("label"))
        .alias("label")
    )
    kept, aside, report = pairs_from_consensus(pl.concat([pairs, extra]), post)
    validate(kept, "pairs")
    assert report["pairs_in"] == 761 == report["pairs_out"] + aside.height
    assert report["swapped"] == 758 == kept.height
    assert dict(aside.select("pair_id", "reason").iter_rows()) == {
        some[1]: "tie",
        some[2]: "no_consensus",
        "no-votes-pair": "no_votes",
    }
    before = {r["pair_id"]: r for r in pairs.iter_rows(named=True)}
    p = {r["item_id"]: r for r in post.iter_rows(named=True)}
    for row in kept.iter_rows(named=True):
        old = before[row["pair_id"]]
        assert (row["chosen"], row["rejected"]) == (old["rejected"], old["chosen"])
        a, _ = ids.canonical_sides(row["chosen"], row["rejected"])
        side = "a" if row["chosen"] == a else "b"
        assert p[row["pair_id"]]["label"] == side
        assert row["confidence"] == p[row["pair_id"]][f"p_{side}"]
        assert row["n_votes"] == p[row["pair_id"]]["n_votes"]
        prov: dict[str, Any] = json.loads(row["provenance"])
        assert prov["consensus"]["swapped"] is True and "records" in prov


def test_bad_input() -> None:
    votes = pl.DataFrame(
        {"item_id": ["i"], "annotator": ["x"], "annotator_kind": ["human"], "label": ["c"]}
    )
    with pytest.raises(InputError, match="method"):
        consensus(votes, method="em")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not in label_order"):
        consensus(votes, labels=LABELS)
    post, _ = consensus(votes)
    with pytest.raises(InputError, match="other than a / b / tie"):
        pairs_from_consensus(pl.DataFrame(), post)


def _vote(
    item: str,
    judge: str,
    order: str,
    label: str | None,
    p_a: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "item_id": item,
        "annotator": judge,
        "annotator_kind": "llm",
        "order": order,
        "label": label,
        "p_a": p_a,
        "error": error,
    }


def test_mean_pools_each_judges_orders_then_the_judges(tmp_path: Path) -> None:
    votes = pl.DataFrame(
        [
            # x: judge 1 says 0.8 and 0.6 (mean 0.7), judge 2 says 0.3 and 0.5 (mean 0.4).
            _vote("x", "j1", "ab", "a", 0.8),
            _vote("x", "j1", "ba", "a", 0.6),
            _vote("x", "j2", "ab", "b", 0.3),
            _vote("x", "j2", "ba", "tie", 0.5),
            # y: judge 1 follows the position (a first, then b) yet leans a: mean 0.55; judge 2's
            # first vote failed, so its one order counts with the missing one as 0.5 (kept on
            # request; by default such a vote is set aside, below).
            _vote("y", "j1", "ab", "a", 0.9),
            _vote("y", "j1", "ba", "b", 0.2),
            _vote("y", "j2", "ab", None, None, "timeout"),
            _vote("y", "j2", "ba", "b", 0.35),
            # z: both judges average to exactly 0.5.
            _vote("z", "j1", "ab", "tie", 0.5),
            _vote("z", "j1", "ba", "tie", 0.5),
            _vote("z", "j2", "ab", "a", 0.6),
            _vote("z", "j2", "ba", "b", 0.4),
        ]
    )
    post, report = consensus(votes, method="mean", one_order="keep")
    got = {r["item_id"]: r for r in post.iter_rows(named=True)}
    # By hand: P(a) = mean over judges of (mean over that judge's valid orders).
    expect = {
        "x": ("a", (0.7 + 0.4) / 2, 4, 2 / 4),  # votes a, a, b, tie; 2 name a
        "y": ("b", (0.55 + (0.35 + 0.5) / 2) / 2, 3, 2 / 3),  # the failed vote is no vote
        "z": ("tie", 0.5, 4, 2 / 4),
    }
    assert set(got) == set(expect)
    for item, (label, p_a, n, agreement) in expect.items():
        row = got[item]
        assert row["label"] == label, item
        assert row["p_a"] == pytest.approx(p_a) and row["p_b"] == pytest.approx(1 - p_a)
        assert row["confidence"] == pytest.approx(max(p_a, 1 - p_a)) and row["p_tie"] == 0.0
        assert (row["n_votes"], row["agreement"]) == (n, pytest.approx(agreement))
    assert report["method"] == "mean" and report["items"] == 3
    assert report["label_counts"] == {"a": 1, "b": 1, "tie": 1}
    # By default judge 2's lone order on y is set aside: y is judge 1's alone.
    default, default_report = consensus(votes, method="mean")
    y = default.filter(pl.col("item_id") == "y").row(0, named=True)
    assert (y["label"], y["n_votes"]) == ("a", 2) and y["p_a"] == pytest.approx(0.55)
    assert default_report["one_order_only_votes"] == 1
    # Labels alone lose y's lean: judge 1's verdict on y is a position tie.
    majority, _ = consensus(votes.filter(pl.col("annotator") == "j1"), method="majority")
    assert dict(majority.select("item_id", "label").iter_rows())["y"] is None

    with pytest.raises(InputError, match="method mean"):
        consensus(votes, method="mean", item_column="annotator")

    # The CLI offers it too, with the same posteriors.
    from typer.testing import CliRunner

    from prefdata.cli import app

    votes.write_parquet(tmp_path / "votes.parquet")
    out = tmp_path / "post.parquet"
    result = CliRunner().invoke(
        app, ["consensus", str(tmp_path / "votes.parquet"), "--method", "mean", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).equals(default)
