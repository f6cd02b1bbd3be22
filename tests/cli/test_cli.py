from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.io.tables import read_table

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_import_validate_info_export_on_real_file(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz"
    code, out = run("import", "hh-rlhf", str(src), "-o", str(tmp_path / "hh.parquet"))
    assert code == 0, out
    report = json.loads(out)
    assert report["rows_pairs"] + report["rows_rejected"] == 2312
    assert read_table(tmp_path / "hh.rejected.parquet").height == report["rows_rejected"]

    code, out = run("validate", str(tmp_path / "hh.parquet"))
    assert code == 0 and "'pairs' contract" in out

    code, out = run("info", str(tmp_path / "hh.parquet"))
    assert code == 0 and json.loads(out)["contract"] == "pairs"

    code, out = run(
        "export",
        str(tmp_path / "hh.parquet"),
        "--format",
        "trl-conversational",
        "-o",
        str(tmp_path / "hh.trl.jsonl"),
    )
    assert code == 0, out
    assert read_table(tmp_path / "hh.trl.jsonl").height == report["rows_pairs"]

    code, out = run(
        "convert",
        "pairs-to-kto",
        str(tmp_path / "hh.parquet"),
        "-o",
        str(tmp_path / "hh.kto.parquet"),
    )
    assert code == 0 and json.loads(out)["desirable_ratio"] == 1.0


def test_bad_input_is_one_line_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "x"}\n{oops\n')
    code, out = run("import", "hh-rlhf", str(bad), "-o", str(tmp_path / "o.parquet"))
    assert code == 2
    assert "bad.jsonl, row 2" in out and "Traceback" not in out
    assert not (tmp_path / "o.parquet").exists()


def test_validate_names_row_and_column(tmp_path: Path) -> None:
    table = pl.DataFrame(
        {
            "pair_id": ["a", "b"],
            "prompt_id": ["p", "p"],
            "prompt": ["q", "q"],
            "chosen": ["x", "y"],
            "rejected": ["z", "y"],
            "confidence": [0.5, 0.5],
            "margin": [None, None],
            "n_votes": [1, 1],
            "agreement": [None, None],
            "source": ["s", "s"],
            "provenance": ["{}", "{}"],
        }
    )
    table.write_parquet(tmp_path / "p.parquet")
    code, out = run("validate", str(tmp_path / "p.parquet"))
    assert code == 2
    assert "p.parquet, row 2, column 'rejected': chosen == rejected" in out.replace("\n", "")


def test_unknown_format_and_option() -> None:
    code, out = run("import", "nope", "x", "-o", "y.parquet")
    assert code == 2 and "unknown format 'nope'" in out
    code, out = run("import", "hh-rlhf", "x", "-o", "y.parquet", "--mode", "all")
    assert code == 2 and "takes no option" in out


def test_every_command_has_help_with_an_example() -> None:
    import typer.main

    def leaves(group: object, prefix: list[str]) -> list[list[str]]:
        found = []
        for name, command in getattr(group, "commands", {}).items():
            path = [*prefix, name]
            found += leaves(command, path) if hasattr(command, "commands") else [path]
        return found

    commands = leaves(typer.main.get_command(app), [])
    assert len(commands) > 20
    for path in commands:
        code, out = run(*path, "--help")
        assert code == 0 and "Example:" in out, path


@pytest.mark.slow
def test_demo_quick_touches_every_stage_offline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, text = run("demo", "--quick", "-o", str(out), "--no-progress")
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    stages = [s["stage"] for s in summary["stages"]]
    assert stages == [
        "generate",
        "judge",
        "agree",
        "consensus",
        "audit",
        "filter",
        "split",
        "export",
        "report",
        "train",
        "eval",
    ]
    assert all(s["status"] == "ran" for s in summary["stages"])
    assert read_table(out / "generate" / "candidates.parquet")["prompt_id"].n_unique() == 6
    votes = read_table(out / "judge" / "annotations.parquet")
    assert votes["annotator"].unique().to_list() == ["local:smollm2"]
    assert sorted(votes["order"].unique()) == ["ab", "ba"]
    assert (out / "export" / "trl-conversational.jsonl").stat().st_size > 0
    assert (out / "export" / "kto.jsonl").stat().st_size > 0
    assert "<html" in (out / "report" / "report" / "report.html").read_text()[:500].lower()
    assert (out / "train" / "model" / "adapter_config.json").exists()
    heldout = json.loads((out / "eval" / "eval.json").read_text())
    assert heldout["pairs"] == read_table(out / "split" / "heldout.parquet").height > 0
    # What it prints: the figures, the report's place, how to swap in a real judge.
    assert f"The QA report is in {out / 'report' / 'report' / 'report.html'}" in text
    assert "position consistency" in text and "held-out preference accuracy" in text
    assert "ANTHROPIC_API_KEY" in text and "--judge anthropic:claude-sonnet-4-6" in text
    assert "--base-url http://HOST:8000/v1" in text

    code, text = run("demo", "--quick", "-o", str(out), "--no-progress")
    assert code == 0, text
    again = json.loads((out / "summary.json").read_text())
    assert {s["status"] for s in again["stages"]} == {"skipped"}
    assert sum(s["calls_new"] for s in again["stages"]) == 0


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("prefdata")
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.startswith("prefdata ")


def test_streaming_path_gives_the_same_files(shared_data: Path, tmp_path: Path) -> None:
    from prefdata.io.exporters import export
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    export(pairs, tmp_path / "trl.parquet", "trl-conversational")
    outs = {}
    for flag in ("--stream", "--no-stream"):
        out = tmp_path / f"pairs{flag}.parquet"
        code, text = run("import", "trl", str(tmp_path / "trl.parquet"), "-o", str(out), flag)
        assert code == 0, text
        code, text = run(
            "export",
            str(out),
            "--format",
            "trl",
            "--flatten",
            flag,
            "-o",
            str(tmp_path / f"x{flag}.jsonl"),
        )
        assert code == 0, text
        outs[flag] = (read_table(out), read_table(tmp_path / f"x{flag}.jsonl"))
    assert outs["--stream"][0].to_dicts() == outs["--no-stream"][0].to_dicts()
    assert outs["--stream"][1].to_dicts() == outs["--no-stream"][1].to_dicts()


def test_generate_then_resume_makes_no_new_calls(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "Name a colour."}\n{"prompt": "Say hello in French."}\n', encoding="utf-8"
    )
    args = [
        "generate",
        str(prompts),
        "-o",
        str(tmp_path / "c.parquet"),
        "--n",
        "2",
        "--max-new-tokens",
        "6",
        "--cache",
        str(tmp_path / "calls.sqlite"),
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout)
    assert first["new_calls"] == 4
    candidates = read_table(tmp_path / "c.parquet")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["new_calls"] == 0 and again["cache_hits"] == 4
    assert read_table(tmp_path / "c.parquet").to_dicts() == candidates.to_dicts()
