"""MinHash LSH over word n-gram shingles, and exact Jaccard: the near-duplicate search under
`prefdata.quality.dedup` (which has the full description), written with numpy (datasketch's
algorithm, vectorised over documents).

Text -> shingles: lower-case, words are `\\w+` runs, a shingle is `ngram` consecutive words
(a text with fewer words is one shingle of all of them; a text with no word has none).
Word hashes come from polars' `Series.hash`, stable within a polars version.

LSH: `num_perm` hash functions h(x) = (a x + b) mod 2^64 on the 32-bit shingle hash (odd
random a, random b, from `seed`), split into `bands` bands of `rows` rows; two texts with
Jaccard J become a candidate with probability 1 - (1 - J^rows)^bands (`lsh_params`). Buckets
with more than `max_bucket` texts pair every member with the bucket's first member only.

Every function here works on any subset of the documents: signatures and band keys of a
document depend on its text alone, a bucket's pairs on the sorted (key, document) list alone,
and a Jaccard on the two texts alone, so the sharded engine (prefdata.quality.dedup_shards)
computes exactly what one process computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from prefdata.errors import OptionError

__all__ = [
    "Shingles",
    "band_keys",
    "bucket_pairs",
    "candidates",
    "jaccard",
    "lsh_params",
    "minhash",
    "shingles",
    "signatures",
    "similar_pairs",
    "sorted_unique",
    "union",
]

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for order mixing
_LOW32 = np.uint64(0xFFFFFFFF)
_CHUNK_DOCS = 50_000
_CHUNK_ELEMENTS = 1 << 24  # bounds temporary arrays to ~128 MiB of uint64


def sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique switched to a hash table in numpy 2.3, about 50x slower than sorting here
    out = np.sort(values)
    if len(out) < 2:
        return out
    keep = np.empty(len(out), dtype=bool)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out[keep]


@dataclass(frozen=True)
class Shingles:
    """Shingle hashes of n texts: doc d holds values[offsets[d]:offsets[d + 1]], sorted, unique.

    values are 32-bit hashes stored as uint64.
    """

    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _as_series(texts: pl.Series | Sequence[str | None]) -> pl.Series:
    if isinstance(texts, pl.Series):
        return texts.cast(pl.String)
    return pl.Series("text", list(texts), dtype=pl.String)


def shingles(texts: pl.Series | Sequence[str | None], *, ngram: int = 3, seed: int = 0) -> Shingles:
    """Sorted unique shingle hashes for each text (see the module doc)."""
    if ngram < 1:
        raise OptionError("must be >= 1", option="ngram")
    series = _as_series(texts)
    # chunks bound the temporaries (word lists, positions) to a few hundred MiB
    parts = [
        _shingle_chunk(series.slice(start, _CHUNK_DOCS), ngram, seed)
        for start in range(0, max(len(series), 1), _CHUNK_DOCS)
    ]
    if len(parts) == 1:
        return parts[0]
    values = np.concatenate([p.values for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Shingles(values, offsets)


def _shingle_chunk(series: pl.Series, ngram: int, seed: int) -> Shingles:
    words = series.str.to_lowercase().str.extract_all(r"\w+")
    lens = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls()
    w = flat.hash(seed=seed).to_numpy().astype(np.uint64, copy=False)
    n = len(lens)
    word_start = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=word_start[1:])
    n_sh = np.where(lens >= ngram, lens - ngram + 1, (lens > 0).astype(np.int64))
    total = int(n_sh.sum())
    doc = np.repeat(np.arange(n, dtype=np.int64), n_sh)
    sh_start = np.zeros(n, dtype=np.int64)
    np.cumsum(n_sh[:-1], out=sh_start[1:])
    pos = np.arange(total, dtype=np.int64) - sh_start[doc] + word_start[doc]
    h = w[pos] if total else np.zeros(0, dtype=np.uint64)
    short = np.flatnonzero(lens[doc] < ngram)  # texts shorter than one shingle
    last = max(len(w) - 1, 0)
    with np.errstate(over="ignore"):
        for t in range(1, ngram):
            nxt = w[np.minimum(pos + t, last)] if total else h
            step = h * _MIX + nxt
            if len(short):
                keep = t >= lens[doc[short]]
                step[short[keep]] = h[short[keep]]
            h = step
    folded = (h ^ (h >> np.uint64(32))) & _LOW32
    # One sort makes each document's set sorted and unique: doc index in the high half.
    keys = sorted_unique((doc.astype(np.uint64) << np.uint64(32)) | folded)
    counts = np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Shingles(keys & _LOW32, offsets)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64)
    return a, b


def minhash(sh: Shingles, *, num_perm: int = 64, seed: int = 0) -> np.ndarray:
    """MinHash signatures, shape (n, num_perm) uint32 (the high half of each 64-bit minimum,
    which orders the minima); a text without shingles gets all 0xFFFFFFFF.

    The signature of a union of sets is the element-wise minimum of their signatures.
    """
    a, b = _permutations(num_perm, seed)
    lens = sh.lengths
    n = len(lens)
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    nonempty = np.flatnonzero(lens > 0)
    if not len(nonempty):
        return sig
    starts = sh.offsets[nonempty]
    with np.errstate(over="ignore"):
        for p in range(num_perm):
            low = np.minimum.reduceat(a[p] * sh.values + b[p], starts)
            sig[nonempty, p] = (low >> np.uint64(32)).astype(np.uint32)
    return sig


def signatures(
    texts: pl.Series | Sequence[str | None], *, ngram: int = 3, num_perm: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(MinHash signatures, has-shingles mask) of many texts, computed in chunks."""
    series = _as_series(texts)
    n = len(series)
    sig = np.empty((n, num_perm), dtype=np.uint32)
    nonempty = np.zeros(n, dtype=bool)
    for start in range(0, n, _CHUNK_DOCS):
        sh = _shingle_chunk(series.slice(start, _CHUNK_DOCS), ngram, seed)
        sig[start : start + len(sh.lengths)] = minhash(sh, num_perm=num_perm, seed=seed)
        nonempty[start : start + len(sh.lengths)] = sh.lengths > 0
    return sig, nonempty


def union(*parts: Shingles) -> Shingles:
    """Per document, the union of its shingle sets in several Shingles of the same n texts."""
    n = len(parts[0].lengths)
    keys = np.concatenate(
        [
            (np.repeat(np.arange(n, dtype=np.uint64), p.lengths) << np.uint64(32)) | p.values
            for p in parts
        ]
    )
    keys = sorted_unique(keys)
    counts = np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Shingles(keys & _LOW32, offsets)


def lsh_params(threshold: float, num_perm: int, *, min_recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows): the most rows per band with P(candidate | J = threshold) >= min_recall."""
    if not 0 < threshold <= 1:
        raise OptionError("must be in (0, 1]", option="threshold")
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= min_recall:
            best = (bands, rows)
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            k = np.zeros(sig.shape[0], dtype=np.uint64)
            for r in range(band * rows, (band + 1) * rows):
                k = k * _MIX + sig[:, r].astype(np.uint64)
            keys[:, band] = k
    return keys


def candidates(
    sig: np.ndarray, nonempty: np.ndarray, *, bands: int, rows: int, max_bucket: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (i < j, sorted) of texts that share a band of their signatures."""
    idx = np.flatnonzero(nonempty)
    m = len(idx)
    if m < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = band_keys(sig[idx], bands, rows)
    codes = sorted_unique(
        np.concatenate([bucket_pairs(keys[:, band], max_bucket) for band in range(bands)])
    )
    return idx[codes // m], idx[codes % m]


def bucket_pairs(keys: np.ndarray, max_bucket: int) -> np.ndarray:
    """Candidate pairs (i < j) as i * n + j codes from one band's keys."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    boundary = np.flatnonzero(np.diff(sk) != 0) + 1
    starts = np.concatenate(([0], boundary))
    sizes = np.diff(np.concatenate((starts, [n])))
    out: list[np.ndarray] = []
    small = (sizes >= 2) & (sizes <= max_bucket)
    if small.any():
        s, g = starts[small], sizes[small]
        # every element pairs with the later members of its bucket
        member_pos = np.repeat(s, g) + (np.arange(g.sum()) - np.repeat(np.cumsum(g) - g, g))
        remaining = np.repeat(s + g, g) - member_pos - 1
        left = np.repeat(member_pos, remaining)
        step = np.arange(remaining.sum()) - np.repeat(np.cumsum(remaining) - remaining, remaining)
        right = left + 1 + step
        out.append(_codes(order[left], order[right], n))
    big = sizes > max_bucket
    if big.any():
        s, g = starts[big], sizes[big]
        first = np.repeat(s, g - 1)
        others = np.repeat(s + 1, g - 1) + (
            np.arange((g - 1).sum()) - np.repeat(np.cumsum(g - 1) - (g - 1), g - 1)
        )
        out.append(_codes(order[first], order[others], n))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _codes(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo.astype(np.int64) * n + hi.astype(np.int64)


def _gather(sh: Shingles, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated shingles of `docs` and the position (0..len(docs)-1) each belongs to."""
    lens = sh.lengths[docs]
    owner = np.repeat(np.arange(len(docs), dtype=np.int64), lens)
    within = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return sh.values[sh.offsets[docs][owner] + within], owner


def jaccard(
    sh: Shingles, i: np.ndarray, j: np.ndarray, other: Shingles | None = None
) -> np.ndarray:
    """Exact Jaccard of the shingle sets of docs i[k] (in `sh`) and j[k] (in `other` or `sh`).

    Two empty sets have Jaccard 1 (the same, empty, text after tokenisation).
    """
    other = sh if other is None else other
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    out = np.zeros(len(i), dtype=np.float64)
    li, lj = sh.lengths[i], other.lengths[j]
    per_pair = li + lj
    start = 0
    while start < len(i):
        # chunk so the concatenated shingles stay under _CHUNK_ELEMENTS
        cum = np.cumsum(per_pair[start:])
        stop = start + max(1, int(np.searchsorted(cum, _CHUNK_ELEMENTS, side="right")))
        vi, oi = _gather(sh, i[start:stop])
        vj, oj = _gather(other, j[start:stop])
        keys = np.sort(
            np.concatenate(
                (
                    (oi.astype(np.uint64) << np.uint64(32)) | vi,
                    (oj.astype(np.uint64) << np.uint64(32)) | vj,
                )
            )
        )
        # sets are unique within a doc, so an equal neighbour is a shared shingle
        dup = keys[1:][keys[1:] == keys[:-1]]
        inter = np.bincount((dup >> np.uint64(32)).astype(np.int64), minlength=stop - start)
        union = li[start:stop] + lj[start:stop] - inter
        out[start:stop] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        start = stop
    return out


def similar_pairs(
    texts: pl.Series | Sequence[str | None],
    *,
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 0,
    min_recall: float = 0.95,
    max_bucket: int = 64,
) -> pl.DataFrame:
    """Pairs of texts with exact shingle Jaccard >= threshold, found with MinHash LSH.

    Input: texts (a Series or a sequence). Output columns: `i`, `j` (row indices, i < j),
    `jaccard` (exact), sorted by (i, j). Texts without a word never pair (see `dedup` for
    exact duplicates); identical texts pair with J = 1 (collapse them first when there are
    many: a bucket of more than `max_bucket` texts only pairs with its first member).
    """
    series = _as_series(texts)
    bands, rows = lsh_params(threshold, num_perm, min_recall=min_recall)
    sig, nonempty = signatures(series, ngram=ngram, num_perm=num_perm, seed=seed)
    ci, cj = candidates(sig, nonempty, bands=bands, rows=rows, max_bucket=max_bucket)
    schema = {"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64}
    if not len(ci):
        return pl.DataFrame(schema=schema)
    docs = sorted_unique(np.concatenate((ci, cj)))
    sh = shingles(series.gather(docs), ngram=ngram, seed=seed)
    sim = jaccard(sh, np.searchsorted(docs, ci), np.searchsorted(docs, cj))
    keep = sim >= threshold
    return pl.DataFrame({"i": ci[keep], "j": cj[keep], "jaccard": sim[keep]}, schema=schema).sort(
        "i", "j"
    )
