"""Independent computations of the report's judge and agreement figures, for the report
tests: per-annotator position and length tendencies, and inter-annotator agreement with
scikit-learn (Cohen's kappa), statsmodels (Fleiss' kappa), krippendorff (alpha), a plain EM
for Dawid-Skene, and bootstrap intervals recomputed with numpy. The shared helpers
(`assert_matches`, `boot`, `wilson`) are in tests.report.reference.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import krippendorff
import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from prefdata import ids
from prefdata.report import interpret
from tests.reference_em import dawid_skene_em
from tests.report.reference import BOOT, Approx, Boot, Row, boot, nan_none, wilson

# --------------------------------------------------------------------------------- votes


def majority(labels: Iterable[str]) -> str | None:
    """Strict plurality, None when the top counts tie or there is nothing."""
    counts = Counter(labels).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def judges(pairs: list[Row], votes: list[Row]) -> dict[str, Any]:
    sides = {}
    for p in pairs:
        a, b = ids.canonical_sides(p["chosen"], p["rejected"])
        sides[p["pair_id"]] = (len(a), len(b))
    kinds = {v["annotator"]: v["annotator_kind"] for v in votes}
    human_labels: dict[str, list[str]] = defaultdict(list)
    for v in votes:
        if v["annotator_kind"] == "human":
            human_labels[v["item_id"]].append(v["label"])
    human_major = {i: majority(x) for i, x in human_labels.items()}
    annotators: dict[str, Any] = {}
    all_first = all_n = all_ties = 0
    for name in sorted(kinds):
        mine = [v for v in votes if v["annotator"] == name]
        ordered = [v for v in mine if v["order"] in ("ab", "ba")]
        first = sum(
            (v["label"] == "a" and v["order"] == "ab") or (v["label"] == "b" and v["order"] == "ba")
            for v in ordered
        )
        n = sum(v["label"] in ("a", "b") for v in ordered)
        ties = sum(v["label"] == "tie" for v in ordered)
        all_first, all_n, all_ties = all_first + first, all_n + n, all_ties + ties
        lo, hi = wilson(first, n)
        position = {
            "votes": n,
            "first_shown_wins": first,
            "ties": ties,
            "p_first_shown_wins": first / n,
            "low": lo,
            "high": hi,
            "p_value": binomtest(first, n, 0.5).pvalue,
        }
        cells: dict[str, list[Row]] = defaultdict(list)
        for v in ordered:
            cells[v["item_id"]].append(v)
        both = [c for c in cells.values() if {v["order"] for v in c} == {"ab", "ba"}]
        consistent = sum(len({v["label"] for v in c}) == 1 for c in both)
        decided = [
            v
            for v in mine
            if v["label"] in ("a", "b")
            and v["item_id"] in sides
            and sides[v["item_id"]][0] != sides[v["item_id"]][1]
        ]
        longer = sum(
            (sides[v["item_id"]][0] > sides[v["item_id"]][1]) == (v["label"] == "a")
            for v in decided
        )
        llo, lhi = wilson(longer, len(decided))
        vs_human = None
        if kinds[name] == "llm":
            compared = [v for v in mine if v["item_id"] in human_labels]
            labelled = [v for v in compared if human_major[v["item_id"]] is not None]
            truth = [human_major[v["item_id"]] for v in labelled]
            given = [v["label"] for v in labelled]
            scores = [
                Counter(human_labels[v["item_id"]])[v["label"]] / len(human_labels[v["item_id"]])
                for v in compared
            ]
            vs_human = {
                "votes_compared": len(compared),
                "items_with_human_label": len(labelled),
                "agreement": sum(t == g for t, g in zip(truth, given, strict=True)) / len(labelled),
                "kappa": cohen_kappa_score(truth, given, labels=["a", "b", "tie"]),
                "mean_score": sum(scores) / len(scores),
            }
        position["reading"] = interpret.position_bias(
            name, position["p_first_shown_wins"], lo, hi, n
        )
        annotators[name] = {
            "annotator_kind": kinds[name],
            "votes": len(mine),
            "position": position,
            "position_consistency": {
                "items_both_orders": len(both),
                "consistent": consistent,
                "share": consistent / len(both),
            }
            if both
            else None,
            "longer_wins": {
                "votes": len(decided),
                "longer_wins": longer,
                "p": longer / len(decided),
                "low": llo,
                "high": lhi,
                "reading": interpret.longer_wins(
                    name, longer / len(decided), llo, lhi, len(decided)
                ),
            },
        }
        if kinds[name] != "human":
            annotators[name]["agreement_with_humans"] = vs_human
    lo, hi = wilson(all_first, all_n)
    # judge_vs_human flags an item when the mean over its judge votes of the human vote
    # share of the judge's label is below 0.5.
    judge_items: dict[str, list[float]] = defaultdict(list)
    for v in votes:
        if v["annotator_kind"] == "llm" and v["item_id"] in human_labels:
            share = Counter(human_labels[v["item_id"]])[v["label"]] / len(
                human_labels[v["item_id"]]
            )
            judge_items[v["item_id"]].append(share)
    judged = {v["item_id"] for v in votes if v["annotator_kind"] == "llm"}
    return {
        "annotators": {k: v for k, v in annotators.items() if kinds[k] != "human"},
        "humans": {k: v for k, v in annotators.items() if kinds[k] == "human"},
        "position_overall": {
            "votes": all_n,
            "first_shown_wins": all_first,
            "ties": all_ties,
            "p_first_shown_wins": all_first / all_n,
            "low": lo,
            "high": hi,
            "p_value": binomtest(all_first, all_n, 0.5).pvalue,
        },
        "judge_vs_human": {
            "issue": "judge_vs_human",
            "method": "majority",
            "threshold": 0.5,
            "items_compared": len(judge_items),
            "items_without_judge": len(set(human_labels) - judged),
            "items_without_human": len(judged - set(human_labels)),
            "flagged": sum(sum(s) / len(s) < 0.5 for s in judge_items.values()),
        },
    }


# ------------------------------------------------------------------------------ agreement

ORDER = ["b", "tie", "a"]  # the report's label order for pair labels (ordinal positions)


def _kappa(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Unweighted Cohen's kappa from codes (for bootstrap resamples; points use sklearn)."""
    if not len(x):
        return float("nan")
    conf = np.zeros((k, k))
    np.add.at(conf, (x, y), 1)
    n = conf.sum()
    po = np.trace(conf) / n
    pe = (conf.sum(0) * conf.sum(1)).sum() / n**2
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def reliability_matrix(counts: np.ndarray) -> np.ndarray:
    """A coders x items matrix with each item's votes as values (NaN = no vote). Who cast
    which vote does not change alpha, so vote r of an item goes to row r."""
    m = counts.sum(axis=1)
    cum = np.cumsum(counts, axis=1)
    rows = [np.where(r < m, (cum <= r).sum(axis=1), np.nan) for r in range(int(m.max()))]
    return np.array(rows, dtype=float)


def _alpha(matrix: np.ndarray, level: Any, k: int) -> float:
    """alpha via the krippendorff package."""
    if len(np.unique(matrix[~np.isnan(matrix)])) < 2:
        return float("nan")
    return float(
        krippendorff.alpha(
            reliability_data=matrix, level_of_measurement=level, value_domain=list(range(k))
        )
    )


def agreement(
    votes: list[Row], *, labels: list[str], bootstrap: int, seed: int, rng: np.random.Generator
) -> dict[str, Any]:
    code = {x: i for i, x in enumerate(labels)}
    k = len(labels)
    items = list(dict.fromkeys(v["item_id"] for v in votes))
    names = sorted({v["annotator"] for v in votes})
    kinds = {v["annotator"]: v["annotator_kind"] for v in votes}
    counts = np.zeros((len(items), k), dtype=int)
    row_of = {i: r for r, i in enumerate(items)}
    cell_labels: dict[tuple[str, str], list[str]] = defaultdict(list)
    for v in votes:
        counts[row_of[v["item_id"]], code[v["label"]]] += 1
        cell_labels[(v["item_id"], v["annotator"])].append(v["label"])
    m = counts.sum(axis=1)
    pairable = counts[m >= 2]
    pm = pairable.sum(axis=1)
    per_item = (pairable * (pairable - 1)).sum(axis=1) / (pm * (pm - 1))

    def boot_items(n: int, stat: Any) -> Boot:
        return boot(stat(rng.integers(0, n, n)) for _ in range(BOOT))

    out: dict[str, Any] = {
        "level": "ordinal",
        "labels": labels,
        "item_column": "item_id",
        "items": len(items),
        "votes": len(votes),
        "annotators": len(names),
        "items_single_vote": int((m == 1).sum()),
        "items_no_majority": sum(
            majority([x for x, c in zip(labels, row, strict=True) for _ in range(c)]) is None
            for row in counts
        ),
        "skipped_error": 0,
        "skipped_no_label": 0,
        "bootstrap": bootstrap,
        "seed": seed,
        "ci_level": 0.95,
        "percent_agreement": {
            "value": float(per_item.mean()),
            "ci": boot_items(len(per_item), lambda s: per_item[s].mean()),
            "items": len(per_item),
        },
    }
    matrix = reliability_matrix(pairable)
    out["krippendorff_alpha"] = {
        level: {
            "value": _alpha(matrix, level, k),
            "ci": boot_items(len(pairable), lambda s, lv=level: _alpha(matrix[:, s], lv, k)),
            "items": len(pairable),
        }
        for level in ("nominal", "ordinal")
    }
    sizes = Counter(int(x) for x in pm)
    top = max(sizes.values())
    modal = max(s for s, n in sizes.items() if n == top)
    use = pairable[pm == modal]
    out["fleiss_kappa"] = {
        "value": float(fleiss_kappa(use, method="fleiss")),
        "ci": boot_items(len(use), lambda s: fleiss_kappa(use[s], method="fleiss")),
        "items": len(use),
        "votes_per_item": modal,
        "items_other_counts": len(pairable) - len(use),
    }
    cell = {key: x[0] for key, x in cell_labels.items() if len(set(x)) == 1}
    out["cells_self_inconsistent"] = sum(len(set(x)) > 1 for x in cell_labels.values())
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = [it for it in items if (it, a) in cell and (it, b) in cell]
            x = [cell[(it, a)] for it in both]
            y = [cell[(it, b)] for it in both]
            xc, yc = np.array([code[t] for t in x]), np.array([code[t] for t in y])
            pairs.append(
                {
                    "annotators": [a, b],
                    "items": len(both),
                    "percent_agreement": float(np.mean(xc == yc)) if both else float("nan"),
                    "value": nan_none(cohen_kappa_score(x, y, labels=labels))
                    if both
                    else float("nan"),
                    "ci": boot_items(len(both), lambda s, xc=xc, yc=yc: _kappa(xc[s], yc[s], k)),
                }
            )
    out["cohen_kappa"] = pairs
    item_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for v in votes:
        item_counts[v["item_id"]][v["label"]] += 1
    per = []
    for a in names:
        mine, loo = [], []
        for (it, who), lab in cell.items():
            if who != a:
                continue
            # The others' votes: the item's votes less all of this annotator's votes on it.
            others = item_counts[it] - Counter(cell_labels[(it, a)])
            major = majority(others.elements())
            if major is not None:
                mine.append(code[lab])
                loo.append(code[major])
        xc, yc = np.array(mine), np.array(loo)
        per.append(
            {
                "annotator": a,
                "annotator_kind": kinds[a],
                "votes": sum(v["annotator"] == a for v in votes),
                "items_compared": len(mine),
                "agreement_with_consensus": {
                    "value": float(np.mean(xc == yc)),
                    "ci": boot_items(
                        len(xc), lambda s, xc=xc, yc=yc: float(np.mean(xc[s] == yc[s]))
                    ),
                },
                "kappa_with_consensus": {
                    "value": nan_none(
                        cohen_kappa_score(
                            [labels[i] for i in mine], [labels[i] for i in loo], labels=labels
                        )
                    ),
                    "ci": boot_items(len(xc), lambda s, xc=xc, yc=yc: _kappa(xc[s], yc[s], k)),
                },
            }
        )
    out["per_annotator"] = per
    return out


def dawid_skene_accuracy(
    votes: list[Row],
    labels: list[str],
    *,
    smoothing: float = 1.0,
    tol: float = 1e-6,
    max_iter: int = 500,
) -> dict[str, Approx]:
    """Dawid and Skene's EM (tests.reference_em), run to convergence; accuracy = sum over
    true labels of prior x P(annotator gives that label | true label)."""
    k = len(labels)
    by_item: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for v in votes:
        by_item[v["item_id"]].append((v["annotator"], labels.index(v["label"])))
    _, prior, conf = dawid_skene_em(
        dict(by_item), k, smoothing=smoothing, max_iter=max_iter, tol=tol
    )
    return {a: Approx(sum(prior[t] * conf[a][t][t] for t in range(k)), 1e-4) for a in conf}


def heatmap(cohen: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    kappa: list[list[float | None]] = [[None] * len(names) for _ in names]
    items = [[0] * len(names) for _ in names]
    for entry in cohen:
        i, j = (names.index(n) for n in entry["annotators"])
        kappa[i][j] = kappa[j][i] = entry["value"]
        items[i][j] = items[j][i] = entry["items"]
    return {"annotators": names, "kappa": kappa, "items": items}
