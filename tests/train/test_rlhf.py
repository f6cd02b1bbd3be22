"""Three-stage RLHF (SFT -> reward model -> RLOO) end to end on real OpenAssistant pairs with a
tiny SmolLM2-shaped model: every stage's output, the merged SFT model as the RL policy's start
and reference, the trained reward model as the RL reward, the summary, a second run (through
the CLI) that skips every stage, a run that changes only an RL option, and a reward stage
re-run that writes the same weights (the RL stage stays skipped)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from prefdata.train import prepare, train
from prefdata.train.recipe import RecipeError
from tests.train.test_cli_train import last_json
from tests.train.test_rloo import short_oasst_pairs

STAGE_DIRS = ("sft", "reward", "rl")


def rlhf_recipe() -> dict[str, Any]:
    """One or two steps per stage, tiny batches, inline stage recipes."""
    return {
        "method": "rlhf",
        "seed": 0,
        "logging_steps": 1,
        "save_strategy": "no",
        "peft": {"r": 4, "lora_alpha": 8},
        "prefdata": {
            "heldout_fraction": 0.25,
            "stages": {
                "sft": {
                    "recipe": {
                        "max_steps": 1,
                        "per_device_train_batch_size": 2,
                        "learning_rate": 1e-2,
                        "max_length": 128,
                    }
                },
                "reward": {
                    "recipe": {
                        "max_steps": 1,
                        "per_device_train_batch_size": 2,
                        "learning_rate": 1e-3,
                        "max_length": 128,
                    }
                },
                "rl": {
                    "recipe": "rl.yaml",  # a file beside the rlhf recipe
                    "overrides": {"max_completion_length": 8},
                },
            },
        },
    }


RL_RECIPE = {
    "method": "rloo",
    "max_steps": 2,
    "per_device_train_batch_size": 4,
    "num_generations": 4,
    "max_completion_length": 16,
    "learning_rate": 1e-3,
    "beta": 0.05,
}


def _mtimes(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for d in STAGE_DIRS
        for p in sorted((out / d).rglob("*"))
        if p.is_file()
    }


def _q_proj(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return state["model.layers.0.self_attn.q_proj.weight"]


@pytest.fixture(scope="module")
def chain(shared_data: Path, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run 1 (library), run 2 (CLI, same inputs), run 3 (library, only an RL option changed),
    with every stage file's mtime and the manifests after each."""
    from prefdata.cli import app

    work = tmp_path_factory.mktemp("rlhf")
    data = work / "pairs.parquet"
    short_oasst_pairs(shared_data).write_parquet(data)
    recipe = work / "rlhf.yaml"
    recipe.write_text(yaml.safe_dump(rlhf_recipe()))
    # The monitor's held-out judge (the tiny model, pointwise) on 2 held-out prompts, which
    # come from the held-out pairs.
    judge = {"name": "judge", "options": {"judge": f"local:{tiny}", "cache": str(work / "c.db")}}
    monitor = {"judge": judge, "judge_every": 1, "judge_prompts": 2}
    (work / "rl.yaml").write_text(yaml.safe_dump({**RL_RECIPE, "prefdata": {"monitor": monitor}}))
    out = work / "out"

    def manifests() -> dict[str, str]:
        return {d: (out / d / "manifest.json").read_text() for d in STAGE_DIRS}

    first = train("rlhf", recipe=recipe, data=data, model=tiny, out=out)
    after_first = (_mtimes(out), manifests())
    args = ["train", "rlhf", "--recipe", str(recipe), "--data", str(data)]
    result = CliRunner().invoke(app, [*args, "--model", str(tiny), "-o", str(out)])
    assert result.exit_code == 0, result.output
    second = last_json(result.stdout)
    after_second = (_mtimes(out), manifests())
    third = train(
        "rlhf",
        recipe=recipe,
        data=data,
        model=tiny,
        out=out,
        overrides=["rl.learning_rate=0.002"],
    )
    after_third = (_mtimes(out), manifests())
    # Run 4: the reward stage's manifest lost, so it trains again (same seed, same data).
    (out / "reward" / "manifest.json").unlink()
    fourth = train(
        "rlhf",
        recipe=recipe,
        data=data,
        model=tiny,
        out=out,
        overrides=["rl.learning_rate=0.002"],
    )
    after_fourth = (_mtimes(out), manifests())
    return {
        "out": out,
        "data": data,
        "recipe": recipe,
        "runs": [first, second, third, fourth],
        "after": [after_first, after_second, after_third, after_fourth],
    }


@pytest.mark.slow
def test_each_stage_writes_its_output(chain: Any) -> None:
    out = chain["out"]
    summary = chain["runs"][0]
    assert summary["stages"]["sft"]["status"] == "ran"
    for name in STAGE_DIRS:
        stage = summary["stages"][name]
        assert stage["status"] == "ran" and stage["reason"] == "not run before"
        assert Path(stage["output"]).is_dir() and stage["seconds"] > 0
        assert stage["steps"] == (2 if name == "rl" else 1)
        assert math.isfinite(stage["train_loss"])
    assert (out / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    merged = out / "sft" / "model"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert (out / "reward" / "model" / "adapter_model.safetensors").is_file()
    assert (out / "rl" / "model" / "adapter_model.safetensors").is_file()
    assert summary["outputs"] == {
        "sft_model": str(merged),
        "reward_model": str(out / "reward" / "model"),
        "policy": str(out / "rl" / "model"),
    }
    # The file holds the last run's summary (run 4: only the reward stage ran).
    written = json.loads((out / "rlhf-summary.json").read_text())["stages"]
    assert {s: written[s]["status"] for s in STAGE_DIRS} == {
        s: chain["runs"][-1]["stages"][s]["status"] for s in STAGE_DIRS
    }


@pytest.mark.slow
def test_sft_model_is_the_adapter_merged_into_the_base(chain: Any, tiny: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file

    from prefdata.models import from_pretrained, inspect_model

    out = chain["out"]
    merged = load_file(str(out / "sft" / "model" / "model.safetensors"))
    base = load_file(str(tiny / "model.safetensors"))
    # One SFT step at lr 1e-2 moved the LoRA B matrices off zero: q_proj changed.
    assert not torch.equal(_q_proj(merged), _q_proj(base))
    expected = PeftModel.from_pretrained(
        from_pretrained(inspect_model(tiny)), str(out / "sft" / "adapter")
    ).merge_and_unload()
    for name, tensor in expected.state_dict().items():
        if name in merged:
            assert torch.equal(merged[name], tensor), name


@pytest.mark.slow
def test_rl_policy_starts_from_the_merged_sft_model(chain: Any, tiny: Path) -> None:
    from safetensors.torch import load_file

    out = chain["out"]
    summary = chain["runs"][0]
    assert summary["rl"]["starts_from"]["equal"] is True
    # The RL trainer as the chain builds it, before training: its base weights are the merged
    # SFT model's, not the original base model's.
    run = prepare("rlhf", recipe=chain["recipe"], data=chain["data"], model=tiny, out=out)
    prepared = run.prepare_stage("rl")
    policy = prepared.trainer.model.get_base_model()
    q = policy.get_submodule("model.layers.0.self_attn.q_proj").base_layer.weight.detach()
    merged = load_file(str(out / "sft" / "model" / "model.safetensors"))
    assert torch.equal(q, _q_proj(merged))
    assert not torch.equal(q, _q_proj(load_file(str(tiny / "model.safetensors"))))
    assert prepared.report["reference"] == "base model with the adapter disabled"
    adapter = json.loads((out / "rl" / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(out / "sft" / "model")


@pytest.mark.slow
def test_rl_reward_is_the_trained_reward_model(chain: Any) -> None:
    out = chain["out"]
    summary = chain["runs"][0]
    assert summary["rl"]["rewards"] == [
        {"name": "reward_model", "weight": 1.0, "options": {"path": str(out / "reward" / "model")}}
    ]
    rm_report = json.loads((out / "reward" / "model" / "prefdata-train.json").read_text())
    # reward_from: sft (the default): the reward model was trained on top of the SFT model.
    assert rm_report["method"] == "reward" and rm_report["model"] == str(out / "sft" / "model")
    rl_report = json.loads((out / "rl" / "model" / "prefdata-train.json").read_text())
    assert rl_report["method"] == "rloo" and rl_report["model"] == str(out / "sft" / "model")
    assert rl_report["beta"] == 0.05
    stats = rl_report["reward_stats"]["rewards/reward_model/mean"]
    assert summary["rl"]["reward"]["first"] == pytest.approx(stats["first"])


@pytest.mark.slow
def test_the_chains_models_work_wherever_a_model_is_taken(chain: Any, tmp_path: Path) -> None:
    """synthetic-pairs scores with the chain's reward model (the folder, or the run); generate
    samples from its policy (the run folder gives the RL policy)."""
    from prefdata.cli import app
    from prefdata.label.scorers import RewardModelScorer

    out = chain["out"]
    prompt = [{"role": "user", "content": "Say hi."}]
    for where in (out / "reward" / "model", out):
        scorer = RewardModelScorer(where)
        scores = scorer.score_batch([prompt, prompt], ["Hi!", "No."])
        assert len(scores) == 2 and scores[0] != scores[1]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n', encoding="utf-8")
    args = ["generate", str(prompts), "-o", str(tmp_path / "c.parquet"), "--model", str(out)]
    args += ["--n", "2", "--max-new-tokens", "4", "--no-progress"]
    result = CliRunner().invoke(app, [*args, "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 0, result.output
    assert str(out / "rl" / "model") in result.stderr


@pytest.mark.slow
def test_summary_holds_accuracy_curves_and_drift(chain: Any) -> None:
    summary = chain["runs"][0]
    heldout = pl.read_parquet(chain["out"] / "data" / "heldout.parquet")
    train_pairs = pl.read_parquet(chain["out"] / "data" / "pairs.parquet")
    assert heldout.height > 0
    # Held-out prompts are kept out of training entirely.
    assert not set(heldout["prompt_id"]) & set(train_pairs["prompt_id"])
    rm = summary["reward_model"]
    assert rm["pairs"] == heldout.height and 0.0 <= rm["accuracy"] <= 1.0
    assert math.isfinite(rm["margin_mean"])
    rl = summary["rl"]
    assert [c["step"] for c in rl["curves"]] == [1, 2]
    assert all(math.isfinite(c["reward"]) and math.isfinite(c["kl"]) for c in rl["curves"])
    assert rl["kl"]["first"] == 0.0  # step 1: the policy is the reference
    assert rl["reward"]["last"] == rl["curves"][-1]["reward"]
    assert 0 < rl["completion_length"]["first"] <= 8
    assert rl["completion_length"]["ratio"] == pytest.approx(
        rl["completion_length"]["last"] / rl["completion_length"]["first"]
    )
    assert summary["monitor"]["status"] in ("ok", "warn")
    judge = summary["heldout_judge"]
    assert [s["step"] for s in judge["scores"]] == [0, 1, 2]  # at the start, then every step
    assert all(0.0 < s["score"] < 1.0 for s in judge["scores"])
    rl_report = json.loads((chain["out"] / "rl" / "model" / "prefdata-train.json").read_text())
    assert rl_report["heldout_prompts"] == 2  # from the held-out pairs, not the training prompts
    prompts = pl.read_parquet(chain["out"] / "data" / "prompts.parquet")
    assert rl_report["prompts"] == prompts.height == train_pairs["prompt_id"].n_unique()
    assert summary["rl_prompts"] == prompts.height and summary["rl_prompts_too_long"] == 0


@pytest.mark.slow
def test_second_run_through_the_cli_skips_every_stage(chain: Any) -> None:
    second = chain["runs"][1]
    assert [second["stages"][s]["status"] for s in STAGE_DIRS] == ["skipped"] * 3
    assert all(second["stages"][s]["seconds"] == 0.0 for s in STAGE_DIRS)
    (mtimes1, manifests1), (mtimes2, manifests2) = chain["after"][:2]
    assert mtimes2 == mtimes1 and manifests2 == manifests1
    # The same numbers, read back from the stages' reports and the cached evaluation.
    first = chain["runs"][0]
    assert second["reward_model"] == first["reward_model"]
    assert second["rl"]["curves"] == first["rl"]["curves"]


@pytest.mark.slow
def test_changing_an_rl_option_reruns_only_rl(chain: Any) -> None:
    third = chain["runs"][2]
    status = {s: third["stages"][s]["status"] for s in STAGE_DIRS}
    assert status == {"sft": "skipped", "reward": "skipped", "rl": "ran"}
    assert third["stages"]["rl"]["reason"] == "options changed"
    (mtimes2, manifests2), (mtimes3, manifests3) = chain["after"][1:3]
    for name, mtime in mtimes2.items():
        if name.startswith(("sft/", "reward/")):
            assert mtimes3[name] == mtime, name
    assert manifests3["sft"] == manifests2["sft"] and manifests3["reward"] == manifests2["reward"]
    assert manifests3["rl"] != manifests2["rl"]
    assert (
        mtimes3["rl/model/adapter_model.safetensors"]
        > mtimes2["rl/model/adapter_model.safetensors"]
    )
    saved = yaml.safe_load((chain["out"] / "rl" / "model" / "recipe.yaml").read_text())
    assert saved["learning_rate"] == 0.002


@pytest.mark.slow
def test_two_processes_write_once_and_resume(shared_data: Path, tiny: Path, tmp_path: Path) -> None:
    """The chain under torch.distributed (two CPU processes, gloo): each stage trains on both
    (RLOO's generation batch spans them), the main process alone merges and writes the
    manifests and summary, and a second launch skips every stage."""
    import os
    import subprocess
    import sys

    data = tmp_path / "pairs.parquet"
    short_oasst_pairs(shared_data).write_parquet(data)
    recipe = rlhf_recipe()
    recipe["prefdata"]["stages"]["rl"] = {"recipe": {**RL_RECIPE, "max_completion_length": 8}}
    path = tmp_path / "rlhf.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["-m", "prefdata.train", "rlhf", "--recipe", str(path), "--data", str(data)]
    command += ["--model", str(tiny), "-o", str(out)]
    # accelerate runs CPU processes as one job (gloo) only when told it is on the CPU.
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads((out / "rlhf-summary.json").read_text()))
        assert done.stderr.count("rlhf: sft:") == 1  # only the main process reports
    assert [runs[0]["stages"][s]["status"] for s in STAGE_DIRS] == ["ran"] * 3
    assert [runs[1]["stages"][s]["status"] for s in STAGE_DIRS] == ["skipped"] * 3
    rl_report = json.loads((out / "rl" / "model" / "prefdata-train.json").read_text())
    assert rl_report["generation_batch_size"] == 2 * RL_RECIPE["per_device_train_batch_size"]
    assert runs[0]["rl"]["starts_from"]["equal"] is True
    assert (out / "sft" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_reward_rerun_with_the_same_weights_keeps_rl_skipped(chain: Any) -> None:
    out = chain["out"]
    fourth = chain["runs"][3]
    status = {s: fourth["stages"][s]["status"] for s in STAGE_DIRS}
    assert status == {"sft": "skipped", "reward": "ran", "rl": "skipped"}
    assert fourth["stages"]["reward"]["reason"] == "not run before"
    (mtimes3, manifests3), (mtimes4, manifests4) = chain["after"][2:]
    # The reward model was rewritten byte for byte; its report (timings) was not.
    name = "reward/model/adapter_model.safetensors"
    assert mtimes4[name] > mtimes3[name]
    assert manifests4["reward"] != manifests3["reward"]  # its seconds and finish time
    assert json.loads(manifests4["reward"])["inputs"] == json.loads(manifests3["reward"])["inputs"]
    assert manifests4["rl"] == manifests3["rl"]
    assert all(mtimes4[k] == v for k, v in mtimes3.items() if k.startswith("rl/"))
    # The cached held-out evaluation is still the same model's.
    assert fourth["reward_model"] == chain["runs"][2]["reward_model"]
    assert (out / "reward" / "model" / "prefdata-train.json").is_file()


def test_model_hash_covers_weights_not_bookkeeping(tiny: Path, tmp_path: Path) -> None:
    import shutil

    from prefdata.train.rlhf_recipe import content_hash, model_hash

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, seconds in ((a, 1.5), (b, 2.5)):
        shutil.copytree(tiny, folder)
        (folder / "prefdata-train.json").write_text(json.dumps({"train_seconds": seconds}))
        (folder / "recipe.yaml").write_text(f"seed: {seconds}\n")
        (folder / "checkpoint-1").mkdir()
        (folder / "checkpoint-1" / "x.bin").write_bytes(str(seconds).encode())
    assert content_hash(a) != content_hash(b)  # the plain folder hash sees the report
    assert model_hash(a) == model_hash(b)
    (b / "tokenizer_config.json").write_text(
        (b / "tokenizer_config.json").read_text().replace("}", ', "x": 1}', 1)
    )
    assert model_hash(a) != model_hash(b)
    shutil.copy(a / "tokenizer_config.json", b / "tokenizer_config.json")
    weights = bytearray((b / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (b / "model.safetensors").write_bytes(bytes(weights))
    assert model_hash(a) != model_hash(b)
    assert model_hash("not/a/path") == "name:not/a/path"


def test_max_prompt_tokens_becomes_the_rl_stages_guard(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    from prefdata.errors import InputError
    from prefdata.train.rlhf_recipe import load_recipe, stage_recipe

    recipe = rlhf_recipe()
    recipe["prefdata"]["stages"]["rl"] = {"recipe": RL_RECIPE}
    loaded = load_recipe(recipe, overrides=["prefdata.max_prompt_tokens=300"])
    rl, _ = stage_recipe(loaded, "rl", reward_model=tmp_path)
    assert rl.prefdata["max_prompt_tokens"] == 300
    # The RL stage's own setting wins over the rlhf key.
    own = load_recipe(
        recipe, overrides=["prefdata.max_prompt_tokens=300", "rl.prefdata.max_prompt_tokens=null"]
    )
    rl, _ = stage_recipe(own, "rl", reward_model=tmp_path)
    assert rl.prefdata["max_prompt_tokens"] is None
    with pytest.raises(RecipeError, match="max_prompt_tokens is a positive integer or null"):
        load_recipe(recipe, overrides=["prefdata.max_prompt_tokens=-1"])
    pairs = short_oasst_pairs(shared_data)
    with pytest.raises(InputError, match=r"every RL prompt is longer than .*=3 tokens"):
        prepare(
            "rlhf",
            recipe=recipe,
            data=pairs,
            model=tiny,
            out=tmp_path / "out",
            overrides=["prefdata.max_prompt_tokens=3"],
        )
    assert not (tmp_path / "out").exists()


def test_rl_prompts_leave_out_long_conversations(shared_data: Path, tiny: Path) -> None:
    from prefdata.io.importers.oasst import import_oasst
    from prefdata.models.loader import load_tokenizer
    from prefdata.train.data import token_ids
    from prefdata.train.grpo import drop_long_prompts, grpo_rows

    pairs = import_oasst(shared_data / "oasst_en_100" / "en_100_tree.jsonl").tables["pairs"]
    tokenizer = load_tokenizer(str(tiny))
    rows = grpo_rows(pairs, "pairs")
    everything, none_dropped = drop_long_prompts(rows, tokenizer, None)
    assert none_dropped == 0 and everything.height == pairs["prompt_id"].n_unique() == 212
    kept, dropped = drop_long_prompts(rows, tokenizer, 256)
    assert dropped > 0 and kept.height + dropped == 212
    lengths = [
        len(
            token_ids(
                tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=True)
            )
        )
        for p in kept["prompt"].to_list()
    ]
    assert max(lengths) <= 256
    assert set(kept.columns) == {"prompt", "prompt_id"}


def test_rl_stage_without_kl_is_refused_before_anything_trains(
    shared_data: Path, tiny: Path, tmp_path: Path
) -> None:
    recipe = rlhf_recipe()
    recipe["prefdata"]["stages"]["rl"] = {"recipe": RL_RECIPE}
    pairs = short_oasst_pairs(shared_data)
    with pytest.raises(RecipeError, match=r"needs a KL term.*beta > 0"):
        prepare(
            "rlhf", recipe=recipe, data=pairs, model=tiny, out=tmp_path, overrides=["rl.beta=0"]
        )
    with pytest.raises(RecipeError, match="for 'rloo', not 'grpo'"):
        prepare(
            "rlhf",
            recipe=recipe,
            data=pairs,
            model=tiny,
            out=tmp_path,
            overrides=["prefdata.rl_method=grpo"],
        )
    assert not any(tmp_path.iterdir())
