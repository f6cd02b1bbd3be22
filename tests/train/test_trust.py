"""Issue 15: the noise-handling chain works by default, the reference really stays frozen, the
monitor catches hacking at the length cap and runs with no learning signal, bad lengths and
launches are one clear line, bf16 on a CPU does what the docs say, eval invents no beta,
custom rewards by import path, QLoRA / attention / revision keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.errors import InputError, MissingExtraError, RecipeError, TrainingError
from prefdata.train import evaluate, load_recipe, prepare, spec, train
from prefdata.train.dpo import ConfidenceWeights, _apply_label_noise, label_noise_rate
from prefdata.train.hardware import Hardware
from prefdata.train.launch import check_launch
from prefdata.train.recipe import read_recipe, resolve_recipe
from tests.train.conftest import ONLINE_RECIPE, recipe

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = REPO / "train" / "accelerate"
CPU = Hardware("cpu", "CPU", bf16=False, devices=1, memory_bytes=None)
runner = CliRunner()


# ---- 1. label_noise fills the robust loss's rate with the shipped recipe ----------------


def test_label_noise_fills_the_robust_rate_with_the_builtin_recipe(tmp_path: Path) -> None:
    resolved = load_recipe("dpo", None, overrides=["loss_type=robust", "prefdata.label_noise=0.1"])
    assert _apply_label_noise(resolved) == 0.1
    assert resolved.trl["label_smoothing"] == 0.1
    # From the audit's report (its calibrated estimate), as from audit-rate's.
    audit = tmp_path / "audit.json"
    audit.write_text(json.dumps({"mislabel": {"noise_rate": 0.12, "noise_rate_se": 0.02}}))
    assert label_noise_rate(str(audit)) == 0.12
    # An explicit label_smoothing still wins, with a note.
    explicit = load_recipe(
        "dpo",
        None,
        overrides=["loss_type=robust", "label_smoothing=0.05", f"prefdata.label_noise={audit}"],
    )
    _apply_label_noise(explicit)
    assert explicit.trl["label_smoothing"] == 0.05
    assert any("0.12 was not used" in n for n in explicit.notes)


# ---- 2. a coin-flip pair carries no weight by default --------------------------------------


def test_dpo_gives_a_coin_flip_pair_no_weight_by_default() -> None:
    defaults = load_recipe("dpo", {}).prefdata
    assert defaults["confidence_weighting"] == "centered"
    weights = ConfidenceWeights.for_table([0.5, 1.0, 0.75], defaults)
    # max(0, 2c - 1) = 0, 1, 0.5, normalised to mean 1.
    assert [weights(c) for c in (0.5, 1.0, 0.75)] == pytest.approx([0.0, 2.0, 1.0])


@pytest.mark.parametrize("method", ["reward", "kto"])
def test_reward_and_kto_leave_coin_flips_out_by_default(
    method: str, tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    pairs = pandalm_pairs.head(6).with_columns(
        pl.Series("confidence", [0.5, 0.5, 1.0, 0.9, 0.4, None], dtype=pl.Float64)
    )
    prepared = prepare(method, recipe=recipe(), data=pairs, model=tiny, out=tmp_path)
    report = prepared.report
    assert report["dropped_coin_flip"] == 3  # 0.5, 0.5 and 0.4; the null one is kept
    rows = report["pairs"] if method == "reward" else report["rows"]
    assert rows == (3 if method == "reward" else 6)  # KTO: 2 rows per pair
    kept = load_recipe(method, {"prefdata": {"min_confidence": None}})
    assert kept.prefdata["min_confidence"] is None


# ---- 3. the reference guard --------------------------------------------------------------


def test_reference_sync_is_refused_unless_allowed() -> None:
    sync = ["prefdata.full_finetune=true", "sync_ref_model=true", "ref_model_sync_steps=1"]
    with pytest.raises(RecipeError, match="allow_reference_sync"):
        load_recipe("dpo", {}, overrides=sync)
    allowed = load_recipe("dpo", {}, overrides=[*sync, "prefdata.allow_reference_sync=true"])
    assert allowed.trl["sync_ref_model"] is True


def test_reference_checksum_before_and_after(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    frozen = train(
        "dpo",
        recipe=recipe(prefdata={"full_finetune": True}),
        data=pandalm_pairs.head(4),
        model=tiny,
        out=tmp_path / "frozen",
    )
    check = frozen["reference_checksum"]
    assert check["unchanged"] is True and check["before"] == check["after"]
    assert frozen["reference"] == "separate frozen model"
    synced = train(
        "dpo",
        recipe=recipe(
            sync_ref_model=True,
            ref_model_sync_steps=1,
            ref_model_mixup_alpha=0.5,
            prefdata={"full_finetune": True, "allow_reference_sync": True},
        ),
        data=pandalm_pairs.head(4),
        model=tiny,
        out=tmp_path / "synced",
    )
    # The report says what happened instead of claiming a frozen reference...
    assert synced["reference"].startswith("reference synced every 1 steps")
    # ... and the checksum sees the reference move (same start as the frozen run).
    assert synced["reference_checksum"]["before"] == check["before"]
    assert synced["reference_checksum"]["unchanged"] is False
    assert not any("changed during training" in w for w in synced["warnings"])


# ---- 4 and 5. the monitor at the length cap, and runs with no learning signal -----------------


def _online(**prefdata: Any) -> dict[str, Any]:
    return recipe(
        ONLINE_RECIPE,
        num_generations=8,
        max_steps=6,
        learning_rate=1e-2,
        prefdata={"max_prompt_tokens": None, **prefdata},
    )


@pytest.fixture(scope="module")
def gsm8k(shared_data: Path) -> pl.DataFrame:
    from prefdata.io.importers.math import import_gsm8k

    return import_gsm8k(shared_data / "gsm8k" / "test.jsonl").tables["prompts"].head(16)


def test_length_hacking_at_the_cap_alerts(tiny: Path, gsm8k: pl.DataFrame, tmp_path: Path) -> None:
    # A reward that pays only for length (a custom reward by import path), completions of a
    # tiny random model that all run to max_completion_length: the length cannot drift.
    rewards = [{"name": "tests.train.custom_rewards:length_only"}]
    report = train("grpo", recipe=_online(rewards=rewards), data=gsm8k, model=tiny, out=tmp_path)
    assert report["rewards"][0]["name"] == "length_only"  # TRL's metric name: the function's
    checks = report["monitor"]["checks"]
    # Watched together: the clipped share, KL, reward and length.
    assert checks["clipped_share"]["mean"] == 1.0
    assert checks["length"]["max_ratio"] == 1.0  # the drift check is blind here
    assert checks["reward"]["gain"] > 0 and "last" in checks["kl"]
    signals = [(a["signal"], a["level"]) for a in report["monitor"]["alerts"]]
    assert ("length_cap", "warn") in signals, report["monitor"]
    first = next(a for a in report["monitor"]["alerts"] if a["signal"] == "length_cap")
    assert first["step"] <= 3 and "cut at max_completion_length" in first["message"]
    # The TRL metric of the custom reward is logged like a built-in one.
    assert "rewards/length_only/mean" in report["reward_stats"]

    # The same run without the cap check (the monitor before): nothing to see.
    from prefdata.train.monitor import RewardHackingMonitor

    blind = RewardHackingMonitor({"clipped_warn": None})
    for entry in report["reward_history"]:
        blind.observe(entry["step"], {"loss": 0.0, **entry})
    assert blind.summary()["status"] == "ok"


def test_a_run_without_learning_signal_warns(
    tiny: Path, gsm8k: pl.DataFrame, tmp_path: Path
) -> None:
    rewards = [{"name": "tests.train.custom_rewards:always_zero"}]
    report = train(
        "grpo",
        recipe=_online(rewards=rewards) | {"max_steps": 3},
        data=gsm8k,
        model=tiny,
        out=tmp_path,
    )
    assert report["reward_stats"]["advantages/frac_zero"]["mean"] == 1.0
    assert [a["signal"] for a in report["monitor"]["alerts"]] == ["no_signal"]
    assert any("zero advantage" in w for w in report["warnings"])


# ---- 6. max_length below every prompt; most pairs dropped --------------------------------


@pytest.mark.parametrize("method", ["dpo", "sft", "reward"])
def test_max_length_below_every_prompt_is_one_clear_line(
    method: str, tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "pairs.parquet"
    hh_pairs.write_parquet(data)
    args = ["train", method, "--data", str(data), "-o", str(tmp_path / "o"), "--model", str(tiny)]
    result = runner.invoke(app, [*args, "max_length=4", "max_steps=1"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "num_samples" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "max_length=4" in errors[0]
    if method == "sft":  # no pairs to check: TRL's empty result, said in one line
        assert "TRL kept none of the" in errors[0]
    else:  # the token-level check refuses before TRL is asked
        assert "100.0% of the" in errors[0] and "prompt_fills_context" in errors[0]


def test_dropping_most_pairs_is_loud(tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    from prefdata.models import load_tokenizer
    from prefdata.train.data import token_ids

    tokenizer = load_tokenizer(tiny)
    lengths = sorted(
        len(token_ids(tokenizer.apply_chat_template(list(p), add_generation_prompt=True)))
        for p in hh_pairs["prompt"].to_list()
    )
    limit = lengths[1]  # only the shortest prompt leaves room for a completion token
    # The default share refuses in one line that names the share and the fixes ...
    with pytest.raises(InputError, match=r"would be degenerate .* Fix: raise max_length"):
        prepare("dpo", recipe=recipe(max_length=limit), data=hh_pairs, model=tiny, out=tmp_path)
    # ... and allowing them leaves them out before TRL sees them, listed in the report.
    allowed = recipe(max_length=limit, prefdata={"max_degenerate_share": 1})
    prepared = prepare("dpo", recipe=allowed, data=hh_pairs, model=tiny, out=tmp_path)
    integrity = prepared.report["token_integrity"]
    kept = prepared.report["pairs_after_tokenization"]
    assert 0 < kept < hh_pairs.height / 2
    assert integrity["dropped"] == hh_pairs.height - kept
    assert len(integrity["dropped_pair_ids"]) == integrity["dropped"]


# ---- 7. bf16 on a CPU --------------------------------------------------------------------


def test_bf16_on_cpu_is_kept_and_trains(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    forced = resolve_recipe(read_recipe({"bf16": True}, method="dpo"), spec("dpo"), hardware=CPU)
    assert forced.trl["bf16"] is True and forced.trl["use_cpu"] is True
    report = train(
        "dpo",
        recipe=recipe(bf16=True, max_steps=1),
        data=pandalm_pairs.head(2),
        model=tiny,
        out=tmp_path,
    )
    assert report["precision"]["bf16"] is True and report["steps"] == 1
    assert any("bf16=true on cpu" in w for w in report["warnings"])


# ---- 8. eval of SFT / GRPO outputs invents no beta -----------------------------------------


def test_eval_of_an_sft_output_has_no_implicit_reward(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    train("sft", recipe=recipe(max_steps=1), data=pandalm_pairs.head(4), model=tiny, out=tmp_path)
    scores = evaluate(tmp_path, pandalm_pairs.slice(8, 3), progress=False).report
    assert scores["method"] == "sft" and "beta" not in scores
    assert scores["kind"].startswith("log-ratio") and "no DPO beta" in scores["kind"]
    assert "reference_logp_accuracy" in scores


# ---- 9. launches that cannot work here ---------------------------------------------------


def test_gpu_launch_configs_are_refused_without_the_gpus() -> None:
    with pytest.raises(
        TrainingError, match=r"starts 8 processes, one per GPU, and this machine has 0"
    ):
        check_launch(ACCELERATE / "ddp.yaml", gpus=0)
    assert check_launch(ACCELERATE / "ddp.yaml", ["--num_processes", "2"], gpus=2)["gpus"] == 2
    with pytest.raises(TrainingError, match="at most 1"):
        check_launch(ACCELERATE / "fsdp.yaml", ["--num_processes=2"], gpus=1)


def test_deepspeed_config_without_deepspeed_is_one_line(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed here")
    with pytest.raises(
        MissingExtraError, match="DeepSpeed is not installed: pip install deepspeed"
    ):
        check_launch(ACCELERATE / "zero3.yaml", gpus=8)
    config = ["--accelerate-config", str(ACCELERATE / "ddp.yaml")]
    command = ["train", "dpo", "--data", "d.parquet", "-o", str(tmp_path / "o")]
    result = runner.invoke(app, [*command, "--launcher", "accelerate", *config])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "one per GPU" in result.output


# ---- 10. QLoRA, attention implementation, model revision -----------------------------------


def test_qlora_is_refused_on_cpu_before_loading(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(RecipeError, match="needs a CUDA GPU"):
        prepare(
            "dpo",
            recipe=recipe(prefdata={"quantization": "4bit"}),
            data=pandalm_pairs.head(2),
            model=tiny,
            out=tmp_path,
        )
    with pytest.raises(RecipeError, match=r"cannot be combined with prefdata\.full_finetune"):
        load_recipe("dpo", {"prefdata": {"quantization": "8bit", "full_finetune": True}})
    with pytest.raises(RecipeError, match="null, 4bit or 8bit"):
        load_recipe("dpo", {"prefdata": {"quantization": "2bit"}})


def test_attn_implementation_and_revision(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "dpo",
        recipe=recipe(prefdata={"attn_implementation": "eager"}),
        data=pandalm_pairs.head(2),
        model=tiny,
        out=tmp_path,
    )
    base = prepared.trainer.model.get_base_model()
    assert base.config._attn_implementation == "eager"
    with pytest.raises(RecipeError, match="local folder, which has only one"):
        prepare(
            "dpo",
            recipe=recipe(prefdata={"model_revision": "v1"}),
            data=pandalm_pairs.head(2),
            model=tiny,
            out=tmp_path,
        )


def test_a_missing_custom_reward_is_named() -> None:
    from prefdata.train.rewards import build_rewards

    with pytest.raises(RecipeError, match=r"cannot import the reward function nope\.nothing:f"):
        build_rewards([{"name": "nope.nothing:f"}])
    rewards = build_rewards(
        [{"name": "tests.train.custom_rewards:length_only", "options": {"scale": 2}}]
    )
    assert rewards.funcs[0](prompts=["p"], completions=["abcd"]) == [2.0]
    broken = build_rewards([{"name": "tests.train.custom_rewards:one_score"}])
    with pytest.raises(InputError, match="returned 1 scores for 2 completions"):
        broken.funcs[0](prompts=["p", "q"], completions=["a", "b"])
