"""Iterative rounds: the loop repeats with the previous round's policy as the generator, each
round under round-k/, and rounds.json compares them. A real two-round run at toy size (the
shipped example pipeline, its `ci` profile) with the embedded model and the VADER labeller."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.io.tables import read_table
from prefdata.pipeline import load_pipeline, run_pipeline
from prefdata.pipeline.demo import EXAMPLES
from tests.pipeline.conftest import Writer

ROUNDS = EXAMPLES / "pipelines" / "iterative-rounds.yaml"


def test_the_loop_repeats_from_its_first_stage() -> None:
    pipeline = load_pipeline(ROUNDS, profile="ci")
    names = [s.name for s in pipeline.stages]
    loop = ["generate", "rule-label", "split", "train", "eval"]
    assert names == [f"round-{k}/{n}" for k in (1, 2) for n in loop]
    assert [s.round for s in pipeline.stages] == [1] * 5 + [2] * 5


def test_rounds_need_a_train_stage_and_a_known_start(write_pipeline: Writer) -> None:
    stages = [{"kind": "generate", "inputs": {"prompts": str(EXAMPLES / "demo_prompts.jsonl")}}]
    with pytest.raises(InputError, match="needs a train stage"):
        load_pipeline(write_pipeline(stages, rounds=2))
    with pytest.raises(InputError, match="rounds_from: nope"):
        load_pipeline(write_pipeline(stages, rounds=2, rounds_from="nope"))
    with pytest.raises(InputError, match="whole number"):
        load_pipeline(write_pipeline(stages, rounds=0))


@pytest.mark.slow
def test_two_rounds_the_second_samples_from_the_first_policy(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_pipeline(load_pipeline(ROUNDS, profile="ci"), run_dir, progress=False)
    assert all(s.status == "ran" for s in result.stages)

    first = read_table(run_dir / "round-1" / "generate" / "candidates.parquet")
    second = read_table(run_dir / "round-2" / "generate" / "candidates.parquet")
    policy = run_dir / "round-1" / "train" / "model"
    assert set(first["generator"]) == {"smollm2"}
    assert set(second["generator"]) == {str(policy)}
    # Same prompts, same per-sample seeds: the base model would answer exactly as round 1
    # did, so answers that differ are the trained policy's.
    def keyed(table: pl.DataFrame) -> dict[tuple[str, int], str]:
        samples = table["params"].map_elements(lambda p: json.loads(p)["sample"], pl.Int64)
        return dict(zip(zip(table["prompt_id"], samples, strict=True), table["completion"],
                        strict=True))

    a, b = keyed(first), keyed(second)
    shared = set(a) & set(b)
    assert len(shared) >= 20
    assert sum(a[k] != b[k] for k in shared) >= 1

    rounds = json.loads((run_dir / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    for row in rounds:
        assert row["true_reward_mean"] is not None and row["heldout_accuracy"] is not None
    labelled = read_table(run_dir / "round-2" / "rule-label" / "pairs.parquet")
    assert rounds[1]["pairs"] == labelled.height

    # A re-run skips every round; the second round's stages record the policy they read.
    again = run_pipeline(load_pipeline(ROUNDS, profile="ci"), run_dir, progress=False)
    assert again.ran == []
    manifest = json.loads((run_dir / "round-2" / "generate" / "manifest.json").read_text())
    assert "policy" in manifest["inputs"]
