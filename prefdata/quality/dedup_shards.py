"""The phases of dedup and train/test overlap, each a function of one piece of the work, so
one process and a cluster run the same code (prefdata.engine):

1. `hash_part`: per row, 64-bit hashes of the normalised prompt (and chosen, rejected). The
   driver finds exact duplicates and the rows to search (the first of each group) from these
   hashes alone.
2. `band_part`: the MinHash band keys of the rows to search, in memory, or written out
   partitioned by (band, key) ("bands shuffled by key": every member of one bucket lands in
   one partition).
3. `bucket_part`: per partition, the candidate pairs of every bucket, from the (key, id)
   lists sorted by id (a bucket's pairs depend on its members alone, so the partitioning
   changes nothing).
4. `verify_part`: the exact Jaccard of a chunk of candidates, reading just their rows.

A `Part` is a frame in memory (the local engine: the whole table, nothing written) or a
Parquet shard (prefdata.engine.shards); rows are read in chunks of `CHUNK_ROWS`, so a worker
holds one chunk's texts at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from prefdata.engine.shards import ROW
from prefdata.quality.minhash import band_keys, bucket_pairs, jaccard, shingles, signatures, union

__all__ = [
    "LSH",
    "OVERLAP",
    "PAIRS",
    "PROMPTS",
    "BandJob",
    "BucketJob",
    "HashJob",
    "Part",
    "VerifyJob",
    "band_part",
    "bucket_part",
    "hash_part",
    "normalised",
    "prompt_text",
    "verify_part",
]

# Which search a band row belongs to.
PAIRS, PROMPTS, OVERLAP = 0, 1, 2
CHUNK_ROWS = 50_000
_MIX = np.uint64(0x9E3779B97F4A7C15)

# kind -> (ids, band keys (ids x bands)): band rows in memory
BandRows = dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class LSH:
    """The search settings every phase shares."""

    threshold: float
    ngram: int
    num_perm: int
    seed: int
    bands: int
    rows: int
    max_bucket: int


@dataclass(frozen=True)
class Part:
    """Rows `first` .. `first + rows - 1` of a table: `frame` in memory (with its `_row`
    column) or the Parquet shard at `path`."""

    first: int
    rows: int
    frame: pl.DataFrame | None = None
    path: Path | None = None

    def lazy(self) -> pl.LazyFrame:
        if self.frame is not None:
            return self.frame.lazy()
        assert self.path is not None
        return pl.scan_parquet(self.path)

    def within(self, rows: np.ndarray) -> np.ndarray:
        """Those of the sorted global `rows` that lie in this part."""
        lo, hi = np.searchsorted(rows, [self.first, self.first + self.rows])
        return rows[lo:hi]


def prompt_text(table: pl.DataFrame | pl.LazyFrame) -> pl.Expr:
    """The prompt as one text: itself, or its messages' contents joined by newlines."""
    schema = table.collect_schema() if isinstance(table, pl.LazyFrame) else table.schema
    if schema["prompt"] == pl.String:
        return pl.col("prompt").fill_null("")
    return (
        pl.col("prompt")
        .list.eval(pl.element().struct.field("content"))
        .list.join("\n")
        .fill_null("")
    )


def normalised(expr: pl.Expr) -> pl.Expr:
    """Lower-case, whitespace runs as one space, trimmed: what exact duplicates compare."""
    return expr.fill_null("").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


# ---- phase 1 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashJob:
    part: Part
    seed: int
    sides: bool  # the responses too (dedup), or the prompt alone (overlap)


def hash_part(job: HashJob) -> pl.DataFrame:
    """`_row`, `pair_id`, `hp` (and `hc`, `hr` with `sides`) for every row of the part."""
    lazy = job.part.lazy()
    columns = [
        pl.col(ROW).cast(pl.Int64),
        pl.col("pair_id"),
        normalised(prompt_text(lazy)).hash(job.seed).alias("hp"),
    ]
    if job.sides:
        columns += [
            normalised(pl.col("chosen")).hash(job.seed).alias("hc"),
            normalised(pl.col("rejected")).hash(job.seed).alias("hr"),
        ]
    return lazy.select(columns).collect()


# ---- phase 2 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandJob:
    """Band keys of the part's rows to search (sorted global rows): `pair_rows` as whole
    pairs, `prompt_rows` as prompts, `overlap_rows` as prompts of the overlap search under
    the document ids `overlap_docs`. `out`: folder for `partitions` files (None: returned in
    memory)."""

    part: Part
    lsh: LSH
    pair_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    prompt_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overlap_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overlap_docs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    out: Path | None = None
    partitions: int = 1
    name: str = "part"


def band_part(job: BandJob) -> BandRows | list[Path]:
    """Phase 2 (see the module doc): band keys of every searched row that has a shingle."""
    lsh = job.lsh
    opts = {"ngram": lsh.ngram, "num_perm": lsh.num_perm, "seed": lsh.seed}
    wanted = np.unique(np.concatenate((job.pair_rows, job.prompt_rows, job.overlap_rows)))
    lazy = job.part.lazy()
    sides = [pl.col("chosen"), pl.col("rejected")] if len(job.pair_rows) else []
    found: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {PAIRS: [], PROMPTS: [], OVERLAP: []}
    for start in range(job.part.first, job.part.first + job.part.rows, CHUNK_ROWS):
        lo, hi = np.searchsorted(wanted, [start, start + CHUNK_ROWS])
        if lo == hi:
            continue
        rows = wanted[lo:hi]
        sub = (
            lazy.slice(start - job.part.first, CHUNK_ROWS)
            .filter(pl.col(ROW).is_in(pl.Series(rows).implode()))
            .select(pl.col(ROW).cast(pl.Int64), prompt_text(lazy).alias("p"), *sides)
            .collect()
        )
        at = sub[ROW].to_numpy()
        # A prompt's signature depends on its text alone: each distinct prompt once.
        _, first, inverse = np.unique(
            sub["p"].hash(seed=0).to_numpy(), return_index=True, return_inverse=True
        )
        sig_d, has_d = signatures(sub["p"].gather(first), **opts)
        sig_p, has_p = sig_d[inverse.reshape(-1)], has_d[inverse.reshape(-1)]
        pick = np.flatnonzero(np.isin(at, job.pair_rows))
        if len(pick):
            sig_c, has_c = signatures(sub["chosen"].gather(pick), **opts)
            sig_r, has_r = signatures(sub["rejected"].gather(pick), **opts)
            sig = np.minimum(np.minimum(sig_c, sig_r), sig_p[pick])
            found[PAIRS].append(_keys(at[pick], sig, has_c | has_r | has_p[pick], lsh))
        pick = np.flatnonzero(np.isin(at, job.prompt_rows))
        if len(pick):
            found[PROMPTS].append(_keys(at[pick], sig_p[pick], has_p[pick], lsh))
        pick = np.flatnonzero(np.isin(at, job.overlap_rows))
        if len(pick):
            docs = job.overlap_docs[np.searchsorted(job.overlap_rows, at[pick])]
            found[OVERLAP].append(_keys(docs, sig_p[pick], has_p[pick], lsh))
    bands: BandRows = {
        kind: (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        for kind, parts in found.items()
        if parts
    }
    if job.out is None:
        return bands
    return _write_partitions(bands, job)


def _keys(
    ids: np.ndarray, sig: np.ndarray, has: np.ndarray, lsh: LSH
) -> tuple[np.ndarray, np.ndarray]:
    keep = np.flatnonzero(has)  # a text without a word is only ever an exact duplicate
    return ids[keep].astype(np.int64), band_keys(sig[keep], lsh.bands, lsh.rows)


def _write_partitions(bands: BandRows, job: BandJob) -> list[Path]:
    """Long rows (kind, band, key, id), one file per partition of (band, key)."""
    frames = []
    for kind, (ids, keys) in bands.items():
        m = len(ids)
        frames.append(
            pl.DataFrame(
                {
                    "kind": np.full(m * job.lsh.bands, kind, dtype=np.int8),
                    "band": np.tile(np.arange(job.lsh.bands, dtype=np.int16), m),
                    "key": keys.reshape(-1),
                    "id": np.repeat(ids, job.lsh.bands),
                }
            )
        )
    schema = {"kind": pl.Int8, "band": pl.Int16, "key": pl.UInt64, "id": pl.Int64}
    long = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    with np.errstate(over="ignore"):
        mixed = long["key"].to_numpy() ^ (long["band"].to_numpy().astype(np.uint64) * _MIX)
    target = (mixed % np.uint64(job.partitions)).astype(np.int64)
    assert job.out is not None
    job.out.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in range(job.partitions):
        path = job.out / f"{job.name}.bands-{p:05d}.parquet"
        long.filter(pl.Series(target == p)).write_parquet(path)
        paths.append(path)
    return paths


# ---- phase 3 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketJob:
    """One partition of band rows: its files (one per shard), or every band row in memory."""

    lsh: LSH
    files: tuple[Path, ...] = ()
    bands: BandRows | None = None


def bucket_part(job: BucketJob) -> pl.DataFrame:
    """Candidate pairs (kind, i, j; i < j) of every bucket in the partition, unique."""
    groups: list[tuple[int, np.ndarray, np.ndarray]] = []  # (kind, ids, one band's keys)
    if job.bands is not None:
        for kind, (ids, keys) in job.bands.items():
            groups += [(kind, ids, keys[:, b]) for b in range(keys.shape[1])]
    else:
        frame = pl.concat([pl.read_parquet(f) for f in job.files])
        for (kind, _band), group in frame.group_by("kind", "band"):
            groups.append((int(kind), group["id"].to_numpy(), group["key"].to_numpy()))
    out = []
    for kind, ids, keys in groups:
        # Positions in id order, as one process numbers its documents.
        order = np.argsort(ids, kind="stable")
        ids, keys = ids[order], keys[order]
        codes = bucket_pairs(keys, job.lsh.max_bucket)
        n = len(ids)
        out.append(
            pl.DataFrame(
                {
                    "kind": np.full(len(codes), kind, dtype=np.int8),
                    "i": ids[codes // n],
                    "j": ids[codes % n],
                }
            )
        )
    schema = {"kind": pl.Int8, "i": pl.Int64, "j": pl.Int64}
    if not out:
        return pl.DataFrame(schema=schema)
    return pl.concat(out).select(pl.col(k).cast(v) for k, v in schema.items()).unique()


# ---- phase 4 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyJob:
    """Exact Jaccard of candidate rows (i[k], j[k]) of one kind, found in `parts` (OVERLAP:
    i are rows of `parts`, the train table, and j rows of `other`, the test table)."""

    kind: int
    i: np.ndarray
    j: np.ndarray
    lsh: LSH
    parts: tuple[Part, ...]
    other: tuple[Part, ...] = ()


def _rows(parts: Sequence[Part], rows: np.ndarray, sides: bool) -> pl.DataFrame:
    """The prompt text (and sides) of the sorted global `rows`, sorted by row."""
    frames = []
    for part in parts:
        mine = part.within(rows)
        if not len(mine):
            continue
        lazy = part.lazy()
        cols = [pl.col(ROW).cast(pl.Int64), prompt_text(lazy).alias("p")]
        if sides:
            cols += [pl.col("chosen"), pl.col("rejected")]
        frames.append(lazy.filter(pl.col(ROW).is_in(pl.Series(mine).implode())).select(cols))
    return pl.concat(pl.collect_all(frames)).sort(ROW)


def verify_part(job: VerifyJob) -> pl.DataFrame:
    """(i, j, jaccard, swapped) of the candidates at or above the threshold; `swapped`
    (pairs only): each chosen is closer to the other's rejected than to its own chosen."""
    lsh = job.lsh
    schema = {"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64, "swapped": pl.Boolean}
    if not len(job.i):
        return pl.DataFrame(schema=schema)
    opts = {"ngram": lsh.ngram, "seed": lsh.seed}
    swapped: np.ndarray | bool = False
    if job.kind == OVERLAP:
        left = _rows(job.parts, np.unique(job.i), False)
        right = _rows(job.other, np.unique(job.j), False)
        li = np.searchsorted(left[ROW].to_numpy(), job.i)
        lj = np.searchsorted(right[ROW].to_numpy(), job.j)
        sim = jaccard(shingles(left["p"], **opts), li, lj, shingles(right["p"], **opts))
        keep = sim >= lsh.threshold
    else:
        docs = np.unique(np.concatenate((job.i, job.j)))
        sub = _rows(job.parts, docs, job.kind == PAIRS)
        li, lj = np.searchsorted(docs, job.i), np.searchsorted(docs, job.j)
        sh_p = shingles(sub["p"], **opts)
        if job.kind == PROMPTS:
            sim = jaccard(sh_p, li, lj)
            keep = sim >= lsh.threshold
        else:
            sh_c = shingles(sub["chosen"], **opts)
            sh_r = shingles(sub["rejected"], **opts)
            sim = jaccard(union(sh_p, sh_c, sh_r), li, lj)
            keep = sim >= lsh.threshold
            ki, kj = li[keep], lj[keep]
            # Labelled the other way: each chosen is closer to the other's rejected.
            same = jaccard(sh_c, ki, kj) + jaccard(sh_r, ki, kj)
            cross = jaccard(sh_c, ki, kj, sh_r) + jaccard(sh_r, ki, kj, sh_c)
            swapped = cross > same
    return pl.DataFrame(
        {"i": job.i[keep], "j": job.j[keep], "jaccard": sim[keep], "swapped": swapped},
        schema=schema,
    )
