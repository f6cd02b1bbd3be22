"""Exact and near-duplicate prompts and pairs, and train/test overlap.

Near duplicates are found with MinHash LSH over word n-gram shingles, written with numpy
(datasketch's algorithm, vectorised over documents), and every candidate is then checked with
the exact Jaccard similarity of the two shingle sets, so no pair below the threshold is ever
reported and the reported `jaccard` is exact (up to 32-bit shingle-hash collisions, about
one in four billion per pair of shingles).

Text -> shingles: lower-case, words are `\\w+` runs, a shingle is `ngram` consecutive words
(a text with fewer words is one shingle of all of them; a text with no word has none and is
only ever an exact duplicate). Word hashes come from polars' `Series.hash`, which is stable
within a polars version (results do not depend on it beyond candidate generation).

LSH: `num_perm` hash functions h(x) = (a x + b) mod 2^64 on the 32-bit shingle hash (odd
random a, random b, from `seed`; the minimum is ordered by the high bits, i.e. the
multiply-add-shift family), split into `bands` bands of `rows` rows. Two texts with Jaccard J
become a candidate with probability 1 - (1 - J^rows)^bands. `lsh_params` picks the most rows
per band (fewest false candidates) for which that probability at J = threshold is at least
`min_recall` (default 0.95). Buckets with more than `max_bucket` texts pair every member
with the bucket's first member only, so a huge cluster costs linear, not quadratic, work.

The stages (`stage(table, *, options) -> (issues, report)`; issues follow the `issues`
contract, item_id = pair_id, score = 1 - Jaccard, 0 for exact copies):

- `dedup(pairs)`:
  * `duplicate_pair`: same prompt and the same two responses as an earlier row after
    lower-casing and collapsing whitespace (identical text has an identical pair_id, which
    the pairs contract already forbids); is_issue. `reason` names the earlier pair_id.
    Texts are compared through 64-bit hashes of their normalised form.
  * `near_duplicate_pair`: the pair's shingle set (the union of its prompt's, chosen's and
    rejected's sets: no shingle spans two fields, and the sides' order does not matter) has
    Jaccard >= threshold with an earlier row's; is_issue; `reason` names the earliest such
    row. Its MinHash is the element-wise minimum of the three fields' signatures, so each
    distinct prompt is hashed once. Only later rows are flagged, so dropping the flagged
    rows keeps the first row of each cluster (a chain A~B~C with A !~ C loses both B and
    C, as in connected-component dedup).
  * `conflicting_duplicate`: a (near-)duplicate pair whose chosen side is the other row's
    rejected side (labelled the other way): both rows get a row, is_issue, score 0.
  * `duplicate_prompt` / `near_duplicate_prompt`: a row whose prompt equals (or is within
    the threshold of) an earlier row's prompt. Several pairs per prompt are normal (ratings
    give many), so these are is_issue = False unless `repeated_prompts="issue"`.
- `split_overlap(train, test)`: `train_test_overlap` rows for test pairs whose prompt equals
  (score 0) or nearly equals (score 1 - J) a train prompt; `reason` names the train pair_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from prefdata.errors import ContractError, OptionError
from prefdata.quality.rules import ISSUE_SCHEMA

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for order mixing
_LOW32 = np.uint64(0xFFFFFFFF)
_CHUNK_DOCS = 50_000
_CHUNK_ELEMENTS = 1 << 24  # bounds temporary arrays to ~128 MiB of uint64


def _sorted_unique(values: np.ndarray) -> np.ndarray:
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
    keys = _sorted_unique((doc.astype(np.uint64) << np.uint64(32)) | folded)
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
    keys = _sorted_unique(keys)
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


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
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
    keys = _band_keys(sig[idx], bands, rows)
    codes = _sorted_unique(
        np.concatenate([_bucket_pairs(keys[:, band], max_bucket) for band in range(bands)])
    )
    return idx[codes // m], idx[codes % m]


def _bucket_pairs(keys: np.ndarray, max_bucket: int) -> np.ndarray:
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
    docs = _sorted_unique(np.concatenate((ci, cj)))
    sh = shingles(series.gather(docs), ngram=ngram, seed=seed)
    sim = jaccard(sh, np.searchsorted(docs, ci), np.searchsorted(docs, cj))
    keep = sim >= threshold
    return pl.DataFrame({"i": ci[keep], "j": cj[keep], "jaccard": sim[keep]}, schema=schema).sort(
        "i", "j"
    )


# ---------------------------------------------------------------- stages on pairs tables


def _prompt_text(table: pl.DataFrame) -> pl.Expr:
    if table.schema["prompt"] == pl.String:
        return pl.col("prompt").fill_null("")
    return (
        pl.col("prompt")
        .list.eval(pl.element().struct.field("content"))
        .list.join("\n")
        .fill_null("")
    )


def _norm(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _check_ids(table: pl.DataFrame, name: str, needed: Sequence[str]) -> None:
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ContractError(f"{name} needs column(s) {missing}", column=missing[0])
    repeated = table.filter(pl.col("pair_id").is_duplicated())
    if repeated.height:
        raise ContractError(
            f"pair_id {repeated['pair_id'][0]} appears more than once ({repeated.height} rows "
            "share an id: the same prompt and responses, possibly with chosen and rejected "
            "swapped); schema.split_problems moves the later copies to a rejected table",
            column="pair_id",
        )


def _issue_frame(item: Any, issue: str, score: Any, is_issue: Any, reason: Any) -> pl.DataFrame:
    return pl.DataFrame(
        {"item_id": item, "issue": issue, "score": score, "is_issue": is_issue, "reason": reason},
        schema=ISSUE_SCHEMA,
    )


def _first_neighbour(pairs: pl.DataFrame) -> pl.DataFrame:
    """For each row with an earlier neighbour: the earliest one and its Jaccard (cols j, i, J)."""
    return (
        pairs.sort("j", "i")
        .group_by("j", maintain_order=True)
        .agg(pl.col("i").first(), pl.col("jaccard").first())
    )


def dedup(
    pairs: pl.DataFrame,
    *,
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 0,
    repeated_prompts: Literal["info", "issue", "off"] = "info",
    max_bucket: int = 64,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Duplicate and near-duplicate pairs and prompts (see the module doc).

    Input columns: `pair_id` (unique), `prompt` (messages or text), `chosen`, `rejected`.
    Output: (issues, report). Report: `pairs`, `duplicate_pair`, `near_duplicate_pair`,
    `conflicting_duplicate`, `duplicate_prompt`, `near_duplicate_prompt` (rows written),
    `distinct_prompts`, and the LSH `bands` / `rows` used.
    """
    _check_ids(pairs, "dedup", ("pair_id", "prompt", "chosen", "rejected"))
    n = pairs.height
    # 64-bit hashes of the normalised texts stand for the texts in exact matching (a false
    # match needs a hash collision: about n^2 / 2^65, 3e-8 for a million rows) and keep
    # memory at 24 bytes a row instead of a normalised copy of every text.
    t = pairs.select(
        _norm(_prompt_text(pairs)).hash(seed).alias("hp"),
        _norm(pl.col("chosen")).hash(seed).alias("hc"),
        _norm(pl.col("rejected")).hash(seed).alias("hr"),
    ).with_columns(
        pl.min_horizontal("hc", "hr").alias("lo"),
        pl.max_horizontal("hc", "hr").alias("hi"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
    )
    t = t.with_columns(
        pl.col("row").first().over("hp", "lo", "hi").alias("first_pair"),
        pl.col("row").first().over("hp").alias("first_prompt"),
    )
    ids = pairs["pair_id"]
    parts: list[pl.DataFrame] = []
    bands, rows = lsh_params(threshold, num_perm)
    report: dict[str, Any] = {"pairs": n, "bands": bands, "rows": rows}

    # Exact (normalised) duplicate pairs: every later row names the first row of its group.
    dup = t.filter(pl.col("row") != pl.col("first_pair"))
    dup_first = dup["first_pair"].to_numpy()
    swapped_exact = (dup["hc"] != t["hc"].gather(dup_first)).to_numpy()
    parts.append(
        _issue_frame(
            ids.gather(dup["row"].to_numpy()),
            "duplicate_pair",
            0.0,
            True,
            "same prompt and responses as pair " + ids.gather(dup_first),
        )
    )

    # MinHash of each distinct prompt once; a pair's signature is the minimum of its
    # prompt's, its chosen's and its rejected's (the signature of the union of the sets).
    prompt_first = t["first_prompt"].to_numpy()
    heads = np.flatnonzero(prompt_first == np.arange(n))
    report["distinct_prompts"] = len(heads)
    head_text = pairs[heads].select(_prompt_text(pairs))[:, 0]
    sig_p, has_p = signatures(head_text, ngram=ngram, num_perm=num_perm, seed=seed)
    head_of_row = np.searchsorted(heads, prompt_first)

    frow = t.filter(pl.col("row") == pl.col("first_pair"))["row"].to_numpy()
    sig = np.empty((len(frow), num_perm), dtype=np.uint32)
    has = np.zeros(len(frow), dtype=bool)
    for start in range(0, len(frow), _CHUNK_DOCS):
        rows_ = frow[start : start + _CHUNK_DOCS]
        sig_c, has_c = signatures(
            pairs["chosen"].gather(rows_), ngram=ngram, num_perm=num_perm, seed=seed
        )
        sig_r, has_r = signatures(
            pairs["rejected"].gather(rows_), ngram=ngram, num_perm=num_perm, seed=seed
        )
        hp = head_of_row[rows_]
        sig[start : start + len(rows_)] = np.minimum(np.minimum(sig_c, sig_r), sig_p[hp])
        has[start : start + len(rows_)] = has_c | has_r | has_p[hp]
    ci, cj = candidates(sig, has, bands=bands, rows=rows, max_bucket=max_bucket)
    ci, cj = frow[ci], frow[cj]

    # Verify every candidate with exact Jaccard of the union of the three shingle sets.
    docs = _sorted_unique(np.concatenate((ci, cj)))
    near = pl.DataFrame(schema={"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64})
    swapped_near = np.zeros(0, dtype=bool)
    if len(docs):
        sub = pairs[docs]
        sh_p = shingles(sub.select(_prompt_text(sub))[:, 0], ngram=ngram, seed=seed)
        sh_c = shingles(sub["chosen"], ngram=ngram, seed=seed)
        sh_r = shingles(sub["rejected"], ngram=ngram, seed=seed)
        li, lj = np.searchsorted(docs, ci), np.searchsorted(docs, cj)
        sim = jaccard(union(sh_p, sh_c, sh_r), li, lj)
        keep = sim >= threshold
        li, lj = li[keep], lj[keep]
        near = pl.DataFrame(
            {"i": ci[keep], "j": cj[keep], "jaccard": sim[keep]},
            schema={"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64},
        )
        # Labelled the other way: each chosen is closer to the other's rejected.
        same = jaccard(sh_c, li, lj) + jaccard(sh_r, li, lj)
        cross = jaccard(sh_c, li, lj, sh_r) + jaccard(sh_r, li, lj, sh_c)
        swapped_near = cross > same
    # J == 1 here means equal after tokenisation (differences in punctuation only)
    nn = _first_neighbour(near)
    parts.append(
        _issue_frame(
            ids.gather(nn["j"].to_numpy()),
            "near_duplicate_pair",
            1.0 - nn["jaccard"].to_numpy(),
            True,
            _near_reason(nn["jaccard"], ids.gather(nn["i"].to_numpy()), "pair"),
        )
    )

    # Conflicting labels, from exact and near duplicates; both rows of each pair get a row.
    swapped = np.concatenate((swapped_exact, swapped_near))
    ci_all = np.concatenate((dup_first, near["i"].to_numpy()))[swapped]
    cj_all = np.concatenate((dup["row"].to_numpy(), near["j"].to_numpy()))[swapped]
    conflict = pl.DataFrame(
        {"item": np.concatenate((ci_all, cj_all)), "other": np.concatenate((cj_all, ci_all))},
        schema={"item": pl.Int64, "other": pl.Int64},
    )
    conflict = conflict.sort("item", "other").unique("item", keep="first", maintain_order=True)
    parts.append(
        _issue_frame(
            ids.gather(conflict["item"].to_numpy()),
            "conflicting_duplicate",
            0.0,
            True,
            "duplicate of pair "
            + ids.gather(conflict["other"].to_numpy())
            + " with chosen and rejected swapped",
        )
    )

    # Prompts.
    if repeated_prompts != "off":
        flag = repeated_prompts == "issue"
        later = np.flatnonzero(prompt_first != np.arange(n))
        parts.append(
            _issue_frame(
                ids.gather(later),
                "duplicate_prompt",
                0.0,
                flag,
                "same prompt as pair " + ids.gather(prompt_first[later]),
            )
        )
        pi, pj = candidates(sig_p, has_p, bands=bands, rows=rows, max_bucket=max_bucket)
        pdocs = _sorted_unique(np.concatenate((pi, pj)))
        sh = shingles(head_text.gather(pdocs), ngram=ngram, seed=seed)
        psim = jaccard(sh, np.searchsorted(pdocs, pi), np.searchsorted(pdocs, pj))
        keep = psim >= threshold
        pn = pl.DataFrame(
            {"i": heads[pi[keep]], "j": heads[pj[keep]], "jaccard": psim[keep]},
            schema={"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64},
        )
        pnn = _first_neighbour(pn)
        parts.append(
            _issue_frame(
                ids.gather(pnn["j"].to_numpy()),
                "near_duplicate_prompt",
                1.0 - pnn["jaccard"].to_numpy(),
                flag,
                _near_reason(pnn["jaccard"], ids.gather(pnn["i"].to_numpy()), "prompt of pair"),
            )
        )
    issues = pl.concat(parts)
    for name in (
        "duplicate_pair",
        "near_duplicate_pair",
        "conflicting_duplicate",
        "duplicate_prompt",
        "near_duplicate_prompt",
    ):
        report[name] = int((issues["issue"] == name).sum())
    return issues, report


def _near_reason(jac: pl.Series, other: pl.Series, what: str) -> pl.Series:
    return ("Jaccard " + jac.round(3).cast(pl.String) + f" with the {what} " + other).cast(
        pl.String
    )


def split_overlap(
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 0,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Test pairs whose prompt also appears (exactly or nearly) in the train split.

    Input columns (both tables): `pair_id`, `prompt` (messages or text). Output: (issues,
    report). One `train_test_overlap` row per overlapping test pair (item_id = its pair_id):
    score 0 for the same prompt after lower-casing and collapsing whitespace, else 1 - J
    of its most similar train prompt; is_issue; `reason` names the train pair_id (the first
    train row with that prompt). Report: `train_pairs`, `test_pairs`, `overlap_exact`,
    `overlap_near`, `overlap_share` (of test pairs).
    """
    for name, table in (("train", train), ("test", test)):
        missing = [c for c in ("pair_id", "prompt") if c not in table.columns]
        if missing:
            raise ContractError(
                f"split_overlap: the {name} table needs {missing}", column=missing[0]
            )
    tr = train.select("pair_id", _norm(_prompt_text(train)).alias("p"))
    te = test.select("pair_id", _norm(_prompt_text(test)).alias("p"))
    tr_first = tr.unique("p", keep="first", maintain_order=True)
    te_prompts = te.unique("p", keep="first", maintain_order=True).select("p")
    exact = te_prompts.join(tr_first, on="p", how="inner").rename({"pair_id": "train_id"})
    rest = te_prompts.join(tr_first, on="p", how="anti")
    # Near matches: LSH over train prompts + the test prompts without an exact match.
    texts = pl.concat([tr_first["p"], rest["p"]])
    n_tr = tr_first.height
    near = similar_pairs(texts, threshold=threshold, ngram=ngram, num_perm=num_perm, seed=seed)
    near = near.filter((pl.col("i") < n_tr) & (pl.col("j") >= n_tr))
    best = (
        near.sort("jaccard", "i", descending=[True, False])
        .group_by("j", maintain_order=True)
        .first()
    )
    near_match = pl.DataFrame(
        {
            "p": rest["p"].gather(best["j"].to_numpy() - n_tr),
            "train_id": tr_first["pair_id"].gather(best["i"].to_numpy()),
            "jaccard": best["jaccard"],
        },
        schema={"p": pl.String, "train_id": pl.String, "jaccard": pl.Float64},
    )
    matches = pl.concat(
        [
            exact.with_columns(pl.lit(1.0).alias("jaccard"), pl.lit(True).alias("exact")),
            near_match.with_columns(pl.lit(False).alias("exact")),
        ],
        how="diagonal_relaxed",
    )
    hits = te.join(matches, on="p", how="inner", maintain_order="left")
    issues = hits.select(
        pl.col("pair_id").alias("item_id"),
        pl.lit("train_test_overlap").alias("issue"),
        pl.when("exact").then(0.0).otherwise(1.0 - pl.col("jaccard")).alias("score"),
        pl.lit(True).alias("is_issue"),
        pl.when("exact")
        .then("same prompt as train pair " + pl.col("train_id"))
        .otherwise(
            "prompt has Jaccard "
            + pl.col("jaccard").round(3).cast(pl.String)
            + " with the prompt of train pair "
            + pl.col("train_id")
        )
        .alias("reason"),
    )
    n_exact = int(hits["exact"].sum())
    report = {
        "train_pairs": train.height,
        "test_pairs": test.height,
        "overlap_exact": n_exact,
        "overlap_near": hits.height - n_exact,
        "overlap_share": hits.height / test.height if test.height else 0.0,
    }
    return issues.select([pl.col(k).cast(v) for k, v in ISSUE_SCHEMA.items()]), report
