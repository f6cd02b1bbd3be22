"""One model loader for every command that takes a model, on every kind of folder prefdata
writes: a full model, a LoRA policy adapter (`train dpo`), a LoRA reward adapter (`train
reward`), a full reward model (`train reward` with full fine-tuning), an rlhf run's layout.
A command that needs the other kind refuses in one line naming both. (The local judge and
pointwise scoring use the same local client as generate; GRPO's reward-model reward the same
loader as synthetic pairs.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.errors import InputError
from prefdata.models import export_model, inspect_model, load
from prefdata.models.embedded import embedded_model_path
from prefdata.train import evaluate, prepare, train
from tests.train.conftest import recipe

runner = CliRunner()
POLICIES = ("full_policy", "policy_adapter", "rlhf_run")
REWARDS = ("reward_adapter", "reward_full", "rlhf_reward")


@pytest.fixture(scope="module")
def folders(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    pairs = pandalm_pairs.head(4)
    small = recipe(max_steps=1)
    train("dpo", recipe=small, data=pairs, model=tiny, out=root / "dpo", merge=True)
    train("reward", recipe=small, data=pairs, model=tiny, out=root / "reward")
    full = recipe(max_steps=1, prefdata={"full_finetune": True})
    train("reward", recipe=full, data=pairs, model=tiny, out=root / "reward_full")
    # An rlhf run's layout (the real chain: tests/train/test_rlhf.py): rl/model, reward/model.
    run = root / "rlhf"
    shutil.copytree(root / "dpo", run / "rl" / "model")
    shutil.copytree(root / "reward", run / "reward" / "model")
    (run / "rlhf-summary.json").write_text(json.dumps({"method": "rlhf"}))
    return {
        "full_policy": tiny,
        "policy_adapter": root / "dpo",
        "rlhf_run": run,
        "reward_adapter": root / "reward",
        "reward_full": root / "reward_full",
        "rlhf_reward": run / "reward" / "model",
    }


def test_what_each_folder_holds(folders: dict[str, Path]) -> None:
    kinds = {name: inspect_model(path) for name, path in folders.items()}
    assert {n for n, f in kinds.items() if f.kind == "causal_lm"} == set(POLICIES)
    assert kinds["policy_adapter"].adapter and kinds["policy_adapter"].method == "dpo"
    assert kinds["policy_adapter"].base == str(folders["full_policy"])
    assert kinds["reward_adapter"].adapter and kinds["reward_full"].adapter is False
    assert kinds["rlhf_run"].path == str(folders["rlhf_run"] / "rl" / "model")
    reward_of_run = inspect_model(folders["rlhf_run"], want="reward_model")
    assert reward_of_run.path == str(folders["rlhf_run"] / "reward" / "model")
    assert "LoRA adapter" in kinds["policy_adapter"].describe()


def test_the_loader_says_what_it_loaded(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    load(folders["policy_adapter"])
    said = capsys.readouterr().err
    assert "prefdata: model policy: LoRA adapter at" in said and "train dpo" in said
    assert str(folders["full_policy"]) in said  # the base it went onto
    from prefdata.models import load_reward_model

    load_reward_model(folders["rlhf_run"])
    assert str(folders["rlhf_run"] / "reward" / "model") in capsys.readouterr().err


def test_an_adapter_trained_elsewhere_finds_this_machines_embedded_model(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(
        json.dumps(
            {
                "base_model_name_or_path": "/home/other/.cache/prefdata/models/"
                "smollm2-135m-instruct-0123456789ab",
                "task_type": "CAUSAL_LM",
            }
        )
    )
    found = inspect_model(tmp_path)
    assert found.base == str(embedded_model_path())


@pytest.mark.parametrize("kind", POLICIES + REWARDS)
def test_generate(kind: str, folders: dict[str, Path], tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n', encoding="utf-8")
    args = ["generate", str(prompts), "-o", str(tmp_path / "c.parquet"), "--model"]
    args += [str(folders[kind]), "--n", "2", "--max-new-tokens", "4", "--no-progress"]
    args += ["--cache", str(tmp_path / "calls.sqlite")]
    result = runner.invoke(app, args)
    if kind in POLICIES:
        assert result.exit_code == 0, result.output
        assert pl.read_parquet(tmp_path / "c.parquet").height >= 1
    else:
        assert result.exit_code == 2, result.output
        assert "holds a reward model" in result.output and "needs a policy" in result.output
        assert "Traceback" not in result.output


@pytest.mark.parametrize("kind", POLICIES + REWARDS)
def test_local_judge_client(kind: str, folders: dict[str, Path]) -> None:
    from prefdata.llm.base import Params, Request
    from prefdata.llm.factory import make_client

    client: Any = make_client("local", str(folders[kind]))
    request = Request(messages=({"role": "user", "content": "A or B?"},), choices=("A", "B"))
    if kind in POLICIES:
        (response,) = client.complete_sync([request])
        assert sum(response.choice_probs.values()) == pytest.approx(1.0, abs=1e-3)
    else:
        with pytest.raises(InputError, match="needs a policy"):
            client.complete_sync([Request(messages=request.messages, params=Params())])


@pytest.mark.parametrize("kind", POLICIES + REWARDS)
def test_synthetic_pairs_reward_model(kind: str, folders: dict[str, Path], tmp_path: Path) -> None:
    candidates = pl.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p2", "p2"],
            "prompt": [[{"role": "user", "content": q}] for q in ["Hi", "Hi", "2+2?", "2+2?"]],
            "completion_id": ["a", "b", "c", "d"],
            "completion": ["Hello there!", "Go away.", "4", "It is five."],
            "generator": ["m"] * 4,
            "params": ["{}"] * 4,
        }
    )
    data = tmp_path / "candidates.parquet"
    candidates.write_parquet(data)
    args = ["synthetic-pairs", str(data), "--reward-model", str(folders[kind]), "-o"]
    result = runner.invoke(app, [*args, str(tmp_path / "pairs.parquet")])
    if kind in REWARDS or kind == "rlhf_run":  # an rlhf run gives its reward model here
        assert result.exit_code == 0, result.output
        assert pl.read_parquet(tmp_path / "pairs.parquet").height == 2
    else:
        assert result.exit_code == 2, result.output
        assert "holds a policy" in result.output and "needs a reward model" in result.output


@pytest.mark.parametrize("kind", POLICIES + REWARDS)
def test_grpo_reward_model_reward(kind: str, folders: dict[str, Path]) -> None:
    from prefdata.train.rewards import RewardModelReward

    if kind in REWARDS or kind == "rlhf_run":
        reward = RewardModelReward(path=str(folders[kind]), device="cpu")
        scores = reward(prompts=[[{"role": "user", "content": "Hi"}]], completions=["Hello"])
        assert len(scores) == 1 and isinstance(scores[0], float)
    else:
        with pytest.raises(InputError, match="needs a reward model"):
            RewardModelReward(path=str(folders[kind]))


@pytest.mark.parametrize("kind", POLICIES + REWARDS)
def test_train_continues_from_it(
    kind: str, folders: dict[str, Path], pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    if kind in REWARDS:
        with pytest.raises(InputError, match="needs a policy"):
            prepare(
                "dpo",
                recipe=recipe(),
                data=pandalm_pairs.head(2),
                model=folders[kind],
                out=tmp_path,
            )
        # A reward model continues as a reward model.
        prepared = prepare(
            "reward", recipe=recipe(), data=pandalm_pairs.head(2), model=folders[kind], out=tmp_path
        )
        assert "reward model" in prepared.report["model_loaded"]
        return
    prepared = prepare(
        "dpo", recipe=recipe(), data=pandalm_pairs.head(2), model=folders[kind], out=tmp_path
    )
    assert prepared.report["model_loaded"].startswith("policy")
    if kind != "full_policy":
        # The adapter was merged into its base: training starts from the trained policy, and
        # for DPO that policy is also the reference.
        merged = Path(prepared.report["model"])
        assert (merged / "prefdata-merge.json").is_file()
        trained, _ = load(folders[kind])
        started, _ = load(merged)
        for (name, a), (_, b) in zip(
            trained.state_dict().items(), started.state_dict().items(), strict=True
        ):
            assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("kind", POLICIES + REWARDS)
def test_train_eval(kind: str, folders: dict[str, Path], pandalm_pairs: pl.DataFrame) -> None:
    scores = evaluate(folders[kind], pandalm_pairs.slice(8, 2), progress=False).report
    assert scores["pairs"] == 2 and 0.0 <= scores["accuracy"] <= 1.0
    expected = "reward model score" if kind in REWARDS else "implicit reward"
    if kind == "full_policy":
        expected = "mean per-token"  # no recorded reference: log-probabilities only
    assert scores["kind"].startswith(expected), scores["kind"]


def test_merge_and_export_give_the_adapters_model(folders: dict[str, Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged_by_train = folders["policy_adapter"] / "merged"
    exported, found = export_model(folders["policy_adapter"], tmp_path / "export")
    assert found.adapter and not inspect_model(exported).adapter
    # Independent reference: the adapter applied by PEFT itself, unmerged.
    base = AutoModelForCausalLM.from_pretrained(folders["full_policy"])
    peft_model = PeftModel.from_pretrained(base, str(folders["policy_adapter"])).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        for folder in (exported, merged_by_train):
            model = AutoModelForCausalLM.from_pretrained(folder).eval()
            assert torch.allclose(model(input_ids=ids).logits, want, atol=1e-4)
    result = runner.invoke(
        app, ["export-model", str(folders["reward_adapter"]), "-o", str(tmp_path / "rm")]
    )
    assert result.exit_code == 0, result.output
    assert inspect_model(tmp_path / "rm").kind == "reward_model"
