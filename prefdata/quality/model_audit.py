"""Model-based mislabel audit: which pairs does a model think have chosen and rejected swapped?

Two sources of p = P(the label as given is right), one per pair:

- `method="embeddings"`: a classifier of "which side is chosen" on sentence embeddings
  (prompt, response A, response B embedded separately; see prefdata.quality.embeddings),
  trained and evaluated out of fold (K-fold), so no pair is scored by a model that saw it.
- `method="scores"`: per-response reward-model scores or DPO implicit rewards that the user
  provides; p = sigmoid((score_chosen - score_rejected) / T), the Bradley-Terry probability
  both kinds of model are trained to produce (T = 1 by default, or fitted).

Flags come from confident learning (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021), implemented here: per-class
thresholds (the mean self-confidence of each class), the confident joint, and pruning by
the estimated noise rate. `cleanlab.filter.find_label_issues` on the same probabilities is
the baseline the benchmark compares against (bench/bench_model_audit.py).

Output rows follow the `issues` contract: item_id (= pair_id), issue = "model_disagrees",
score = p (0-1, lower = more likely mislabelled), is_issue, reason (with p).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from prefdata.errors import ContractError, InputError
from prefdata.schema import require_columns

if TYPE_CHECKING:
    from prefdata.quality.embeddings import Encoder

ISSUE = "model_disagrees"
Method = Literal["embeddings", "scores"]
FilterBy = Literal["prune_by_noise_rate", "confident_learning"]
SCORE_COLUMNS = ("pair_id", "score_chosen", "score_rejected")
ISSUES_SCHEMA = {
    "item_id": pl.String,
    "issue": pl.String,
    "score": pl.Float64,
    "is_issue": pl.Boolean,
    "reason": pl.String,
}


# --- probabilities ------------------------------------------------------------------------


def side_swap(n: int, seed: int = 0) -> np.ndarray:
    """Seeded side swap: True where response A is the rejected one; exactly half are True.

    The pair task has no natural classes (chosen is always "the given side"); showing each
    pair as (A, B) with a balanced random swap turns it into a two-class problem with
    balanced classes, which both the classifier and the per-class thresholds need.
    """
    rng = np.random.default_rng(seed)
    return rng.permutation(n) < n // 2


def pair_features(e_prompt: np.ndarray, e_a: np.ndarray, e_b: np.ndarray) -> np.ndarray:
    """Features of one shown pair: [eA - eB, (eA - eB) * eP], shape (n, 2 * dim).

    Antisymmetric in A and B (swapping the sides negates them), so a linear model without
    intercept gives P(A chosen) = 1 - P(B chosen): the score cannot depend on display
    order. The product with the prompt lets the preferred direction depend on the prompt.
    """
    d = e_a - e_b
    return np.hstack([d, d * e_prompt])


# Inverse regularisation strengths tried by C="auto", weakest last. On unit-RMS features the
# best value sat at 3e-4 to 1e-3 on HH-RLHF and GSM8K (about 2,300 pairs each), where the
# model is little more than the mean chosen-minus-rejected direction: the signal is weak.
C_GRID = tuple(float(c) for c in np.logspace(-5, -1, 9))
LENGTH_WEIGHT = 8.0


def fit_out_of_fold(
    e_prompt: np.ndarray,
    e_chosen: np.ndarray,
    e_rejected: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    C: float | Literal["auto"] = "auto",
    max_iter: int = 2000,
    groups: np.ndarray | None = None,
    lengths: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(P(label as given is right) per pair, details): the classifier behind the audit.

    Each pair is shown as (A, B) with the seeded `side_swap`; a logistic regression
    (scikit-learn, L2, no intercept) on `pair_features`, each feature scaled to unit RMS on
    the training folds, learns P(A is chosen). It is trained on K-1 folds (stratified,
    shuffled with `seed`) and applied to the held-out fold, so no pair is scored by a model
    that saw its label. C: inverse regularisation strength, or "auto": each value of
    `C_GRID` in turn, keeping the one with the lowest out-of-fold log loss on the given
    labels (one number chosen on all folds: a mild optimism in the reported loss, none in
    which pairs rank lowest). Because the features are antisymmetric and there is no
    intercept, the swap only balances the classes; the result does not depend on it beyond
    solver tolerance. details: C, log_loss, and with "auto" the loss for each C tried.

    groups: one key per pair (the prompt_id): pairs of one group share a fold, so no pair is
    scored by a model that trained on another pair of its prompt. Pairs of one prompt often
    share a response; without groups the classifier learns that response's worth from a
    sibling pair's label, and its errors then move with the consistency signal's (which
    reads exactly those labels), so the two would not be independent evidence.
    """
    n = e_prompt.shape[0]
    if not (e_chosen.shape == e_rejected.shape == e_prompt.shape) or e_prompt.ndim != 2:
        raise InputError(
            "prompt, chosen and rejected embeddings must have the same (n, dim) shape, got "
            f"{e_prompt.shape}, {e_chosen.shape}, {e_rejected.shape}"
        )
    if folds < 2:
        raise InputError(f"folds must be at least 2, got {folds}")
    if n < 2 * folds:
        raise InputError(f"the audit needs at least {2 * folds} pairs for {folds} folds, got {n}")
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    swap = side_swap(n, seed)
    a = np.where(swap[:, None], e_rejected, e_chosen)
    b = np.where(swap[:, None], e_chosen, e_rejected)
    x = pair_features(e_prompt, a, b).astype(np.float64)
    weight = None
    if lengths is not None:
        gap = np.log1p(np.asarray(lengths[0], float)) - np.log1p(np.asarray(lengths[1], float))
        x = np.hstack([x, np.where(swap, -gap, gap)[:, None]])
        weight = np.ones(x.shape[1])
        weight[-1] = LENGTH_WEIGHT
    y = (~swap).astype(np.int64)  # 1: A is the chosen side
    if groups is not None and len(np.unique(groups)) < n:
        if len(np.unique(groups)) < folds:
            raise InputError(f"{folds} folds need at least {folds} prompts")
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(x, y, groups))
    else:
        splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))

    def run(c: float) -> tuple[np.ndarray, float]:
        p_a = _oof_p_a(x, y, splits, c, max_iter, weight)
        p = np.where(swap, 1.0 - p_a, p_a)
        return p, float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))

    if C == "auto":
        losses: dict[str, float] = {}
        best: tuple[float, np.ndarray, float] | None = None
        worse = 0
        for c in C_GRID:
            p, loss = run(c)
            losses[f"{c:.3g}"] = loss
            if best is None or loss < best[2]:
                best, worse = (c, p, loss), 0
            else:
                worse += 1
                # the loss is unimodal in C here; two worse steps in a row end the search
                # before the slow, weakly regularised fits
                if worse >= 2:
                    break
        assert best is not None
        return best[1], {"C": best[0], "log_loss": best[2], "log_loss_by_C": losses}
    c = float(C)
    if not (c > 0 and math.isfinite(c)):
        raise InputError(f"C must be a positive number or 'auto', got {C!r}")
    p, loss = run(c)
    return p, {"C": c, "log_loss": loss}


def _oof_p_a(
    x: np.ndarray,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    c: float,
    max_iter: int,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    p_a = np.empty(y.shape[0], dtype=np.float64)
    for train, test in splits:
        # Scale without centring: centring would break the antisymmetry of the features.
        rms = np.sqrt((x[train] ** 2).mean(axis=0)) + 1e-12
        if weight is not None:
            rms = rms / weight  # a feature scaled up is penalised less by the L2 term
        clf = LogisticRegression(C=c, fit_intercept=False, max_iter=max_iter)
        clf.fit(x[train] / rms, y[train])
        p_a[test] = clf.predict_proba(x[test] / rms)[:, 1]
    return p_a


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|
    return out


def fit_temperature(diff: np.ndarray) -> float:
    """Maximum-likelihood temperature T for P(given label right) = sigmoid(diff / T).

    diff: score_chosen - score_rejected per pair. One parameter fitted on all pairs (no
    intercept: by symmetry a zero difference means 0.5). When every diff is positive the
    likelihood keeps growing as T shrinks; T is then held at its lower bound 1e-3 x the
    median |diff| (scores that separate every pair say little about which labels are wrong).
    """
    from scipy.optimize import minimize_scalar

    scale = float(np.median(np.abs(diff))) or 1.0
    d = diff / scale

    def nll(log_t: float) -> float:
        z = d / math.exp(log_t)
        # -log sigmoid(z) = log(1 + exp(-z)), computed stably
        return float(np.logaddexp(0.0, -z).sum())

    res = minimize_scalar(nll, bounds=(math.log(1e-3), math.log(1e3)), method="bounded")
    return float(math.exp(res.x) * scale)


def score_probabilities(
    pairs: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    temperature: float | Literal["fit"] = 1.0,
    source: str | Path | None = None,
) -> tuple[np.ndarray, float]:
    """P(label as given is right) per pair from user-provided scores, and the T used.

    pairs: needs `pair_id`. scores: `pair_id`, `score_chosen`, `score_rejected` (numbers: a
    reward model's score of each response, or DPO implicit rewards beta * log(pi/pi_ref)).
    p = sigmoid((score_chosen - score_rejected) / T), the Bradley-Terry probability reward
    models and DPO are trained to output, so T = 1 (default) keeps the model's own scale;
    temperature="fit" picks T by maximum likelihood on the given labels (`fit_temperature`).
    Output: (float array aligned with `pairs` rows, T). Every pair needs exactly one score
    row; a missing, duplicate or non-finite score is an InputError naming the row.
    """
    require_columns(scores.columns, SCORE_COLUMNS, "scores need", source=source)
    try:
        s = scores.select(
            pl.col("pair_id").cast(pl.String),
            pl.col("score_chosen").cast(pl.Float64),
            pl.col("score_rejected").cast(pl.Float64),
        ).with_row_index("row", offset=1)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"scores must be numbers: {exc}", source=source) from None
    for col in SCORE_COLUMNS:
        bad = s.filter(pl.col(col).is_null())
        if col != "pair_id":
            bad = s.filter(pl.col(col).is_null() | ~pl.col(col).is_finite())
        if bad.height:
            raise InputError(
                f"missing or non-finite value ({bad.height} rows)",
                source=source,
                row=int(bad["row"][0]),
                column=col,
            )
    dup = s.filter(pl.col("pair_id").is_duplicated())
    if dup.height:
        raise InputError(
            f"pair_id {dup['pair_id'][0]!r} has more than one score row",
            source=source,
            row=int(dup["row"][0]),
            column="pair_id",
        )
    joined = pairs.select("pair_id").join(s, on="pair_id", how="left", maintain_order="left")
    lacking = joined.filter(pl.col("row").is_null())
    if lacking.height:
        raise InputError(
            f"{lacking.height} pairs have no score (first pair_id {lacking['pair_id'][0]!r})",
            source=source,
            column="pair_id",
        )
    diff = (joined["score_chosen"] - joined["score_rejected"]).to_numpy()
    t = fit_temperature(diff) if temperature == "fit" else float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise InputError(f"temperature must be a positive number, got {temperature!r}")
    return _sigmoid(diff / t), t


# --- confident learning -------------------------------------------------------------------


def confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per-class threshold t_k = mean of P(k) over the examples labelled k (shape (K,)).

    A class without examples gets threshold 1.0 (nothing is confidently that class).
    """
    k = pred_probs.shape[1]
    out = np.ones(k, dtype=np.float64)
    for c in range(k):
        mask = labels == c
        if mask.any():
            out[c] = float(pred_probs[mask, c].mean())
    return out


def confident_joint(
    labels: np.ndarray, pred_probs: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(C, guess): the confident joint C[given, true] (K x K counts) and each example's guess.

    An example counts toward class j when P(j) >= t_j; with several such classes the most
    probable wins; with none it is not counted (guess = -1).
    """
    k = pred_probs.shape[1]
    above = pred_probs >= thresholds[None, :] - 1e-12
    masked = np.where(above, pred_probs, -np.inf)
    guess = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
    counted = guess >= 0
    c = np.zeros((k, k), dtype=np.int64)
    np.add.at(c, (labels[counted], guess[counted]), 1)
    return c, guess


def confident_learning_flags(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    filter_by: FilterBy = "prune_by_noise_rate",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Boolean mask of likely label errors, and the estimates behind it.

    labels: int array (n,) of given classes 0..K-1; pred_probs: (n, K) out-of-fold
    probabilities. filter_by:
    - "confident_learning": flag the off-diagonal entries of the confident joint (the example
      is confidently another class than its label);
    - "prune_by_noise_rate" (default, the paper's main method): calibrate the confident
      joint so each row sums to its class count, estimate n_kj = round(C_cal[k, j]) label
      errors from class k to class j, and flag the n_kj examples labelled k with the
      largest margin P(j) - P(k).
    The estimates: thresholds, confident joint, calibrated joint, estimated noise rate.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n, k = pred_probs.shape
    t = confident_thresholds(labels, pred_probs)
    c, guess = confident_joint(labels, pred_probs, t)
    # Every class keeps at least one example it is confidently right about, so that the
    # calibration below never divides by zero (the paper's convention too).
    np.fill_diagonal(c, np.maximum(c.diagonal(), 1))
    class_counts = np.bincount(labels, minlength=k)
    c_cal = c / c.sum(axis=1, keepdims=True) * class_counts[:, None]
    flags = np.zeros(n, dtype=bool)
    if filter_by == "confident_learning":
        flags = (guess >= 0) & (guess != labels)
    elif filter_by == "prune_by_noise_rate":
        for given in range(k):
            members = np.flatnonzero(labels == given)
            for true in range(k):
                if true == given:
                    continue
                count = int(np.rint(c_cal[given, true]))
                if count <= 0 or members.size == 0:
                    continue
                margin = pred_probs[members, true] - pred_probs[members, given]
                # stable order: ties keep input order, so a run is reproducible
                top = members[np.argsort(-margin, kind="stable")[:count]]
                flags[top] = True
    else:
        raise InputError(
            f"filter_by must be 'prune_by_noise_rate' or 'confident_joint', got {filter_by!r}"
        )
    off_diagonal = float(c_cal.sum() - np.trace(c_cal))
    estimates = {
        "thresholds": [float(x) for x in t],
        "confident_joint": c.tolist(),
        "calibrated_joint": [[float(x) for x in row] for row in c_cal],
        "estimated_noise_rate": off_diagonal / n if n else 0.0,
    }
    return flags, estimates


def oriented(p_given: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, pred_probs) of the two-class "is A chosen" task under the seeded side swap.

    labels[i] = 1 when the given chosen response is shown as A; pred_probs[:, 1] = P(A is
    chosen). This is the form confident learning (ours or cleanlab's) takes.
    """
    swap = side_swap(p_given.shape[0], seed)
    p_a = np.where(swap, 1.0 - p_given, p_given)
    return (~swap).astype(np.int64), np.column_stack([1.0 - p_a, p_a])


# --- the stage ----------------------------------------------------------------------------


def _check_pairs(pairs: pl.DataFrame, needed: tuple[str, ...]) -> None:
    for col in needed:
        if col not in pairs.columns:
            raise ContractError(
                f"the model audit needs column '{col}'; the table has {pairs.columns}",
                column=col,
            )
    if pairs["pair_id"].null_count() or pairs["pair_id"].is_duplicated().any():
        raise ContractError("pair_id must be present and unique", column="pair_id")


def embedding_probabilities(
    pairs: pl.DataFrame,
    *,
    folds: int = 5,
    seed: int = 0,
    C: float | Literal["auto"] = "auto",
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    model: Encoder | None = None,
    model_id: str | None = None,
    group_by_prompt: bool = True,
    length_feature: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """P(label as given is right) per pair from the out-of-fold classifier on embeddings,
    and its details (C, log_loss, folds, seed, model, embed_seconds, fit_seconds).

    Input: pairs with pair_id, prompt, chosen, rejected; options as in `model_audit`.
    group_by_prompt: the pairs of one prompt_id share a fold (see `fit_out_of_fold`'s
    groups); the combined audit needs it, confident learning alone (`model_audit`) does not.
    length_feature: the log-length difference as one more feature (`fit_out_of_fold`'s
    lengths).
    """
    from prefdata.quality.embeddings import DEFAULT_MODEL_ID, embed_pairs

    _check_pairs(pairs, ("pair_id", "prompt", "chosen", "rejected"))
    report: dict[str, Any] = {}
    start = time.perf_counter()
    ep, ec, er = embed_pairs(
        pairs,
        batch_size=batch_size,
        cache_dir=cache_dir,
        model=model,
        model_id=model_id or DEFAULT_MODEL_ID,
        progress=progress,
    )
    report["embed_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    grouped = group_by_prompt and "prompt_id" in pairs.columns
    groups = pairs["prompt_id"].to_numpy() if grouped else None
    lengths = (
        (pairs["chosen"].str.len_chars().to_numpy(), pairs["rejected"].str.len_chars().to_numpy())
        if length_feature
        else None
    )
    p, fit = fit_out_of_fold(
        ep, ec, er, folds=folds, seed=seed, C=C, groups=groups, lengths=lengths
    )
    report["fit_seconds"] = time.perf_counter() - start
    report.update(fit, folds=folds, seed=seed, model=model_id or DEFAULT_MODEL_ID)
    return p, report


def model_audit(
    pairs: pl.DataFrame,
    *,
    method: Method = "embeddings",
    scores: pl.DataFrame | None = None,
    folds: int = 5,
    seed: int = 0,
    C: float | Literal["auto"] = "auto",
    filter_by: FilterBy = "prune_by_noise_rate",
    temperature: float | Literal["fit"] = 1.0,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    model: Encoder | None = None,
    model_id: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Flag pairs whose chosen / rejected a model disagrees with.

    Input: pairs with `pair_id`, and for method="embeddings" also `prompt` (chat messages),
    `chosen`, `rejected`. method="scores" needs `scores` (pair_id, score_chosen,
    score_rejected; see `score_probabilities`, with `temperature`). Embedding options:
    cache_dir (on-disk embedding cache), batch_size, progress, model / model_id (another
    SentenceTransformer-like encoder and its cache name; default all-MiniLM-L6-v2).
    Classifier options: folds, seed, C (see `fit_out_of_fold`). filter_by: see
    `confident_learning_flags`.

    Output: (issues, report). issues: one row per pair, worst first: item_id = pair_id,
    issue = "model_disagrees", score = P(given label right), is_issue = confident-learning
    flag, reason stating p. report: method, pairs, flagged, flag_rate, thresholds,
    estimated_noise_rate, mean_p, agree_rate (pairs with p > 0.5) and timings.
    """
    if method == "embeddings":
        _check_pairs(pairs, ("pair_id", "prompt", "chosen", "rejected"))
    elif method == "scores":
        _check_pairs(pairs, ("pair_id",))
        if scores is None:
            raise InputError(
                "method='scores' needs a scores table (pair_id, score_chosen, score_rejected)"
            )
    else:
        raise InputError(f"method must be 'embeddings' or 'scores', got {method!r}")
    report: dict[str, Any] = {"method": method, "pairs": pairs.height}
    if method == "embeddings":
        p, fit = embedding_probabilities(
            pairs,
            folds=folds,
            seed=seed,
            C=C,
            cache_dir=cache_dir,
            batch_size=batch_size,
            progress=progress,
            model=model,
            model_id=model_id,
            group_by_prompt=False,
            length_feature=False,
        )
        report.update(fit)
        source = f"out-of-fold classifier on embeddings ({folds} folds)"
    else:
        assert scores is not None
        p, t = score_probabilities(pairs, scores, temperature=temperature)
        report["temperature"] = t
        source = f"scores, sigmoid(diff / {t:.4g})"
    labels, pred_probs = oriented(p, seed)
    flags, estimates = confident_learning_flags(labels, pred_probs, filter_by=filter_by)
    report.update(estimates)
    report.update(
        filter_by=filter_by,
        flagged=int(flags.sum()),
        flag_rate=float(flags.mean()) if flags.size else 0.0,
        mean_p=float(p.mean()) if p.size else float("nan"),
        agree_rate=float((p > 0.5).mean()) if p.size else float("nan"),
    )
    issues = issues_table(pairs["pair_id"], p, flags, source=source)
    return issues, report


def issues_table(
    pair_ids: pl.Series, p: np.ndarray, flags: np.ndarray, *, source: str
) -> pl.DataFrame:
    """Issue rows (issues contract) sorted worst first; score = p, reason names p."""
    reasons = [
        f"{source}: p(chosen is better) = {pi:.3f}"
        + ("; confident learning flags it as a likely swapped label" if f else "")
        for pi, f in zip(p.tolist(), flags.tolist(), strict=True)
    ]
    table = pl.DataFrame(
        {
            "item_id": pair_ids.cast(pl.String),
            "issue": [ISSUE] * len(reasons),
            # clip: float rounding may leave p a hair outside 0-1
            "score": np.clip(p, 0.0, 1.0),
            "is_issue": flags,
            "reason": reasons,
        },
        schema=ISSUES_SCHEMA,
    )
    return table.sort("score", maintain_order=True)


def score_audit(
    pairs: pl.DataFrame,
    scores: pl.DataFrame,
    *,
    temperature: float | Literal["fit"] = 1.0,
    seed: int = 0,
    filter_by: FilterBy = "prune_by_noise_rate",
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """`model_audit(pairs, method="scores", scores=scores, ...)`: see there and
    `score_probabilities` (scores columns: pair_id, score_chosen, score_rejected)."""
    return model_audit(
        pairs,
        method="scores",
        scores=scores,
        temperature=temperature,
        seed=seed,
        filter_by=filter_by,
    )
