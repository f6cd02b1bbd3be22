"""Rated completions (UltraFeedback / MT-Bench style) -> pairs.

Three layouts, one row per record (JSON array or JSONL); `format="auto"` picks by the
first record:
- "rubric": Prometheus evaluation files (MT-Bench, Vicuna bench): `instruction` holds a
  scoring prompt with the user instruction after "###The instruction to evaluate:" and
  the response after "###Response to evaluate:" (ending at "###Reference Answer" or
  "###Score Rubrics"); `gpt4_score` is a list of scores (one per GPT-4 sample);
  `response_source` names the model; `idx` the question. Completions are grouped by
  `idx`. `prompt_field` names the field with the scoring prompt.
- "nested": `prompt` (or `instruction`) and `completions`, a list of objects with
  `response` (or `completion` / `text`), a score in `ratings` / `rating` / `score` /
  `scores` (a number, a numeric string, or a list of them; "N/A" is no score), and
  `model`. One record is one group. `score_field` may be a dotted path into the
  completion ("annotations.helpfulness.Rating").
- "flat": one completion per row: `prompt`, `completion` (or `response`), `score` (or
  `rating` / `ratings`), optional `generator` / `model`; grouped by prompt, or by
  `group_field` when given.

Pairs come from prefdata.io.convert.ratings_to_pairs: mode "all" gives every two completions
of a group whose mean scores differ by more than `min_margin`, "best-vs-worst" the top
against the bottom; a group whose completions all tie gives no pair. Output columns: the
pairs contract with margin = difference of mean scores, confidence = P(a score of chosen
beats one of rejected), n_votes = scores per side, agreement = share of raters (aligned
by position) ordering the pair like the means; provenance holds the scores, generators,
the group and the source rows.

When one group holds different prompts (MT-Bench turn-2 questions embed each model's own
first answer, so the four prompts of one `idx` differ), the pair takes the chosen
completion's prompt and provenance says `prompt_differs` with the rejected side's
prompt_id; the report counts such groups and pairs. Pass group_field="" to group by the
exact prompt instead (then such a file yields no pairs).

A record whose rubric text does not parse, or whose score is not a number, goes to
`rejected` with its reason; a record without the required fields raises InputError.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl

from prefdata import ids
from prefdata.errors import InputError, RowError
from prefdata.io.convert import ratings_to_pairs
from prefdata.io.importers.common import (
    Imported,
    Source,
    field_error,
    file_of,
    finish,
    json_records,
    rejected_rows,
    where,
)
from prefdata.schema import MESSAGES
from prefdata.stage import Input, stage

Format = Literal["auto", "rubric", "nested", "flat"]

RUBRIC = re.compile(
    r"###The instruction to evaluate:\n(.*?)\n\n###Response to evaluate:\n(.*?)"
    r"\n\n###(?:Reference Answer|Score Rubrics)",
    re.DOTALL,
)
# Field names tried in order when the caller names none.
_PROMPT = ("prompt", "instruction", "question")
_COMPLETION = ("completion", "response", "text", "output")
_SCORE = ("score", "scores", "rating", "ratings")
_GENERATOR = ("generator", "model", "response_source")
_MISSING_SCORE = {"", "n/a", "na", "none", "null"}


def parse_score(value: Any) -> float | list[float] | None:
    """A number, a list of numbers, or None (no score); ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, list):
        parsed = [parse_score(v) for v in value]
        if any(isinstance(p, list) for p in parsed):
            raise RowError(f"nested list {value!r}")
        numbers = [p for p in parsed if isinstance(p, float)]
        return numbers or None
    if isinstance(value, bool):
        raise RowError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise RowError(f"{value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        if value.strip().lower() in _MISSING_SCORE:
            return None
        try:
            number = float(value)
        except ValueError:
            raise RowError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise RowError(f"{value!r} is not a finite number")
        return number
    raise RowError(f"{value!r} is not a number")


def _get(obj: dict[str, Any], field: str) -> Any:
    """obj[field], following a dotted path through nested objects; KeyError if absent."""
    if field in obj:
        return obj[field]
    value: Any = obj
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(field)
        value = value[part]
    return value


def _pick(
    given: str | None, obj: dict[str, Any], options: tuple[str, ...], what: str, path: Source
) -> str:
    if given:
        return given
    for name in options:
        if name in obj:
            return name
    raise field_error(
        f"no {what} field found (tried {', '.join(options)}; the record has "
        f"{', '.join(obj)}); name it with {what}_field=",
        path,
        1,
        options[0],
    )


def _detect(first: dict[str, Any]) -> Format:
    text = first.get("instruction")
    if isinstance(text, str) and "###Response to evaluate:" in text:
        return "rubric"
    if isinstance(first.get("completions"), list):
        return "nested"
    return "flat"


@stage("rated", outputs=("pairs",))
def import_rated(
    path: Annotated[Source, Input(table=True)],
    *,
    mode: Literal["all", "best-vs-worst"] = "all",
    min_margin: float = 0.0,
    format: Format = "auto",
    prompt_field: str | None = None,
    completion_field: str | None = None,
    score_field: str | None = None,
    generator_field: str | None = None,
    group_field: str | None = None,
    source: str | None = None,
) -> Imported:
    """Rated completions -> Imported with a `pairs` table (see the module doc).

    Field options left as None take the layout's usual names; `source` defaults to the
    file name without its suffix ("rated" for a table given in memory). group_field: None =
    the layout's grouping (rubric: `idx`, nested: the record, flat: the prompt); "" = the
    exact prompt.

    Example: prefdata import rated ultrafeedback.jsonl -o pairs.parquet --mode best-vs-worst
    --min-margin 1

    Args:
        path: the rated completions file (JSONL, JSON, CSV or Parquet; from Python also a
            table of its records)
        mode: all pairs whose scores differ, or each prompt's best against its worst
        min_margin: the smallest score gap that makes a pair
        format: the layout: rubric, nested, flat (auto: from the fields)
        prompt_field: the prompt's field (default: the layout's usual name)
        completion_field: the completion's field
        score_field: the score's field
        generator_field: the generator's field
        group_field: the field grouping completions rated together ("": the exact prompt)
        source: the `source` column (default: the file name; "rated" for a table)
    """
    records = json_records(path)
    fmt: Format = _detect(records[0]) if format == "auto" else format
    src = source or ("rated" if isinstance(path, pl.DataFrame) else Path(path).name.split(".")[0])
    bad: list[tuple[int, str, Any]] = []
    rows: list[dict[str, Any]] = []
    if fmt == "rubric":
        fields = {
            "prompt": prompt_field or "instruction",
            "score": score_field or "gpt4_score",
            "generator": generator_field or "response_source",
            "group": "idx" if group_field is None else group_field,
        }
        for row, rec in enumerate(records, start=1):
            rubric = _required(rec, fields["prompt"], path, row)
            if not isinstance(rubric, str):
                raise field_error(
                    "expected the scoring prompt as a string", path, row, fields["prompt"]
                )
            match = RUBRIC.search(rubric)
            if not match:
                bad.append(
                    (
                        row,
                        "rubric text has no '###The instruction to evaluate:' / "
                        "'###Response to evaluate:' sections",
                        rec,
                    )
                )
                continue
            _add(rows, bad, rec, row, match.group(1), match.group(2), fields, path)
    elif fmt == "nested":
        fields = {"prompt": _pick(prompt_field, records[0], _PROMPT, "prompt", path)}
        first = next(
            (c for r in records for c in r.get("completions") or [] if isinstance(c, dict)), {}
        )
        fields["completion"] = _pick(completion_field, first, _COMPLETION, "completion", path)
        fields["score"] = _pick(score_field, first, _SCORE, "score", path)
        fields["generator"] = generator_field or next((g for g in _GENERATOR if g in first), "")
        fields["group"] = group_field if group_field is not None else "<record>"
        for row, rec in enumerate(records, start=1):
            prompt = _required(rec, fields["prompt"], path, row)
            completions = _required(rec, "completions", path, row)
            if not isinstance(completions, list):
                raise field_error("expected a list of completions", path, row, "completions")
            for k, comp in enumerate(completions):
                if not isinstance(comp, dict):
                    raise field_error(
                        "expected a completion object", path, row, f"completions[{k}]"
                    )
                merged = {
                    **{key: v for key, v in rec.items() if key != "completions"},
                    **comp,
                    "<record>": row,
                }
                _add(
                    rows, bad, merged, row, prompt, None, fields, path, prefix=f"completions[{k}]."
                )
    else:
        first = records[0]
        fields = {
            "prompt": _pick(prompt_field, first, _PROMPT, "prompt", path),
            "completion": _pick(completion_field, first, _COMPLETION, "completion", path),
            "score": _pick(score_field, first, _SCORE, "score", path),
            "generator": generator_field or next((g for g in _GENERATOR if g in first), ""),
            "group": group_field or "",
        }
        for row, rec in enumerate(records, start=1):
            _add(
                rows, bad, rec, row, _required(rec, fields["prompt"], path, row), None, fields, path
            )
    return _pairs(rows, bad, fields, fmt, mode, min_margin, src, path, len(records))


def _required(rec: dict[str, Any], field: str, path: Source, row: int) -> Any:
    try:
        return _get(rec, field)
    except KeyError:
        raise InputError("missing field", source=where(path), row=row, column=field) from None


def _add(
    rows: list[dict[str, Any]],
    bad: list[tuple[int, str, Any]],
    rec: dict[str, Any],
    row: int,
    prompt: Any,
    completion: Any,
    fields: dict[str, str],
    path: Source,
    prefix: str = "",
) -> None:
    """Append one completion row, or a rejected row when its score is not a number."""
    if completion is None:
        completion = _required(rec, fields["completion"], path, row)
    for name, value in (("prompt", prompt), ("completion", completion)):
        if not isinstance(value, str):
            raise field_error(
                f"expected a string, got {type(value).__name__}",
                path,
                row,
                (prefix if name == "completion" else "") + fields.get(name, name),
            )
    raw_score = _required(rec, fields["score"], path, row)
    try:
        score = parse_score(raw_score)
    except ValueError as exc:
        bad.append((row, f"{prefix}{fields['score']}: score {exc}", rec))
        return
    generator = None
    if fields["generator"]:
        # A generator is optional provenance: a record without one simply has none.
        with contextlib.suppress(KeyError):
            generator = str(_get(rec, fields["generator"]))
    group = fields["group"]
    rows.append(
        {
            "prompt": [{"role": "user", "content": prompt}],
            "completion": completion,
            "score": [score] if isinstance(score, float) else score,
            "generator": generator,
            "group": str(_required(rec, group, path, row)) if group else None,
            "row": row,
        }
    )


def _pairs(
    rows: list[dict[str, Any]],
    bad: list[tuple[int, str, Any]],
    fields: dict[str, str],
    fmt: str,
    mode: Literal["all", "best-vs-worst"],
    min_margin: float,
    source: str,
    path: Source,
    n_records: int,
) -> Imported:
    grouped = bool(fields.get("group"))
    table = pl.DataFrame(
        [{k: r[k] for k in ("prompt", "completion", "score", "generator", "group")} for r in rows],
        schema={
            "prompt": MESSAGES,
            "completion": pl.String,
            "score": pl.List(pl.Float64),
            "generator": pl.String,
            "group": pl.String,
        },
    )
    if not grouped:
        table = table.drop("group")
    if not fields.get("generator"):
        table = table.drop("generator")
    converted = ratings_to_pairs(table, mode=mode, min_margin=min_margin, source=source)
    pairs, conv = converted.tables["pairs"], converted.report

    prompt_ids = [ids.prompt_id(r["prompt"]) for r in rows]
    keys = [r["group"] if grouped else pid for r, pid in zip(rows, prompt_ids, strict=True)]
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    by_text: dict[tuple[str, str], list[int]] = {}
    for i, (key, r) in enumerate(zip(keys, rows, strict=True)):
        by_text.setdefault((key, r["completion"]), []).append(i)
    # Identical texts in one group are one completion to ratings_to_pairs (scores pooled).
    single = sum(1 for idx in members.values() if len({rows[i]["completion"] for i in idx}) == 1)
    differing = {k for k, idx in members.items() if len({prompt_ids[i] for i in idx}) > 1}

    provenance = []
    n_differ = 0
    for prov_text, pid, chosen, rejected in pairs.select(
        "provenance", "prompt_id", "chosen", "rejected"
    ).iter_rows():
        prov = json.loads(prov_text)
        key = prov["group"] if grouped else pid
        chosen_rows = by_text[(key, chosen)]
        rejected_rows_ = by_text[(key, rejected)]
        prov.update(file_of(path))
        prov["row_chosen"] = [rows[i]["row"] for i in chosen_rows]
        prov["row_rejected"] = [rows[i]["row"] for i in rejected_rows_]
        if key in differing:
            other = sorted({prompt_ids[i] for i in rejected_rows_})
            if other != [pid]:
                n_differ += 1
                prov["prompt_differs"] = True
                prov["prompt_id_rejected"] = other[0] if len(other) == 1 else other
        provenance.append(json.dumps(prov, ensure_ascii=False))
    pairs = pairs.with_columns(pl.Series("provenance", provenance, dtype=pl.String))
    report: dict[str, Any] = {
        "format": fmt,
        "fields": {k: v for k, v in fields.items() if v},
        "mode": mode,
        "min_margin": min_margin,
        "records": n_records,
        "completions": len(rows),
        "groups": len(members),
        "groups_one_completion": single,
        # ratings_to_pairs counts a one-completion group as all tied; keep them apart.
        "groups_all_tied": conv["prompts_all_tied"] - single,
        "completions_merged_identical": conv.get("completions_merged_identical", 0),
        "pairs_below_margin": conv["pairs_below_margin"],
        "completions_without_score": conv["completions_without_score"],
        "groups_with_differing_prompts": len(differing),
        "pairs_with_differing_prompts": n_differ,
    }
    return finish({"pairs": pairs}, rejected_rows(bad), report, path=path)
