"""The bad-input case table: every CLI command (one `Slot` per file it reads) x every class of
bad input (`Breakage`), plus the cases issue 22 names one by one (bad_input_specific.py).

A case is data: the command line (templates: `{IN}` the input under test, `{d}` the case's
own folder, `{fx[name]}` a good fixture from bad_input_fixtures.py), a function that makes
the case's files, and what must happen: `error` (exit 2, one line naming `says`, nothing
written) or `ok` (exit 0, and `check` finds the result right).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from prefdata.io.tables import read_table, write_table
from tests.cli.bad_input_fixtures import recipe

Fixtures = dict[str, Path]
# make(case folder, fixtures) -> substitutions for the templates ({"IN": ...}, ...)
Make = Callable[[Path, Fixtures], dict[str, str]]
# check(case folder, stdout) -> None; raises AssertionError when the result is wrong
Check = Callable[[Path, str], None]


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    make: Make
    expect: Literal["error", "ok"]
    says: tuple[str, ...] = ()
    check: Check | None = None
    # `prefdata run` makes its run folder (stage folders, call cache) before a stage fails.
    run_folder_ok: bool = False


@dataclass(frozen=True)
class Slot:
    """One file a command reads. `good`: the fixture that works there. `contract`: the
    contract that input must meet (the contract classes apply). `outputs`: argv positions
    of output paths. `succeeds`: the command runs to the end on good input here (no model,
    no server), so the output classes that need a finished write apply."""

    name: str
    argv: tuple[str, ...]
    good: str
    contract: str | None = None
    outputs: tuple[int, ...] = ()
    succeeds: bool = True
    reader: Literal["table", "json", "csv", "yaml", "folder"] = "table"


NO_MODEL = "{d}/no-such-model"
OFFLINE = ("--url", "http://127.0.0.1:9", "--api-key", "not-a-key")


def _import(fmt: str, good: str, reader: Literal["table", "json", "csv"] = "json") -> Slot:
    return Slot(
        f"import-{fmt}",
        ("import", fmt, "{IN}", "-o", "{d}/out.parquet"),
        good,
        outputs=(4,),
        reader=reader,
    )


SLOTS: list[Slot] = [
    *(
        _import(fmt, f"src_{fmt}")
        for fmt in ("hh-rlhf", "oasst", "gsm8k", "gsm8k-solutions", "math500", "openai")
    ),
    _import("pandalm", "src_pandalm"),
    _import("hhh", "src_hhh"),
    _import("rated", "src_rated"),
    _import("trl", "src_trl", reader="table"),
    _import("feedback", "src_feedback", reader="csv"),
    Slot("validate", ("validate", "{IN}", "--contract", "pairs"), "pairs", "pairs"),
    Slot(
        "validate-annotations",
        ("validate", "{IN}", "--contract", "annotations"),
        "annotations",
        "annotations",
    ),
    Slot("validate-kto", ("validate", "{IN}", "--contract", "kto"), "kto", "kto"),
    Slot("info", ("info", "{IN}"), "pairs"),
    Slot(
        "convert-pairs-to-kto",
        ("convert", "pairs-to-kto", "{IN}", "-o", "{d}/o.parquet"),
        "pairs",
        "pairs",
        (4,),
    ),
    *(
        Slot(
            f"convert-{name}", ("convert", name, "{IN}", "-o", "{d}/o.parquet"), good, outputs=(4,)
        )
        for name, good in (
            ("ratings-to-pairs", "ratings"),
            ("rankings-to-pairs", "rankings"),
            ("thumbs-to-kto", "thumbs"),
        )
    ),
    *(
        Slot(
            f"export-{fmt}",
            ("export", "{IN}", "--format", fmt, "-o", f"{{d}}/o{suffix}"),
            "pairs",
            "pairs",
            (5,),
        )
        for fmt, suffix in (
            ("trl", ".jsonl"),
            ("trl-conversational", ".parquet"),
            ("kto", ".jsonl"),
            ("openai", ".jsonl"),
            ("hf", "_hf"),
        )
    ),
    Slot(
        "export-kto-table",
        ("export", "{IN}", "--format", "kto", "-o", "{d}/o.jsonl"),
        "kto",
        "kto",
        (5,),
    ),
    Slot(
        "agree",
        ("agree", "{IN}", "-o", "{d}/a.json", "--bootstrap", "0"),
        "annotations",
        "annotations",
        (3,),
    ),
    Slot(
        "consensus",
        ("consensus", "{IN}", "-o", "{d}/post.parquet"),
        "annotations",
        "annotations",
        (3,),
    ),
    Slot(
        "consensus-votes-with-pairs",
        ("consensus", "{IN}", "--pairs", "{fx[pairs]}", "-o", "{d}/kept.parquet"),
        "annotations",
        "annotations",
        (5,),
    ),
    Slot(
        "consensus-pairs",
        ("consensus", "{fx[annotations]}", "--pairs", "{IN}", "-o", "{d}/kept.parquet"),
        "pairs",
        "pairs",
        (5,),
    ),
    Slot(
        "audit",
        ("audit", "{IN}", "-o", "{d}/issues.parquet", "--sample", "2"),
        "pairs",
        "pairs",
        (3,),
    ),
    Slot(
        "audit-annotations",
        ("audit", "{fx[pairs]}", "--annotations", "{IN}", "-o", "{d}/issues.parquet"),
        "annotations",
        "annotations",
        (5,),
    ),
    Slot(
        "audit-test",
        ("audit", "{fx[pairs]}", "--test", "{IN}", "-o", "{d}/issues.parquet"),
        "pairs",
        "pairs",
        (5,),
    ),
    Slot("audit-rate", ("audit-rate", "{IN}"), "sample"),
    Slot(
        "filter",
        ("filter", "{IN}", "-o", "{d}/kept.parquet", "--rejected", "{d}/dropped.parquet"),
        "pairs",
        "pairs",
        (3, 5),
    ),
    Slot(
        "filter-issues",
        (
            "filter",
            "{fx[pairs]}",
            "--issues",
            "{IN}",
            "--drop-issues",
            "all",
            "-o",
            "{d}/kept.parquet",
            "--rejected",
            "{d}/dropped.parquet",
        ),
        "issues",
        "issues",
        (7, 9),
    ),
    Slot("bias", ("bias", "{IN}"), "pairs", "pairs"),
    Slot(
        "bias-annotations",
        ("bias", "{fx[pairs]}", "--annotations", "{IN}"),
        "annotations",
        "annotations",
    ),
    Slot(
        "report", ("report", "{IN}", "-o", "{d}/qa", "--tokenizer", "none"), "pairs", "pairs", (3,)
    ),
    Slot(
        "report-kto", ("report", "{IN}", "-o", "{d}/qa", "--tokenizer", "none"), "kto", "kto", (3,)
    ),
    Slot(
        "report-annotations",
        ("report", "{fx[pairs]}", "--annotations", "{IN}", "-o", "{d}/qa", "--tokenizer", "none"),
        "annotations",
        "annotations",
        (5,),
    ),
    # Commands that would load a model or call a server: the bad input must be caught first
    # (the model and server named here do not exist, so reaching them fails differently).
    Slot(
        "judge",
        ("judge", "{IN}", "-o", "{d}/votes.parquet", "--judge", f"local:{NO_MODEL}", "--no-cache"),
        "pairs",
        "pairs",
        (3,),
        succeeds=False,
    ),
    Slot(
        "judge-candidates",
        ("judge", "{IN}", "-o", "{d}/votes.parquet", "--judge", f"local:{NO_MODEL}", "--no-cache"),
        "candidates",
        "candidates",
        (3,),
        succeeds=False,
    ),
    Slot(
        "judge-eval",
        ("judge-eval", "{IN}", "--gold", "{fx[annotations]}"),
        "annotations",
        "annotations",
    ),
    Slot(
        "judge-eval-gold",
        ("judge-eval", "{fx[annotations]}", "--gold", "{IN}"),
        "annotations",
        "annotations",
    ),
    Slot(
        "critique",
        ("critique", "{IN}", "-o", "{d}/rev.parquet", "--model", f"local:{NO_MODEL}"),
        "candidates",
        "candidates",
        (3,),
        succeeds=False,
    ),
    Slot(
        "generate",
        (
            "generate",
            "{IN}",
            "-o",
            "{d}/cands.parquet",
            "--model",
            NO_MODEL,
            "--no-cache",
            "--no-progress",
        ),
        "prompts",
        "prompts",
        (3,),
        succeeds=False,
    ),
    Slot(
        "synthetic-pairs",
        ("synthetic-pairs", "{IN}", "--reward-model", NO_MODEL, "-o", "{d}/pairs.parquet"),
        "candidates",
        "candidates",
        (5,),
        succeeds=False,
    ),
    Slot(
        "train-dpo",
        (
            "train",
            "dpo",
            "--recipe",
            str(recipe("dpo")),
            "--data",
            "{IN}",
            "-o",
            "{d}/run",
            "--model",
            NO_MODEL,
        ),
        "pairs",
        "pairs",
        (7,),
        succeeds=False,
    ),
    Slot(
        "train-kto",
        (
            "train",
            "kto",
            "--recipe",
            str(recipe("kto")),
            "--data",
            "{IN}",
            "-o",
            "{d}/run",
            "--model",
            NO_MODEL,
        ),
        "kto",
        "kto",
        (7,),
        succeeds=False,
    ),
    Slot("train-eval", ("train", "eval", NO_MODEL, "{IN}"), "pairs", "pairs", succeeds=False),
    Slot(
        "annotate-push",
        ("annotate", "push", "{IN}", "--dataset", "bad-input", *OFFLINE),
        "pairs",
        "pairs",
        succeeds=False,
    ),
    Slot(
        "run-import",
        ("run", "{fx[pipeline]}", "-o", "{d}/run", "--set", "import.path={IN}", "--no-progress"),
        "src_trl",
        outputs=(3,),
    ),
    Slot(
        "run",
        ("run", "{IN}", "-o", "{d}/run", "--no-progress"),
        "pipeline",
        outputs=(3,),
        reader="yaml",
    ),
]


# ------------------------------------------------------------------------------------------
# Breakages: one way to break an input. `make(slot, d, fx)` writes the broken input into d
# and returns its path; `says`: what the error line must hold ({IN} = the path).


@dataclass(frozen=True)
class Breakage:
    name: str
    make: Callable[[Slot, Path, Fixtures], Path]
    says: tuple[str, ...] = ("{IN}",)
    readers: tuple[str, ...] = ("table", "json", "csv", "yaml")
    expect: Literal["error", "ok"] = "error"
    check: Callable[[Slot, Path, str], None] | None = None


def _good_text(slot: Slot, fx: Fixtures) -> str:
    """The slot's good input as JSON lines (a table fixture is converted)."""
    src = fx[slot.good]
    if src.suffix in (".jsonl", ".yaml"):
        return src.read_text(encoding="utf-8")
    if src.suffix == ".json":
        return "".join(
            json.dumps(r, ensure_ascii=False) + "\n"
            for r in json.loads(src.read_text(encoding="utf-8"))
        )
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in read_table(src).to_dicts())


def _file(name: str, content: bytes | str) -> Callable[[Slot, Path, Fixtures], Path]:
    def make(slot: Slot, d: Path, fx: Fixtures) -> Path:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return make


def _lines(name: str, second: bytes) -> Callable[[Slot, Path, Fixtures], Path]:
    """The good input with its second line replaced by `second`."""

    def make(slot: Slot, d: Path, fx: Fixtures) -> Path:
        lines = _good_text(slot, fx).encode().split(b"\n")
        lines[1] = second
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\n".join(lines))
        return path

    return make


def _missing(slot: Slot, d: Path, fx: Fixtures) -> Path:
    return d / "missing.jsonl"


def _folder(slot: Slot, d: Path, fx: Fixtures) -> Path:
    path = d / "folder.jsonl"
    path.mkdir()
    return path


def _truncated_gz(slot: Slot, d: Path, fx: Fixtures) -> Path:
    data = gzip.compress(_good_text(slot, fx).encode())
    path = d / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


# Where the characters go: a column of written text, so they must come out unchanged.
TEXT_KEYS = (
    "chosen",
    "completion",
    "prompt",
    "question",
    "problem",
    "instruction",
    "text",
    "input",
    "label",
)


def _insert_text(row: dict[str, Any]) -> dict[str, Any]:
    for key in (k for k in TEXT_KEYS if k in row):
        new, done = _insert(row[key])
        if done:
            return {**row, key: new}
    return _insert(row)[0]  # type: ignore[no-any-return]


def _insert(value: Any) -> tuple[Any, bool]:
    """`value` with U+2028 and U+0085 put into its first string (before its last character)."""
    if isinstance(value, str) and len(value) > 1:
        return value[:-1] + "\u2028\u0085" + value[-1], True
    if isinstance(value, dict):
        for key, inner in value.items():
            new, done = _insert(inner)
            if done:
                return {**value, key: new}, True
    if isinstance(value, list):
        for i, inner in enumerate(value):
            new, done = _insert(inner)
            if done:
                return [*value[:i], new, *value[i + 1 :]], True
    return value, False


def _unicode(slot: Slot, d: Path, fx: Fixtures) -> Path:
    """The good input, valid still, with a BOM and U+2028 / U+0085 inside a JSON string."""
    src = fx[slot.good]
    if slot.reader == "csv":
        text = src.read_text(encoding="utf-8").replace("Paris.", "Pa\u2028\u0085ris.")
        path = d / f"unicode{src.suffix}"
    else:
        rows = [json.loads(line) for line in _good_text(slot, fx).splitlines() if line.strip()]
        rows[0] = _insert_text(rows[0])
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        path = d / ("unicode.json" if src.suffix == ".json" else "unicode.jsonl")
        if src.suffix == ".json":
            text = json.dumps(rows, ensure_ascii=False)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    return path


# Commands whose outputs carry the input's text (the others write ids, figures or nothing).
TEXT_FLOWS = ("import-", "convert-", "export-", "filter", "consensus-")


def _unicode_kept(slot: Slot, d: Path, out: str) -> None:
    """Nothing refused: outputs written by the command hold the characters unchanged."""
    if not slot.name.startswith(TEXT_FLOWS) or slot.name in ("filter-issues", "export-hf"):
        return
    texts = [
        p.read_bytes().decode("utf-8", "replace")
        for p in d.rglob("*")
        if p.is_file() and p.suffix in (".jsonl", ".json") and not p.name.startswith("unicode")
    ]
    parquet = [p for p in d.rglob("*.parquet") if p.is_file()]
    for p in parquet:
        texts.append(json.dumps(read_table(p).to_dicts(), ensure_ascii=False, default=str))
    if texts:
        assert any("\u2028" in t or "\\u2028" in t for t in texts), "U+2028 was lost"


GENERIC: list[Breakage] = [
    Breakage("missing", _missing, ("{IN}", "not found")),
    Breakage("empty", _file("empty.jsonl", b""), ("{IN}", "empty")),
    Breakage("blank-lines", _file("blank.jsonl", "\n  \n\n"), ("{IN}", "empty")),
    Breakage("folder", _folder),
    Breakage(
        "not-utf8",
        _lines("latin1.jsonl", '{"x": "caf\xe9"}'.encode("latin-1")),
        ("{IN}", "row 2", "UTF-8"),
        readers=("table", "json"),
    ),
    Breakage(
        "malformed-line",
        _lines("broken.jsonl", b'{"oops": '),
        ("{IN}", "row 2"),
        readers=("table", "json"),
    ),
    Breakage(
        "line-not-object",
        _lines("array.jsonl", b"[1, 2]"),
        ("{IN}", "row 2"),
        readers=("table", "json"),
    ),
    Breakage("unknown-suffix", _file("data.txt", "hello\n")),
    Breakage("corrupt-parquet", _file("corrupt.parquet", b"PAR1 this is not parquet")),
    Breakage("truncated-gzip", _truncated_gz, readers=("table", "json")),
    Breakage("json-empty-array", _file("empty.json", "[]"), ("{IN}", "empty")),
    Breakage("json-scalar", _file("scalar.json", "5")),
    Breakage("csv-header-only", _file("header.csv", "prompt,chosen,rejected\n")),
    Breakage("csv-open-quote", _file("quote.csv", 'prompt,chosen,rejected\nq,"a,b\n')),
    Breakage("markup-in-name", _lines("a[/]b.jsonl", b"{oops")),
    Breakage("markup-folder", _lines("brk/[red]x.jsonl", b"{oops")),
    Breakage("redacted-name", _lines("[redacted].jsonl", b"{oops")),
    Breakage(
        "bom-u2028-u0085",
        _unicode,
        (),
        readers=("table", "json", "csv"),
        expect="ok",
        check=_unicode_kept,
    ),
]
# A YAML pipeline file is read by the pipeline loader: only the classes that make sense there.
YAML_CLASSES = {"missing", "empty", "folder", "unknown-suffix", "markup-in-name"}


def generic_cases() -> list[Case]:
    cases = []
    for slot in SLOTS:
        for b in GENERIC:
            if slot.reader == "yaml":
                if b.name not in YAML_CLASSES:
                    continue
            elif slot.reader not in b.readers:
                continue
            if b.name == "bom-u2028-u0085" and not slot.succeeds:
                continue
            cases.append(_case(slot, b.name, b.make, b.expect, b.says, b.check))
    return cases


def _case(
    slot: Slot,
    name: str,
    make: Callable[[Slot, Path, Fixtures], Path],
    expect: Literal["error", "ok"],
    says: tuple[str, ...],
    check: Callable[[Slot, Path, str], None] | None = None,
) -> Case:
    def made(d: Path, fx: Fixtures) -> dict[str, str]:
        return {"IN": str(make(slot, d, fx))}

    checked: Check | None = None
    if check is not None:

        def checked(d: Path, out: str, check: Any = check) -> None:
            check(slot, d, out)

    return Case(
        f"{slot.name}:{name}",
        slot.argv,
        made,
        expect,
        says,
        checked,
        run_folder_ok=slot.name.startswith("run"),
    )


# ------------------------------------------------------------------------------------------
# Contract classes: the good table with one cell (or column) broken.

# The text column each contract cannot do without.
KEY_TEXT = {
    "pairs": "chosen",
    "annotations": "label",
    "kto": "completion",
    "issues": "item_id",
    "prompts": "prompt",
    "candidates": "completion",
}


def _table(slot: Slot, fx: Fixtures) -> pl.DataFrame:
    return read_table(fx[slot.good])


def _set_raw(slot: Slot, d: Path, fx: Fixtures, literal: str) -> Path:
    col = KEY_TEXT[slot.contract or ""]
    rows = _table(slot, fx).to_dicts()
    marker = "__RAW__"
    rows[1][col] = marker
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    path = d / "broken.jsonl"
    path.write_text(text.replace(f'"{marker}"', literal))
    return path


def _with(
    slot: Slot, d: Path, fx: Fixtures, change: Callable[[pl.DataFrame], pl.DataFrame]
) -> Path:
    return write_table(change(_table(slot, fx)), d / "broken.parquet")


def _row2(col: str, value: Any, dtype: Any = None) -> Callable[[pl.DataFrame], pl.DataFrame]:
    def change(t: pl.DataFrame) -> pl.DataFrame:
        values = t[col].to_list()
        values[1] = value
        return t.with_columns(pl.Series(col, values, dtype=dtype or t.schema[col]))

    return change


@dataclass(frozen=True)
class ContractBreak:
    name: str
    make: Callable[[Slot, Path, Fixtures], Path]
    says: tuple[str, ...]
    contracts: tuple[str, ...] = tuple(KEY_TEXT)


def _key(slot: Slot) -> str:
    return KEY_TEXT[slot.contract or ""]


CONTRACT_BREAKS: list[ContractBreak] = [
    # Without its key column a table may look like another contract: the error must name
    # the file and talk about columns, not necessarily this one.
    ContractBreak(
        "missing-column",
        lambda s, d, fx: _with(s, d, fx, lambda t: t.drop(_key(s))),
        ("{IN}", "column"),
    ),
    ContractBreak(
        "null-cell",
        lambda s, d, fx: _with(s, d, fx, _row2(_key(s), None)),
        ("{IN}", "row 2", "column '{KEY}'"),
    ),
    ContractBreak(
        "nan-literal",
        lambda s, d, fx: _set_raw(s, d, fx, "NaN"),
        ("{IN}", "row 2", "column '{KEY}'"),
    ),
    ContractBreak(
        "number-in-text",
        lambda s, d, fx: _set_raw(s, d, fx, "12345"),
        ("{IN}", "row 2", "column '{KEY}'"),
        ("pairs", "kto", "prompts", "candidates"),
    ),
    ContractBreak(
        "bool-in-text",
        lambda s, d, fx: _set_raw(s, d, fx, "true"),
        ("{IN}", "row 2", "column '{KEY}'"),
        ("pairs", "kto", "prompts", "candidates"),
    ),
    ContractBreak(
        "list-in-text",
        lambda s, d, fx: _set_raw(s, d, fx, "[1, 2]"),
        ("{IN}", "row 2", "column '{KEY}'"),
        ("pairs", "kto", "candidates"),
    ),
    ContractBreak(
        "nan-column",
        lambda s, d, fx: _with(
            s, d, fx, lambda t: t.with_columns(pl.lit(float("nan")).alias(_key(s)))
        ),
        ("{IN}", "row 1", "column '{KEY}'"),
        ("pairs", "kto", "candidates"),
    ),
    ContractBreak(
        "number-column",
        lambda s, d, fx: _with(
            s, d, fx, lambda t: t.with_columns(pl.int_range(pl.len()).alias(_key(s)))
        ),
        ("{IN}", "row 1", "column '{KEY}'"),
        ("pairs", "kto", "candidates"),
    ),
    ContractBreak(
        "blank-text",
        lambda s, d, fx: _with(s, d, fx, _row2(_key(s), "   ")),
        ("{IN}", "row 2", "column '{KEY}'"),
        ("pairs", "kto", "candidates"),
    ),
    ContractBreak(
        "chosen-equals-rejected",
        lambda s, d, fx: _with(s, d, fx, lambda t: _row2("rejected", t["chosen"][1])(t)),
        ("{IN}", "row 2", "column 'rejected'"),
        ("pairs",),
    ),
    ContractBreak(
        "confidence-above-1",
        lambda s, d, fx: _with(s, d, fx, _row2("confidence", 1.5, pl.Float64)),
        ("{IN}", "row 2", "column 'confidence'"),
        ("pairs",),
    ),
    ContractBreak(
        "confidence-nan",
        lambda s, d, fx: _with(s, d, fx, _row2("confidence", float("nan"), pl.Float64)),
        ("{IN}", "row 2", "column 'confidence'"),
        ("pairs", "kto"),
    ),
    ContractBreak(
        "duplicate-id",
        lambda s, d, fx: _with(s, d, fx, lambda t: _row2("pair_id", t["pair_id"][0])(t)),
        ("{IN}", "row 2", "column 'pair_id'"),
        ("pairs",),
    ),
    ContractBreak(
        "unknown-annotator-kind",
        lambda s, d, fx: _with(s, d, fx, _row2("annotator_kind", "robot")),
        ("{IN}", "row 2", "column 'annotator_kind'", "human"),
        ("annotations",),
    ),
]


# Stages that count and skip a vote without a label themselves (Table(rows=False)): such a
# vote is in their report, not an error.
SKIP_UNLABELLED = ("agree", "consensus", "consensus-votes-with-pairs")


def _skipped_one(slot: Slot, d: Path, out: str) -> None:
    assert '"skipped_no_label": 1' in out, out[:2000]


# Row problems (as opposed to a wrong type: NaN, a number for text) that the QA report takes on
# purpose and shows, counted, in its overview.
ROW_PROBLEMS = (
    "null-cell",
    "blank-text",
    "chosen-equals-rejected",
    "confidence-above-1",
    "confidence-nan",
    "duplicate-id",
)
# Rows the stage sets aside and counts itself, by design: the judge's candidates with a blank
# completion (prompts that give no pair; tests/label/test_selection.py) and generate's prompts
# that break the contract (`invalid_prompt` in its rejected table; tests/llm/test_generate.py).
COUNTED_BY_THE_STAGE = {
    ("judge-candidates", "null-cell"),
    ("judge-candidates", "blank-text"),
    ("generate", "null-cell"),
}


def _report_shows_problem(slot: Slot, d: Path, out: str) -> None:
    report = json.loads((d / "qa" / "report.json").read_text())

    def problems(node: Any) -> int:
        if isinstance(node, dict):
            own = sum(node["problems"].values()) if isinstance(node.get("problems"), dict) else 0
            return own + sum(problems(v) for k, v in node.items() if k != "problems")
        return sum(problems(v) for v in node) if isinstance(node, list) else 0

    assert problems(report) >= 1, "the report does not show the broken row"


def contract_cases() -> list[Case]:
    cases = []
    for slot in SLOTS:
        if slot.contract is None:
            continue
        for b in CONTRACT_BREAKS:
            if slot.contract not in b.contracts or (slot.name, b.name) in COUNTED_BY_THE_STAGE:
                continue
            says = tuple(s.replace("{KEY}", KEY_TEXT[slot.contract]) for s in b.says)
            if b.name == "null-cell" and slot.name in SKIP_UNLABELLED:
                cases.append(_case(slot, b.name, b.make, "ok", (), _skipped_one))
            elif b.name in ROW_PROBLEMS and slot.name.startswith("report"):
                cases.append(_case(slot, b.name, b.make, "ok", (), _report_shows_problem))
            else:
                cases.append(_case(slot, b.name, b.make, "error", says))
    return cases


# ------------------------------------------------------------------------------------------
# Output classes: where the command writes.


def _copy_in(slot: Slot, d: Path, fx: Fixtures) -> Path:
    src = fx[slot.good]
    dest = d / f"in{''.join(src.suffixes)}"
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy(src, dest)
    return dest


def _output_case(
    slot: Slot,
    name: str,
    outputs: Callable[[Path, Path], list[str]],
    says: tuple[str, ...],
    expect: Literal["error", "ok"] = "error",
    check: Check | None = None,
    prepare: Callable[[Path, list[str]], None] | None = None,
) -> Case:
    """A case that puts `outputs(d, input)` at the slot's first output positions (the other
    outputs keep their usual paths)."""
    argv = list(slot.argv)

    def made(d: Path, fx: Fixtures) -> dict[str, str]:
        src = _copy_in(slot, d, fx)
        paths = outputs(d, src)
        if prepare is not None:
            prepare(d, paths)
        subs = {"IN": str(src)}
        for i, p in enumerate(paths):
            subs[f"OUT{i}"] = p
        return subs

    for i, pos in enumerate(slot.outputs):
        argv[pos] = f"{{OUT{i}}}" if i < _width(outputs) else slot.argv[pos]
    if slot.name.startswith("run"):
        # A run folder is not one file: the pipeline names whichever path it cannot write.
        says = ()
    return Case(
        f"{slot.name}:{name}",
        tuple(argv),
        made,
        expect,
        says,
        check,
        run_folder_ok=slot.name.startswith("run"),
    )


def _width(outputs: Callable[[Path, Path], list[str]]) -> int:
    return getattr(outputs, "width", 1)


def _same_as_input(d: Path, src: Path) -> list[str]:
    return [str(src)]


def _relative_to_input(d: Path, src: Path) -> list[str]:
    (d / "sub").mkdir()
    return [os.path.relpath(d / "sub" / ".." / src.name)]


def _symlink_to_input(d: Path, src: Path) -> list[str]:
    link = d / f"link{''.join(src.suffixes)}"
    link.symlink_to(src)
    return [str(link)]


def _hard_link_to_input(d: Path, src: Path) -> list[str]:
    if src.is_dir():
        return [str(src)]
    link = d / f"hard{''.join(src.suffixes)}"
    os.link(src, link)
    return [str(link)]


def _under_a_file(d: Path, src: Path) -> list[str]:
    (d / "afile").write_text("x")
    return [str(d / "afile" / "out.parquet")]


def _read_only_folder(d: Path, src: Path) -> list[str]:
    folder = d / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return [str(folder / "out.parquet")]


def _both_same(d: Path, src: Path) -> list[str]:
    return [str(d / "same.parquet")] * 2


_both_same.width = 2  # type: ignore[attr-defined]


def _stale(d: Path, paths: list[str]) -> None:
    """Temporary files that killed writes of the first output left beside it: one of a
    process that no longer runs, one without a process id, last touched an hour ago."""
    target = Path(paths[0])
    dead = target.with_name(f".{target.name}.pid999999999.k1ll3d.tmp")
    old = target.with_name(f".{target.name}.zq8x1w.tmp")
    for p in (dead, old):
        p.write_bytes(b"half a file")
    os.utime(old, (1e9, 1e9))


def _stale_gone(d: Path, out: str) -> None:
    left = [p.name for p in d.rglob(".*.tmp")]
    assert not left, f"stale temporary files left: {left}"


def output_cases() -> list[Case]:
    cases = []
    for slot in SLOTS:
        if not slot.outputs:
            continue
        first_says = ("{OUT0}",)
        cases += [
            _output_case(slot, "output-is-input", _same_as_input, first_says),
            _output_case(slot, "output-is-input-relative", _relative_to_input, first_says),
            _output_case(slot, "output-is-input-symlink", _symlink_to_input, first_says),
            _output_case(slot, "output-is-input-hard-link", _hard_link_to_input, first_says),
            _output_case(slot, "output-under-a-file", _under_a_file, ("{d}/afile",)),
        ]
        if os.geteuid() != 0:  # root writes into read-only folders
            cases.append(_output_case(slot, "output-read-only", _read_only_folder, first_says))
        if len(slot.outputs) > 1:
            cases.append(_output_case(slot, "two-outputs-one-path", _both_same, ("same.parquet",)))
        if slot.succeeds and not slot.name.startswith(("report", "run", "export-hf")):

            def usual(d: Path, src: Path, slot: Slot = slot) -> list[str]:
                return [slot.argv[slot.outputs[0]].format(d=d)]

            cases.append(
                _output_case(slot, "stale-temp-files", usual, (), "ok", _stale_gone, _stale)
            )
    return cases
