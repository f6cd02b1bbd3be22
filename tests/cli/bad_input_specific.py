"""The bad-input cases issue 22 names one by one (numbers are the issue's items), and the ones
the matrix in bad_input_cases.py cannot express: a write killed half way, a label of 2 MB,
an importer's rows set aside with their reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.io.tables import read_table, write_table
from tests.cli.bad_input_cases import Case, Fixtures
from tests.cli.bad_input_fixtures import FEEDBACK_HEADER, FEEDBACK_ROWS, TRL_ROWS, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _copy(name: str, dest: str) -> Any:
    def make(d: Path, fx: Fixtures) -> dict[str, str]:
        target = d / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fx[name], target)
        return {"IN": str(target)}

    return make


def _text(dest: str, text: str) -> Any:
    def make(d: Path, fx: Fixtures) -> dict[str, str]:
        (d / dest).parent.mkdir(parents=True, exist_ok=True)
        (d / dest).write_text(text, encoding="utf-8")
        return {"IN": str(d / dest)}

    return make


def _json_lines(dest: str, rows: list[str]) -> Any:
    return _text(dest, "".join(r + "\n" for r in rows))


def _report(out: str) -> dict[str, Any]:
    start = out.index("{")
    return json.loads(out[start:])  # type: ignore[no-any-return]


def _rejected(d: Path, name: str = "out.rejected.parquet") -> pl.DataFrame:
    return read_table(d / name)


# Item 16: a NaN or a number in TRL rows is set aside with its reason, never "NaN" / "12345".
TRL_LINES = [json.dumps(r) for r in TRL_ROWS]


def _trl_bad_row(literal: str, column: str = "chosen") -> list[str]:
    row = json.dumps({**TRL_ROWS[1], column: "__X__"}).replace('"__X__"', literal)
    return [TRL_LINES[0], row, *TRL_LINES[2:]]


def _row_2_set_aside(column: str) -> Any:
    def check(d: Path, out: str) -> None:
        report = _report(out)
        assert report["rows_pairs"] == 3 and report["rows_rejected"] == 1, report
        rejected = _rejected(d)
        assert rejected["row"].to_list() == [2]
        assert column in rejected["reason"][0], rejected["reason"][0]
        kept = read_table(d / "out.parquet")
        text = json.dumps(kept.to_dicts(), default=str)
        assert not any(f'"{v}"' in text for v in ("NaN", "nan", "12345", "true", "inf"))

    return check


def _feedback_jsonl(completion_literal: str) -> list[str]:
    rows = [dict(zip(FEEDBACK_HEADER, r, strict=True)) for r in FEEDBACK_ROWS]
    lines = [json.dumps(r) for r in rows]
    lines[1] = json.dumps({**rows[1], "completion": "__X__"}).replace('"__X__"', completion_literal)
    return lines


def _feedback_row_2_set_aside(word: str) -> Any:
    def check(d: Path, out: str) -> None:
        rejected = _rejected(d)
        assert 2 in rejected["row"].to_list(), rejected
        reasons = " ".join(rejected["reason"].to_list())
        assert word in reasons, reasons
        kto = read_table(d / "out.parquet")
        assert not kto.filter(pl.col("completion").is_in(["NaN", "nan", "12345"])).height

    return check


def _csv(dest: str, lines: list[str]) -> Any:
    return _text(dest, "\n".join(lines) + "\n")


FEEDBACK_CSV = [",".join(FEEDBACK_HEADER), *(",".join(r) for r in FEEDBACK_ROWS)]


def _solutions_with_list(d: Path, fx: Fixtures) -> dict[str, str]:
    lines = fx["src_gsm8k-solutions"].read_text().splitlines()
    row = json.loads(lines[1])
    key = next(k for k, v in row.items() if isinstance(v, dict))
    row[key] = [row[key]]
    lines[1] = json.dumps(row)
    (d / "solutions.jsonl").write_text("\n".join(lines) + "\n")
    return {"IN": str(d / "solutions.jsonl"), "KEY": key}


def _solution_row_set_aside(d: Path, out: str) -> None:
    report = _report(out)
    assert report["rows_rejected"] == 1 and report["source_rows"] == 4, report
    rejected = _rejected(d)
    assert rejected["row"].to_list() == [2] and "a list" in rejected["reason"][0]
    kto = read_table(d / "out.parquet")
    assert kto.height == report["solutions"] == 3 * 4  # the three other questions, whole


def _killed_write(d: Path, fx: Fixtures) -> dict[str, str]:
    """A real write of the output killed half way (SIGKILL), leaving its temporary file."""
    target = d / "kept.parquet"
    code = (
        "import os, signal, sys\n"
        "from prefdata.io.tables import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 100000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert done.returncode == -9
    left = list(d.glob(".kept.parquet.*.tmp"))
    assert len(left) == 1, left
    shutil.copy(fx["pairs"], d / "pairs.parquet")
    return {"IN": str(d / "pairs.parquet")}


def _no_temp_left(d: Path, out: str) -> None:
    assert not list(d.glob(".*.tmp")), list(d.glob(".*"))
    assert read_table(d / "kept.parquet").height == 4


def _input_intact(d: Path, out: str) -> None:
    assert read_table(d / "data" / "pairs.parquet").height == 4
    assert (d / "data" / "hf").is_dir()


def _huge_label(d: Path, fx: Fixtures) -> dict[str, str]:
    votes = read_table(fx["annotations"])
    labels = votes["label"].to_list()
    labels[4] = "z" * 2_000_000
    write_table(votes.with_columns(pl.Series("label", labels)), d / "votes.parquet")
    return {"IN": str(d / "votes.parquet")}


def _short_line(d: Path, out: str) -> None:
    """Checked in the test: one line; here only that no output was printed whole."""
    assert len(out) < 5000


def _nan_pairs(d: Path, fx: Fixtures) -> dict[str, str]:
    lines = [json.dumps(r, default=str) for r in read_table(fx["pairs"]).to_dicts()]
    row = json.loads(lines[1])
    row["chosen"] = "__X__"
    lines[1] = json.dumps(row).replace('"__X__"', "NaN")
    (d / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return {"IN": str(d / "pairs.jsonl")}


def _huge_confidence(d: Path, fx: Fixtures) -> dict[str, str]:
    rows = read_table(fx["pairs"]).to_dicts()
    rows[1]["confidence"] = "x" * 1_000_000
    write_jsonl(d / "pairs.jsonl", rows)
    return {"IN": str(d / "pairs.jsonl")}


def _no_kind(d: Path, fx: Fixtures) -> dict[str, str]:
    write_table(read_table(fx["annotations"]).drop("annotator_kind"), d / "votes.parquet")
    return {"IN": str(d / "votes.parquet")}


def _nothing_written(d: Path, out: str) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["votes.parquet"], list(d.iterdir())
    report = _report(out)
    assert report.get("items") == 4 or report.get("method"), report


def _agreement_of_kinds(d: Path, out: str) -> None:
    report = _report(out)
    assert [a["annotator_kind"] for a in report["per_annotator"]] == ["human"] * 3


def _pandalm_folder(d: Path, out: str) -> None:
    report = _report(out)
    assert report["records"] == 6 and report["rows_annotations"] == 18, report


def specific_cases() -> list[Case]:
    cases = [
        # 11: output equal to an input, or to another output.
        Case(
            "issue-11:filter-same-file-three-times",
            (
                "filter",
                "{IN}",
                "--issues",
                "{fx[issues]}",
                "--drop-issues",
                "all",
                "-o",
                "{IN}",
                "--rejected",
                "{IN}",
            ),
            _copy("pairs", "c.parquet"),
            "error",
            ("{IN}",),
        ),
        Case(
            "issue-11:import-over-its-source",
            ("import", "trl", "{IN}", "-o", "{IN}"),
            _copy("src_trl", "t.jsonl"),
            "error",
            ("{IN}", "input"),
        ),
        Case(
            "issue-11:import-companion-over-source",
            ("import", "trl", "{IN}", "-o", "{d}/t.jsonl"),
            _json_lines("t.rejected.jsonl", _trl_bad_row("NaN")),
            "error",
            ("{IN}",),
        ),
        # An export writes its formats inside -o (data/hf): a folder holding the input is not
        # replaced, and the input stays as it was.
        Case(
            "issue-11:export-hf-into-the-folder-holding-input",
            ("export", "{IN}", "--format", "hf", "-o", "{d}/data"),
            _copy("pairs", "data/pairs.parquet"),
            "ok",
            check=_input_intact,
        ),
        # 12: a write killed half way leaves a temporary file; the next write removes it.
        Case(
            "issue-12:killed-write-cleaned-up",
            ("filter", "{IN}", "-o", "{d}/kept.parquet", "--rejected", "{d}/dropped.parquet"),
            _killed_write,
            "ok",
            check=_no_temp_left,
        ),
        # 14: text printed as written, never as rich markup.
        Case(
            "issue-14:validate-ok-path-with-markup",
            ("validate", "{IN}"),
            _copy("pairs", "a[/]b/[red]c.parquet"),
            "ok",
            check=lambda d, out: None,
        ),
        Case(
            "issue-14:feedback-event-with-markup",
            ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
            _csv("log.csv", [*FEEDBACK_CSV[:2], "s1,Capital of France?,Lyon.,[/]thumbs_up,u1"]),
            "error",
            ("{IN}", "row 2", "column 'event'", "[/]thumbs_up"),
        ),
        # 15: an empty input is an error for every importer, a CSV header alone too.
        Case(
            "issue-15:feedback-header-only",
            ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
            _csv("log.csv", FEEDBACK_CSV[:1]),
            "error",
            ("{IN}", "no records"),
        ),
        Case(
            "issue-15:feedback-empty-csv",
            ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
            _text("log.csv", ""),
            "error",
            ("{IN}", "empty"),
        ),
        # 16: NaN and numbers where text belongs are set aside with a reason.
        *(
            Case(
                f"issue-16:import-trl-{name}",
                ("import", "trl", "{IN}", "-o", "{d}/out.parquet"),
                _json_lines("t.jsonl", _trl_bad_row(literal, column)),
                "ok",
                check=_row_2_set_aside(column),
            )
            for name, literal, column in (
                ("nan-chosen", "NaN", "chosen"),
                ("number-chosen", "12345", "chosen"),
                ("bool-rejected", "true", "rejected"),
                ("nan-prompt", "NaN", "prompt"),
                ("nan-confidence", "NaN", "confidence"),
                ("infinite-confidence", "Infinity", "confidence"),
            )
        ),
        # The same through the batched reader (files over 256 MB, or --stream).
        Case(
            "issue-16:import-trl-stream-number-chosen",
            ("import", "trl", "{IN}", "-o", "{d}/out.parquet", "--stream"),
            _json_lines("t.jsonl", _trl_bad_row("12345")),
            "ok",
            check=_row_2_set_aside("chosen"),
        ),
        Case(
            "issue-16:export-stream-nan-chosen",
            ("export", "{IN}", "--format", "trl", "-o", "{d}/out.jsonl", "--stream"),
            _nan_pairs,
            "error",
            ("{IN}", "row 2", "column 'chosen'"),
        ),
        *(
            Case(
                f"issue-16:import-feedback-{name}",
                ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
                _json_lines("log.jsonl", _feedback_jsonl(literal)),
                "ok",
                check=_feedback_row_2_set_aside(word),
            )
            for name, literal, word in (
                ("nan-completion", "NaN", "NaN"),
                ("number-completion", "12345", "not text"),
            )
        ),
        Case(
            "issue-16:agree-nan-label",
            ("agree", "{IN}", "--bootstrap", "0"),
            _json_lines(
                "votes.jsonl",
                [
                    json.dumps(
                        {"item_id": "i1", "annotator": "x", "annotator_kind": "human", "label": "a"}
                    ),
                    '{"item_id": "i1", "annotator": "y", "annotator_kind": "human", "label": NaN}',
                ],
            ),
            "error",
            ("{IN}", "row 2", "column 'label'"),
        ),
        # 18: rows that would lose data silently are set aside with the reason.
        Case(
            "issue-18:gsm8k-solutions-generator-as-list",
            ("import", "gsm8k-solutions", "{IN}", "-o", "{d}/out.parquet"),
            _solutions_with_list,
            "ok",
            check=_solution_row_set_aside,
        ),
        Case(
            "issue-18:feedback-extra-cells",
            ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
            _csv(
                "log.csv", [*FEEDBACK_CSV[:2], FEEDBACK_CSV[2] + ",spare,cells", *FEEDBACK_CSV[3:]]
            ),
            "ok",
            check=_feedback_row_2_set_aside("cells"),
        ),
        Case(
            "issue-18:feedback-missing-cells",
            ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
            _csv("log.csv", [*FEEDBACK_CSV[:2], "s1,Capital of France?", *FEEDBACK_CSV[3:]]),
            "ok",
            check=_feedback_row_2_set_aside("cells"),
        ),
        # 20: CSV read errors located; long values cut in messages.
        Case(
            "issue-20:feedback-open-quote",
            ("import", "feedback", "{IN}", "-o", "{d}/out.parquet"),
            _csv("log.csv", [*FEEDBACK_CSV[:2], 's1,"Capital of France?,Lyon.,thumbs_up,u1']),
            "error",
            ("{IN}", "row 2", "quote"),
        ),
        Case(
            "issue-20:validate-csv-ragged",
            ("validate", "{IN}"),
            _csv("p.csv", ["prompt,chosen,rejected", "q,a,b", "q,a,b,c"]),
            "error",
            ("{IN}", "row 2"),
        ),
        Case(
            "issue-20:consensus-mean-huge-label",
            ("consensus", "{IN}", "--method", "mean"),
            _huge_label,
            "error",
            ("{IN}", "row 5", "column 'label'", "2,000,002 characters"),
            _short_line,
        ),
        Case(
            "issue-20:validate-huge-value",
            ("validate", "{IN}", "--contract", "pairs"),
            _huge_confidence,
            "error",
            ("{IN}", "row 2", "column 'confidence'", "characters"),
        ),
        Case(
            "issue-20:json-nested-too-deep",
            ("validate", "{IN}"),
            _text("deep.json", "[" * 200_000),
            "error",
            ("{IN}",),
        ),
        Case(
            "issue-20:json-array-holding-a-number",
            ("validate", "{IN}"),
            _text("rows.json", '[{"prompt": "q"}, 7]'),
            "error",
            ("{IN}", "row 2"),
        ),
        # 21: option errors are one line naming the option.
        Case(
            "issue-21:drop-issues-without-issues",
            (
                "filter",
                "{IN}",
                "--drop-issues",
                "all",
                "-o",
                "{d}/k.parquet",
                "--rejected",
                "{d}/r.parquet",
            ),
            _copy("pairs", "pairs.parquet"),
            "error",
            ("drop_issues", "issues table"),
        ),
        Case(
            "issue-21:unknown-choice",
            (
                "filter",
                "{IN}",
                "--ties",
                "sometimes",
                "-o",
                "{d}/k.parquet",
                "--rejected",
                "{d}/r.parquet",
            ),
            _copy("pairs", "pairs.parquet"),
            "error",
            ("--ties", "sometimes"),
        ),
        # Commands without a table input still refuse an output they cannot write, before
        # they start a server call or a model.
        Case(
            "outputs:annotate-pull-over-review-sample",
            (
                "annotate",
                "pull",
                "--dataset",
                "x",
                "--review-of",
                "{IN}",
                "-o",
                "{IN}",
                "--url",
                "http://127.0.0.1:9",
                "--api-key",
                "k",
            ),
            _copy("sample", "sample.parquet"),
            "error",
            ("{IN}", "input"),
        ),
        Case(
            "outputs:annotate-pull-under-a-file",
            (
                "annotate",
                "pull",
                "--dataset",
                "x",
                "-o",
                "{IN}/votes.parquet",
                "--url",
                "http://127.0.0.1:9",
                "--api-key",
                "k",
            ),
            _text("afile", "x"),
            "error",
            ("{IN}/votes.parquet", "not a folder"),
        ),
        Case(
            "outputs:demo-under-a-file",
            ("demo", "--quick", "-o", "{IN}/run"),
            _text("afile", "x"),
            "error",
            ("{IN}/run", "not a folder"),
        ),
        # Small things.
        Case(
            "small:import-pandalm-folder",
            ("import", "pandalm", "{fx[src_pandalm-folder]}", "-o", "{d}/out.parquet"),
            lambda d, fx: {},
            "ok",
            check=lambda d, out: _pandalm_folder(d, out),
        ),
        Case(
            "small:import-pandalm-empty-folder",
            ("import", "pandalm", "{d}/empty", "-o", "{d}/out.parquet"),
            lambda d, fx: (d / "empty").mkdir() or {},
            "error",
            ("{d}/empty", "test set"),
        ),
        Case(
            "small:agree-without-annotator-kind",
            ("agree", "{IN}", "--bootstrap", "0"),
            _no_kind,
            "ok",
            check=_agreement_of_kinds,
        ),
        Case(
            "small:consensus-without-annotator-kind-or-out",
            ("consensus", "{IN}"),
            _no_kind,
            "ok",
            check=_nothing_written,
        ),
        Case(
            "small:agree-without-out-writes-nothing",
            ("agree", "{IN}", "--bootstrap", "0"),
            _copy("annotations", "votes.parquet"),
            "ok",
            check=_nothing_written,
        ),
    ]
    return cases
