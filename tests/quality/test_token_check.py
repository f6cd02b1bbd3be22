"""The token check inside `prefdata audit`: its options, a recipe's budget as the default, and
its issue rows beside the other signals'. Real HH-RLHF pairs."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.quality.audit import audit
from prefdata.quality.token_check import TokenCheck
from prefdata.quality.token_integrity import Budget

pytest.importorskip("transformers")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def pairs(shared_data: Path) -> pl.DataFrame:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    table = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    return table.head(150)


def test_budget_from_options_and_recipe(tmp_path: Path) -> None:
    assert TokenCheck().wanted is False
    assert TokenCheck(max_length=64).budget() == Budget("dpo", 64, "keep_start")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: dpo\nmax_length: 256\ntruncation_mode: keep_end\n")
    assert TokenCheck(recipe=str(recipe)).budget() == Budget("dpo", 256, "keep_end")
    # An option given beats the recipe's value; the method comes from the recipe.
    both = TokenCheck(recipe=str(recipe), max_length=128, truncation_mode="keep_start")
    assert both.budget() == Budget("dpo", 128, "keep_start")
    kto = tmp_path / "k.yaml"
    kto.write_text("method: kto\nmax_length: 300\n")
    assert TokenCheck(recipe=str(kto)).budget() == Budget("kto", 300, "keep_start")


def test_audit_adds_the_token_issues(pairs: pl.DataFrame) -> None:
    _audited = audit(pairs, sample=0)
    plain, _, report = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    assert "tokens" not in report
    _audited = audit(pairs, sample=0, tokens=TokenCheck(max_length=128))
    issues, _, report = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    counts = report["tokens"]["counts"]
    assert counts["prompt_fills_context"] > 20
    for flag, n in counts.items():
        assert report["issue_counts"].get(flag, 0) == n
    rows = issues.filter(pl.col("issue") == "prompt_fills_context")
    assert (rows["position"] >= 128).all() and rows["score"].to_list() == [0.0] * rows.height
    assert issues.height == plain.height + sum(counts.values())


def test_cli_audit_token_options(pairs: pl.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "pairs.parquet"
    pairs.write_parquet(data)
    out = tmp_path / "issues.parquet"
    result = CliRunner().invoke(
        app,
        [
            "audit",
            str(data),
            "-o",
            str(out),
            "--sample",
            "0",
            "--max-length",
            "128",
            "--truncation-mode",
            "keep_end",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["tokens"]["truncation"] == "keep_end"
    issues = pl.read_parquet(out)
    assert (
        issues.filter(pl.col("issue") == "difference_truncated").height
        == (report["tokens"]["counts"]["difference_truncated"])
        > 0
    )
    bad = CliRunner().invoke(
        app, ["audit", str(data), "-o", str(out), "--max-length", "128", "--truncation-mode", "x"]
    )
    assert bad.exit_code == 2 and "truncation_mode must be keep_start or keep_end" in bad.output
