"""The column contracts that flow between stages, as polars schemas, and one `validate()`.

Every stage checks its input with `validate(table, "<contract>", source=path)`; the error
names the file, the row (1-based, the first data row is row 1; for JSONL it is the line)
and the column. `find_problems()` returns every bad row instead of raising, so importers
can move bad rows to a rejected table with a reason instead of failing or dropping them.

Prompts are always stored as chat messages (a list of {role, content}); a plain-text prompt
is accepted on input and becomes one user message, so every later stage sees one type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from prefdata.errors import ContractError, InputError, shorten

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)
ROLES = ("system", "user", "assistant", "tool")
PAIR_LABELS = ("a", "b", "tie")
ANNOTATOR_KINDS = ("human", "llm", "rule", "implicit")
ORDERS = ("ab", "ba")
ContractName = Literal["prompts", "candidates", "annotations", "pairs", "kto", "issues"]
"""The contracts by name (a test keeps this equal to CONTRACTS)."""


@dataclass(frozen=True)
class Contract:
    """Required and optional columns with their types, and the id column that must be unique."""

    name: str
    required: dict[str, pl.DataType]
    optional: dict[str, pl.DataType] = field(default_factory=dict)
    unique: str | None = None
    # Required columns that may hold nulls: estimates that a source may not have
    # (a single crowd label has no measured confidence; we never invent one).
    nullable: frozenset[str] = frozenset()
    # Required columns a table may leave out, and the value every row then gets.
    defaults: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> dict[str, pl.DataType]:
        return {**self.required, **self.optional}


CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in [
        Contract(
            "prompts",
            {"prompt_id": pl.String(), "prompt": MESSAGES},
            # `answer`: a gold answer (GSM8K, MATH-500) for verifiable rewards.
            {"metadata": pl.String(), "answer": pl.String(), "source": pl.String()},
            unique="prompt_id",
        ),
        Contract(
            "candidates",
            {
                "prompt_id": pl.String(),
                "prompt": MESSAGES,
                "completion_id": pl.String(),
                "completion": pl.String(),
                "generator": pl.String(),
                "params": pl.String(),
            },
            unique="completion_id",
        ),
        Contract(
            "annotations",
            {
                "item_id": pl.String(),
                "annotator": pl.String(),
                "annotator_kind": pl.String(),
                # a / b / tie for pairs (a and b as in prefdata.ids.canonical_sides);
                # a number as text for ratings; "true" / "false" for thumbs.
                "label": pl.String(),
            },
            {
                "confidence": pl.Float64(),
                "rationale": pl.String(),
                "raw": pl.String(),
                "error": pl.String(),
                "order": pl.String(),
                "input_tokens": pl.Int64(),
                "output_tokens": pl.Int64(),
                "cost_usd": pl.Float64(),
                "created_at": pl.String(),
                # the source record a vote came from, when several records pool into one item
                "record_id": pl.String(),
            },
            # A vote whose reply could not be read keeps its row with `error` set and no
            # label: never a guessed label (find_problems flags a null label without error).
            nullable=frozenset({"label"}),
            # Votes exported from annotation tools rarely say who is a person: people.
            defaults={"annotator_kind": "human"},
        ),
        Contract(
            "pairs",
            {
                "pair_id": pl.String(),
                "prompt_id": pl.String(),
                "prompt": MESSAGES,
                "chosen": pl.String(),
                "rejected": pl.String(),
                "confidence": pl.Float64(),
                "margin": pl.Float64(),
                "n_votes": pl.Int64(),
                "agreement": pl.Float64(),
                "source": pl.String(),
                "provenance": pl.String(),
            },
            {"split": pl.String()},
            unique="pair_id",
            nullable=frozenset({"confidence", "margin", "agreement"}),
        ),
        Contract(
            "kto",
            {
                "prompt": MESSAGES,
                "completion": pl.String(),
                "label": pl.Boolean(),
                "confidence": pl.Float64(),
                "source": pl.String(),
            },
            {"prompt_id": pl.String(), "completion_id": pl.String(), "provenance": pl.String()},
            nullable=frozenset({"confidence"}),
        ),
        Contract(
            "issues",
            {
                "item_id": pl.String(),
                "issue": pl.String(),
                "score": pl.Float64(),
                "is_issue": pl.Boolean(),
                "reason": pl.String(),
            },
        ),
    ]
}

# Columns whose value must be a non-blank string for the row to mean anything.
_NON_BLANK = {"chosen", "rejected", "completion"}
_UNIT_INTERVAL = {"confidence", "agreement", "score"}
# Columns of written text: a number or true/false there is a broken row (a spreadsheet
# that turned an answer into 12345, a NaN for a missing text), never text to pass on.
# Ids, names and labels holding numbers are only spelled as text ("7", "4.5").
CONTENT_COLUMNS = frozenset({"prompt", "chosen", "rejected", "completion"})


def _text_columns() -> frozenset[str]:
    text: set[str] = set()
    other: set[str] = set()
    for c in CONTRACTS.values():
        for name, dtype in c.columns.items():
            (text if dtype in (pl.String(), MESSAGES) else other).add(name)
    return frozenset(text - other)


# Columns that hold text (or text prompts) in every contract that has them: a reader of an
# untyped format (CSV) keeps them as text, so "007" stays "007".
TEXT_COLUMNS = _text_columns()


def contract_of(name: str) -> Contract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise ContractError(f"unknown contract '{name}'; known: {', '.join(CONTRACTS)}") from None


def empty(name: str) -> pl.DataFrame:
    """An empty table with the contract's required columns."""
    return pl.DataFrame(schema=contract_of(name).required)


def guess_contract(table: pl.DataFrame) -> str | None:
    """The most specific contract whose required columns the table has, if any."""
    best: tuple[int, str] | None = None
    for c in CONTRACTS.values():
        fits = set(c.required) <= set(table.columns)
        if fits and (best is None or len(c.required) > best[0]):
            best = (len(c.required), c.name)
    return best[1] if best else None


def _coerce_column(
    table: pl.DataFrame, column: str, target: pl.DataType, source: str | Path | None
) -> pl.Series:
    series = table.get_column(column)
    if series.dtype == pl.Object:
        series = _from_objects(series, target, source)
    if series.dtype == target:
        return series
    if target == MESSAGES:
        if series.dtype == pl.String:
            # One vectorised expression: building Python dicts row by row cost ~75 s per
            # million rows.
            return pl.select(
                pl.when(series.is_not_null())
                .then(
                    pl.concat_list(
                        pl.struct(pl.lit("user").alias("role"), pl.lit(series).alias("content"))
                    )
                )
                .cast(MESSAGES)
                .alias(column)
            ).to_series()
        try:
            return _messages_by_name(series, source, column).cast(MESSAGES)
        except ContractError:
            raise
        except Exception:
            raise ContractError(
                f"expected text or a list of {{role, content}} messages, got {series.dtype}",
                source=source,
                row=_first_not_null(series),
                column=column,
            ) from None
    if target == pl.String and isinstance(series.dtype, (pl.Struct, pl.List)):
        # JSON columns (provenance, params, metadata) may arrive parsed from JSONL.
        return pl.Series(
            column,
            [None if v is None else _to_json(v) for v in series.to_list()],
            dtype=pl.String,
        )
    if target == pl.String and (series.dtype.is_numeric() or series.dtype == pl.Boolean):
        _refuse_numbers_as_text(series, column, source)
    cast = series.cast(target, strict=False)
    bad = (cast.is_null() & series.is_not_null()).arg_true()
    if len(bad):
        row = int(bad[0])
        raise ContractError(
            f"expected {target}, got {shorten(series[row])} (column type {series.dtype}); "
            f"{len(bad)} row(s) affected",
            source=source,
            row=row + 1,
            column=column,
        )
    return cast


def _first_not_null(series: pl.Series) -> int | None:
    found = series.is_not_null().arg_true()
    return int(found[0]) + 1 if len(found) else None


def _refuse_numbers_as_text(series: pl.Series, column: str, source: str | Path | None) -> None:
    """A NaN never becomes the text "NaN"; a number in a column of written text never
    becomes its digits (see CONTENT_COLUMNS)."""
    if series.dtype.is_float():
        nan = series.is_nan().fill_null(False).arg_true()
        if len(nan):
            raise ContractError(
                f"NaN (not a number) where a value belongs; {len(nan)} row(s) affected",
                source=source,
                row=int(nan[0]) + 1,
                column=column,
            )
    if column in CONTENT_COLUMNS:
        row = _first_not_null(series)
        if row is not None:
            raise ContractError(
                f"expected text, got {'true/false' if series.dtype == pl.Boolean else 'a number'}"
                f" ({shorten(series[row - 1])}); {series.count()} row(s) affected",
                source=source,
                row=row,
                column=column,
            )


def _from_objects(series: pl.Series, target: pl.DataType, source: str | Path | None) -> pl.Series:
    """A column of mixed JSON types (prefdata.io.tables.records_frame) as the target type, or
    an error naming the first row whose value has the wrong type."""
    values = series.to_list()
    wanted: tuple[type, ...]
    if target == MESSAGES:
        wanted = (str, list)
        values = [[{"role": "user", "content": v}] if isinstance(v, str) else v for v in values]
    elif target == pl.String and series.name not in CONTENT_COLUMNS:
        # An id or a label may be a number in some rows: spelled as text, as for a whole
        # numeric column.
        wanted = (str, int, float)
        values = [v if isinstance(v, str) or v is None else str(v) for v in values]
    elif target == pl.String:
        wanted = (str,)
    else:
        wanted = (int, float) if target.is_numeric() else (bool,)
    for row, value in enumerate(series.to_list(), start=1):
        odd = value is not None and (
            not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
        )
        if odd or (isinstance(value, float) and math.isnan(value)):
            what = "NaN (not a number)" if odd is False else shorten(value)
            raise ContractError(
                f"expected {target}, got {what}; the column mixes types",
                source=source,
                row=row,
                column=series.name,
            )
    try:
        return pl.Series(series.name, values, dtype=target)
    except Exception:
        raise ContractError(
            f"expected {target}; the column mixes types", source=source, column=series.name
        ) from None


def _messages_by_name(series: pl.Series, source: str | Path | None, column: str) -> pl.Series:
    """Messages whose fields are role and content in another order, or with other fields
    that are all empty, as {role, content}: `datasets` and pandas keep a dict's keys in their
    own order ({content, role} is common on the Hugging Face Hub), and a cast by position
    would swap the two. Other fields with values are refused, not dropped."""
    dtype = series.dtype
    if not (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)):
        return series
    names = [f.name for f in dtype.inner.fields]
    if names == ["role", "content"] or not {"role", "content"} <= set(names):
        return series
    fields = series.explode().struct.unnest()
    others = [n for n in names if n not in ("role", "content")]
    used = [n for n in others if fields[n].null_count() < len(fields)]
    if used:
        raise ContractError(
            f"messages carry fields other than role and content ({', '.join(used)}); "
            "prefdata keeps text messages only",
            source=source,
            column=column,
        )
    element = pl.element().struct
    return series.list.eval(pl.struct(element.field("role"), element.field("content")))


def with_messages(table: pl.DataFrame, column: str = "prompt") -> pl.DataFrame:
    """The table with `column` as chat messages (a text prompt becomes one user message)."""
    return table.with_columns(_coerce_column(table, column, MESSAGES, None))


def _to_json(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def require_columns(
    columns: Sequence[str],
    needed: Iterable[str],
    what: str,
    *,
    source: str | Path | None = None,
    error: type[InputError] = ContractError,
) -> None:
    """Raise `error` naming the first of the `needed` columns that `columns` lacks. `what`
    says who needs them and leads the message: "<what> column(s) [...]; the table has [...]"
    (e.g. what="rule checks need")."""
    missing = [c for c in needed if c not in columns]
    if missing:
        raise error(
            f"{what} column(s) {missing}; the table has {list(columns)}",
            source=source,
            column=missing[0],
        )


def conform(
    table: pl.DataFrame,
    contract: str,
    *,
    source: str | Path | None = None,
    needs: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Check columns and types, coercing what is safe; raise ContractError naming the column.

    Input: any table. Output: the same rows with the contract's columns in contract order
    (known optional columns kept, unknown extra columns kept after them). `needs`: for a
    stage that uses only part of a contract (a judge reads prompt, chosen and rejected and
    makes the ids itself), the required columns it needs; the contract's other columns are
    checked when present.
    """
    spec = contract_of(contract)
    required = spec.required if needs is None else {n: spec.columns[n] for n in needs}
    # A default fills a column the table leaves out, unless the stage says it needs the
    # column from the data (a judge's votes must say which are a judge's).
    table = table.with_columns(
        pl.lit(value, pl.String).alias(name)
        for name, value in spec.defaults.items()
        if name not in table.columns and (needs is None or name not in needs)
    )
    require_columns(table.columns, required, f"contract '{contract}' is missing", source=source)
    columns = [
        _coerce_column(table, name, dtype, source)
        for name, dtype in spec.columns.items()
        if name in table.columns
    ]
    extra = [table.get_column(c) for c in table.columns if c not in spec.columns]
    conformed = pl.DataFrame(columns + extra)
    if contract == "annotations":
        # A value outside a fixed set is not a type, but no stage can read it either: refused
        # here, so a stage that skips bad rows itself (Table(rows=False)) still never sees it.
        for name, allowed in (("annotator_kind", ANNOTATOR_KINDS), ("order", ORDERS)):
            if name in conformed.columns:
                odd = (~conformed[name].is_in(allowed) & conformed[name].is_not_null()).arg_true()
                if len(odd):
                    row = int(odd[0])
                    raise ContractError(
                        f"must be one of {', '.join(allowed)}; got {shorten(conformed[name][row])}",
                        source=source,
                        row=row + 1,
                        column=name,
                    )
    return conformed


def find_problems(table: pl.DataFrame, contract: str) -> pl.DataFrame:
    """Every row-level problem: columns `row` (1-based), `column`, `problem`.

    Input: a table that already conforms (see `conform`). Checks nulls in required
    columns, blank prompts and completions, chosen == rejected, values outside 0-1,
    unknown labels / kinds / orders, and duplicate ids.
    """
    spec = contract_of(contract)
    df = table.with_row_index("__row", offset=1)
    checks: list[tuple[str, pl.Expr, str]] = []
    for name in spec.required:
        if name in spec.nullable or name not in df.columns:
            continue
        checks.append((name, pl.col(name).is_null(), "missing value"))
    for name in _NON_BLANK & set(df.columns):
        checks.append((name, pl.col(name).str.strip_chars().str.len_chars() == 0, "empty text"))
    if "prompt" in df.columns:
        blank_prompt = (
            pl.col("prompt")
            .list.eval(pl.element().struct.field("content").str.strip_chars().str.len_chars())
            .list.sum()
            .fill_null(0)
            == 0
        )
        checks.append(("prompt", blank_prompt, "prompt is empty or only whitespace"))
        bad_role = (
            pl.col("prompt").list.eval(~pl.element().struct.field("role").is_in(ROLES)).list.any()
        )
        checks.append(("prompt", bad_role.fill_null(False), f"message role not in {ROLES}"))
    if {"chosen", "rejected"} <= set(df.columns):
        checks.append(("rejected", pl.col("chosen") == pl.col("rejected"), "chosen == rejected"))
    for name, dtype in df.schema.items():
        if dtype.is_float() and name in spec.columns:
            checks.append((name, ~pl.col(name).is_finite(), "not a finite number (NaN or inf)"))
    for name in _UNIT_INTERVAL & set(df.columns):
        if df.schema[name].is_numeric():
            in_range = pl.col(name).is_between(0, 1) | ~pl.col(name).is_finite()
            checks.append((name, ~in_range, "value outside 0-1"))
    if contract == "annotations" and {"label", "annotator_kind"} <= set(df.columns):
        no_error = pl.col("error").is_null() if "error" in df.columns else pl.lit(True)
        checks.append(("label", pl.col("label").is_null() & no_error, "missing label and no error"))
        checks.append(
            (
                "annotator_kind",
                ~pl.col("annotator_kind").is_in(ANNOTATOR_KINDS),
                f"must be one of {ANNOTATOR_KINDS}",
            )
        )
        if "order" in df.columns:
            checks.append(
                (
                    "order",
                    ~pl.col("order").is_in(ORDERS) & pl.col("order").is_not_null(),
                    f"must be one of {ORDERS} or empty",
                )
            )
    if spec.unique and spec.unique in df.columns:
        checks.append(
            # The first occurrence stays good; later copies are the problem rows.
            (
                spec.unique,
                ~pl.col(spec.unique).is_first_distinct(),
                f"duplicate {spec.unique} (an earlier row has the same id)",
            )
        )
    frames = [
        df.filter(expr.fill_null(False)).select(
            pl.col("__row").alias("row"),
            pl.lit(column).alias("column"),
            pl.lit(problem).alias("problem"),
        )
        for column, expr, problem in checks
    ]
    if not frames:
        return pl.DataFrame(schema={"row": pl.UInt32, "column": pl.String, "problem": pl.String})
    return pl.concat(frames).sort("row", maintain_order=True)


def validate(
    table: pl.DataFrame,
    contract: str,
    *,
    source: str | Path | None = None,
    needs: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Conform `table` to `contract` and raise ContractError on the first bad row.

    Input: any table. Output: the conformed table (see `conform`; `needs` as there). The
    error names the file (`source`), the row and the column, and counts the other problems.
    This is the one input check: every command, and every pipeline stage, checks each table
    it reads with it.
    """
    conformed = conform(table, contract, source=source, needs=needs)
    problems = find_problems(conformed, contract)
    if problems.height:
        first = problems.row(0, named=True)
        more = ""
        if problems.height > 1:
            counts = problems.group_by("problem").len().sort("len", descending=True)
            more = "; all problems: " + ", ".join(
                f"{r['problem']} x{r['len']}" for r in counts.iter_rows(named=True)
            )
        raise ContractError(
            f"{first['problem']}{more}", source=source, row=first["row"], column=first["column"]
        )
    return conformed


def split_problems(table: pl.DataFrame, contract: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a conformed table into (good rows, rejected rows with a `reason` column).

    Nothing is dropped silently: every row is in exactly one of the two outputs.
    """
    problems = find_problems(table, contract)
    if not problems.height:
        return table, table.head(0).with_columns(pl.lit(None, pl.String).alias("reason"))
    reasons = problems.group_by("row", maintain_order=True).agg(
        pl.format("{}: {}", "column", "problem").str.join("; ").alias("reason")
    )
    indexed = table.with_row_index("__row", offset=1)
    joined = indexed.join(reasons, left_on="__row", right_on="row", how="left")
    good = joined.filter(pl.col("reason").is_null()).drop("__row", "reason")
    bad = joined.filter(pl.col("reason").is_not_null()).drop("__row")
    return good, bad
