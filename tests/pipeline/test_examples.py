"""The shipped example pipelines on the real data sets, through `prefdata run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.io.tables import read_table

EXAMPLES = Path(__file__).resolve().parents[2] / "prefdata" / "examples" / "pipelines"
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.output


def test_clean_existing_on_pandalm(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFDATA_SHARED_DATA", str(shared_data))
    out = tmp_path / "clean"
    code, stdout, text = run(
        "run",
        str(EXAMPLES / "clean-existing.yaml"),
        "-o",
        str(out),
        "--set",
        "import.limit=120",
        "--set",
        "report.tokenizer=none",
        "--no-progress",
    )
    assert code == 0, text
    summary = json.loads(stdout)
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 7
    pairs = read_table(out / "import" / "pairs.parquet")
    votes = read_table(out / "import" / "annotations.parquet")
    assert pairs.height == 120 and set(votes["item_id"]) <= set(pairs["pair_id"])
    agreement = json.loads((out / "agree" / "agreement.json").read_text())
    assert agreement["annotators"] >= 3
    consensus = read_table(out / "consensus" / "pairs.parquet")
    aside = read_table(out / "consensus" / "set_aside.parquet")
    assert consensus.height + aside.height == 120
    kept = read_table(out / "filter" / "pairs.parquet")
    dropped = read_table(out / "filter" / "rejected.parquet")
    assert kept.height + dropped.height == consensus.height and dropped.height > 0
    assert (kept["confidence"] >= 0.7).all()
    assert len((out / "export" / "trl-conversational.jsonl").read_text().splitlines()) == (
        kept.height
    )
    report = json.loads((out / "report" / "report" / "report.json").read_text())
    assert "comparison" in report  # before (the import) vs after (the filter)
    assert "outputs in" in text and "clean/report/report" in text  # the report's folder


def test_a_stage_failing_on_its_data_is_named(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFDATA_SHARED_DATA", str(shared_data))
    code, _, text = run(
        "run",
        str(EXAMPLES / "clean-existing.yaml"),
        "-o",
        str(tmp_path / "x"),
        "--set",
        "import.format=hh-rlhf",
        "--no-progress",
    )
    assert code == 2
    pipeline = EXAMPLES.resolve() / "clean-existing.yaml"
    assert f"error: {pipeline}: stage 1 'import' (import):" in text and "testset-v1.json" in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_grpo_math_trains_and_evaluates(
    shared_data: Path, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("prefdata.train.grpo")
    monkeypatch.setenv("PREFDATA_SHARED_DATA", str(shared_data))
    out = tmp_path / "grpo"
    code, stdout, text = run(
        "run",
        str(EXAMPLES / "grpo-math.yaml"),
        "-o",
        str(out),
        "--set",
        f"train.model={tiny}",
        "--set",
        "train.recipe.max_steps=1",
        "--set",
        "train.recipe.max_completion_length=8",
        "--set",
        "questions.limit=8",
        "--set",
        "eval.max_pairs=4",
        "--no-progress",
    )
    assert code == 0, text
    summary = json.loads(stdout)
    assert [s["stage"] for s in summary["stages"]] == ["questions", "solutions", "train", "eval"]
    train = json.loads((out / "train" / "model" / "prefdata-train.json").read_text())
    assert train["method"] == "grpo" and train["steps"] == 1
    assert train["data"] == str(out / "questions" / "prompts.parquet")
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    assert evaluation["pairs"] == 4 and 0 <= evaluation["accuracy"] <= 1


def test_true_reward_pipeline_parses_with_its_stages() -> None:
    from prefdata.pipeline import load_pipeline

    path = EXAMPLES / "true-reward.yaml"
    pipeline = load_pipeline(path, sets=["rule-label.flip_rate=0.4"])
    kinds = [s.kind for s in pipeline.stages]
    assert kinds == ["generate", "rule-label", "split", "audit", "filter", "train", "eval"]
    label = next(s for s in pipeline.stages if s.kind == "rule-label")
    assert label.options["scorer"] == "vader" and label.options["flip_rate"] == 0.4
    quick = load_pipeline(path, profile="quick")
    generate = next(s for s in quick.stages if s.kind == "generate")
    assert generate.options["max_prompts"] == 48


@pytest.mark.slow
def test_true_reward_pipeline_runs_end_to_end(tmp_path: Path) -> None:
    """The quick profile with a noisy labeller: every stage runs, the flips file names the
    swapped pairs, and the audit scores exactly the training pairs (a few minutes on CPU)."""
    out = tmp_path / "run"
    code, stdout, text = run(
        "run",
        str(EXAMPLES / "true-reward.yaml"),
        "-o",
        str(out),
        "--profile",
        "quick",
        "--set",
        "rule-label.flip_rate=0.4",
        "--no-progress",
    )
    assert code == 0, text
    summary = json.loads(stdout)
    assert [s["status"] for s in summary["stages"]] == ["ran"] * 7
    pairs = read_table(out / "rule-label" / "pairs.parquet")
    flips = read_table(out / "rule-label" / "flips.parquet")
    ratings = read_table(out / "rule-label" / "ratings.parquet")
    candidates = read_table(out / "generate" / "candidates.parquet")
    assert ratings.height == candidates.height and set(ratings["annotator_kind"]) == {"rule"}
    assert flips["pair_id"].to_list() == pairs["pair_id"].to_list()
    assert int(flips["flipped"].sum()) == round(0.4 * pairs.height)
    train = read_table(out / "split" / "pairs.parquet")
    issues = read_table(out / "audit" / "issues.parquet")
    # The audit's combined mislabel probability: one `mislabeled` row per training pair.
    model_rows = issues.filter(issues["issue"] == "mislabeled")
    assert set(model_rows["item_id"]) == set(train["pair_id"])
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    assert evaluation["pairs"] == read_table(out / "split" / "heldout.parquet").height
