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

Engines: both run as the phases of prefdata.quality.dedup_shards. With the local engine (the
default) every phase sees the whole table in memory; with a distributed one (`engine=`, see
prefdata.engine) the table is cut into Parquet shards, the band keys are shuffled by key into
partitions, and the candidates are verified in chunks. Every phase's result on a piece is
the result on the whole restricted to that piece, so the issues are the same rows in the
same order either way.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from prefdata.engine import Engine, LocalEngine, cut_shards, scratch_folder
from prefdata.engine.shards import (
    ROW,
    Table,
    held_for,
    remove_shards,
    table_columns,
    table_rows,
)
from prefdata.errors import ContractError
from prefdata.quality.dedup_shards import (
    LSH,
    OVERLAP,
    PAIRS,
    PROMPTS,
    BandJob,
    BucketJob,
    HashJob,
    Part,
    VerifyJob,
    band_part,
    bucket_part,
    hash_part,
    verify_part,
)
from prefdata.quality.minhash import lsh_params
from prefdata.quality.rules import ISSUE_SCHEMA
from prefdata.schema import require_columns

# The MinHash functions themselves are imported from prefdata.quality.minhash, their one home.
__all__ = ["dedup", "split_overlap"]

# Rows per shard on a distributed engine: a worker holds one shard's hashes and one chunk
# of its texts at a time, so more, smaller shards than workers keep each worker's memory low.
SHARD_ROWS = 250_000
_NEAR = {"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64}


def _check_ids(table: Table, name: str, needed: Sequence[str]) -> None:
    require_columns(table_columns(table), needed, f"{name} needs")
    repeated = table.lazy().select("pair_id").filter(pl.col("pair_id").is_duplicated()).collect()
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


def _near_issues(
    ids: pl.Series, near: pl.DataFrame, issue: str, is_issue: bool, what: str
) -> pl.DataFrame:
    """One `issue` row per document j with an earlier near duplicate i (verified pairs i < j,
    `jaccard`): the earliest i, score 1 - J, the reason naming i's id as "the `what` ID"."""
    first = (
        near.sort("j", "i")
        .group_by("j", maintain_order=True)
        .agg(pl.col("i").first(), pl.col("jaccard").first())
    )
    jac = first["jaccard"]
    other = ids.gather(first["i"].to_numpy())
    reason = ("Jaccard " + jac.round(3).cast(pl.String) + f" with the {what} " + other).cast(
        pl.String
    )
    return _issue_frame(
        ids.gather(first["j"].to_numpy()), issue, 1.0 - jac.to_numpy(), is_issue, reason
    )


# ---- running the phases --------------------------------------------------------------------


@contextlib.contextmanager
def _parts(table: Table, engine: Engine, columns: list[str], name: str) -> Iterator[list[Part]]:
    """The table as Parts: itself in memory (local), or Parquet shards in the engine's
    scratch folder (removed on exit)."""
    if not engine.distributed:
        assert isinstance(table, pl.DataFrame)  # held_for reads a lazy table for one process
        frame = table.select(columns).with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
        yield [Part(0, table.height, frame=frame)]
        return
    with cut_shards(table, engine, name, columns=columns, max_rows=SHARD_ROWS) as shards:
        yield [Part(s.first_row, s.rows, path=s.path) for s in shards]


def _hashes(engine: Engine, parts: list[Part], seed: int, sides: bool) -> pl.DataFrame:
    jobs = [HashJob(p, seed, sides) for p in parts]
    return pl.concat(engine.map(hash_part, jobs, what="hash shards"))


def _candidates(engine: Engine, jobs: list[BandJob], lsh: LSH) -> pl.DataFrame:
    """Phases 2 and 3: candidate pairs (kind, i, j), unique, sorted by (kind, i, j)."""
    if not engine.distributed:
        bands: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for found in engine.map(band_part, jobs):
            assert isinstance(found, dict)
            for kind, (ids, keys) in found.items():
                if kind in bands:
                    bands[kind] = (
                        np.concatenate((bands[kind][0], ids)),
                        np.concatenate((bands[kind][1], keys)),
                    )
                else:
                    bands[kind] = (ids, keys)
        buckets = [BucketJob(lsh, bands=bands)]
    else:
        written = engine.map(band_part, jobs, what="band shards")
        partitions = jobs[0].partitions
        buckets = [
            BucketJob(lsh, files=tuple(paths[p] for paths in written if isinstance(paths, list)))
            for p in range(partitions)
        ]
    pairs = engine.map(bucket_part, buckets, what="bucket partitions")
    return pl.concat(pairs).unique().sort("kind", "i", "j")


def _verify(
    engine: Engine,
    kind: int,
    pairs: pl.DataFrame,
    lsh: LSH,
    parts: list[Part],
    other: list[Part] | None = None,
) -> pl.DataFrame:
    """Phase 4 over chunks of the candidates (one per part on a distributed engine)."""
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    chunks = max(1, len(parts)) if engine.distributed else 1
    bounds = np.linspace(0, len(i), chunks + 1).astype(np.int64)
    jobs = [
        VerifyJob(kind, i[a:b], j[a:b], lsh, tuple(parts), tuple(other or ()))
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]
    schema = {"i": pl.Int64, "j": pl.Int64, "jaccard": pl.Float64, "swapped": pl.Boolean}
    if not jobs:
        return pl.DataFrame(schema=schema)
    return pl.concat(engine.map(verify_part, jobs, what="verify chunks"))


@contextlib.contextmanager
def _band_shuffle(engine: Engine, parts: list[Part]) -> Iterator[tuple[Path | None, int]]:
    """Where the band keys are shuffled to (a scratch folder, removed on exit; None for the
    local engine, which shuffles in memory) and into how many partitions."""
    if not engine.distributed:
        yield None, 1
        return
    folder = scratch_folder(engine, "bands")
    try:
        yield folder, max(1, len(parts))
    finally:
        remove_shards(folder)


# ---- dedup ---------------------------------------------------------------------------------


def dedup(
    pairs: pl.DataFrame | pl.LazyFrame,
    *,
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 0,
    repeated_prompts: Literal["info", "issue", "off"] = "info",
    max_bucket: int = 64,
    engine: Engine | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Duplicate and near-duplicate pairs and prompts (see the module doc).

    Input columns: `pair_id` (unique), `prompt` (messages or text), `chosen`, `rejected`.
    Output: (issues, report). Report: `pairs`, `duplicate_pair`, `near_duplicate_pair`,
    `conflicting_duplicate`, `duplicate_prompt`, `near_duplicate_prompt` (rows written),
    `distinct_prompts`, and the LSH `bands` / `rows` used. `engine`: where the phases run
    (default: this process; the issues are the same either way). A LazyFrame stays lazy on a
    distributed engine: the driver holds hashes (24 bytes a row) and ids, never the texts.
    """
    engine = engine or LocalEngine()
    pairs = held_for(pairs, engine.distributed)
    _check_ids(pairs, "dedup", ("pair_id", "prompt", "chosen", "rejected"))
    n = table_rows(pairs)
    bands, rows = lsh_params(threshold, num_perm)
    lsh = LSH(threshold, ngram, num_perm, seed, bands, rows, max_bucket)
    report: dict[str, Any] = {"pairs": n, "bands": bands, "rows": rows}
    columns = ["pair_id", "prompt", "chosen", "rejected"]
    with _parts(pairs, engine, columns, "dedup") as parts:
        # 64-bit hashes of the normalised texts stand for the texts in exact matching (a
        # false match needs a hash collision: about n^2 / 2^65, 3e-8 for a million rows) and
        # keep memory at 24 bytes a row instead of a normalised copy of every text.
        hashed = _hashes(engine, parts, seed, True)
        ids = hashed["pair_id"]
        t = hashed.select("hp", "hc", "hr").with_columns(
            pl.min_horizontal("hc", "hr").alias("lo"),
            pl.max_horizontal("hc", "hr").alias("hi"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
        )
        del hashed
        t = t.with_columns(
            pl.col("row").first().over("hp", "lo", "hi").alias("first_pair"),
            pl.col("row").first().over("hp").alias("first_prompt"),
        )
        prompt_first = t["first_prompt"].to_numpy()
        heads = np.flatnonzero(prompt_first == np.arange(n))
        report["distinct_prompts"] = len(heads)
        frow = t.filter(pl.col("row") == pl.col("first_pair"))["row"].to_numpy()
        dup = t.filter(pl.col("row") != pl.col("first_pair"))
        dup_first = dup["first_pair"].to_numpy()
        swapped_exact = (dup["hc"] != t["hc"].gather(dup_first)).to_numpy()
        dup_rows = dup["row"].to_numpy()
        del t, dup

        # Near duplicates: the pair's MinHash is the minimum of its prompt's, chosen's and
        # rejected's (the signature of the union of the sets); prompts searched on their own.
        searched = heads if repeated_prompts != "off" else np.zeros(0, dtype=np.int64)
        with _band_shuffle(engine, parts) as (out, partitions):
            jobs = [
                BandJob(
                    p,
                    lsh,
                    pair_rows=p.within(frow),
                    prompt_rows=p.within(searched),
                    out=out,
                    partitions=partitions,
                    name=f"shard{k}",
                )
                for k, p in enumerate(parts)
            ]
            found = _candidates(engine, jobs, lsh)
        near_pairs = _verify(engine, PAIRS, found.filter(pl.col("kind") == PAIRS), lsh, parts)
        near_prompts = _verify(engine, PROMPTS, found.filter(pl.col("kind") == PROMPTS), lsh, parts)

    parts_out: list[pl.DataFrame] = [
        _issue_frame(
            ids.gather(dup_rows),
            "duplicate_pair",
            0.0,
            True,
            "same prompt and responses as pair " + ids.gather(dup_first),
        )
    ]
    near = near_pairs.select(list(_NEAR))
    # J == 1 here means equal after tokenisation (differences in punctuation only)
    parts_out.append(_near_issues(ids, near, "near_duplicate_pair", True, "pair"))

    # Conflicting labels, from exact and near duplicates; both rows of each pair get a row.
    swapped = np.concatenate((swapped_exact, near_pairs["swapped"].to_numpy()))
    ci_all = np.concatenate((dup_first, near["i"].to_numpy()))[swapped]
    cj_all = np.concatenate((dup_rows, near["j"].to_numpy()))[swapped]
    conflict = pl.DataFrame(
        {"item": np.concatenate((ci_all, cj_all)), "other": np.concatenate((cj_all, ci_all))},
        schema={"item": pl.Int64, "other": pl.Int64},
    )
    conflict = conflict.sort("item", "other").unique("item", keep="first", maintain_order=True)
    parts_out.append(
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
        parts_out.append(
            _issue_frame(
                ids.gather(later),
                "duplicate_prompt",
                0.0,
                flag,
                "same prompt as pair " + ids.gather(prompt_first[later]),
            )
        )
        parts_out.append(
            _near_issues(ids, near_prompts, "near_duplicate_prompt", flag, "prompt of pair")
        )
    issues = pl.concat(parts_out)
    for name in (
        "duplicate_pair",
        "near_duplicate_pair",
        "conflicting_duplicate",
        "duplicate_prompt",
        "near_duplicate_prompt",
    ):
        report[name] = int((issues["issue"] == name).sum())
    return issues, report


# ---- train / test overlap ------------------------------------------------------------------


def split_overlap(
    train: pl.DataFrame | pl.LazyFrame,
    test: pl.DataFrame | pl.LazyFrame,
    *,
    threshold: float = 0.8,
    ngram: int = 3,
    num_perm: int = 64,
    seed: int = 0,
    engine: Engine | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Test pairs whose prompt also appears (exactly or nearly) in the train split.

    Input columns (both tables): `pair_id`, `prompt` (messages or text). Output: (issues,
    report). One `train_test_overlap` row per overlapping test pair (item_id = its pair_id):
    score 0 for the same prompt after lower-casing and collapsing whitespace (compared
    through 64-bit hashes, as dedup does), else 1 - J of its most similar train prompt;
    is_issue; `reason` names the train pair_id (the first train row with that prompt).
    Report: `train_pairs`, `test_pairs`, `overlap_exact`, `overlap_near`, `overlap_share` (of
    test pairs). `engine`: where the phases run (same rows either way; LazyFrames stay lazy
    on a distributed engine).
    """
    engine = engine or LocalEngine()
    train, test = held_for(train, engine.distributed), held_for(test, engine.distributed)
    for name, table in (("train", train), ("test", test)):
        who = f"split_overlap: the {name} table needs"
        require_columns(table_columns(table), ("pair_id", "prompt"), who)
    bands, rows = lsh_params(threshold, num_perm)
    lsh = LSH(threshold, ngram, num_perm, seed, bands, rows, 64)
    with (
        _parts(train, engine, ["pair_id", "prompt"], "train") as tr_parts,
        _parts(test, engine, ["pair_id", "prompt"], "test") as te_parts,
    ):
        tr = _hashes(engine, tr_parts, seed, False)
        te = _hashes(engine, te_parts, seed, False)
        tr_first = tr.unique("hp", keep="first", maintain_order=True)
        te_first = te.unique("hp", keep="first", maintain_order=True)
        exact = te_first.select("hp").join(
            tr_first.select("hp", pl.col("pair_id").alias("train_id")), on="hp", how="inner"
        )
        rest = te_first.join(tr_first.select("hp"), on="hp", how="anti")
        # Near matches: one LSH over the train prompts (documents 0..n_tr-1) and the test
        # prompts without an exact match (documents n_tr..), pairs across the two kept.
        n_tr = tr_first.height
        tr_rows, te_rows = tr_first[ROW].to_numpy(), rest[ROW].to_numpy()
        with _band_shuffle(engine, tr_parts + te_parts) as (out, partitions):
            jobs = [
                BandJob(
                    p,
                    lsh,
                    overlap_rows=p.within(tr_rows),
                    overlap_docs=np.searchsorted(tr_rows, p.within(tr_rows)),
                    out=out,
                    partitions=partitions,
                    name=f"train{k}",
                )
                for k, p in enumerate(tr_parts)
            ] + [
                BandJob(
                    p,
                    lsh,
                    overlap_rows=p.within(te_rows),
                    overlap_docs=n_tr + np.searchsorted(te_rows, p.within(te_rows)),
                    out=out,
                    partitions=partitions,
                    name=f"test{k}",
                )
                for k, p in enumerate(te_parts)
            ]
            found = _candidates(engine, jobs, lsh)
        cross = found.filter(
            (pl.col("kind") == OVERLAP) & (pl.col("i") < n_tr) & (pl.col("j") >= n_tr)
        )
        docs = pl.DataFrame(
            {"i": tr_rows[cross["i"].to_numpy()], "j": te_rows[cross["j"].to_numpy() - n_tr]},
            schema={"i": pl.Int64, "j": pl.Int64},
        )
        near = _verify(engine, OVERLAP, docs, lsh, tr_parts, te_parts)
    # Back to document numbers: the most similar train prompt per test prompt, the earliest
    # on a tie.
    near = near.with_columns(
        pl.Series("i", np.searchsorted(tr_rows, near["i"].to_numpy())),
        pl.Series("j", n_tr + np.searchsorted(te_rows, near["j"].to_numpy())),
    )
    best = (
        near.sort("jaccard", "i", descending=[True, False])
        .group_by("j", maintain_order=True)
        .first()
    )
    near_match = pl.DataFrame(
        {
            "hp": rest["hp"].gather(best["j"].to_numpy() - n_tr),
            "train_id": tr_first["pair_id"].gather(best["i"].to_numpy()),
            "jaccard": best["jaccard"],
        },
        schema={"hp": pl.UInt64, "train_id": pl.String, "jaccard": pl.Float64},
    )
    matches = pl.concat(
        [
            exact.with_columns(pl.lit(1.0).alias("jaccard"), pl.lit(True).alias("exact")),
            near_match.with_columns(pl.lit(False).alias("exact")),
        ],
        how="diagonal_relaxed",
    )
    hits = te.join(matches, on="hp", how="inner", maintain_order="left")
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
        "train_pairs": tr.height,
        "test_pairs": te.height,
        "overlap_exact": n_exact,
        "overlap_near": hits.height - n_exact,
        "overlap_share": hits.height / te.height if te.height else 0.0,
    }
    return issues.select([pl.col(k).cast(v) for k, v in ISSUE_SCHEMA.items()]), report
