"""Cross-fitted reward signal: folds by pair id, and out-of-fold means out-of-fold (a pair's
own label never reaches the model that scores it), on real PandaLM pairs with a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.quality.crossfit_reward import crossfit_reward_scores, fold_of

pytest.importorskip("trl")


def test_fold_of_balanced_and_label_free() -> None:
    ids = [f"pair-{i}" for i in range(103)]
    fold = fold_of(ids, 5, seed=1)
    assert sorted(np.bincount(fold).tolist()) == [20, 20, 21, 21, 21]
    # row order does not matter: the same id gets the same fold
    shuffled = ids[::-1]
    back = dict(zip(shuffled, fold_of(shuffled, 5, seed=1), strict=True))
    assert [back[i] for i in ids] == fold.tolist()
    assert not np.array_equal(fold, fold_of(ids, 5, seed=2))
    # rows with one key (one prompt) share a fold; folds balance the keys
    keys = [f"prompt-{i // 3}" for i in range(30)]
    by_key = fold_of(keys, 4, seed=0)
    assert all(len(set(by_key[i : i + 3])) == 1 for i in range(0, 30, 3))
    assert sorted(np.bincount(by_key[::3]).tolist()) == [2, 2, 3, 3]
    with pytest.raises(InputError):
        fold_of(ids, 1)


@pytest.fixture(scope="module")
def short_pairs(shared_data: Path) -> pl.DataFrame:
    pairs = import_pandalm(shared_data / "pandalm_testset" / "testset-v1.json").tables["pairs"]
    length = pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars()
    return pairs.sort(length, maintain_order=True).head(18)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefdata.models.tiny import tiny_model

    return tiny_model(tmp_path_factory.mktemp("models") / "tiny", layers=2, hidden=32, heads=4)


FAST = ("max_length=96", "per_device_train_batch_size=4", "gradient_accumulation_steps=1")


@pytest.mark.slow
def test_scores_are_out_of_fold(short_pairs: pl.DataFrame, tiny: Path, tmp_path: Path) -> None:
    pairs = short_pairs
    scores, report = crossfit_reward_scores(
        pairs,
        folds=3,
        seed=0,
        model=tiny,
        overrides=FAST,
        work_dir=tmp_path / "a",
        progress=False,
    )
    assert scores["pair_id"].to_list() == pairs["pair_id"].to_list()
    assert scores["fold"].to_list() == fold_of(pairs["prompt_id"], 3, 0).tolist()
    expected = fold_of(pairs["prompt_id"], 3, 0)
    assert [f["train_pairs"] for f in report["per_fold"]] == [
        int((expected != k).sum()) for k in range(3)
    ]
    np.testing.assert_allclose(
        scores["margin"], scores["score_chosen"] - scores["score_rejected"], atol=1e-9
    )

    # Swap chosen and rejected of one pair only. Its fold's model trains on the same pairs
    # as before, so that pair's two scores trade places and every other pair of the fold
    # keeps its scores; the other folds' models trained on the swapped label, so theirs move.
    i = 4
    mask = pl.Series(np.arange(pairs.height) == i)
    swapped = pairs.with_columns(
        chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
    )
    again, _ = crossfit_reward_scores(
        swapped,
        folds=3,
        seed=0,
        model=tiny,
        overrides=FAST,
        work_dir=tmp_path / "b",
        progress=False,
    )
    fold = scores["fold"].to_numpy()
    same = (fold == fold[i]) & (np.arange(pairs.height) != i)
    np.testing.assert_allclose(
        again["margin"].to_numpy()[same], scores["margin"].to_numpy()[same], atol=1e-6
    )
    assert again["margin"][i] == pytest.approx(-scores["margin"][i], abs=1e-6)
    other = fold != fold[i]
    moved = again["margin"].to_numpy()[other] - scores["margin"].to_numpy()[other]
    assert np.abs(moved).max() > 1e-6

    # a second run over the same work folder trains nothing
    third, report3 = crossfit_reward_scores(
        pairs,
        folds=3,
        seed=0,
        model=tiny,
        overrides=FAST,
        work_dir=tmp_path / "a",
        progress=False,
    )
    assert all(f["resumed"] for f in report3["per_fold"])
    assert third["margin"].to_list() == scores["margin"].to_list()
