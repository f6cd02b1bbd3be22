"""The quality commands end to end on real PandaLM data: import -> agree -> consensus ->
audit -> audit-rate -> filter -> export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from statsmodels.stats.inter_rater import fleiss_kappa
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.io.tables import read_table

runner = CliRunner()


def run(*args: str) -> dict[str, object]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}


def test_quality_flow_on_pandalm(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "pandalm_testset"
    pairs = tmp_path / "pandalm.parquet"
    run(
        "import",
        "pandalm",
        str(src / "testset-v1.json"),
        "-o",
        str(pairs),
        "--judges",
        str(src / "gpt-3.5-turbo-testset-v1.json"),
    )
    votes = tmp_path / "pandalm.annotations.parquet"
    humans = tmp_path / "humans.parquet"
    read_table(votes).filter(pl.col("annotator_kind") == "human").write_parquet(humans)

    report = run("agree", str(humans), "-o", str(tmp_path / "agreement.json"))
    saved = json.loads((tmp_path / "agreement.json").read_text())
    assert saved["fleiss_kappa"] == report["fleiss_kappa"]
    # Independent reference: statsmodels on the raw file's votes (PandaLM's own codes).
    raw = json.loads((src / "testset-v1.json").read_text())
    table = np.array(
        [[sum(r[f"annotator{k}"] == c for k in (1, 2, 3)) for c in (0, 1, 2)] for r in raw]
    )
    assert abs(fleiss_kappa(table) - 0.864) < 1e-3
    assert 0.80 < float(report["fleiss_kappa"]["value"]) < 0.90  # type: ignore[index]

    out = tmp_path / "consensus.parquet"
    report = run("consensus", str(humans), "--pairs", str(pairs), "-o", str(out))
    kept, aside = read_table(out), read_table(tmp_path / "consensus.set_aside.parquet")
    assert kept.height + aside.height == read_table(pairs).height
    assert kept["confidence"].is_between(0.5, 1).all()

    issues_path = tmp_path / "issues.parquet"
    report = run(
        "audit", str(out), "--annotations", str(votes), "-o", str(issues_path), "--sample", "20"
    )
    issues = read_table(issues_path)
    assert set(issues.columns) >= {"item_id", "issue", "score", "is_issue", "reason"}
    assert "judge_vs_human" in report["issue_counts"]  # type: ignore[operator]
    sample = read_table(tmp_path / "issues.sample.parquet")
    assert sample.height == 20

    reviewed = tmp_path / "reviewed.parquet"
    sample.with_columns(pl.Series("mislabeled", [i < 3 for i in range(20)])).write_parquet(reviewed)
    rate = run("audit-rate", str(reviewed))
    assert abs(float(rate["rate"]) - 3 / 20) < 1e-12  # type: ignore[arg-type]

    clean, dropped = tmp_path / "clean.parquet", tmp_path / "dropped.parquet"
    report = run(
        "filter",
        str(out),
        "--issues",
        str(issues_path),
        "--drop-issues",
        "all",
        "--min-confidence",
        "0.7",
        "-o",
        str(clean),
        "--rejected",
        str(dropped),
    )
    n_clean, n_dropped = read_table(clean).height, read_table(dropped).height
    assert n_clean + n_dropped == kept.height and n_clean > 0 and n_dropped > 0
    assert read_table(dropped)["reason"].null_count() == 0
    flagged = set(issues.filter(pl.col("is_issue"))["item_id"])
    assert not flagged & set(read_table(clean)["pair_id"])

    settings = tmp_path / "clean.filter.json"
    assert json.loads(settings.read_text())["min_confidence"] == 0.7
    result = runner.invoke(
        app,
        [
            "report",
            str(clean),
            "--tokenizer",
            "none",
            "--filter-settings",
            str(settings),
            "-o",
            str(tmp_path / "qa"),
        ],
    )
    assert result.exit_code == 0, result.output
    card = (tmp_path / "qa" / "README.md").read_text()
    assert "min_confidence" in card and "0.7" in card

    run("export", str(clean), "--format", "trl", "-o", str(tmp_path / "train.jsonl"))
    assert read_table(tmp_path / "train.jsonl").height == n_clean

    report = run("bias", str(clean), "--annotations", str(votes))
    assert "chosen_longer" in json.dumps(report)
