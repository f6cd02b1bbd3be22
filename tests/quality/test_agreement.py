"""Agreement statistics against independent references: the `krippendorff` package,
statsmodels' Fleiss kappa, scikit-learn's Cohen kappa, the figures in MANIFEST.json, and
plain-Python computations, on PandaLM's real votes and on synthetic data with missing votes."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from prefdata.errors import InputError
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.agreement import agreement, krippendorff_alpha

TOL = 1e-9
PAIR_ORDER = ["b", "tie", "a"]  # b < tie < a: "how much better is a"
HUMANS = ["annotator1", "annotator2", "annotator3"]


def _manifest(shared: Path, name: str) -> dict[str, Any]:
    entries = json.loads((shared / "MANIFEST.json").read_text())
    return next(e for e in entries if e["name"] == name)


@pytest.fixture(scope="module")
def pandalm(shared_data: Path) -> pl.DataFrame:
    folder = shared_data / "pandalm_testset"
    result = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    return result.tables["annotations"]


@pytest.fixture(scope="module")
def human_records(pandalm: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    humans = pandalm.filter(pl.col("annotator_kind") == "human")
    result = agreement(humans, item_column="record_id", level="interval", label_order=PAIR_ORDER)
    return result.tables["per_item"], result.report


def _matrix(votes: pl.DataFrame, item: str, annotators: list[str], code: dict[str, float]) -> Any:
    """annotators x items reliability matrix (NaN = missing) built row by row, the slow way."""
    items = sorted(set(votes[item].to_list()))
    col = {x: i for i, x in enumerate(items)}
    m = np.full((len(annotators), len(items)), np.nan)
    for r in votes.iter_rows(named=True):
        m[annotators.index(r["annotator"]), col[r[item]]] = code[r["label"]]
    return m


def test_pandalm_records_match_references_and_manifest(
    shared_data: Path, pandalm: pl.DataFrame, human_records: tuple[pl.DataFrame, dict[str, Any]]
) -> None:
    per_item, report = human_records
    humans = pandalm.filter(pl.col("annotator_kind") == "human")
    code = {x: float(i) for i, x in enumerate(PAIR_ORDER)}
    m = _matrix(humans, "record_id", HUMANS, code)
    assert m.shape == (3, 999) and not np.isnan(m).any()
    assert report["items"] == 999 and report["votes"] == 2997

    for level in ("nominal", "ordinal", "interval"):
        ref = krippendorff.alpha(m, level_of_measurement=level)
        assert report["krippendorff_alpha"][level]["value"] == pytest.approx(ref, abs=TOL)

    table = np.stack([(m == c).sum(axis=0) for c in range(3)], axis=1)
    ref_fleiss = fleiss_kappa(table, method="fleiss")
    fleiss = report["fleiss_kappa"]
    assert fleiss["value"] == pytest.approx(ref_fleiss, abs=TOL)
    assert fleiss["items"] == 999 and fleiss["votes_per_item"] == 3

    kappas = {tuple(c["annotators"]): c for c in report["cohen_kappa"]}
    for i, j in itertools.combinations(range(3), 2):
        ref = cohen_kappa_score(m[i], m[j])
        got = kappas[(HUMANS[i], HUMANS[j])]
        assert got["value"] == pytest.approx(ref, abs=TOL)
        assert got["items"] == 999
        assert got["percent_agreement"] == pytest.approx(float((m[i] == m[j]).mean()), abs=TOL)

    # The figures PandaLM's README and our MANIFEST publish were computed on the votes as
    # shown (0 tie, 1 response1, 2 response2), not on canonical sides a / b; the kappas
    # depend on which categories are pooled, so map back through `order` first.
    notes = _manifest(shared_data, "pandalm_testset_v1")["notes"]
    assert "Fleiss kappa 0.864" in notes and "0.852/0.879/0.862" in notes
    shown = humans.with_columns(
        pl.when(pl.col("label") == "tie")
        .then(pl.lit("0"))
        .when((pl.col("label") == "a") == (pl.col("order") == "ab"))
        .then(pl.lit("1"))
        .otherwise(pl.lit("2"))
        .alias("label")
    )
    assert (shown["label"] == shown["raw"]).all()
    as_shown = agreement(shown, item_column="record_id", bootstrap=0).report
    assert round(as_shown["fleiss_kappa"]["value"], 3) == 0.864
    published = [0.852, 0.879, 0.862]
    assert [round(c["value"], 3) for c in as_shown["cohen_kappa"]] == published
    assert round(fleiss["value"], 3) == 0.864  # a / b labels: 0.8637

    # Percent agreement: mean share of agreeing vote pairs per record, by hand.
    pairs_agree = [
        np.mean([m[a, u] == m[b, u] for a, b in itertools.combinations(range(3), 2)])
        for u in range(m.shape[1])
    ]
    assert report["percent_agreement"]["value"] == pytest.approx(np.mean(pairs_agree), abs=TOL)
    unanimous = per_item.filter(pl.col("agreement") == 1.0).height
    assert unanimous == 879  # MANIFEST: "Unanimous 879/999"


def test_agreement_with_leave_one_out_consensus(
    pandalm: pl.DataFrame, human_records: tuple[pl.DataFrame, dict[str, Any]]
) -> None:
    _, report = human_records
    humans = pandalm.filter(pl.col("annotator_kind") == "human")
    by_record: dict[str, dict[str, str]] = {}
    for r in humans.iter_rows(named=True):
        by_record.setdefault(r["record_id"], {})[r["annotator"]] = r["label"]
    for entry in report["per_annotator"]:
        name = entry["annotator"]
        mine, theirs = [], []
        for votes in by_record.values():
            others = Counter(v for k, v in votes.items() if k != name).most_common()
            if len(others) > 1 and others[0][1] == others[1][1]:
                continue  # the other two split: no consensus to compare with
            mine.append(votes[name])
            theirs.append(others[0][0])
        assert entry["items_compared"] == len(mine)
        agree = np.mean([x == y for x, y in zip(mine, theirs, strict=True)])
        assert entry["agreement_with_consensus"]["value"] == pytest.approx(agree, abs=TOL)
        assert entry["kappa_with_consensus"]["value"] == pytest.approx(
            cohen_kappa_score(mine, theirs), abs=TOL
        )
        lo, hi = entry["agreement_with_consensus"]["ci"]
        assert lo < agree < hi


def test_pooled_items_with_repeat_votes_and_judges(pandalm: pl.DataFrame) -> None:
    """PandaLM pools records showing the same two responses: one annotator votes twice on
    one item. Alpha and Fleiss count every vote; Cohen uses cells whose repeats agree."""
    _result = agreement(pandalm, level="ordinal", label_order=PAIR_ORDER, bootstrap=0)
    per_item, report = _result.tables["per_item"], _result.report
    votes = pandalm.filter(pl.col("label").is_not_null() & pl.col("error").is_null())
    assert report["votes"] == votes.height
    assert report["skipped_error"] == pandalm.filter(pl.col("error").is_not_null()).height
    # Every vote is a value: repeat votes go to extra reliability rows ("annotator1#2").
    ranked = votes.with_columns(
        (
            pl.col("annotator")
            + "#"
            + pl.int_range(pl.len()).over("item_id", "annotator").cast(pl.String)
        ).alias("coder")
    )
    coders = sorted(set(ranked["coder"].to_list()))
    assert len(coders) > 5  # repeats exist
    m = _matrix(
        ranked.drop("annotator").rename({"coder": "annotator"}),
        "item_id",
        coders,
        {x: float(i) for i, x in enumerate(PAIR_ORDER)},
    )
    for level in ("nominal", "ordinal"):
        ref = krippendorff.alpha(m, level_of_measurement=level)
        assert report["krippendorff_alpha"][level]["value"] == pytest.approx(ref, abs=TOL)
    assert "interval" not in report["krippendorff_alpha"]

    # Fleiss on the items with the modal number of votes (5: 3 humans + 2 judges).
    counts = votes.group_by("item_id").agg(
        [(pl.col("label") == x).sum().alias(x) for x in PAIR_ORDER]
    )
    n = counts.select(pl.sum_horizontal(PAIR_ORDER)).to_series()
    modal = Counter(n.to_list()).most_common(1)[0][0]
    table = counts.filter(n == modal).select(PAIR_ORDER).to_numpy()
    assert report["fleiss_kappa"]["votes_per_item"] == modal == 5
    assert report["fleiss_kappa"]["items"] == table.shape[0]
    assert report["fleiss_kappa"]["value"] == pytest.approx(fleiss_kappa(table), abs=TOL)

    # Cohen's kappa: one label per (item, annotator) where that annotator's repeats agree.
    cells: dict[tuple[str, str], set[str]] = {}
    for r in votes.iter_rows(named=True):
        cells.setdefault((r["item_id"], r["annotator"]), set()).add(r["label"])
    assert report["cells_self_inconsistent"] == sum(len(v) > 1 for v in cells.values()) > 0
    for entry in report["cohen_kappa"]:
        a, b = entry["annotators"]
        shared = [
            (next(iter(cells[(i, a)])), next(iter(cells[(i, b)])))
            for (i, who) in cells
            if who == a and (i, b) in cells and len(cells[(i, a)]) == 1 == len(cells[(i, b)])
        ]
        assert entry["items"] == len(shared)
        ref = cohen_kappa_score([x for x, _ in shared], [y for _, y in shared])
        assert entry["value"] == pytest.approx(ref, abs=TOL)
    assert per_item.height == votes["item_id"].n_unique()
    assert per_item["n_votes"].sum() == votes.height


def _synthetic(seed: int, items: int = 400, annotators: int = 5) -> pl.DataFrame:
    """Ratings 1-5 from annotators of varying noise, about 30% of votes missing."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, items)
    rows = []
    for j in range(annotators):
        noise = rng.integers(-1, 2, items) * (rng.random(items) < 0.2 + 0.1 * j)
        labels = np.clip(truth + noise, 1, 5)
        for u in np.flatnonzero(rng.random(items) > 0.3):
            rows.append((f"item{u}", f"rater{j}", "human", str(labels[u])))
    return pl.DataFrame(
        rows, schema=["item_id", "annotator", "annotator_kind", "label"], orient="row"
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_missing_votes_match_references(seed: int) -> None:
    votes = _synthetic(seed)
    _result = agreement(votes, level="interval", bootstrap=200, seed=seed)
    per_item, report = _result.tables["per_item"], _result.report
    raters = sorted(set(votes["annotator"].to_list()))
    m = _matrix(votes, "item_id", raters, {str(v): float(v) for v in range(1, 6)})
    assert np.isnan(m).mean() == pytest.approx(0.3, abs=0.03)
    for level in ("nominal", "ordinal", "interval"):
        ref = krippendorff.alpha(m, level_of_measurement=level)
        assert report["krippendorff_alpha"][level]["value"] == pytest.approx(ref, abs=TOL)
        assert krippendorff_alpha(m, level) == pytest.approx(ref, abs=TOL)
    for entry in report["cohen_kappa"]:
        a, b = (raters.index(x) for x in entry["annotators"])
        both = ~np.isnan(m[a]) & ~np.isnan(m[b])
        assert entry["items"] == int(both.sum())
        assert entry["value"] == pytest.approx(cohen_kappa_score(m[a, both], m[b, both]), abs=TOL)
    # Fleiss on the items with the modal number of raters.
    n = (~np.isnan(m)).sum(axis=0)
    sizes = Counter(n[n >= 2].tolist())
    modal = max(sizes, key=lambda s: (sizes[s], s))
    table = np.stack([(m[:, n == modal] == v).sum(axis=0) for v in range(1, 6)], axis=1)
    assert report["fleiss_kappa"]["votes_per_item"] == modal
    assert report["fleiss_kappa"]["value"] == pytest.approx(fleiss_kappa(table), abs=TOL)
    assert report["items_single_vote"] == int((n == 1).sum())
    assert per_item["pairwise_agreement"].null_count() == int((n < 2).sum())
    for stat in [
        report["percent_agreement"],
        report["fleiss_kappa"],
        *report["krippendorff_alpha"].values(),
        *report["cohen_kappa"],
    ]:
        lo, hi = stat["ci"]
        assert lo < stat["value"] < hi


def test_bootstrap_interval_matches_a_naive_bootstrap(
    pandalm: pl.DataFrame, human_records: tuple[pl.DataFrame, dict[str, Any]]
) -> None:
    """The pattern-multinomial bootstrap gives the interval an index-resampling loop gives."""
    humans = pandalm.filter(pl.col("annotator_kind") == "human")
    report = agreement(humans, item_column="record_id", bootstrap=4000, seed=1).report
    m = _matrix(humans, "record_id", HUMANS, {x: float(i) for i, x in enumerate(PAIR_ORDER)})
    table = np.stack([(m == c).sum(axis=0) for c in range(3)], axis=1)
    rng = np.random.default_rng(123)
    naive = [fleiss_kappa(table[rng.integers(0, len(table), len(table))]) for _ in range(4000)]
    lo, hi = np.percentile(naive, [2.5, 97.5])
    got = report["fleiss_kappa"]["ci"]
    assert got[0] == pytest.approx(lo, abs=0.006) and got[1] == pytest.approx(hi, abs=0.006)
    # Same seed, same interval; another seed, another draw.
    again = agreement(humans, item_column="record_id", bootstrap=4000, seed=1).report
    assert again["fleiss_kappa"]["ci"] == got
    other = agreement(humans, item_column="record_id", bootstrap=4000, seed=2).report
    assert other["fleiss_kappa"]["ci"] != got


def test_raw_matrix_alpha_matches_package() -> None:
    # The package's documented example (Krippendorff 2011): 0.691 nominal, 0.811 interval.
    data = [
        [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
        [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
        [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
    ]
    assert round(krippendorff_alpha(data, "nominal"), 6) == 0.691358
    assert round(krippendorff_alpha(data, "interval"), 6) == 0.810845
    rng = np.random.default_rng(7)
    # Non-integer values take the general (sorting) path; value_domain adds unused values.
    m = rng.choice([0.5, 1.25, 2.0, 3.75], size=(4, 300))
    m[rng.random(m.shape) < 0.4] = np.nan
    domain = [0.0, 0.5, 1.25, 2.0, 3.75, 9.0]
    for level in ("nominal", "ordinal", "interval"):
        ref = krippendorff.alpha(m, level_of_measurement=level)
        assert krippendorff_alpha(m, level) == pytest.approx(ref, abs=TOL)
        ref = krippendorff.alpha(m, level_of_measurement=level, value_domain=domain)
        assert krippendorff_alpha(m, level, value_domain=domain) == pytest.approx(ref, abs=TOL)
    # Integer values: few (one bincount over count patterns), many (np.unique over the
    # pattern keys), and a range too wide for patterns (per-value counting).
    for high in (3, 10, 200):
        m = rng.integers(0, high, size=(5, 400)).astype(float)
        m[rng.random(m.shape) < 0.25] = np.nan
        for level in ("nominal", "ordinal", "interval"):
            ref = krippendorff.alpha(m, level_of_measurement=level)
            assert krippendorff_alpha(m, level) == pytest.approx(ref, abs=TOL)
    with pytest.raises(InputError, match="outside value_domain"):
        krippendorff_alpha(m, "interval", value_domain=[0.5, 2.0])
    assert np.isnan(krippendorff_alpha(np.full((3, 10), np.nan), "nominal"))
    assert np.isnan(krippendorff_alpha(np.ones((3, 10)), "nominal"))  # one value: undefined


def test_labels_ties_and_bad_input() -> None:
    rows = [
        ("i1", "x", "a"),
        ("i1", "y", "a"),
        ("i1", "z", "b"),
        ("i2", "x", "a"),
        ("i2", "y", "b"),  # 1-1: no majority
        ("i3", "x", "tie"),  # one vote: no pairs
        ("i4", "x", None),
        ("i4", "y", "b"),
        ("i4", "z", "b"),
    ]
    votes = pl.DataFrame(
        [(i, a, "human", lab) for i, a, lab in rows],
        schema=["item_id", "annotator", "annotator_kind", "label"],
        orient="row",
    )
    _result = agreement(votes, bootstrap=0)
    per_item, report = _result.tables["per_item"], _result.report
    got = {r["item_id"]: r for r in per_item.iter_rows(named=True)}
    assert got["i1"]["majority_label"] == "a" and got["i1"]["agreement"] == pytest.approx(2 / 3)
    assert got["i1"]["pairwise_agreement"] == pytest.approx(1 / 3)
    assert got["i2"]["majority_label"] is None and got["i2"]["agreement"] == 0.5
    assert got["i3"]["pairwise_agreement"] is None and got["i3"]["n_votes"] == 1
    assert got["i4"]["n_votes"] == 2 and got["i4"]["majority_label"] == "b"
    assert report["labels"] == ["a", "b", "tie"]
    assert report["skipped_no_label"] == 1 and report["items_no_majority"] == 1
    assert report["percent_agreement"]["value"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert report["percent_agreement"]["ci"] is None  # bootstrap=0

    with pytest.raises(InputError, match="label_order"):
        agreement(votes, level="ordinal")
    with pytest.raises(InputError, match=r"row 3.*'label'.*not in label_order"):
        agreement(votes, level="ordinal", label_order=["a", "tie"])
    with pytest.raises(InputError, match="level: must be one of"):
        agreement(votes, level="ratio")  # type: ignore[arg-type]
    # Votes that do not say who voted are people's (issue 22): annotator_kind defaults to human.
    no_kind = agreement(votes.drop("annotator_kind"), bootstrap=0).report
    assert {a["annotator_kind"] for a in no_kind["per_annotator"]} == {"human"}
