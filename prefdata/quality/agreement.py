"""Inter-annotator agreement on the annotations contract.

`agreement(annotations)` -> StageResult (the stage `prefdata agree`): the report (also the
document `agreement`, the command's main output) and the table `per_item`:

- per_item: `item_id` (or the column named by `item_column`), `n_votes`, `agreement` (share
  of the item's votes for its most voted label), `pairwise_agreement` (share of the item's
  vote pairs that agree; null with one vote), `majority_label` (the strict plurality label;
  null when the top labels tie, e.g. 1 a + 1 b).
- report (JSON-ready dict): percent agreement, Cohen's kappa for every pair of annotators,
  Fleiss' kappa, Krippendorff's alpha (nominal, and ordinal / interval when the labels allow
  it), each annotator's agreement with the leave-one-out consensus, each with a bootstrap
  95% interval over items.

How the statistics read the votes:

- Every vote counts in percent agreement, Fleiss' kappa and Krippendorff's alpha: they depend
  only on how many votes each label got on each item, not on who cast them. An annotator who
  voted twice on one item (PandaLM pools records that show the same two responses) gives two
  values, as in Krippendorff's general form.
- Cohen's kappa and agreement with the consensus pair an annotator's label with something
  else, so they need one label per (item, annotator) cell: a cell whose repeat votes all
  agree counts once; a cell whose repeat votes differ is left out of those two statistics
  (counted in the report as `cells_self_inconsistent`).
- Percent agreement = the mean, over items with two or more votes, of the share of agreeing
  vote pairs (equal to Fleiss' observed agreement when every item has the same count).
- Fleiss' kappa needs the same number of votes on every item; it is computed on the items
  that have the modal number of votes (ties in the mode: the larger count), and the report
  says how many items and votes per item that was.
- Cohen's kappa (unweighted) for annotators j and k uses the items both labelled.
- Leave-one-out consensus: the strict plurality of the item's votes from everyone else; an
  item where the others tie or where nobody else voted gives no comparison.
- Bootstrap: items are resampled with replacement, separately for each statistic, over the
  items that statistic uses. An item's contribution depends only on its vote counts (or, for
  Cohen's kappa, on the two labels), so a resample is a multinomial draw over the distinct
  patterns: exact, and fast at any number of items. Percentile intervals.

Levels: `nominal` (any labels), `ordinal` and `interval` (labels that are numbers, or any
labels with an explicit `label_order`, e.g. ["b", "tie", "a"] for pairs, whose positions
0, 1, 2 are then the values). An `interval` call also reports nominal and ordinal alpha;
`ordinal` also reports nominal. Votes with an `error` or without a label are not votes
(counted as `skipped_error` / `skipped_no_label`).

`krippendorff_alpha(matrix, level)` takes the raw reliability matrix instead (annotators x
items, NaN = missing), as the `krippendorff` package does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from prefdata.errors import InputError
from prefdata.quality.votes import LEVELS, FloatArray, IntArray, Level, Votes, encode_votes
from prefdata.stage import StageResult, Table, stage

CI_LEVEL = 0.95


# ---------------------------------------------------------------------------------------
# Krippendorff's alpha from vote counts


def coincidences(counts: npt.NDArray[Any], weights: npt.NDArray[Any] | None = None) -> FloatArray:
    """Krippendorff's coincidence matrix (labels x labels) from items x labels vote counts.

    Items with fewer than two votes have no pairable values and add nothing. `weights`:
    how many items each row stands for (rows are then distinct count patterns).
    """
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(axis=1)
    pairable = m >= 2
    c = counts[pairable]
    scale = 1 / (m[pairable] - 1)
    if weights is not None:
        scale = scale * np.asarray(weights, dtype=np.float64)[pairable]
    weighted = c * scale[:, None]
    o: FloatArray = weighted.T @ c
    o[np.diag_indices_from(o)] -= weighted.sum(axis=0)
    return o


def distances(level: Level, n_c: FloatArray, values: FloatArray | None) -> FloatArray:
    """Squared distances between labels (..., K, K) for a level; n_c: (..., K) label totals.

    Ordinal distances depend on the label totals, so a batch of totals gives a batch.
    """
    k = n_c.shape[-1]
    if level == "nominal":
        return np.broadcast_to(1.0 - np.eye(k), (*n_c.shape[:-1], k, k)).copy()
    if level == "interval":
        if values is None:
            raise InputError("interval distances need label values")
        d = (values[:, None] - values[None, :]) ** 2
        return np.broadcast_to(d, (*n_c.shape[:-1], k, k)).copy()
    # ordinal: (sum of totals from label c to label k) - (n_c + n_k) / 2, squared
    cum = np.cumsum(n_c, axis=-1)
    lo = np.minimum.outer(np.arange(k), np.arange(k))
    hi = np.maximum.outer(np.arange(k), np.arange(k))
    before = np.where(lo > 0, np.take(cum, np.maximum(lo - 1, 0), axis=-1), 0.0)
    between = np.take(cum, hi, axis=-1) - before
    half = (n_c[..., :, None] + n_c[..., None, :]) / 2
    out: FloatArray = (between - half) ** 2
    return out


def alpha_from_coincidences(o: FloatArray, level: Level, values: FloatArray | None) -> FloatArray:
    """Alpha for one (K, K) or a batch (..., K, K) of coincidence matrices; NaN if undefined."""
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    d = distances(level, n_c, values)
    expected = (n_c[..., :, None] * n_c[..., None, :]) / (n - 1)[..., None, None]
    observed_d = (o * d).sum(axis=(-2, -1))
    expected_d = (expected * d).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.where(expected_d > 0, 1.0 - observed_d / expected_d, np.nan)
    return out


def krippendorff_alpha(
    matrix: npt.ArrayLike,
    level: Level = "interval",
    *,
    value_domain: Sequence[float] | None = None,
) -> float:
    """Krippendorff's alpha of a reliability matrix: annotators x items, NaN = missing.

    Values are numbers. `value_domain`: the values the matrix may hold (a value outside
    it is an InputError); values that never occur change no level's alpha, as in the
    `krippendorff` package. Returns NaN when alpha is undefined (one value only, or no item
    with two values).
    """
    data = np.asarray(matrix, dtype=np.float64)
    if data.ndim != 2:
        raise InputError(f"expected a 2-D annotators x items matrix, got shape {data.shape}")
    patterns = _matrix_patterns(data) if value_domain is None else None
    if patterns is not None:
        counts, n, domain = patterns
        if int((counts.sum(axis=0) > 0).sum()) < 2:
            return float("nan")
        o = coincidences(counts, n)
    else:
        counts, domain = _value_counts(data, value_domain)
        if len(domain) < 2:
            return float("nan")
        o = coincidences(counts)
    return float(alpha_from_coincidences(o, level, domain))


def _matrix_patterns(data: FloatArray) -> tuple[IntArray, IntArray, FloatArray] | None:
    """(distinct count patterns, items per pattern, values) for small-integer matrices.

    An item's counts are one number in base (annotators + 1), summed from each annotator's
    value through a lookup table: one cheap pass per annotator, then a bincount. Values
    are every integer from the smallest to the largest (unused ones change no alpha).
    None when the values are not small integers or the patterns would not fit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: handled below
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    if np.isnan(lo) or hi - lo > 64:
        return None
    k = int(hi - lo) + 1
    base = data.shape[0] + 1
    if base**k > 2**62:
        return None
    weights = np.append(base ** np.arange(k, dtype=np.int64), 0)
    keys = np.zeros(data.shape[1], dtype=np.int64)
    for row in data:
        shifted = np.nan_to_num(row - lo, nan=k)
        index = shifted.astype(np.intp)
        if not np.array_equal(index, shifted):
            return None  # not integers: the general path sorts the distinct values
        keys += weights[index]
    if base**k <= max(4 * data.shape[1], 1 << 16):
        per_key = np.bincount(keys)
        distinct = np.flatnonzero(per_key)
        n = per_key[distinct]
    else:
        distinct, n = np.unique(keys, return_counts=True)
    counts = (distinct[:, None] // weights[None, :k]) % base
    return counts.astype(np.int64), n.astype(np.int64), np.arange(k, dtype=np.float64) + lo


def _value_counts(
    data: FloatArray, value_domain: Sequence[float] | None
) -> tuple[IntArray, FloatArray]:
    """items x values counts of a reliability matrix (annotators x items), and the values."""
    observed = data[~np.isnan(data)]
    if value_domain is not None:
        domain = np.unique(np.asarray(value_domain, dtype=np.float64))
        if not np.isin(observed, domain).all():
            raise InputError("the matrix holds values outside value_domain")
    elif observed.size == 0:
        domain = np.zeros(0)
    else:
        lo, hi = float(observed.min()), float(observed.max())
        if hi - lo < 1_000_000 and np.array_equal(observed, np.floor(observed)):
            # Labels are almost always small integers: counting beats sorting every value.
            seen = np.bincount((observed - lo).astype(np.int64), minlength=int(hi - lo) + 1)
            domain = np.flatnonzero(seen).astype(np.float64) + lo
        else:
            domain = np.unique(observed)
    k, n_items = len(domain), data.shape[1]
    if k <= 64:
        # One pass per value over the matrix; no per-vote index arrays at all.
        counts = np.empty((n_items, k), dtype=np.int64)
        for c, value in enumerate(domain):
            counts[:, c] = (data == value).sum(axis=0)
        return counts, domain
    present = ~np.isnan(data)
    codes = np.searchsorted(domain, data[present])
    unit = np.nonzero(present)[1]  # row-major: the item of each observed cell
    flat = np.bincount(unit * k + codes, minlength=n_items * k)
    return flat.reshape(n_items, k).astype(np.int64), domain


# ---------------------------------------------------------------------------------------
# Bootstrap helpers: resample items as a multinomial draw over distinct patterns


def _patterns(rows: IntArray) -> tuple[IntArray, IntArray]:
    """(distinct rows, how many items have each) of an items x features int matrix."""
    if rows.shape[0] == 0:
        return rows, np.zeros(0, dtype=np.int64)
    base = int(rows.max()) + 1
    if base ** rows.shape[1] < 2**62:
        weights = base ** np.arange(rows.shape[1], dtype=np.int64)
        keys = rows @ weights
        _, first, n = np.unique(keys, return_index=True, return_counts=True)
        return rows[first], n.astype(np.int64)
    distinct, n = np.unique(rows, axis=0, return_counts=True)
    return distinct.astype(np.int64), n.astype(np.int64)


def _draws(rng: np.random.Generator, n: IntArray, bootstrap: int) -> FloatArray:
    """bootstrap x patterns: how often each pattern appears in each resample of the items."""
    total = int(n.sum())
    if bootstrap <= 0 or total == 0:
        return np.zeros((0, len(n)))
    out: FloatArray = rng.multinomial(total, n / total, size=bootstrap).astype(np.float64)
    return out


def _interval(samples: FloatArray) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return None
    tail = (1 - CI_LEVEL) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return [float(lo), float(hi)]


Scalar = float | np.floating[Any] | npt.NDArray[np.float64]


def _num(x: Scalar) -> float | None:
    """A float for JSON (a 0-d array is a scalar): NaN (undefined) becomes None."""
    value = float(x)
    return None if np.isnan(value) else value


def _stat(value: Scalar, samples: FloatArray, **extra: Any) -> dict[str, Any]:
    return {"value": _num(value), "ci": _interval(samples), **extra}


# ---------------------------------------------------------------------------------------
# Kappas


def kappa_from_confusion(confusion: FloatArray) -> FloatArray:
    """Cohen's kappa (unweighted) of one (K, K) or a batch (..., K, K) of confusion counts."""
    n = confusion.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        p_o = np.trace(confusion, axis1=-2, axis2=-1) / n
        p_e = (confusion.sum(axis=-1) * confusion.sum(axis=-2)).sum(axis=-1) / n**2
        out: FloatArray = np.where(p_e < 1, (p_o - p_e) / (1 - p_e), np.nan)
    return out


def fleiss_from_counts(counts: FloatArray, m: int) -> float:
    """Fleiss' kappa of items x labels counts where every item has `m` votes."""
    n_items = counts.shape[0]
    p_j = counts.sum(axis=0) / (n_items * m)
    p_i = ((counts**2).sum(axis=1) - m) / (m * (m - 1))
    p_e = float((p_j**2).sum())
    return (float(p_i.mean()) - p_e) / (1 - p_e) if p_e < 1 else float("nan")


def _majority(counts: IntArray) -> tuple[IntArray, IntArray]:
    """(strict plurality code or -1 when the top counts tie or there are no votes, top count)."""
    top = counts.max(axis=1)
    code = counts.argmax(axis=1)
    tied = (counts == top[:, None]).sum(axis=1) > 1
    code = np.where(tied | (top == 0), -1, code)
    return code.astype(np.int64), top.astype(np.int64)


@stage("agree", outputs=("agreement", "per_item"))
def agreement(
    annotations: Annotated[pl.DataFrame, Table("annotations", rows=False)],
    *,
    level: Level = "nominal",
    label_order: Sequence[str] | None = None,
    item_column: str = "item_id",
    bootstrap: int = 1000,
    seed: int = 0,
) -> StageResult:
    """Inter-annotator agreement: percent agreement, Cohen's kappa per annotator pair, Fleiss'
    kappa, Krippendorff's alpha, per-annotator agreement, with bootstrap intervals.

    Input: the annotations contract (one row per vote; `error` rows are skipped). Output: the
    report (see the module doc), also as the document `agreement`, and the table `per_item`.

    Example: prefdata agree votes.annotations.parquet -o agreement.json

    Args:
        annotations: the votes, one row per vote
        level: nominal, ordinal or interval (ordinal and interval need numeric labels or
            --label-order)
        label_order: the order of the labels for ordinal / interval, e.g. b tie a
        item_column: the column that defines an item (e.g. record_id, to count repeated
            records separately)
        bootstrap: bootstrap resamples for the 95% intervals (0: none)
        seed: seed of the bootstrap
    """
    votes = encode_votes(annotations, item_column=item_column, level=level, label_order=label_order)
    rng = np.random.default_rng(seed)
    k = votes.n_labels
    counts = votes.counts()
    m = counts.sum(axis=1)
    pairable = m >= 2
    agree_pairs = (counts * (counts - 1)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pairwise = np.where(pairable, agree_pairs / (m * (m - 1)), np.nan)
    majority, top = _majority(counts)

    per_item = pl.DataFrame(
        {
            item_column: votes.items,
            "n_votes": m.astype(np.int64),
            "agreement": top / m,
            "pairwise_agreement": pl.Series(pairwise).fill_nan(None),
            "majority_label": pl.Series(
                np.asarray([*votes.labels, ""], dtype=object)[majority], dtype=pl.String
            ).replace("", None),
        }
    )

    report: dict[str, Any] = {
        "level": level,
        "labels": votes.labels,
        "item_column": item_column,
        "items": votes.n_items,
        "votes": len(votes.code),
        "annotators": len(votes.annotators),
        "items_single_vote": int((m == 1).sum()),
        "items_no_majority": int((majority < 0).sum()),
        **votes.skipped,
        "bootstrap": bootstrap,
        "seed": seed,
        "ci_level": CI_LEVEL,
    }

    # Percent agreement and alpha share the pairable items and their count patterns.
    pat, n_pat = _patterns(counts[pairable])
    w = _draws(rng, n_pat, bootstrap)
    pm = pat.sum(axis=1).astype(np.float64)
    pat_f = pat.astype(np.float64)
    pat_pairwise = ((pat_f * (pat_f - 1)).sum(axis=1) / (pm * (pm - 1))) if len(pat) else pm
    n_pairable = int(pairable.sum())
    report["percent_agreement"] = _stat(
        float(np.nanmean(pairwise)) if n_pairable else float("nan"),
        (w @ pat_pairwise) / max(n_pairable, 1),
        items=n_pairable,
    )

    levels = LEVELS[: LEVELS.index(level) + 1]
    if k >= 2 and n_pairable:
        o = coincidences(counts)
        per_pattern = pat_f[:, :, None] * pat_f[:, None, :]
        per_pattern[:, np.arange(k), np.arange(k)] -= pat_f
        per_pattern /= (pm - 1)[:, None, None]
        o_boot = (w @ per_pattern.reshape(len(pat), k * k)).reshape(-1, k, k)
        report["krippendorff_alpha"] = {
            lv: _stat(
                alpha_from_coincidences(o, lv, votes.values),
                alpha_from_coincidences(o_boot, lv, votes.values),
                items=n_pairable,
            )
            for lv in levels
        }
    else:
        report["krippendorff_alpha"] = {
            lv: {"value": None, "ci": None, "items": n_pairable} for lv in levels
        }

    report["fleiss_kappa"] = _fleiss(counts, m, rng, bootstrap)
    cells = _cells(votes)
    report["cells_self_inconsistent"] = int((cells.code < 0).sum())
    report["cohen_kappa"] = _cohen_pairs(votes, cells, rng, bootstrap)
    report["per_annotator"] = _per_annotator(votes, cells, counts, rng, bootstrap)
    return StageResult(
        tables={"per_item": per_item}, report=report, documents={"agreement": report}
    )


def _fleiss(
    counts: IntArray, m: IntArray, rng: np.random.Generator, bootstrap: int
) -> dict[str, Any]:
    pairable = m[m >= 2]
    if not len(pairable):
        return {"value": None, "ci": None, "items": 0, "votes_per_item": None}
    sizes, n = np.unique(pairable, return_counts=True)
    modal = int(sizes[n == n.max()].max())
    use = counts[m == modal]
    pat, n_pat = _patterns(use)
    w = _draws(rng, n_pat, bootstrap)
    pat_f = pat.astype(np.float64)
    # Per resample: label totals and the sum of per-item agreement, then the usual formula.
    totals = w @ pat_f
    p_i = ((pat_f**2).sum(axis=1) - modal) / (modal * (modal - 1))
    p_bar = (w @ p_i) / len(use)
    p_j = totals / (len(use) * modal)
    p_e = (p_j**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(p_e < 1, (p_bar - p_e) / (1 - p_e), np.nan)
    return _stat(
        fleiss_from_counts(use.astype(np.float64), modal),
        boot,
        items=len(use),
        votes_per_item=modal,
        items_other_counts=int(len(pairable) - len(use)),
    )


@dataclass(frozen=True)
class _Cells:
    """One entry per (item, annotator) with votes: code = the label, -1 when repeats differ."""

    unit: IntArray
    annotator: IntArray
    code: IntArray
    counts: IntArray  # cells x labels


def _cells(votes: Votes) -> _Cells:
    j, k = len(votes.annotators), votes.n_labels
    key = votes.unit * j + votes.annotator
    uniq, inverse = np.unique(key, return_inverse=True)
    counts = np.bincount(inverse * k + votes.code, minlength=len(uniq) * k).reshape(len(uniq), k)
    total = counts.sum(axis=1)
    code = np.where(counts.max(axis=1) == total, counts.argmax(axis=1), -1)
    return _Cells(
        unit=(uniq // j).astype(np.int64),
        annotator=(uniq % j).astype(np.int64),
        code=code.astype(np.int64),
        counts=counts.astype(np.int64),
    )


def code_matrix(votes: Votes, cells: _Cells | None = None) -> IntArray:
    """items x annotators label codes (-1 = no vote, or repeat votes that differ)."""
    cells = cells if cells is not None else _cells(votes)
    x = np.full((votes.n_items, len(votes.annotators)), -1, dtype=np.int64)
    x[cells.unit, cells.annotator] = cells.code
    return x


def _confusion_boot(confusion: FloatArray, rng: np.random.Generator, bootstrap: int) -> FloatArray:
    k = confusion.shape[0]
    flat = confusion.reshape(-1).astype(np.int64)
    return _draws(rng, flat, bootstrap).reshape(-1, k, k)


def _cohen_pairs(
    votes: Votes, cells: _Cells, rng: np.random.Generator, bootstrap: int
) -> list[dict[str, Any]]:
    x = code_matrix(votes, cells)
    k = votes.n_labels
    out = []
    for a in range(len(votes.annotators)):
        for b in range(a + 1, len(votes.annotators)):
            both = (x[:, a] >= 0) & (x[:, b] >= 0)
            n = int(both.sum())
            conf = np.bincount(x[both, a] * k + x[both, b], minlength=k * k).reshape(k, k)
            conf_f = conf.astype(np.float64)
            boot = _confusion_boot(conf_f, rng, bootstrap)
            out.append(
                {
                    "annotators": [votes.annotators[a], votes.annotators[b]],
                    "items": n,
                    "percent_agreement": _num(np.trace(conf_f) / n) if n else None,
                    **_stat(
                        kappa_from_confusion(conf_f) if n else np.nan, kappa_from_confusion(boot)
                    ),
                }
            )
    return out


def _per_annotator(
    votes: Votes, cells: _Cells, counts: IntArray, rng: np.random.Generator, bootstrap: int
) -> list[dict[str, Any]]:
    k = votes.n_labels
    others = counts[cells.unit] - cells.counts
    loo, _ = _majority(others)
    usable = (loo >= 0) & (cells.code >= 0)
    vote_n = np.bincount(votes.annotator, minlength=len(votes.annotators))
    out = []
    for j, name in enumerate(votes.annotators):
        mine = usable & (cells.annotator == j)
        conf = (
            np.bincount(cells.code[mine] * k + loo[mine], minlength=k * k)
            .reshape(k, k)
            .astype(np.float64)
        )
        n = int(mine.sum())
        boot = _confusion_boot(conf, rng, bootstrap)
        with np.errstate(divide="ignore", invalid="ignore"):
            boot_agree = np.trace(boot, axis1=1, axis2=2) / boot.sum(axis=(1, 2))
        out.append(
            {
                "annotator": name,
                "annotator_kind": votes.kinds[j],
                "votes": int(vote_n[j]),
                "items_compared": n,
                "agreement_with_consensus": _stat(np.trace(conf) / n if n else np.nan, boot_agree),
                "kappa_with_consensus": _stat(
                    kappa_from_confusion(conf) if n else np.nan, kappa_from_confusion(boot)
                ),
            }
        )
    return out
