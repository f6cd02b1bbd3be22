"""The combined mislabel audit through prefdata.quality.audit: output columns, which signals
each pair had, the calibrated noise rate on real data with injected flips (against the
true count), the flag cap, and the rate read back for training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefdata import ids
from prefdata.errors import InputError
from prefdata.io.importers.math import import_gsm8k, import_gsm8k_solutions
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.audit import audit
from prefdata.quality.mislabel import label_noise_rate
from prefdata.schema import validate


def _flip(pairs: pl.DataFrame, rate: float, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = np.zeros(pairs.height, dtype=bool)
    flip[rng.choice(pairs.height, round(rate * pairs.height), replace=False)] = True
    m = pl.Series(flip)
    return (
        pairs.with_columns(
            chosen=pl.when(m).then(pl.col("rejected")).otherwise(pl.col("chosen")),
            rejected=pl.when(m).then(pl.col("chosen")).otherwise(pl.col("rejected")),
        ),
        flip,
    )


def _aligned(pairs: pl.DataFrame, issues: pl.DataFrame) -> pl.DataFrame:
    rows = issues.filter(pl.col("issue") == "mislabeled")
    return pairs.select("pair_id").join(
        rows, left_on="pair_id", right_on="item_id", how="left", maintain_order="left"
    )


@pytest.fixture(scope="module")
def pandalm(shared_data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    pairs = imported.tables["pairs"].filter(pl.col("agreement") == 1.0)  # unanimous humans
    return pairs, imported.tables["annotations"]


@pytest.mark.parametrize(("rate", "seed"), [(0.1, 0), (0.3, 1)])
def test_votes_on_pandalm_with_injected_flips(
    pandalm: tuple[pl.DataFrame, pl.DataFrame], rate: float, seed: int
) -> None:
    pairs, annotations = pandalm
    flipped, flip = _flip(pairs, rate, seed)
    _audited = audit(flipped, annotations=annotations, sample=0, seed=seed)
    issues, _, report = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    validate(issues, "issues")
    rows = _aligned(flipped, issues)
    assert rows["issue"].null_count() == 0  # one row per pair
    part = report["mislabel"]
    assert part["identification"] == "em"
    assert set(part["blocks"]) >= {"judges", "humans"}
    # unanimous human votes decide a flip; the estimate must match the true share closely
    assert abs(part["noise_rate"] - flip.mean()) <= 0.02, (part["noise_rate"], flip.mean())
    assert part["noise_rate_se"] < 0.03
    assert label_noise_rate(report) == part["noise_rate"]
    flags = rows["is_issue"].to_numpy()
    assert flags.sum() <= 1.5 * part["noise_rate"] * flipped.height + 1e-9
    tp = (flags & flip).sum()
    assert tp / flags.sum() > 0.95 and tp / flip.sum() > 0.95
    np.testing.assert_allclose(rows["score"], 1.0 - rows["p_flipped"], atol=1e-12)

    # which signals each pair had, computed independently from the annotations
    voted = annotations.filter(pl.col("label").is_not_null())
    judged = set(voted.filter(pl.col("annotator_kind") == "llm")["item_id"])
    humans = set(voted.filter(pl.col("annotator_kind") == "human")["item_id"])
    for pid, signals in zip(rows["pair_id"], rows["signals"], strict=True):
        got = set(signals.split(","))
        assert ("judges" in got) == (pid in judged)
        assert ("humans" in got) == (pid in humans)
        assert "rules" in got  # rule checks read every pair


def test_judges_oriented_by_canonical_side(pandalm: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """A judge vote 'a' names the canonical side a (prefdata.ids.canonical_sides), which is
    the chosen side on some pairs and the rejected side on others."""
    from prefdata.quality.signals import annotator_readings

    pairs, annotations = pandalm
    sub = pairs.head(60)
    readings, names = annotator_readings(sub, annotations, ["llm"])
    gpt = names.index("gpt-3.5-turbo")
    votes = annotations.filter(pl.col("annotator") == "gpt-3.5-turbo")
    by_item = dict(zip(votes["item_id"], votes["label"], strict=False))
    for i, row in enumerate(sub.iter_rows(named=True)):
        label = by_item.get(row["pair_id"])
        if label is None:
            continue
        a, _ = ids.canonical_sides(row["chosen"], row["rejected"])
        chosen_is_a = a == row["chosen"]
        expected = 0.0 if label == "tie" else (1.0 if (label == "a") == chosen_is_a else -1.0)
        assert readings[i, gpt] == expected


def test_answers_and_consistency_on_gsm8k(shared_data: Path) -> None:
    pairs = import_gsm8k_solutions(shared_data / "gsm8k" / "example_model_solutions.jsonl").tables[
        "pairs"
    ]
    prompts = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]
    flipped, flip = _flip(pairs, 0.2, seed=2)
    _audited = audit(flipped, answers=prompts, sample=0, seed=2)
    issues, _, report = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    rows = _aligned(flipped, issues)
    part = report["mislabel"]
    assert abs(part["noise_rate"] - flip.mean()) <= 0.01
    np.testing.assert_array_equal(rows["is_issue"].to_numpy(), flip)
    assert report["answers"]["chosen_wrong_rejected_right"] == int(flip.sum())
    assert set(part["signals"]) == {"answers", "consistency", "rules"}


def test_no_label_signal_is_said_not_guessed(shared_data: Path) -> None:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    _audited = audit(pairs.head(300), sample=0)
    issues, _, report = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    assert report["mislabel"]["noise_rate"] is None
    assert "skipped" in report["mislabel"]
    assert "mislabeled" not in set(issues["issue"])
    with pytest.raises(InputError, match="no estimated noise rate"):
        label_noise_rate(report)


def test_label_noise_rate_from_json(tmp_path: Path) -> None:
    path = tmp_path / "audit.json"
    path.write_text(json.dumps({"pairs": 10, "mislabel": {"noise_rate": 0.125}}))
    assert label_noise_rate(path) == 0.125
    # the DPO recipe key `prefdata.label_noise: audit.json` reads the same number
    from prefdata.train.dpo import label_noise_rate as dpo_label_noise

    assert dpo_label_noise(str(path)) == 0.125
    assert label_noise_rate({"noise_rate": 0.2}) == 0.2
    with pytest.raises(InputError, match="cannot read"):
        label_noise_rate(tmp_path / "missing.json")


@pytest.mark.slow
def test_embeddings_with_half_the_answers(
    shared_data: Path, request: pytest.FixtureRequest
) -> None:
    """Content (embedding classifier) + answers for half the questions + consistency on the
    first 100 GSM8K questions: the rate within 0.04 of the truth, AUROC above the embedding
    classifier's own."""
    from sklearn.metrics import roc_auc_score

    pytest_cache = getattr(request.config, "cache", None)
    cache = pytest_cache.mkdir("prefdata-embeddings") if pytest_cache else None
    pairs = import_gsm8k_solutions(shared_data / "gsm8k" / "example_model_solutions.jsonl").tables[
        "pairs"
    ]
    first = pairs["prompt_id"].unique(maintain_order=True).head(100)
    pairs = pairs.filter(pl.col("prompt_id").is_in(first.implode()))
    prompts = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]
    half = prompts.filter(pl.col("prompt_id").hash(0) % 2 == 0)
    flipped, flip = _flip(pairs, 0.2, seed=0)
    audited = audit(
        flipped, answers=half, model="embeddings", sample=0, cache_dir=str(cache) if cache else None
    )
    issues, report = audited.tables["issues"], audited.report
    rows = _aligned(flipped, issues)
    part = report["mislabel"]
    assert "content" in part["blocks"]
    assert abs(part["noise_rate"] - flip.mean()) <= 0.04
    auroc = roc_auc_score(flip, rows["p_flipped"])
    assert auroc >= 0.9
    assert "model_disagrees" not in set(issues["issue"])
