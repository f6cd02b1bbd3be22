"""The latent flip model: the noise rate recovered from data drawn from the model and from
real GSM8K pairs with injected flips, the anchor bound, out-of-fold posteriors, and the
expected-F1 flag rule against brute force."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefdata.io.importers.math import import_gsm8k, import_gsm8k_solutions
from prefdata.quality import flip_model as fm
from prefdata.quality import signals as sg
from prefdata.quality.crossfit_reward import fold_of
from prefdata.quality.verifiable import answer_checks


def _draw(
    n: int, rho: float, thetas: list[np.ndarray], seed: int
) -> tuple[list[fm.Block], np.ndarray]:
    """Readings drawn from the flip model itself: z ~ Bernoulli(rho), each block's level
    from theta, reflected where z = 1."""
    rng = np.random.default_rng(seed)
    z = rng.random(n) < rho
    blocks = []
    for j, theta in enumerate(thetas):
        level = rng.choice(theta.size, n, p=theta)
        level = np.where(z, theta.size - 1 - level, level)
        blocks.append(fm.Block(f"b{j}", level, theta.size))
    return blocks, z


THETA_STRONG = np.array([0.02, 0.08, 0.3, 0.6])
THETA_WEAK = np.array([0.15, 0.2, 0.3, 0.35])
THETA_VOTE = np.array([0.1, 0.2, 0.7])


@pytest.mark.parametrize(("rho", "seed"), [(0.1, 0), (0.25, 1), (0.4, 2)])
def test_em_recovers_rho_from_model_draws(rho: float, seed: int) -> None:
    blocks, z = _draw(20000, rho, [THETA_STRONG, THETA_WEAK, THETA_VOTE], seed)
    fit = fm.fit_flip_model(blocks)
    assert fit.identification == "em"
    # the sample share of flips, not rho: the estimator answers for this sample
    assert fit.rho == pytest.approx(z.mean(), abs=0.015)
    for b, theta in zip(blocks, [THETA_STRONG, THETA_WEAK, THETA_VOTE], strict=True):
        np.testing.assert_allclose(fit.theta[b.name], theta, atol=0.03)


def test_one_block_is_not_identified_and_falls_back_to_the_anchor_bound() -> None:
    blocks, z = _draw(20000, 0.2, [THETA_STRONG], seed=4)
    fit = fm.fit_flip_model(blocks)
    assert fit.identification == "anchor" and fit.anchor == "b0"
    # the most decisive tenth: levels 0 and 3, where theta puts 0.02 of its mass on the
    # wrong side: rho + (1 - 2 rho) * 0.02 / 0.62, an upper bound on rho
    bound = 0.2 + 0.6 * 0.02 / 0.62
    assert fit.rho >= z.mean() - 0.01
    assert fit.rho == pytest.approx(bound, abs=0.02)


def test_rule_like_block_does_not_set_the_rate() -> None:
    blocks, z = _draw(5000, 0.2, [THETA_STRONG, THETA_VOTE, np.array([0.05, 0.9, 0.05])], 5)
    fit = fm.fit_flip_model(blocks, rate_blocks=["b0", "b1"])
    assert fit.blocks_used == ["b0", "b1"]
    assert set(fit.theta) == {"b0", "b1", "b2"}
    assert fit.rho == pytest.approx(z.mean(), abs=0.03)


def test_crossfit_posterior_is_out_of_fold() -> None:
    blocks, _ = _draw(600, 0.2, [THETA_STRONG, THETA_VOTE], seed=6)
    fold = np.arange(600) % 3
    q = fm.crossfit_posterior(blocks, fold)
    # Change the readings of one pair in fold 0: the fold-0 model is fitted on folds 1 and
    # 2 only, so every other fold-0 pair keeps its probability, while pairs of folds 1 and
    # 2 (whose models saw the changed pair) may move.
    i = 0
    changed = [fm.Block(b.name, b.level.copy(), b.levels) for b in blocks]
    for b in changed:
        b.level[i] = b.levels - 1 - b.level[i]
    q2 = fm.crossfit_posterior(changed, fold)
    same_fold = (fold == 0) & (np.arange(600) != i)
    np.testing.assert_array_equal(q2[same_fold], q[same_fold])
    assert q2[i] != q[i]
    assert not np.array_equal(q2[fold != 0], q[fold != 0])


def test_expected_f1_flags_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    q = rng.beta(0.5, 2.0, 12)
    best = max(
        range(1, 13),
        key=lambda k: 2 * np.sort(q)[::-1][:k].sum() / (k + q.sum()),
    )
    flags = fm.expected_f1_flags(q)
    assert flags.sum() == best
    assert q[flags].min() >= q[~flags].max()
    capped = fm.expected_f1_flags(q, max_share=0.25)
    assert capped.sum() == min(best, 3)
    # brute force over all subsets agrees that the top-k form is optimal here
    exp_f1 = {
        s: 2 * q[list(s)].sum() / (len(s) + q.sum())
        for r in range(1, 13)
        for s in itertools.combinations(range(12), r)
    }
    assert max(exp_f1.values()) == pytest.approx(2 * q[flags].sum() / (flags.sum() + q.sum()))


# --- real data: GSM8K correct-vs-incorrect pairs, clean by construction ----------------


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    pairs = import_gsm8k_solutions(shared_data / "gsm8k" / "example_model_solutions.jsonl").tables[
        "pairs"
    ]
    prompts = import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"]
    return pairs, prompts


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


@pytest.mark.parametrize(("rate", "seed"), [(0.1, 0), (0.3, 1)])
def test_noise_rate_on_gsm8k_with_injected_flips(
    gsm8k: tuple[pl.DataFrame, pl.DataFrame], rate: float, seed: int
) -> None:
    """Answers for half the questions and the consistency of the pairs that share a
    solution: two label signals, so EM identifies the rate. It must land within 0.03 of
    the true share of flips (the count injected over the pairs)."""
    pairs, prompts = gsm8k
    flipped, flip = _flip(pairs, rate, seed)
    half = prompts.filter(pl.col("prompt_id").hash(0) % 2 == 0)
    answers = sg.answer_block(answer_checks(flipped, half)["verdict"])
    consistency = sg.consistency_block(sg.consistency_readings(flipped))
    assert consistency is not None
    blocks = [answers, consistency]
    fit = fm.fit_flip_model(blocks)
    assert fit.identification == "em"
    assert abs(fit.rho - flip.mean()) <= 0.03, (fit.rho, flip.mean())
    q = fm.crossfit_posterior(blocks, fold_of(flipped["pair_id"], 5, seed))
    # pairs with an answer verdict are decided by it (a flipped pair whose consistency
    # reading strongly agrees with its label can sit near 0.6)
    has = answers.present
    assert (q[has & flip] > 0.5).all() and (q[has & ~flip] < 0.5).all()
    assert np.median(q[has & flip]) > 0.95
    # the mean posterior is a second, out-of-fold estimate of the same rate
    assert abs(q.mean() - flip.mean()) <= 0.03


def test_consistency_reading_by_hand() -> None:
    # one prompt, candidates x > y > z; pairs (x, y), (y, z), (x, z) with (x, z) flipped
    from prefdata.io.importers.common import pairs_table, user

    rows = [("x", "y"), ("y", "z"), ("z", "x")]
    pairs = pairs_table(
        [{"prompt": user("p"), "chosen": c, "rejected": r} for c, r in rows], source="t"
    )
    got = sg.consistency_readings(pairs)
    # (x, y): x's other pair (z, x) is a loss: -1; y's other pair (y, z) is a win: +1 -> -2
    # (y, z): y other: (x, y) loss -1; z other: (z, x) win +1 -> -2
    # (z, x): z other: (y, z) loss -1; x other: (x, y) win +1 -> -2 (the flipped pair)
    np.testing.assert_array_equal(got, [-2.0, -2.0, -2.0])
    lone = pairs_table([{"prompt": user("q"), "chosen": "a", "rejected": "b"}], source="t")
    assert np.isnan(sg.consistency_readings(lone)).all()
