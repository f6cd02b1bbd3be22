"""MinHash signatures: prefdata's numpy MinHash against rensa and datasketch, on the same
texts, in one process (issue 18: "rensa or datasketch may replace our own MinHash if
faster; measure it").

Texts: the chosen answers of bench_audit.py's synthetic pairs (median ~460 characters, ~70
words). Shingles: lower-cased word 3-grams, 64 permutations, for every library.

- prefdata: `quality.minhash.signatures` (shingling + signatures, vectorised): the baseline.
- rensa, matrix: prefdata's shingle hashes fed to `RMinHash.digest_matrix_from_flat_token_hashes`
  (rensa's Rust MinHash over the whole table; the shingling is ours).
- rensa, per text: a Python tokeniser and `RMinHash.update` per text (rensa's documented use).
- datasketch, per text: the same tokeniser and `MinHash.bulk` (datasketch's batch API).

Accuracy: on 2,000 pairs (a text and a copy with a share of its words replaced, so the
true Jaccard spreads over 0.2-1), the mean absolute error of each library's estimated
Jaccard (share of equal signature entries) against the exact Jaccard of the shingle sets
(Python sets, computed here); mean and standard error over 3 seeds (hash seed and pair
draw). Speed is texts per second, and the ratio is the library's rate over prefdata's,
measured in the same run.

Usage: python bench/bench_minhash.py [--n 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

NGRAM, PERM = 3, 64
SEEDS = (0, 1, 2)  # hash seeds (and edited-pair draws) of the accuracy runs
_WORD = re.compile(r"\w+")


def _grams(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    if len(words) < NGRAM:
        return [" ".join(words)] if words else []
    return [" ".join(words[k : k + NGRAM]) for k in range(len(words) - NGRAM + 1)]


def prefdata_sigs(texts: list[str], seed: int = 0) -> np.ndarray:
    from prefdata.quality.minhash import signatures

    return signatures(pl.Series(texts), ngram=NGRAM, num_perm=PERM, seed=seed)[0]


def rensa_matrix(texts: list[str], seed: int = 0) -> np.ndarray:
    from rensa import RMinHash

    from prefdata.quality.minhash import shingles

    sh = shingles(pl.Series(texts), ngram=NGRAM, seed=seed)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(
        sh.values, sh.offsets.astype(np.uint64), PERM, seed
    )
    return np.asarray(matrix.to_rows(), dtype=np.uint32)


def rensa_per_text(texts: list[str], seed: int = 0) -> np.ndarray:
    from rensa import RMinHash

    rows = []
    for text in texts:
        m = RMinHash(num_perm=PERM, seed=seed)
        m.update(_grams(text))
        rows.append(m.digest())
    return np.asarray(rows, dtype=np.uint64)


def datasketch_per_text(texts: list[str], seed: int = 0) -> np.ndarray:
    from datasketch import MinHash

    sets = [[g.encode() for g in _grams(text)] for text in texts]
    return np.asarray([m.hashvalues for m in MinHash.bulk(sets, num_perm=PERM, seed=seed)])


LIBRARIES: dict[str, Callable[[list[str], int], np.ndarray]] = {
    "prefdata": prefdata_sigs,
    "rensa, matrix": rensa_matrix,
    "rensa, per text": rensa_per_text,
    "datasketch, per text": datasketch_per_text,
}


def edited_pairs(texts: list[str], n: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """n (text, copy with a share of its words replaced) pairs, shares uniform on 0-0.5."""
    rng = np.random.default_rng(seed)
    left, right = [], []
    for k in rng.choice(len(texts), n, replace=False):
        words = texts[k].split()
        share = rng.uniform(0, 0.5)
        for w in rng.choice(len(words), int(len(words) * share), replace=False):
            words[w] = f"w{rng.integers(1_000_000)}"
        left.append(texts[k])
        right.append(" ".join(words))
    return left, right


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import tempfile

    from bench_audit import generate

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.parquet"
        generate(args.n, path)
        texts = pl.read_parquet(path, columns=["chosen"])["chosen"].to_list()
    draws = [edited_pairs(texts, 2_000, seed + 1) for seed in SEEDS]
    exact = [
        np.array(
            [
                len(a & b) / len(a | b) if a | b else 1.0
                for a, b in ((set(_grams(x)), set(_grams(y))) for x, y in zip(*draw, strict=True))
            ]
        )
        for draw in draws
    ]
    results: dict[str, Any] = {"texts": len(texts), "num_perm": PERM, "ngram": NGRAM}
    for name, run in LIBRARIES.items():
        run(texts[:1000], 0)  # imports and first-call set-up outside the timing
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run(texts, 0)
            seconds.append(time.perf_counter() - t0)
        errors = [
            float(np.abs((run(left, seed) == run(right, seed)).mean(axis=1) - truth).mean())
            for seed, (left, right), truth in zip(SEEDS, draws, exact, strict=True)
        ]
        results[name] = {
            "texts_per_s": round(len(texts) / min(seconds), 1),
            "seconds": [round(s, 2) for s in seconds],
            "jaccard_mae": round(float(np.mean(errors)), 4),
            "jaccard_mae_se": round(float(np.std(errors, ddof=1) / np.sqrt(len(errors))), 4),
        }
        print(name, json.dumps(results[name]), flush=True)
    base = results["prefdata"]["texts_per_s"]
    for name in LIBRARIES:
        results[name]["rate_over_prefdata"] = round(results[name]["texts_per_s"] / base, 2)
    print(json.dumps({name: results[name]["rate_over_prefdata"] for name in LIBRARIES}))
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_minhash-{args.n}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
