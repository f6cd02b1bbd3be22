"""`prefdata run` end to end on real data and real models: real GSM8K questions -> the
embedded SmolLM2 writes 2 answers each -> its log-probability judge in both orders ->
agreement -> consensus -> split -> export -> LoRA DPO on the tiny model -> held-out eval.
Then a re-run that does nothing, and option changes that re-run only what they affect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.io.tables import read_table
from prefdata.pipeline import RunResult, StageFailed, load_pipeline, run_pipeline
from tests.pipeline.conftest import Writer

STAGES = [
    "questions",
    "generate",
    "judge",
    "agree",
    "consensus",
    "split",
    "export",
    "train",
    "eval",
]


def small_pipeline(questions: dict[str, Any], tiny: Path) -> list[dict[str, Any]]:
    return [
        questions,
        {"kind": "generate", "n": 2, "max_new_tokens": 12, "temperature": 0.9, "seed": 1},
        {"kind": "judge", "judges": ["local:smollm2"], "batch_size": 8},
        {"kind": "agree", "bootstrap": 20},
        {"kind": "consensus", "method": "mean"},
        {"kind": "split", "heldout": 0.5},
        {"kind": "export", "formats": ["trl-conversational"]},
        {
            "kind": "train",
            "method": "dpo",
            "model": str(tiny),
            "recipe": {
                "max_steps": 1,
                "per_device_train_batch_size": 2,
                "max_length": 160,
                "learning_rate": 1.0e-3,
                "logging_steps": 1,
                "save_strategy": "no",
                "peft": {"r": 4, "lora_alpha": 8},
            },
        },
        {"kind": "eval", "batch_size": 4},
    ]


def manifest_times(run_dir: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in run_dir.glob("*/manifest.json")}


@pytest.mark.slow
def test_run_skip_and_option_changes(
    write_pipeline: Writer, gsm8k_questions: dict[str, Any], tiny: Path, tmp_path: Path
) -> None:
    path = write_pipeline(small_pipeline(gsm8k_questions, tiny))
    run_dir = tmp_path / "run"
    first = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert [s.name for s in first.stages] == STAGES
    assert first.ran == STAGES

    out = first.stage
    prompts = read_table(out("questions").outputs["prompts"])
    assert prompts.height == 4
    candidates = read_table(out("generate").outputs["candidates"])
    dropped = out("generate").report.get("dropped_duplicate", 0) + out("generate").report.get(
        "dropped_empty", 0
    )
    assert candidates.height + dropped == 8
    assert out("generate").calls_new == 8 and out("generate").calls_cached == 0
    pairs = read_table(out("judge").outputs["pairs"])
    votes = read_table(out("judge").outputs["annotations"])
    assert set(votes["item_id"]) == set(pairs["pair_id"])
    assert votes.height == 2 * pairs.height == out("judge").calls_new
    assert sorted(votes["order"].unique()) == ["ab", "ba"]
    agreement = json.loads(out("agree").outputs["agreement"].read_text())
    assert agreement["items"] == pairs.height
    consensus = out("consensus").report["pairs"]
    assert consensus["pairs_in"] == pairs.height
    kept = read_table(out("consensus").outputs["pairs"])
    assert kept.height == consensus["pairs_out"] > 0
    # Confidence is the order-averaged probability, not a made-up certainty.
    assert kept["confidence"].is_between(0.5, 1.0).all()
    split = read_table(out("split").outputs["pairs"])
    heldout = read_table(out("split").outputs["heldout"])
    assert heldout.height == int((split["split"] == "test").sum()) > 0
    assert not set(heldout["prompt_id"]) & set(
        split.filter(pl.col("split") == "train")["prompt_id"]
    )
    exported = out("export").outputs["trl-conversational"].read_text().splitlines()
    assert len(exported) == split.height
    model_dir = out("train").outputs["model"]
    assert (model_dir / "adapter_config.json").exists()
    train_report = json.loads((model_dir / "prefdata-train.json").read_text())
    assert train_report["steps"] == 1
    assert train_report["pairs"] == split.height - heldout.height
    evaluation = json.loads(out("eval").outputs["eval"].read_text())
    assert evaluation["pairs"] == heldout.height and 0 <= evaluation["accuracy"] <= 1
    # Every stage left a manifest with the hashes of what it read.
    manifest = json.loads((run_dir / "consensus" / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"annotations", "pairs"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["ran"] * len(STAGES)

    # The same file again: nothing runs, no model is called, no manifest is rewritten.
    before = manifest_times(run_dir)
    again = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert again.ran == [] and again.calls_new == 0
    assert all(s.status == "skipped" and s.calls_cached == 0 for s in again.stages)
    assert manifest_times(run_dir) == before
    assert again.stage("eval").report["accuracy"] == evaluation["accuracy"]

    # A new export format: only export runs (nothing reads its files).
    more = run_pipeline(
        load_pipeline(path, sets=["export.formats=[trl-conversational, kto]"]),
        run_dir,
        progress=False,
    )
    assert more.ran == ["export"]
    assert (run_dir / "export" / "kto.jsonl").exists()

    # A different held-out share: split and everything that reads its output re-run; the
    # stages before it, model calls included, are skipped.
    resplit = run_pipeline(
        load_pipeline(
            path, sets=["split.heldout=0.25", "export.formats=[trl-conversational, kto]"]
        ),
        run_dir,
        progress=False,
    )
    assert resplit.ran == ["split", "export", "train", "eval"]
    assert resplit.calls_new == 0
    assert read_table(run_dir / "split" / "heldout.parquet")["prompt_id"].n_unique() == 1


def test_a_deleted_output_reruns_its_stage(
    write_pipeline: Writer, gsm8k_questions: dict[str, Any], tmp_path: Path
) -> None:
    path = write_pipeline([gsm8k_questions])
    run_dir = tmp_path / "run"
    assert run_pipeline(load_pipeline(path), run_dir, progress=False).ran == ["questions"]
    (run_dir / "questions" / "prompts.parquet").unlink()
    result: RunResult = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert result.ran == ["questions"]
    assert result.stage("questions").reason == "output questions/prompts.parquet is missing"


def test_a_failing_stage_is_named_and_leaves_no_manifest(
    write_pipeline: Writer, tmp_path: Path
) -> None:
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": \n')
    path = write_pipeline(
        [{"kind": "generate", "inputs": {"prompts": str(bad)}, "max_new_tokens": 4}]
    )
    with pytest.raises(StageFailed, match=r"stage 1 'generate' \(generate\): .*prompts\.jsonl"):
        run_pipeline(load_pipeline(path), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "generate" / "manifest.json").exists()
