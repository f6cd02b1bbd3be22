"""Audit (rule checks + dedup + train/test overlap) and filter on N synthetic pairs.

Each phase runs in its own child process, so its peak RSS (ru_maxrss) is its own: the
child reads the pairs from Parquet, runs one stage and reports wall time (the stage only,
not the read) and peak memory (including the table it read; `rss_after_read` is given
apart).

Synthetic pairs (numpy + polars, seeded): a vocabulary of 20,000 pseudo-words drawn with
Zipf-like frequencies, sentences of 5-15 words, prompts of lognormal(ln 4, 0.6) sentences
and responses of lognormal(ln 7, 0.7) sentences (medians of about 40 and 70 words, 250
and 450 characters: chat-length prompts, mid-length answers). Injected defects: 1% copies
of an earlier pair differing in case, 1% near copies (one word changed in each side), 2%
extra pairs on an earlier prompt, 0.5% chosen == rejected, 0.5% empty rejected, 3% responses
cut mid-sentence, 2% refusals. confidence ~ Beta(4, 1.5) with 10% null, margin ~ |N(0, 1)|,
agreement in {1/3, 2/3, 1}.

Usage: python bench/bench_audit.py [--n 1000000] [--workdir DIR] [--phases ...]
Figures are printed and written as JSON to bench/out/ (no baseline: they stand alone).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

PHASES = ("generate", "rules", "dedup", "overlap", "filter")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _texts(
    rng: np.random.Generator, sentences: pl.Series, n: int, median: float, sigma: float
) -> pl.Series:
    k = np.maximum(1, np.round(rng.lognormal(np.log(median), sigma, n))).astype(np.int64)
    pick = rng.integers(0, len(sentences), int(k.sum()))
    return (
        pl.DataFrame({"t": np.repeat(np.arange(n), k), "s": sentences.gather(pick)})
        .group_by("t", maintain_order=True)
        .agg(pl.col("s").str.join(" "))["s"]
    )


def _sentences(rng: np.random.Generator) -> pl.Series:
    """300,000 sentences of 5-15 pseudo-words from a Zipf-weighted vocabulary of 20,000."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(
        ["".join(letters[rng.integers(0, 26, int(m))]) for m in rng.integers(2, 10, 20_000)]
    )
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    n_sent = 300_000
    lens = rng.integers(5, 16, n_sent)
    words = vocab[rng.choice(len(vocab), int(lens.sum()), p=zipf / zipf.sum())]
    return (
        pl.DataFrame({"s": np.repeat(np.arange(n_sent), lens), "w": words})
        .group_by("s", maintain_order=True)
        .agg(pl.col("w").str.join(" "))
        .select(pl.col("w").str.to_titlecase() + ".")[:, 0]
    )


Texts = tuple[np.ndarray, np.ndarray, np.ndarray]  # prompt, chosen, rejected (object arrays)


def _pairs(
    rng: np.random.Generator, sentences: pl.Series, n: int, before: Texts | None = None
) -> tuple[pl.DataFrame, Texts]:
    """n pairs with the module doc's defects (no ids yet) and their texts. `before`: the
    previous chunk's texts, which this chunk's copies may also copy (so duplicates cross
    chunk, and so shard, boundaries); without it, the single-table generator."""
    prompt = _texts(rng, sentences, n, 4, 0.6)
    chosen = _texts(rng, sentences, n, 7, 0.7)
    rejected = _texts(rng, sentences, n, 7, 0.7)
    table = pl.DataFrame({"p": prompt, "c": chosen, "r": rejected})
    k = 0 if before is None else len(before[0])  # rows of the previous chunk, in front

    def pick(share: float) -> np.ndarray:
        return k + rng.choice(np.arange(n // 10, n), int(n * share), replace=False)

    def earlier(rows: np.ndarray) -> np.ndarray:
        return (rng.random(len(rows)) * rows).astype(np.int64)

    edits = {
        "dup": pick(0.01),
        "near": pick(0.01),
        "same_prompt": pick(0.02),
        "identical": pick(0.005),
        "empty": pick(0.005),
        "cut": pick(0.03),
        "refuse": pick(0.02),
    }
    p, c, r = (table[col].to_numpy().astype(object) for col in ("p", "c", "r"))
    if before is not None:
        p, c, r = (np.concatenate((old, new)) for old, new in zip(before, (p, c, r), strict=True))
    for i, j in zip(edits["dup"], earlier(edits["dup"]), strict=True):
        p[i], c[i], r[i] = p[j].upper(), c[j].upper(), r[j]
    for i, j in zip(edits["near"], earlier(edits["near"]), strict=True):
        p[i], c[i], r[i] = p[j], "Changed " + c[j], r[j] + " Extra."
    for i, j in zip(edits["same_prompt"], earlier(edits["same_prompt"]), strict=True):
        p[i] = p[j]
    for i in edits["identical"]:
        r[i] = c[i]
    for i in edits["empty"]:
        r[i] = ""
    for i in edits["cut"]:
        c[i] = c[i][: max(1, int(len(c[i]) * 0.7))].rstrip(". ")
    for i in edits["refuse"]:
        c[i] = "I'm sorry, but I can't help with that request."
    p, c, r = p[k:], c[k:], r[k:]
    n_null = int(n * 0.1)
    confidence = rng.beta(4, 1.5, n)
    confidence[rng.choice(n, n_null, replace=False)] = np.nan
    pairs = pl.DataFrame(
        {
            "prompt": pl.Series(p, dtype=pl.String),
            "chosen": pl.Series(c, dtype=pl.String),
            "rejected": pl.Series(r, dtype=pl.String),
            "confidence": pl.Series(confidence).fill_nan(None),
            "margin": np.abs(rng.normal(0, 1, n)),
            "n_votes": np.full(n, 3),
            "agreement": rng.choice([1 / 3, 2 / 3, 1.0], n),
            "source": rng.choice(["a", "b", "c"], n),
            "provenance": ["{}"] * n,
            "split": np.where(rng.random(n) < 0.9, "train", "test"),
        }
    ).with_columns(
        pl.concat_list(
            pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content"))
        ).alias("prompt")
    )
    return pairs, (p, c, r)


def generate(n: int, out: Path, seed: int = 0, chunk_rows: int | None = None) -> dict[str, Any]:
    """n synthetic pairs written to `out`. `chunk_rows`: build and write them that many at a
    time (memory bounded by a chunk, for millions of pairs; copies may reach back into the
    previous chunk); None: the whole table at once, as the figures in bench/README were made."""
    from prefdata import ids

    rng = np.random.default_rng(seed)
    sentences = _sentences(rng)
    if chunk_rows is None or n <= chunk_rows:
        pairs, _ = _pairs(rng, sentences, n)
        pairs = ids.with_pair_ids(pairs)
        pairs = pairs.unique("pair_id", keep="first", maintain_order=True)
        pairs.write_parquet(out)
        rows = pairs.height
    else:
        import pyarrow.parquet as pq

        seen = pl.Series("pair_id", [], dtype=pl.String)  # a copy of a copy repeats an id
        before: Texts | None = None
        rows = 0
        writer: pq.ParquetWriter | None = None
        try:
            for start in range(0, n, chunk_rows):
                chunk, before = _pairs(rng, sentences, min(chunk_rows, n - start), before)
                chunk = ids.with_pair_ids(chunk)
                chunk = chunk.unique("pair_id", keep="first", maintain_order=True).filter(
                    ~pl.col("pair_id").is_in(seen.implode())
                )
                seen = pl.concat([seen, chunk["pair_id"]])
                arrow = chunk.to_arrow()
                writer = writer or pq.ParquetWriter(out, arrow.schema)
                writer.write_table(arrow)
                rows += chunk.height
        finally:
            if writer is not None:
                writer.close()
        pairs = pl.read_parquet(out, columns=["prompt", "chosen", "rejected"], n_rows=200_000)
    lens_ = pairs.select(
        pl.col("prompt").list.first().struct.field("content").str.len_chars().median().alias("p"),
        pl.col("chosen").str.len_chars().median().alias("c"),
        pl.col("rejected").str.len_chars().mean().alias("r_mean"),
    ).row(0, named=True)
    return {
        "rows": rows,
        "median_chars": lens_,
        "file_mib": round(out.stat().st_size / 2**20, 1),
    }


def run_phase(phase: str, work: Path, n: int) -> dict[str, Any]:
    pairs_path = work / "pairs.parquet"
    if phase == "generate":
        t0 = time.perf_counter()
        info = generate(n, pairs_path)
        return {"wall_s": time.perf_counter() - t0, **info}
    pairs = pl.read_parquet(pairs_path)
    after_read = _rss_mib()
    t0 = time.perf_counter()
    info: dict[str, Any]
    if phase == "rules":
        from prefdata.quality.rules import rule_checks

        issues, info = rule_checks(pairs)
        wall = time.perf_counter() - t0
        issues.write_parquet(work / "issues_rules.parquet")
    elif phase == "dedup":
        from prefdata.quality.dedup import dedup

        issues, info = dedup(pairs)
        wall = time.perf_counter() - t0
        issues.write_parquet(work / "issues_dedup.parquet")
    elif phase == "overlap":
        from prefdata.quality.dedup import split_overlap

        train = pairs.filter(pl.col("split") == "train")
        test = pairs.filter(pl.col("split") == "test")
        t0 = time.perf_counter()
        _, info = split_overlap(train, test)
        wall = time.perf_counter() - t0
    elif phase == "filter":
        from prefdata.quality.filter import filter_pairs

        issues = pl.concat(
            [
                pl.read_parquet(work / "issues_rules.parquet"),
                pl.read_parquet(work / "issues_dedup.parquet"),
            ]
        )
        after_read = _rss_mib()
        t0 = time.perf_counter()
        info = filter_pairs(
            pairs, issues=issues, min_confidence=0.7, min_agreement=0.5, drop_issues="all"
        ).report
        wall = time.perf_counter() - t0
        info = {
            k: v
            for k, v in info.items()
            if k in ("rows_in", "kept", "rejected") or k.startswith("dropped_")
        }
    else:
        raise ValueError(phase)
    return {"wall_s": wall, "rss_after_read_mib": after_read, **info}


def run_child(script: str, child: str, work: Path, n: int) -> dict[str, Any]:
    """Run `script --child CHILD` in a process of its own (its memory figures are its own) and
    return the JSON of its last `RESULT ` line; exit with its output when it fails."""
    proc = subprocess.run(
        [sys.executable, script, "--child", child, "--workdir", str(work), "--n", str(n)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{Path(script).name}: child {child} failed")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = run_phase(args.child, args.workdir, args.n)
        result["peak_rss_mib"] = _rss_mib()
        print("RESULT " + json.dumps(result))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_audit_"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"n = {args.n:,} pairs, work dir {work}, polars {pl.__version__}, "
        f"numpy {np.__version__}, {pl.thread_pool_size()} polars threads"
    )
    results = {}
    for phase in args.phases:
        results[phase] = run_child(__file__, phase, work, args.n)
        r = results[phase]
        extra = {k: v for k, v in r.items() if k not in ("wall_s", "peak_rss_mib")}
        print(
            f"{phase:9s} wall {r['wall_s']:8.1f} s   peak RSS {r['peak_rss_mib']:8.0f} MiB   "
            f"{json.dumps(extra)}",
            flush=True,
        )
    audit = sum(
        results[p]["wall_s"] for p in ("rules", "dedup", "overlap", "filter") if p in results
    )
    print(f"audit + filter wall (rules, dedup, overlap, filter): {audit:.1f} s")
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = out_dir / f"bench_audit-{args.n}-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "bench_audit",
                "n": args.n,
                "phases": results,
                "audit_filter_wall_s": audit,
            },
            indent=1,
        )
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
