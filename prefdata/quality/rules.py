"""Rule checks on pairs: identical sides, empty or truncated responses, refusal-vs-answer pairs,
extreme length ratios.

Every check is a polars string expression over whole columns (no Python loop over rows):
25-40 s for a million pairs on 2 busy cores (bench/bench_audit.py). Output rows follow the
`issues` contract: `item_id` (the pair_id), `issue`, `score` (0-1, lower = worse),
`is_issue`, `reason`. A check writes a row only for pairs where it fires (one row per pair
and check, both sides described in `reason`); pairs with no row passed every check.

The checks and their scores:

- `identical_responses`: chosen == rejected (score 0.0), or equal after lower-casing and
  collapsing whitespace (score 0.1). Always an issue: the pair teaches nothing.
- `empty_response`: a side that is null, empty or only whitespace. Score 0.0, an issue.
- `truncated_response`: the truncation evidence `s` of a side is the largest of
    * 0.9 if it ends on a continuation mark (`,` `:` `;` ` -` `(` `/` `&`) or a word that
      cannot end an English sentence (and, or, but, the, a, an, of, because, than, my,
      your, their, our, its, which, whose, whether, although), at any length; a last
      line of at most three words ending in a comma ("Best," "Kind regards,": a letter's
      sign-off) is never evidence, here or below;
    * 0.9 if it has an odd number of ``` code fences (a code block left open);
    * 1.0 if `token_limit` is given, the side has no terminal punctuation and its length
      reaches 95% of the limit (tokens estimated as characters / `chars_per_token`);
    * 0.5 + 0.4 * min(1, (L - min_truncation_chars) / (4 * min_truncation_chars)) if it has
      no terminal punctuation (. ! ? … closing quotes or brackets, * ` > ~, a symbol such
      as an emoji), L >= `min_truncation_chars` characters, and its last line is not a
      short list item ("- item", "3. item", "Day 3: item"; at most 12 words: lists end
      without a full stop). Long text that stops mid-sentence is likely cut; short chat
      replies ("sure thing") often have no full stop and are not flagged.
  score = 1 - max(s over both sides); is_issue = score <= 0.5.
- `refusal_vs_answer`: exactly one side matches a refusal pattern (searched in its first
  300 characters). Which side refuses is in `reason`. Not an error in itself: refusing a
  harmful request is the right label in harmlessness data. Decision: is_issue only when the
  refusal is the *chosen* side and no user turn of the prompt matches `harmful_patterns`
  (an over-refusal label teaches the model to refuse benign requests); score 0.25 then.
  Other refusal-vs-answer pairs get a row with is_issue = False and score 0.75 (a chosen
  answer over a refusal on a harmful-looking prompt says "check this" in `reason`).
  The keyword list is a crude screen; pass your own patterns for your domain.
- `length_ratio`: r = longer / shorter side in characters (pairs with an empty side are
  left to `empty_response`). Rows for r > `max_length_ratio`, all issues, with
  score = clip(1 - ln r / (2 ln max_length_ratio), 0, 1): 0.5 at the limit, 0 at its square.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.engine import Engine, cut_shards
from prefdata.engine.shards import (
    Table,
    held_for,
    read_shard,
    table_columns,
)
from prefdata.errors import OptionError
from prefdata.schema import require_columns

ISSUE_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "issue": pl.String(),
    "score": pl.Float64(),
    "is_issue": pl.Boolean(),
    "reason": pl.String(),
}

CHECKS = (
    "identical_responses",
    "empty_response",
    "truncated_response",
    "refusal_vs_answer",
    "length_ratio",
)

# Case-insensitive regexes (Rust `regex` syntax: no look-around). Curly apostrophes are
# straightened before matching, so "I’m" matches "I'm".
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bi(?:'m| am) (?:sorry|afraid),? (?:but )?(?:i|that)\b[^.!?]{0,40}"
    r"\b(?:can't|cannot|can not|won't|will not|not able|unable|shouldn't|not comfortable)",
    r"\bi (?:can't|cannot|can not|won't|will not|am not able to|'m not able to|am unable to"
    r"|'m unable to|must decline to|refuse to) (?:help|assist|provide|do that|do this|answer"
    r"|comply|support|share|give|tell|write|create|engage|participate|recommend|encourage)",
    r"\bas an ai(?: language model)?\b",
    r"\bi(?:'m| am) not (?:comfortable|going to help|able to help|willing)",
    r"\bi (?:don't|do not) (?:feel comfortable|think i (?:can|should) (?:help|answer|do))",
    r"\bi (?:must|have to) (?:decline|refuse)\b",
    r"\bthat(?:'s| is) (?:not something i can|illegal and i)",
)

DEFAULT_HARMFUL_PATTERNS: tuple[str, ...] = (
    r"\b(?:kill|murder|stab|shoot|strangle|poison|torture|kidnap|assault|attack|hurt|harm"
    r"|beat up|punch|bomb|explosive|weapon|gun|rifle|knife|terror)\w*",
    r"\b(?:steal|rob|shoplift|burglar|break into|hack|phish|scam|fraud|launder|counterfeit"
    r"|blackmail|extort|bribe|cheat|smuggle|pirat)\w*",
    r"\b(?:drug|cocaine|heroin|meth|fentanyl|overdose|weed|marijuana|lsd)\w*",
    r"\b(?:rape|molest|porn|nude|sex|incest|prostitut)\w*",
    r"\b(?:suicide|self-harm|cut myself|kill myself)\b",
    r"\b(?:racist|racial slur|slur|n-word|insult|offensive|hate)\w*",
    r"\b(?:illegal|crime|criminal|get away with|without getting caught|revenge|prank)\w*",
)

_TERMINAL = r"[.!?…。！？\"'”’»)\]}*`>~\p{So}]$"
_CONTINUATION = (
    r"(?:[,:;(/&]|\s-|\b(?:and|or|but|the|a|an|of|because|than|my|your|their|our|its|which"
    r"|whose|whether|although))$"
)
_LIST_ITEM = r"^\s*(?:[-*•+]|\d{1,3}[.)]|[^\s:]+(?:\s+[^\s:]+){0,3}:)\s+\S"
_SIGN_OFF = r"^\s*\S+(?:\s+\S+){0,2},$"


def _side_text(col: str) -> pl.Expr:
    return pl.col(col).fill_null("")


def _normalised(col: str) -> pl.Expr:
    return _side_text(col).str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _refuses(col: str, pattern: str) -> pl.Expr:
    return (
        _side_text(col)
        .str.slice(0, 300)
        .str.replace_all("’", "'", literal=True)
        .str.contains(pattern)
    )


def _user_text(table: pl.DataFrame) -> pl.Expr:
    if table.schema["prompt"] == pl.String:
        return pl.col("prompt").fill_null("")
    return (
        pl.col("prompt")
        .list.eval(
            pl.element().filter(pl.element().struct.field("role") == "user").struct.field("content")
        )
        .list.join("\n")
        .fill_null("")
    )


def _truncation_features(col: str, p: str) -> list[list[pl.Expr]]:
    """Stages of columns `__{p}_*` describing one side's ending (each text scanned once)."""
    text = pl.col(f"__{p}_text")
    last = pl.col(f"__{p}_last")
    return [
        [_side_text(col).str.strip_chars_end().alias(f"__{p}_text")],
        [
            text.str.len_chars().cast(pl.Int64).alias(f"__{p}_len"),
            # splitting is ~6x faster than a "(?:^|\n)([^\n]*)$" regex capture
            text.str.split("\n").list.last().fill_null("").alias(f"__{p}_last"),
            (~text.str.contains(_TERMINAL)).alias(f"__{p}_open"),
            text.str.slice(-40).str.to_lowercase().str.contains(_CONTINUATION).alias(f"__{p}_cont"),
            ((text.str.count_matches("```", literal=True) % 2) == 1).alias(f"__{p}_fence"),
            text.str.contains("\n", literal=True).alias(f"__{p}_lines"),
        ],
        [
            (last.str.contains(_LIST_ITEM) & (last.str.count_matches(r"\S+") <= 12)).alias(
                f"__{p}_list"
            ),
            (pl.col(f"__{p}_lines") & last.str.contains(_SIGN_OFF)).alias(f"__{p}_signoff"),
        ],
    ]


def _truncation_evidence(
    p: str, *, min_chars: int, token_limit: int | None, chars_per_token: float
) -> tuple[pl.Expr, pl.Expr]:
    """(evidence 0-1, short reason or null) for one side; see the module doc for the rule."""
    length = pl.col(f"__{p}_len")
    nonempty = length > 0
    open_end = pl.col(f"__{p}_open") & nonempty
    sign_off = pl.col(f"__{p}_signoff")
    continuation = pl.col(f"__{p}_cont") & nonempty & ~sign_off
    long_open = open_end & (length >= min_chars) & ~pl.col(f"__{p}_list") & ~sign_off
    ramp = ((length - min_chars) / (4.0 * min_chars)).clip(0.0, 1.0)
    parts: list[tuple[pl.Expr, float | pl.Expr, pl.Expr]] = [
        (long_open, 0.5 + 0.4 * ramp, pl.format("no terminal punctuation after {} chars", length)),
        (continuation, 0.9, pl.lit("ends on a continuation word or mark")),
        (pl.col(f"__{p}_fence"), 0.9, pl.lit("code block left open")),
    ]
    if token_limit is not None:
        at_limit = open_end & (length / chars_per_token >= 0.95 * token_limit)
        parts.append(
            (
                at_limit,
                1.0,
                pl.format(
                    "about {} tokens, at the {}-token limit",
                    (length / chars_per_token).round(0).cast(pl.Int64),
                    pl.lit(token_limit),
                ),
            )
        )
    evidence = pl.max_horizontal(
        [pl.when(cond).then(value).otherwise(0.0) for cond, value, _ in parts]
    )
    reason = pl.concat_str(
        [pl.when(cond).then(text_) for cond, _, text_ in parts], separator=", ", ignore_nulls=True
    )
    return evidence, pl.when(evidence > 0).then(reason)


def _rows(frame: pl.DataFrame, issue: str) -> pl.DataFrame:
    return frame.select(
        pl.col("pair_id").alias("item_id"),
        pl.lit(issue).alias("issue"),
        pl.col("score").cast(pl.Float64),
        pl.col("is_issue").cast(pl.Boolean),
        pl.col("reason").cast(pl.String),
    )


def rule_checks(
    pairs: pl.DataFrame | pl.LazyFrame,
    *,
    max_length_ratio: float = 5.0,
    min_truncation_chars: int = 200,
    token_limit: int | None = None,
    chars_per_token: float = 4.0,
    refusal_patterns: Sequence[str] = DEFAULT_REFUSAL_PATTERNS,
    harmful_patterns: Sequence[str] = DEFAULT_HARMFUL_PATTERNS,
    checks: Sequence[str] = CHECKS,
    engine: Engine | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Run the rule checks of the module doc on a pairs table.

    Input columns: `pair_id`, `chosen`, `rejected`, and `prompt` (chat messages or text;
    its user turns are matched against `harmful_patterns`). Output: (issues, report);
    issues has the `issues` contract columns, one row per (pair, check) that fired, in
    check order then pair order. Report: `pairs`, and per check `<check>_rows` (rows
    written) and `<check>` (rows with is_issue).
    Patterns are case-insensitive regexes; `checks` selects which checks run. `engine`: where
    they run (prefdata.engine; a distributed one runs them on Parquet shards, with the same
    rows in the same order). A LazyFrame stays lazy on a distributed engine: the driver never
    holds its rows.
    """
    distributed = engine is not None and engine.distributed
    pairs = held_for(pairs, distributed)
    columns = table_columns(pairs)
    require_columns(columns, ("pair_id", "chosen", "rejected", "prompt"), "rule checks need")
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise OptionError(f"unknown check(s) {unknown}; known: {CHECKS}", option="checks")
    if max_length_ratio <= 1:
        raise OptionError("must be > 1", option="max_length_ratio")
    options: dict[str, Any] = {
        "max_length_ratio": max_length_ratio,
        "min_truncation_chars": min_truncation_chars,
        "token_limit": token_limit,
        "chars_per_token": chars_per_token,
        "refusal_patterns": tuple(refusal_patterns),
        "harmful_patterns": tuple(harmful_patterns),
        "checks": tuple(checks),
    }
    if engine is not None and distributed:
        return _on_shards(pairs, engine, options)
    assert isinstance(pairs, pl.DataFrame)  # held_for reads a lazy table for one process
    # One chunk per column: polars (1.x) panics ("assertion failed: i < self.len()") in the
    # checks' collect_all on a frame of several chunks, e.g. one read from a multi-row-group
    # Parquet file or concatenated without rechunking.
    pairs = pairs.rechunk()

    refusal = "(?i)" + "|".join(f"(?:{p})" for p in refusal_patterns)
    harmful = "(?i)" + "|".join(f"(?:{p})" for p in harmful_patterns)
    base = pairs.lazy().select("pair_id", "chosen", "rejected", "prompt")
    frames: dict[str, pl.LazyFrame] = {}
    blank_c = _side_text("chosen").str.strip_chars().str.len_chars() == 0
    blank_r = _side_text("rejected").str.strip_chars().str.len_chars() == 0

    if "identical_responses" in checks:
        exact = pl.col("chosen") == pl.col("rejected")
        same = _normalised("chosen") == _normalised("rejected")
        frames["identical_responses"] = base.filter(
            (same & ~(blank_c & blank_r)).fill_null(False)
        ).select(
            "pair_id",
            pl.when(exact).then(0.0).otherwise(0.1).alias("score"),
            pl.lit(True).alias("is_issue"),
            pl.when(exact)
            .then(pl.lit("chosen and rejected are the same text"))
            .otherwise(pl.lit("chosen and rejected differ only in case or whitespace"))
            .alias("reason"),
        )

    if "empty_response" in checks:
        frames["empty_response"] = base.filter(blank_c | blank_r).select(
            "pair_id",
            pl.lit(0.0).alias("score"),
            pl.lit(True).alias("is_issue"),
            pl.when(blank_c & blank_r)
            .then(pl.lit("chosen and rejected are empty"))
            .when(blank_c)
            .then(pl.lit("chosen is empty"))
            .otherwise(pl.lit("rejected is empty"))
            .alias("reason"),
        )

    if "truncated_response" in checks:
        ev_c, why_c, ev_r, why_r = (
            expr
            for side in ("c", "r")
            for expr in _truncation_evidence(
                side,
                min_chars=min_truncation_chars,
                token_limit=token_limit,
                chars_per_token=chars_per_token,
            )
        )
        staged = base
        for stage_c, stage_r in zip(
            _truncation_features("chosen", "c"),
            _truncation_features("rejected", "r"),
            strict=True,
        ):
            staged = staged.with_columns(*stage_c, *stage_r)
        frames["truncated_response"] = (
            staged.with_columns(
                ev_c.alias("_ec"), ev_r.alias("_er"), why_c.alias("_wc"), why_r.alias("_wr")
            )
            .filter((pl.col("_ec") > 0) | (pl.col("_er") > 0))
            .select(
                "pair_id",
                (1.0 - pl.max_horizontal("_ec", "_er")).alias("score"),
                (1.0 - pl.max_horizontal("_ec", "_er") <= 0.5).alias("is_issue"),
                pl.concat_str(
                    [
                        pl.when(pl.col("_ec") > 0).then(pl.format("chosen: {}", "_wc")),
                        pl.when(pl.col("_er") > 0).then(pl.format("rejected: {}", "_wr")),
                    ],
                    separator="; ",
                    ignore_nulls=True,
                ).alias("reason"),
            )
        )

    if "refusal_vs_answer" in checks:
        ref_c = _refuses("chosen", refusal) & ~blank_c
        ref_r = _refuses("rejected", refusal) & ~blank_r
        harmful_prompt = _user_text(pairs).str.contains(harmful)
        over_refusal = ref_c & ~harmful_prompt
        frames["refusal_vs_answer"] = base.filter((ref_c != ref_r) & ~blank_c & ~blank_r).select(
            "pair_id",
            pl.when(over_refusal).then(0.25).otherwise(0.75).alias("score"),
            over_refusal.alias("is_issue"),
            pl.when(over_refusal)
            .then(
                pl.lit(
                    "chosen refuses, rejected answers; the prompt matches no harmful "
                    "pattern (possible over-refusal label)"
                )
            )
            .when(ref_c)
            .then(pl.lit("chosen refuses, rejected answers; the prompt looks harmful"))
            .when(harmful_prompt)
            .then(
                pl.lit(
                    "rejected refuses, chosen answers a harmful-looking prompt "
                    "(check this for harmlessness data)"
                )
            )
            .otherwise(pl.lit("rejected refuses, chosen answers"))
            .alias("reason"),
        )

    if "length_ratio" in checks:
        lc = _side_text("chosen").str.len_chars().cast(pl.Float64)
        lr = _side_text("rejected").str.len_chars().cast(pl.Float64)
        ratio = pl.max_horizontal(lc, lr) / pl.min_horizontal(lc, lr)
        log_limit = float(pl.Series([max_length_ratio]).log()[0])
        frames["length_ratio"] = (
            base.with_columns(
                ratio.alias("_ratio"),
                (lc > lr).alias("_longer_chosen"),
                lc.alias("_lc"),
                lr.alias("_lr"),
            )
            .filter(~blank_c & ~blank_r & (pl.col("_ratio") > max_length_ratio))
            .select(
                "pair_id",
                (1.0 - pl.col("_ratio").log() / (2.0 * log_limit)).clip(0.0, 1.0).alias("score"),
                pl.lit(True).alias("is_issue"),
                pl.format(
                    "{} is {}x longer than {} ({} vs {} chars)",
                    pl.when("_longer_chosen").then(pl.lit("chosen")).otherwise(pl.lit("rejected")),
                    pl.col("_ratio").round(1),
                    pl.when("_longer_chosen").then(pl.lit("rejected")).otherwise(pl.lit("chosen")),
                    pl.max_horizontal("_lc", "_lr").cast(pl.Int64),
                    pl.min_horizontal("_lc", "_lr").cast(pl.Int64),
                ).alias("reason"),
            )
        )

    names = [c for c in CHECKS if c in frames]
    collected = pl.collect_all([frames[n] for n in names])
    parts = [_rows(df, name) for name, df in zip(names, collected, strict=True)]
    issues = pl.concat(parts) if parts else pl.DataFrame(schema=ISSUE_SCHEMA)
    report: dict[str, Any] = {"pairs": pairs.height}
    for name, part in zip(names, parts, strict=True):
        report[f"{name}_rows"] = part.height
        report[name] = int(part["is_issue"].sum())
    return issues, report


# Rows per shard on a distributed engine (each check is a column expression: a worker's memory
# is its shard's texts and their temporaries).
SHARD_ROWS = 250_000


def _rules_on_shard(job: tuple[Path, dict[str, Any]]) -> tuple[pl.DataFrame, dict[str, Any]]:
    path, options = job
    return rule_checks(read_shard(path), **options)


def _on_shards(
    pairs: Table, engine: Engine, options: dict[str, Any]
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """rule_checks on contiguous shards: each check's rows in shard order are its rows in
    pair order, and every count adds up."""
    columns = ["pair_id", "chosen", "rejected", "prompt"]
    with cut_shards(pairs, engine, "rules", columns=columns, max_rows=SHARD_ROWS) as shards:
        rows = sum(s.rows for s in shards)
        done = engine.map(_rules_on_shard, [(s.path, options) for s in shards], what="rule shards")
    rank = {name: k for k, name in enumerate(CHECKS)}
    issues = (
        pl.concat([d[0] for d in done])
        .with_columns(pl.col("issue").replace_strict(rank, return_dtype=pl.Int64).alias("_k"))
        .sort("_k", maintain_order=True)
        .drop("_k")
        if done
        else pl.DataFrame(schema=ISSUE_SCHEMA)
    )
    report: dict[str, Any] = {"pairs": rows}
    for key in done[0][1] if done else ():
        if key != "pairs":
            report[key] = sum(int(d[1][key]) for d in done)
    return issues, report
