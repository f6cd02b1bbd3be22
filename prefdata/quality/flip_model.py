"""The latent flip model: one probability per pair that its chosen / rejected are swapped, and
the label-noise rate, from several signals and no ground truth.

The model. Each pair has a hidden flag z (1: the label as given is swapped), drawn with
probability rho, the noise rate. A signal is a *block*: one discrete reading per pair,
oriented by the given label (high levels agree with it, low levels disagree), with a
reflection l -> L-1-l that turns a reading of the pair as labelled into the reading of the
same pair with its sides swapped. Because a flip only swaps the sides, a block's readings on
flipped pairs are its readings on correctly labelled pairs, reflected:

    P(level l | z = 0) = theta_l,     P(level l | z = 1) = theta_{L-1-l}.

So each block has one histogram theta (its behaviour on correct labels), nonparametric, and
the blocks are taken as independent given z. EM fits rho and the thetas (Laplace smoothing);
the posterior P(z = 1 | readings) is the mislabel probability.

Why this identifies the noise rate, and when it does not. With a single block, any observed
histogram h is explained by every rho below a bound (h = (1-rho) theta + rho reflect(theta)
has a solution theta >= 0 for each of them): a weak signal and a noisy label look the same.
With two blocks that are independent given z, the label, block 1 and block 2 are three
conditionally independent views of one binary variable, which identifies rho (Kruskal's
theorem; the classic agreement-rate argument: E[x1] E[x2] / E[x1 x2] = (1 - 2 rho)^2 for two
+-1 agreement readings). The independence is across blocks only: signals whose errors go
together (several LLM judges; an embedding classifier and a reward model that find the same
pairs hard) are pooled into one block, so their common errors are never counted twice.
With one informative block, the fit falls back to the anchor assumption of mixture-proportion
estimation (Scott et al. 2013; Patrini et al. 2017, "anchor points"): the block is right
about the pairs it is most decisive on, so the share of those that disagree with their label
estimates rho. That is an upper bound (its error is the block's own error rate there) and the
report says `identification: "anchor"`.

A flip is symmetric by construction for pairs (chosen <-> rejected), so the two-class noise
matrix of confident learning has one free number, rho, and no per-class rates to estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefdata.errors import InputError

RHO_MAX = 0.49  # labels must be better than coin flips, or "flipped" has no meaning
RHO_STARTS = (0.05, 0.2, 0.4)
ANCHOR_SHARE = 0.1  # the most decisive tenth of a block's readings are its anchor set


@dataclass
class Block:
    """One signal, read per pair as a level oriented by the given label.

    level: int array (n,), 0..levels-1, -1 where the signal has no reading for the pair.
    Level l of a pair read with its sides swapped is levels-1-l; the middle level (odd
    `levels`) is its own reflection: a reading that does not order the two sides.
    score: optional float array (n,), the continuous oriented reading behind the levels
    (positive agrees with the label), used to rank pairs inside a level (see `block_llr`).
    """

    name: str
    level: np.ndarray
    levels: int
    score: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.level = np.asarray(self.level, dtype=np.int64)
        if self.levels < 2:
            raise InputError(f"block {self.name!r} needs at least 2 levels")
        bad = (self.level < -1) | (self.level >= self.levels)
        if bad.any():
            raise InputError(f"block {self.name!r} has levels outside 0..{self.levels - 1}")

    @property
    def present(self) -> np.ndarray:
        return self.level >= 0

    def decisiveness(self) -> np.ndarray:
        """|level - middle| per pair (0 for the middle level, -1 where absent)."""
        mid = (self.levels - 1) / 2
        return np.where(self.present, np.abs(self.level - mid), -1.0)

    def informative(self, *, min_pairs: int = 20, min_share: float = 0.02) -> bool:
        """Whether enough pairs have a reading that orders the two sides."""
        decisive = self.decisiveness() > 0.25
        n = int(self.present.sum())
        return n > 0 and int(decisive.sum()) >= max(min_pairs, math.ceil(min_share * n))

    def subset(self, rows: np.ndarray) -> Block:
        score = None if self.score is None else self.score[rows]
        return Block(self.name, self.level[rows], self.levels, score)


def quantile_levels(
    score: np.ndarray, bins: int, edges: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Levels 0..2*bins-1 of an oriented continuous score, and the |score| edges used.

    |score| is cut at its quantiles into `bins` bins (or at the given `edges`); a positive
    score in bin m is level bins + m, a negative one level bins - 1 - m, so reflecting the
    level is negating the score. NaN -> -1 (no reading).
    """
    s = np.asarray(score, dtype=np.float64)
    ok = np.isfinite(s)
    if edges is None:
        a = np.abs(s[ok])
        edges = np.quantile(a, np.linspace(0, 1, bins + 1)[1:-1]) if a.size else np.zeros(0)
    m = np.searchsorted(edges, np.abs(np.where(ok, s, 0.0)), side="right")
    level = np.where(s >= 0, bins + m, bins - 1 - m)
    return np.where(ok, level, -1), edges


@dataclass
class FlipFit:
    """A fitted flip model: rho, each block's histogram on correct labels, and how rho was
    identified ("em": two or more informative blocks; "anchor": one; "none": no block)."""

    rho: float
    theta: dict[str, np.ndarray]
    identification: str
    log_likelihood: float = float("nan")
    iterations: int = 0
    blocks_used: list[str] = field(default_factory=list)
    anchor: str | None = None

    def block_llr(self, block: Block) -> np.ndarray:
        """log P(reading | label right) - log P(reading | flipped) per pair (0 where absent).

        With a continuous `score`, the log-ratio of the levels is made monotone in the score
        (isotonic) and interpolated between the levels' median scores, so pairs inside one
        level are still ranked by how strongly the signal disagrees.
        """
        theta = self.theta.get(block.name)
        out = np.zeros(block.level.shape[0])
        if theta is None:
            return out
        ok = block.present
        lam = np.log(theta) - np.log(theta[::-1])
        if block.score is None or not ok.any():
            out[ok] = lam[block.level[ok]]
            return out
        return _smooth_llr(lam, block, out)


def _smooth_llr(lam: np.ndarray, block: Block, out: np.ndarray) -> np.ndarray:
    from sklearn.isotonic import IsotonicRegression

    assert block.score is not None
    ok = block.present & np.isfinite(block.score)
    lv, sc = block.level[ok], block.score[ok]
    used = np.unique(lv)
    centers = np.array([np.median(sc[lv == u]) for u in used])
    weights = np.array([(lv == u).sum() for u in used], dtype=np.float64)
    # antisymmetric by construction: fit on both the levels and their reflections
    x = np.concatenate([centers, -centers])
    y = np.concatenate([lam[used], -lam[used]])
    wt = np.concatenate([weights, weights])
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(x, y, sample_weight=wt)
    grid = np.unique(x)
    out[ok] = np.interp(sc, grid, iso.predict(grid))
    return out


def _histograms(blocks: Sequence[Block], w: np.ndarray, smoothing: float) -> dict[str, np.ndarray]:
    theta = {}
    for b in blocks:
        ok = b.present
        counts = np.full(b.levels, smoothing)
        np.add.at(counts, b.level[ok], 1.0 - w[ok])
        np.add.at(counts, b.levels - 1 - b.level[ok], w[ok])
        theta[b.name] = counts / counts.sum()
    return theta


def _log_odds(
    rho: float, theta: dict[str, np.ndarray], blocks: Sequence[Block]
) -> tuple[np.ndarray, np.ndarray]:
    """(logit P(flip | readings), log P(readings)) per pair under rho and theta."""
    n = blocks[0].level.shape[0]
    log_clean = np.full(n, math.log(1.0 - rho))
    log_flip = np.full(n, math.log(rho))
    for b in blocks:
        ok = b.present
        lt = np.log(theta[b.name])
        log_clean[ok] += lt[b.level[ok]]
        log_flip[ok] += lt[b.levels - 1 - b.level[ok]]
    return log_flip - log_clean, np.logaddexp(log_clean, log_flip)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def fit_em(
    blocks: Sequence[Block],
    *,
    smoothing: float = 0.5,
    max_iter: int = 1000,
    tol: float = 1e-7,
    starts: Sequence[float] = RHO_STARTS,
    fixed_rho: float | None = None,
) -> FlipFit:
    """EM for rho and the blocks' histograms from several starts; the best likelihood wins.

    Each start sets every pair's flip probability to rho0 and runs M and E steps until no
    probability moves by more than `tol`. rho is kept in [0, RHO_MAX]; with `fixed_rho`
    only the histograms are fitted (one start).
    """
    best: FlipFit | None = None
    n = blocks[0].level.shape[0]
    for rho0 in starts if fixed_rho is None else (fixed_rho,):
        w = np.full(n, rho0)
        theta: dict[str, np.ndarray] = {}
        ll, it = -math.inf, 0
        for step in range(1, max_iter + 1):
            it = step
            theta = _histograms(blocks, w, smoothing)
            rho = fixed_rho if fixed_rho is not None else float(np.clip(w.mean(), 1e-6, RHO_MAX))
            z, lp = _log_odds(max(rho, 1e-6), theta, blocks)
            ll = float(lp.sum())
            w_new = _sigmoid(z)
            moved = float(np.max(np.abs(w_new - w)))
            w = w_new
            if moved < tol:
                break
        rho_hat = fixed_rho if fixed_rho is not None else float(np.clip(w.mean(), 0.0, RHO_MAX))
        fit = FlipFit(rho_hat, theta, "em", ll, it, [b.name for b in blocks])
        if best is None or ll > best.log_likelihood + 1e-9:
            best = fit
    assert best is not None
    return best


def anchor_rho(block: Block, *, share: float = ANCHOR_SHARE) -> float | None:
    """rho from one block's most decisive readings (see the module doc): the share of them
    that disagree with their label; None when the block has no decisive reading."""
    dec = block.decisiveness()
    ok = dec > 0.25
    if not ok.any():
        return None
    # the fewest top decisiveness values that hold at least `share` of the readings
    values = np.sort(np.unique(dec[ok]))[::-1]
    need = max(1, math.ceil(share * int(block.present.sum())))
    chosen = values[:1]
    for v in values:
        chosen = values[values >= v]
        if int(np.isin(dec, chosen).sum()) >= need:
            break
    anchor = np.isin(dec, chosen)
    mid = (block.levels - 1) / 2
    disagree = anchor & (block.level < mid)
    return float(np.clip(disagree.sum() / max(int(anchor.sum()), 1), 0.0, RHO_MAX))


def fit_flip_model(
    blocks: Sequence[Block],
    *,
    mode: str = "auto",
    smoothing: float = 0.5,
    starts: Sequence[float] = RHO_STARTS,
    rate_blocks: Sequence[str] | None = None,
) -> FlipFit:
    """The flip model for these blocks (only informative ones count; see `Block.informative`).

    rho comes from the informative blocks named in `rate_blocks` (default: all):
    mode "em": by EM (needs two of them); "anchor": the smallest anchor estimate over them
    (each is an upper bound, so the smallest is the tightest); "auto": "em" with two or more,
    else "anchor". The histograms of every informative block are then fitted by EM with that
    rho held fixed, so a block that cannot identify rho (rule checks) still sharpens the
    posterior.
    """
    if not blocks:
        raise InputError("the flip model needs at least one signal")
    n = {b.level.shape[0] for b in blocks}
    if len(n) != 1:
        raise InputError(f"blocks have different numbers of pairs: {sorted(n)}")
    if mode not in ("auto", "em", "anchor"):
        raise InputError(f"mode must be auto, em or anchor, got {mode!r}")
    useful = [b for b in blocks if b.informative()]
    rating = [b for b in useful if rate_blocks is None or b.name in rate_blocks]
    if not rating:
        return FlipFit(0.0, {}, "none")
    if mode == "em" or (mode == "auto" and len(rating) >= 2):
        if len(rating) < 2:
            raise InputError("EM needs two informative signals; use mode='anchor'")
        rho = fit_em(rating, smoothing=smoothing, starts=starts).rho
        how, anchor = "em", None
    else:
        bounds = [(b.name, anchor_rho(b)) for b in rating]
        anchor, bound = min(((k, v) for k, v in bounds if v is not None), key=lambda kv: kv[1])
        rho, how = bound, "anchor"
    fit = fit_em(useful, smoothing=smoothing, fixed_rho=rho)
    fit.identification = how
    fit.anchor = anchor
    fit.blocks_used = [b.name for b in rating]
    return fit


def flip_posterior(fit: FlipFit, blocks: Sequence[Block]) -> np.ndarray:
    """P(flipped | readings) per pair under a fitted model (blocks it did not use count for
    nothing; pairs with no reading get rho)."""
    n = blocks[0].level.shape[0]
    rho = float(np.clip(fit.rho, 1e-6, RHO_MAX))
    z = np.full(n, math.log(rho / (1.0 - rho)))
    for b in blocks:
        z -= fit.block_llr(b)
    return _sigmoid(z)


def crossfit_posterior(
    blocks: Sequence[Block],
    fold: np.ndarray,
    *,
    mode: str = "auto",
    smoothing: float = 0.5,
    rate_blocks: Sequence[str] | None = None,
) -> np.ndarray:
    """P(flipped) per pair from flip models fitted on the other folds (out-of-fold stacking:
    no pair's readings shape the histograms that score it)."""
    q = np.empty(blocks[0].level.shape[0])
    for k in np.unique(fold).tolist():
        train = np.flatnonzero(fold != k)
        test = np.flatnonzero(fold == k)
        fit = fit_flip_model(
            [b.subset(train) for b in blocks],
            mode=mode,
            smoothing=smoothing,
            rate_blocks=rate_blocks,
        )
        q[test] = flip_posterior(fit, [b.subset(test) for b in blocks])
    return q


def bootstrap_rho(
    blocks: Sequence[Block],
    *,
    draws: int = 50,
    seed: int = 0,
    mode: str = "auto",
    smoothing: float = 0.5,
    start: float | None = None,
    rate_blocks: Sequence[str] | None = None,
) -> np.ndarray:
    """rho refitted on `draws` bootstrap resamples of the pairs (its spread is the SE).

    Each refit starts from `start` (the full-data estimate, when given) only: the usual
    warm start, three times cheaper than the full set of starts."""
    rng = np.random.default_rng(seed)
    n = blocks[0].level.shape[0]
    out = np.empty(draws)
    starts = RHO_STARTS if start is None else (start,)
    for d in range(draws):
        rows = np.asarray(rng.integers(0, n, n))
        fit = fit_flip_model(
            [b.subset(rows) for b in blocks],
            mode=mode,
            smoothing=smoothing,
            starts=starts,
            rate_blocks=rate_blocks,
        )
        out[d] = fit.rho
    return out


def expected_f1_flags(q: np.ndarray, *, max_share: float | None = None) -> np.ndarray:
    """Flag the k pairs with the highest P(flipped), k maximising the expected F1,
    2 * sum_{top k} q / (k + sum q) (the plug-in rule for calibrated probabilities; Nan et
    al., ICML 2012), with k at most max_share * n. Ties in q are broken by row order."""
    q = np.asarray(q, dtype=np.float64)
    n = q.size
    flags = np.zeros(n, dtype=bool)
    if n == 0 or q.sum() <= 0:
        return flags
    order = np.argsort(-q, kind="stable")
    top = np.cumsum(q[order])
    k = np.arange(1, n + 1)
    f1 = 2.0 * top / (k + q.sum())
    limit = n if max_share is None else math.floor(max_share * n + 1e-9)
    if limit <= 0:
        return flags
    best = int(np.argmax(f1[:limit])) + 1
    flags[order[:best]] = True
    return flags


def summary(fit: FlipFit, boot: np.ndarray | None = None) -> dict[str, Any]:
    """The report entries of a fit: noise_rate, identification, blocks, and with bootstrap
    draws noise_rate_se and a 90% interval."""
    out: dict[str, Any] = {
        # six decimals: EM leaves 1e-13 where no pair is flipped
        "noise_rate": round(fit.rho, 6),
        "identification": fit.identification,
        "blocks": list(fit.blocks_used),
    }
    if fit.anchor is not None:
        out["anchor_block"] = fit.anchor
    if boot is not None and boot.size:
        se = float(np.std(boot, ddof=1)) if boot.size > 1 else float("nan")
        out["noise_rate_se"] = round(se, 6)
        out["noise_rate_90"] = [round(float(np.quantile(boot, x)), 6) for x in (0.05, 0.95)]
    return out
