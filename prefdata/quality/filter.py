"""Confidence filtering: thresholds on confidence, margin and agreement, issue flags, ties.

`filter_pairs(pairs, *, options) -> StageResult` (the stage `prefdata filter`): tables `pairs`
(kept) and, with ties="kto", `kto`; `rejected`; the report; the settings it ran with as the
document `filter` (the settings) (the dataset card lists them). Every input row is in exactly one
of the kept pairs and `rejected`; `rejected` carries `reason` (the first rule the row fails, in
the order below) and `reasons` (every rule it fails, "; "-joined); the report counts
`dropped_<reason>` (first reasons; they sum to the rejected rows) and `failing_<rule>` (every
rule, so a row can count several times).

Rules, in order:
1. `tie`: margin == 0, or an issue row (is_issue) named in `tie_issues` (default "tie").
2. `inconsistent`: an issue row (is_issue) named in `inconsistent_issues` (default
   "inconsistent", "order_inconsistent": a judge that changes its verdict when the order
   is swapped, annotators that contradict each other).
3. `issue_<name>`: an issue row (is_issue) named in `drop_issues` ("all": every name except
   the tie and inconsistent ones, which rules 1-2 handle); names are tried in the order given
   (for "all", in order of first appearance in `issues`).
4. `unknown_confidence` / `unknown_margin` / `unknown_agreement`: the value is null and the
   matching `unknown_*` option is "drop". With "keep" (default) a null passes its
   threshold: null means "not measured" (a single crowd label, ranks without a scale), and
   dropping every such row on a threshold would silently empty those data sets; the
   threshold then only applies where a value exists.
5. `low_confidence` / `low_margin` / `low_agreement`: value < min_* (a value equal to the
   threshold passes).

Ties and KTO (decision). A tie says neither completion is better; it says nothing about
whether both are good or both bad, which is what a KTO label needs (absolute ratings), so a
tie is always dropped (`tie`), whatever `ties` says. `ties="kto"` applies to inconsistent
judgments: a pair that fails only rule 2 and whose confidence (the probability that chosen
really is better, from the consensus) is at least `kto_min_confidence` leaves the pairs
table with reason `kto_only`; `kto_only(rejected)` turns exactly those rows into desirable
KTO rows for the chosen side (the rejected side is not labelled undesirable: being worse
than a good answer does not make it bad). With ties="drop" (default) such rows are
`inconsistent`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import polars as pl

from prefdata import ids
from prefdata.errors import ContractError, InputError
from prefdata.schema import conform, with_messages
from prefdata.stage import StageResult, Table, stage

Policy = Literal["keep", "drop"]
TIE_ISSUES: tuple[str, ...] = ("tie",)
INCONSISTENT_ISSUES: tuple[str, ...] = ("inconsistent", "order_inconsistent")
_THRESHOLDED = ("confidence", "margin", "agreement")


def _flagged(issues: pl.DataFrame, names: Sequence[str]) -> pl.DataFrame:
    """item_id -> list of flagged issue names, in the order of `names`."""
    rank = pl.DataFrame(
        {"issue": list(names), "__rank": list(range(len(names)))},
        schema={"issue": pl.String, "__rank": pl.Int64},
    )
    return (
        issues.filter(pl.col("is_issue").fill_null(False))
        .select("item_id", "issue")
        .join(rank, on="issue", how="inner")
        .unique(["item_id", "issue"])
        .sort("item_id", "__rank")
        .group_by("item_id", maintain_order=True)
        .agg(pl.col("issue").alias("__names"))
    )


@stage("filter", outputs=("pairs", "kto", "filter", "rejected"))
def filter_pairs(
    pairs: Annotated[pl.DataFrame, Table("pairs")],
    *,
    issues: Annotated[pl.DataFrame | None, Table("issues")] = None,
    min_confidence: float | None = None,
    min_margin: float | None = None,
    min_agreement: float | None = None,
    drop_issues: Sequence[str] | None = None,
    ties: Literal["drop", "kto"] = "drop",
    unknown_confidence: Policy = "keep",
    unknown_margin: Policy = "keep",
    unknown_agreement: Policy = "keep",
    kto_min_confidence: float = 0.8,
    tie_issues: Sequence[str] = TIE_ISSUES,
    inconsistent_issues: Sequence[str] = INCONSISTENT_ISSUES,
) -> StageResult:
    """Keep pairs that pass confidence / margin / agreement thresholds and issue flags; every
    dropped pair is in `rejected` with its reason (the rules of the module doc, in order).

    Input: pairs, and an optional issues table (item_id = pair_id; rows with is_issue false
    are ignored). Output: `pairs` (kept, input columns and order), with ties="kto" also `kto`
    (desirable rows for `kto_only` pairs); `rejected` (input columns + `reason` + `reasons`);
    report `rows_in`, `kept`, `rejected`, `dropped_<reason>`, `failing_<rule>`,
    `issues_unmatched`; document `filter` (the settings).

    Example: prefdata filter pairs.parquet --issues issues.parquet --drop-issues all
    --min-confidence 0.7 -o clean.parquet --rejected dropped.parquet

    Args:
        pairs: the pairs to filter
        issues: issues table from `prefdata audit`
        min_confidence: drop pairs whose confidence is below this
        min_margin: drop pairs whose margin is below this
        min_agreement: drop pairs whose annotator agreement is below this
        drop_issues: issue names to drop ("all": every flagged issue; comma-separated or
            repeated); needs `issues`
        ties: "kto" sends inconsistent but confident pairs to KTO-only rows instead of
            dropping them
        unknown_confidence: a pair with no confidence: keep it or drop it
        unknown_margin: a pair with no margin: keep it or drop it
        unknown_agreement: a pair with no agreement figure: keep it or drop it
        kto_min_confidence: with ties="kto", the confidence a pair needs to become KTO rows
        tie_issues: issue names that mark a tie
        inconsistent_issues: issue names that mark an inconsistent judgment
    """
    # One name given as a plain string is one name (or a comma-separated list), not letters.
    listed = [drop_issues] if isinstance(drop_issues, str) else list(drop_issues or ())
    names_given = [n.strip() for item in listed for n in item.split(",") if n.strip()]
    drop: list[str] | Literal["all"] = "all" if names_given == ["all"] else names_given
    unknown = {
        "confidence": unknown_confidence,
        "margin": unknown_margin,
        "agreement": unknown_agreement,
    }
    minimum = {"confidence": min_confidence, "margin": min_margin, "agreement": min_agreement}
    needed = {c for c in _THRESHOLDED if minimum[c] is not None or unknown[c] == "drop"}
    if ties == "kto":
        needed.add("confidence")
    if issues is not None:
        needed.add("pair_id")
    elif drop:
        raise InputError("drop_issues needs an issues table (--issues / issues=...)")
    missing = sorted(needed - set(pairs.columns))
    if missing:
        raise ContractError(
            f"filter needs column(s) {missing} in the pairs table", column=missing[0]
        )

    frame = pairs.with_row_index("__row")
    rules: list[tuple[str, pl.Expr]] = []
    report: dict[str, Any] = {"rows_in": pairs.height}

    special = set(tie_issues) | set(inconsistent_issues)
    names: list[str] = []
    if issues is not None:
        for col in ("item_id", "issue", "is_issue"):
            if col not in issues.columns:
                raise ContractError(f"the issues table needs column '{col}'", column=col)
        present = issues.filter(pl.col("is_issue").fill_null(False))["issue"].unique(
            maintain_order=True
        )
        if drop == "all":
            drop_names = [n for n in present.to_list() if n not in special]
        else:
            drop_names = [n for n in drop if n not in special]
        names = [*tie_issues, *inconsistent_issues, *drop_names]
        frame = frame.with_columns(pl.col("pair_id").cast(pl.String).alias("__key")).join(
            _flagged(issues.with_columns(pl.col("item_id").cast(pl.String)), names),
            left_on="__key",
            right_on="item_id",
            how="left",
            maintain_order="left",
        )
        matched = (
            issues["item_id"].cast(pl.String).is_in(pairs["pair_id"].cast(pl.String).implode())
        )
        report["issues_unmatched"] = issues.filter(~matched)["item_id"].n_unique()
        flagged = pl.col("__names").fill_null(pl.lit([], dtype=pl.List(pl.String)))

        def has(*which: str) -> pl.Expr:
            wanted = pl.lit(pl.Series([list(which)], dtype=pl.List(pl.String)))
            return flagged.list.set_intersection(wanted).list.len() > 0
    else:
        drop_names = []

        def has(*which: str) -> pl.Expr:
            return pl.lit(False)

    tie = has(*tie_issues) if tie_issues else pl.lit(False)
    if "margin" in pairs.columns:
        tie = tie | (pl.col("margin") == 0).fill_null(False)
    rules.append(("tie", tie))
    rules.append(
        ("inconsistent", has(*inconsistent_issues) if inconsistent_issues else pl.lit(False))
    )
    for name in drop_names:
        rules.append((f"issue_{name}", has(name)))
    for col in _THRESHOLDED:
        if unknown[col] == "drop":
            rules.append((f"unknown_{col}", pl.col(col).is_null()))
    for col in _THRESHOLDED:
        if minimum[col] is not None:
            rules.append((f"low_{col}", (pl.col(col) < minimum[col]).fill_null(False)))

    rule_names = [name for name, _ in rules]
    frame = frame.with_columns([expr.alias(f"__fail_{name}") for name, expr in rules])
    fails = [pl.col(f"__fail_{name}") for name in rule_names]
    reasons = pl.concat_str(
        [pl.when(f).then(pl.lit(name)) for name, f in zip(rule_names, fails, strict=True)],
        separator="; ",
        ignore_nulls=True,
    )
    first = pl.coalesce(
        [pl.when(f).then(pl.lit(name)) for name, f in zip(rule_names, fails, strict=True)]
    )
    if ties == "kto":
        only_inconsistent = pl.col("__fail_inconsistent") & (pl.sum_horizontal(fails) == 1)
        to_kto = only_inconsistent & (pl.col("confidence") >= kto_min_confidence).fill_null(False)
        first = pl.when(to_kto).then(pl.lit("kto_only")).otherwise(first)
    frame = frame.with_columns(first.alias("reason"), reasons.alias("reasons"))

    helper = [c for c in frame.columns if c.startswith("__")]
    kept = frame.filter(pl.col("reason").is_null()).select(pairs.columns)
    rejected = frame.filter(pl.col("reason").is_not_null()).drop(helper)
    report["kept"] = kept.height
    report["rejected"] = rejected.height
    for key, count in rejected["reason"].value_counts(sort=True).iter_rows():
        report[f"dropped_{key}"] = count
    for name in rule_names:
        report[f"failing_{name}"] = int(frame[f"__fail_{name}"].sum())
    tables = {"pairs": kept}
    if ties == "kto":
        tables["kto"], report["kto_only"] = kto_only(rejected)
    settings = {
        "drop_issues": None if not drop else drop if drop == "all" else ",".join(drop),
        "min_confidence": min_confidence,
        "min_margin": min_margin,
        "min_agreement": min_agreement,
        "ties": ties,
        "unknown_confidence": unknown_confidence,
        "unknown_margin": unknown_margin,
        "unknown_agreement": unknown_agreement,
    }
    return StageResult(
        tables=tables,
        rejected=rejected,
        report=report,
        documents={"filter": {k: v for k, v in settings.items() if v is not None}},
    )


def kto_only(rejected: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """KTO rows from the `kto_only` rows of filter_pairs' rejected table.

    Input columns: `reason`, `prompt`, `chosen`, `confidence`, `source`. Output: (kto, report);
    kto follows the kto contract: one desirable row (label True) per `kto_only` pair, the
    chosen completion with the pair's confidence; report: `kto_rows`.
    """
    rows = rejected.filter(pl.col("reason") == "kto_only")
    kto = rows.select(
        "prompt",
        pl.col("chosen").alias("completion"),
        pl.lit(True).alias("label"),
        pl.col("confidence").cast(pl.Float64),
        pl.col("source").cast(pl.String),
    )
    kto = conform(ids.with_completion_ids(with_messages(kto)), "kto")
    return kto, {"kto_rows": kto.height}
