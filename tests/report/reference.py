"""Independent computations of every report figure, for the report tests (the judge and
agreement figures are in tests.report.reference_votes).

Plain Python over rows (dicts), numpy for quantiles, and the reference packages for the
statistics: statsmodels (Wilson intervals), the tokenizer's own per-example
`apply_chat_template(tokenize=True)` (what TRL calls) for token counts. Bootstrap intervals
are recomputed by resampling items with numpy; they can only match the report's to Monte
Carlo error, so `assert_matches` compares them with a tolerance (CI_TOL) and everything else
exactly (floats to 1e-9).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from prefdata.report import interpret
from prefdata.report.audit_view import NO_MODEL

CI_TOL = 0.02
BOOT = 400
Row = dict[str, Any]


def assert_matches(actual: Any, expected: Any, path: str = "") -> None:
    """Same keys everywhere, same values (floats to 1e-9; bootstrap `ci` within CI_TOL)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {actual!r}"
        assert set(actual) == set(expected), (
            f"{path}: keys differ: only in report {sorted(set(actual) - set(expected))}, "
            f"only in reference {sorted(set(expected) - set(actual))}"
        )
        for key in expected:
            if key == "ci" and isinstance(expected[key], Boot):
                got, want = actual[key], expected[key].interval
                if want is None:
                    assert got is None, f"{path}.ci: {got}"
                else:
                    assert got is not None and len(got) == 2, f"{path}.ci: {got}"
                    assert abs(got[0] - want[0]) <= CI_TOL and abs(got[1] - want[1]) <= CI_TOL, (
                        f"{path}.ci: report {got}, reference {want}"
                    )
                continue
            assert_matches(actual[key], expected[key], f"{path}.{key}")
        return
    if isinstance(expected, Approx):
        assert abs(actual - expected.value) <= expected.tol, (
            f"{path}: report {actual}, reference {expected.value} (tolerance {expected.tol})"
        )
        return
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(a, e, f"{path}[{i}]")
        return
    if isinstance(expected, float) and not isinstance(expected, bool):
        if math.isnan(expected):
            assert actual is None, f"{path}: {actual} (expected undefined)"
            return
        assert isinstance(actual, (int, float)), f"{path}: {actual!r}"
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9), (
            f"{path}: report {actual}, reference {expected}"
        )
        return
    assert actual == expected, f"{path}: report {actual!r}, reference {expected!r}"


class Approx:
    """A value that the report can only reach to a tolerance (an iterative fit)."""

    def __init__(self, value: float, tol: float) -> None:
        self.value, self.tol = value, tol


class Boot:
    """A bootstrap interval to compare with a tolerance."""

    def __init__(self, interval: Sequence[float] | None) -> None:
        self.interval = None if interval is None else [float(x) for x in interval]


def boot(samples: Iterable[float]) -> Boot:
    x = np.array([s for s in samples if s is not None and not math.isnan(s)])
    if not len(x):
        return Boot(None)
    return Boot(np.percentile(x, [2.5, 97.5]))


def wilson(k: int, n: int) -> tuple[float | None, float | None]:
    if not n:
        return None, None
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return float(lo), float(hi)


def nan_none(x: float) -> float:
    return float("nan") if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ------------------------------------------------------------------------------- overview


def describe_pairs(pairs: list[Row], schema: dict[str, str]) -> dict[str, Any]:
    conf = [p["confidence"] for p in pairs if p["confidence"] is not None]
    problems: Counter[str] = Counter()
    seen: set[str] = set()
    for p in pairs:
        if not (p["chosen"] or "").strip():
            problems["empty text"] += 1
        if p["chosen"] == p["rejected"]:
            problems["chosen == rejected"] += 1
        if p["pair_id"] in seen:
            problems["duplicate pair_id (an earlier row has the same id)"] += 1
        seen.add(p["pair_id"])
    out: dict[str, Any] = {
        "rows": len(pairs),
        "columns": schema,
        "contract": "pairs",
        "problems": dict(problems),
        "sources": dict(Counter(p["source"] for p in pairs)),
        "confidence": (
            {"known": len(conf), "mean": sum(conf) / len(conf), "min": min(conf), "max": max(conf)}
            if conf
            else {"known": 0}
        ),
        "chosen_longer_share": sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
        / max(len(pairs), 1),
        "distinct_prompts": len({p["prompt_id"] for p in pairs}),
    }
    return out


def provenance(pairs: list[Row], keys_of_interest: Sequence[str]) -> dict[str, Any]:
    keys: Counter[str] = Counter()
    values: dict[str, list[str]] = {}
    parsed = 0
    for p in pairs:
        data = json.loads(p["provenance"])
        parsed += 1
        keys.update(data.keys())
        for k, v in data.items():
            if k in keys_of_interest:
                text = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                if text not in values.setdefault(k, []) and len(values[k]) < 10:
                    values[k].append(text[:200])
    return {
        "rows_read": len(pairs),
        "parsed": parsed,
        "unreadable": 0,
        "keys": dict(sorted(keys.items())),
        "values": values,
    }


def describe_votes(votes: list[Row], schema: dict[str, str], total: int) -> dict[str, Any]:
    usable = [v for v in votes if v["label"] is not None and v.get("error") is None]
    return {
        "rows": len(votes),
        "columns": schema,
        "contract": "annotations",
        "problems": {},
        "labels": dict(Counter(str(v["label"]) for v in votes)),
        "annotators": len({v["annotator"] for v in votes}),
        "items": len({v["item_id"] for v in votes}),
        "votes_total": total,
        "votes_not_in_data": total - len(votes),
        "usable_votes": len(usable),
    }


# -------------------------------------------------------------------------------- lengths


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def trl_token_lengths(tokenizer: Any, pair: Row) -> dict[str, int]:
    """Token counts of one pair the way TRL 1.x's DPO trainer tokenizes it."""
    prompt = [{"role": m["role"], "content": m["content"]} for m in pair["prompt"]]

    def ids_of(messages: list[dict[str, str]], **kw: Any) -> list[int]:
        return list(
            tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kw)[
                "input_ids"
            ]
        )

    p = ids_of(prompt, add_generation_prompt=True)
    full = {
        s: ids_of([*prompt, {"role": "assistant", "content": pair[s]}])
        for s in ("chosen", "rejected")
    }
    n = min(_prefix(p, full["chosen"]), _prefix(p, full["rejected"]))
    return {
        "prompt": n,
        "chosen": len(full["chosen"]) - n,
        "rejected": len(full["rejected"]) - n,
        "sequence_chosen": len(full["chosen"]),
        "sequence_rejected": len(full["rejected"]),
    }


def _stats(values: list[int]) -> dict[str, Any]:
    x = np.array(values, dtype=float)
    return {
        "count": len(values),
        "mean": sum(values) / len(values),
        "min": min(values),
        "p50": float(np.percentile(x, 50)),
        "p90": float(np.percentile(x, 90)),
        "p95": float(np.percentile(x, 95)),
        "p99": float(np.percentile(x, 99)),
        "max": max(values),
    }


def lengths(
    per_pair: list[dict[str, int]],
    *,
    tokenizer_name: str | None,
    max_length: int,
    rows: int,
    seed: int | None = None,
) -> dict[str, Any]:
    """`per_pair`: the measured rows (all `rows` of them, or the sample drawn with `seed`)."""
    fields = {
        "prompt": [x["prompt"] for x in per_pair],
        "chosen": [x["chosen"] for x in per_pair],
        "rejected": [x["rejected"] for x in per_pair],
        "sequence": [max(x["sequence_chosen"], x["sequence_rejected"]) for x in per_pair],
    }
    top = max(float(np.percentile(np.array(v, dtype=float), 99)) for v in fields.values())
    step = max(1, math.ceil(top / 30))
    edges = [i * step for i in range(31)]
    counts = {}
    for name, v in fields.items():
        clipped = np.minimum(np.array(v, dtype=float), edges[-1] - 0.5)
        counts[name] = np.histogram(clipped, bins=edges)[0].tolist()
    out: dict[str, Any] = {
        "unit": "tokens" if tokenizer_name else "chars",
        "tokenizer": tokenizer_name,
        "fields": {k: _stats(v) for k, v in fields.items()},
        "histogram": {"edges": edges, "open_last_bin": True, "counts": counts},
        "measured": {
            "rows_measured": len(per_pair),
            "rows": rows,
            "sampled": len(per_pair) < rows,
            "seed": seed,
        },
    }
    if tokenizer_name:
        over_c = [x["sequence_chosen"] > max_length for x in per_pair]
        over_r = [x["sequence_rejected"] > max_length for x in per_pair]
        over = [a or b for a, b in zip(over_c, over_r, strict=True)]
        out["truncation"] = {
            "max_length": max_length,
            "chosen_over": sum(over_c),
            "rejected_over": sum(over_r),
            "rows_over": sum(over),
            "rows_over_share": sum(over) / len(over),
            "prompt_fills_max_length": sum(x["prompt"] >= max_length for x in per_pair),
            "rows": len(per_pair),
        }
        if len(per_pair) < rows:
            out["truncation"]["rows_over_share_interval"] = list(wilson(sum(over), len(over)))
    return out


def char_lengths(pairs: list[Row]) -> list[dict[str, int]]:
    out = []
    for p in pairs:
        prompt = sum(len(m["content"] or "") for m in p["prompt"])
        out.append(
            {
                "prompt": prompt,
                "chosen": len(p["chosen"]),
                "rejected": len(p["rejected"]),
                "sequence_chosen": prompt + len(p["chosen"]),
                "sequence_rejected": prompt + len(p["rejected"]),
            }
        )
    return out


# ---------------------------------------------------------------------------- length bias


def _length_block(pairs: list[Row]) -> dict[str, Any]:
    longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
    shorter = sum(len(p["chosen"]) < len(p["rejected"]) for p in pairs)
    logs = [
        math.log(len(p["chosen"]) / len(p["rejected"]))
        for p in pairs
        if p["chosen"] and p["rejected"]
    ]
    lo, hi = wilson(longer, longer + shorter)
    return {
        "pairs": len(pairs),
        "chosen_longer": longer,
        "rejected_longer": shorter,
        "equal_length": len(pairs) - longer - shorter,
        "p_chosen_longer": longer / (longer + shorter),
        "low": lo,
        "high": hi,
        "mean_log_length_ratio": sum(logs) / len(logs),
    }


def length_bias(pairs: list[Row], points: list[list[int]]) -> dict[str, Any]:
    by: dict[str, list[Row]] = defaultdict(list)
    for p in pairs:
        by[p["source"]].append(p)
    overall = _length_block(pairs)
    differ = overall["chosen_longer"] + overall["rejected_longer"]
    return {
        "overall": overall,
        "by_source": {s: _length_block(rows) for s, rows in sorted(by.items())},
        "scatter": {"unit": "chars", "points": points, "total": len(pairs)},
        # The sentence itself is checked in test_interpret; here, that it reads this figure.
        "reading": interpret.length_bias(
            overall["p_chosen_longer"] if differ else None, overall["low"], overall["high"], differ
        ),
    }


# --------------------------------------------------------------------- confidence, audit


def confidence(pairs: list[Row]) -> dict[str, Any]:
    conf = [p["confidence"] for p in pairs if p["confidence"] is not None]
    counts = [0] * 20
    for c in conf:
        counts[min(math.floor(c * 20), 19)] += 1
    return {
        "known": len(conf),
        "missing": len(pairs) - len(conf),
        "mean": sum(conf) / len(conf),
        "histogram": {"edges": [i / 20 for i in range(21)], "counts": counts},
        "thresholds": [
            {
                "threshold": t,
                "kept": sum(p["confidence"] is None or p["confidence"] >= t for p in pairs),
                "dropped": sum(p["confidence"] is not None and p["confidence"] < t for p in pairs),
            }
            for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
        ],
    }


def _excerpt(text: str) -> dict[str, Any]:
    return {"text": text[:1500], "chars": len(text), "cut": max(len(text) - 1500, 0)}


MODEL_ISSUES = ("mislabeled", "model_disagrees")


def audit(pairs: list[Row], issues: list[Row], *, sample: list[Row] | None) -> dict[str, Any]:
    """The heuristic flags (model-based issues apart) and the reviewed sample's rate."""
    by_id = {p["pair_id"] for p in pairs}
    mine = [r for r in issues if r["item_id"] in by_id]
    heuristic = [r for r in mine if r["issue"] not in MODEL_ISSUES]
    flagged = [r for r in heuristic if r["is_issue"]]
    items = {r["item_id"] for r in flagged}
    out: dict[str, Any] = {
        "issue_rows": len(mine),
        "issue_counts": dict(sorted(Counter(r["issue"] for r in flagged).items())),
        "rows_per_issue": dict(sorted(Counter(r["issue"] for r in heuristic).items())),
        "items_flagged": len(items),
        "items_flagged_share": len(items) / len(pairs),
    }
    if sample is not None:
        done = [r["mislabeled"] for r in sample if r["mislabeled"] is not None]
        k, n = sum(done), len(done)
        lo, hi = wilson(k, n)
        out["sample"] = {
            "reviewed": n,
            "not_reviewed": len(sample) - n,
            "mislabeled": k,
            "rate": k / n,
            "low": lo,
            "high": hi,
            "confidence": 0.95,
            "method": "wilson",
            "n_effective": float(n),
            "warn_above": 0.1,
            "warn": k / n > 0.1,
            "above_confidently": lo is not None and lo > 0.1,
            "below_confidently": hi is not None and hi < 0.1,
        }
    return out


def mislabel(pairs: list[Row], issues: list[Row]) -> dict[str, Any]:
    """The model-based P(swapped) figures from the `mislabeled` issue rows."""
    ids_ = {p["pair_id"] for p in pairs}
    rows = [r for r in issues if r["item_id"] in ids_ and r["issue"] == "mislabeled"]
    if not rows:
        return {"available": False, "why": NO_MODEL}
    p = np.array([r["p_flipped"] for r in rows], dtype=float)
    flagged = np.array([bool(r["is_issue"]) for r in rows])
    signals: Counter[str] = Counter(
        name for r in rows for name in (r.get("signals") or "").split(",") if name
    )
    return {
        "available": True,
        "pairs": len(rows),
        "pairs_in_data": len(pairs),
        "flagged": int(flagged.sum()),
        "flagged_share": float(flagged.mean()),
        "expected_mislabeled": float(p.sum()),
        "mean_p": float(p.mean()),
        "threshold": float(p[flagged].min()) if flagged.any() else None,
        "histogram": {
            "edges": [i / 20 for i in range(21)],
            "counts": [
                int(((p >= i / 20) & ((p < (i + 1) / 20) | (i == 19))).sum()) for i in range(20)
            ],
        },
        "signals": dict(sorted(signals.items())),
    }


def filtering(kept: int, rejected: list[Row]) -> dict[str, Any]:
    first = Counter(r["reason"] for r in rejected)
    out: dict[str, Any] = {
        "kept": kept,
        "dropped": len(rejected),
        "dropped_share": len(rejected) / (kept + len(rejected)),
        "dropped_by_reason": dict(sorted(first.items(), key=lambda x: (-x[1], x[0]))),
    }
    if rejected and "reasons" in rejected[0]:
        every = Counter(x for r in rejected for x in r["reasons"].split("; "))
        out["failing_by_rule"] = dict(sorted(every.items(), key=lambda x: (-x[1], x[0])))
    return out


DEDUP = (
    "duplicate_pair",
    "near_duplicate_pair",
    "conflicting_duplicate",
    "duplicate_prompt",
    "near_duplicate_prompt",
)


def _texts(pair: Row | None, chars: int = 1500) -> dict[str, Any] | None:
    if pair is None:
        return None
    prompt = "\n\n".join(f"[{m['role']}] {m['content'] or ''}" for m in pair["prompt"])
    return {
        "prompt": {"text": prompt[:chars], "chars": len(prompt)},
        "chosen": {"text": pair["chosen"][:chars], "chars": len(pair["chosen"])},
        "rejected": {"text": pair["rejected"][:chars], "chars": len(pair["rejected"])},
        "source": pair["source"],
    }


def duplicate_examples(pairs: list[Row], rows: list[Row]) -> list[dict[str, Any]]:
    """Every conflicting pair of rows (up to 100), then up to 10 exact and 10 near
    duplicates; each with the texts of the row's pair and of the pair its reason names."""
    import re

    by_id = {p["pair_id"]: p for p in pairs}
    out: list[dict[str, Any]] = []
    seen: set[frozenset[str]] = set()
    for issue, limit in (
        ("conflicting_duplicate", 100),
        ("duplicate_pair", 10),
        ("near_duplicate_pair", 10),
    ):
        taken = 0
        for r in sorted((r for r in rows if r["issue"] == issue), key=lambda r: r["item_id"]):
            if taken == limit:
                break
            found = re.search(r"pair ([0-9a-f]{8,})", r["reason"])
            other = found.group(1) if found else None
            key = frozenset({r["item_id"], other or ""})
            if key in seen:
                continue
            seen.add(key)
            taken += 1
            out.append(
                {
                    "issue": issue,
                    "item_id": r["item_id"],
                    "other_id": other,
                    "reason": r["reason"],
                    "item": _texts(by_id.get(r["item_id"])),
                    "other": _texts(by_id.get(other)) if other else None,
                }
            )
    return out


def duplicates_from_issues(pairs: list[Row], issues: list[Row]) -> dict[str, Any]:
    ids_ = {p["pair_id"] for p in pairs}
    rows = [r for r in issues if r["item_id"] in ids_ and r["issue"] in DEDUP]
    overlap = [r for r in issues if r["item_id"] in ids_ and r["issue"] == "train_test_overlap"]
    out: dict[str, Any] = {
        "source": "issues",
        "counts": {n: sum(r["issue"] == n for r in rows) for n in DEDUP},
        "flagged": {n: sum(r["issue"] == n and r["is_issue"] for r in rows) for n in DEDUP},
        "pairs": len(pairs),
        "distinct_prompts": len({p["prompt_id"] for p in pairs}),
        "examples": duplicate_examples(pairs, rows),
    }
    if overlap:
        exact = sum(r["score"] == 0 for r in overlap)
        out["overlap"] = {
            "source": "issues",
            "overlap_exact": exact,
            "overlap_near": len(overlap) - exact,
        }
    return out
