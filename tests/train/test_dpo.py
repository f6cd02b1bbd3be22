"""DPO on real pairs with a tiny SmolLM2-shaped model: training, saving, the frozen reference,
loss types, and the per-pair confidence weights' effect on the gradient."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from prefdata.train import prepare, train
from prefdata.train.dpo import WEIGHT_KEY, weighted_trainer_class
from prefdata.train.recipe import RecipeError, TrainingError
from prefdata.train.reference import check_reference_frozen
from tests.train.conftest import recipe


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _frozen(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


@pytest.fixture(scope="module")
def lora_run(tiny: Path, hh_pairs: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One LoRA DPO run (2 steps on HH-RLHF pairs), with the weights before and after."""
    out = tmp_path_factory.mktemp("dpo-lora")
    prepared = prepare("dpo", recipe=recipe(), data=hh_pairs, model=tiny, out=out)
    model = prepared.trainer.model
    before, base_before = _trainable(model), _frozen(model)
    report = prepared.fit(out)
    return {
        "out": out,
        "report": report,
        "trainer": prepared.trainer,
        "before": before,
        "base_before": base_before,
    }


def test_lora_dpo_trains_on_real_pairs(lora_run: Any) -> None:
    report = lora_run["report"]
    assert report["method"] == "dpo" and report["steps"] == 2
    assert report["pairs"] == 8 and report["pairs_after_tokenization"] == 8
    assert len(report["losses"]) == 2 and all(math.isfinite(x) for x in report["losses"])
    # Step 1: policy == reference, so the sigmoid loss is exactly log 2.
    assert report["losses"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert report["reference"] == "base model with the adapter disabled"
    assert report["finetune"] == "lora"
    assert report["precision"] == {"bf16": False, "fp16": False, "gradient_checkpointing": False}
    # HH-RLHF has one crowd label per pair: no confidence, every weight 1.
    assert report["pairs_with_confidence"] == 0 and report["weight_mean"] == 1.0
    after = _trainable(lora_run["trainer"].model)
    changed = [n for n in after if not torch.equal(after[n], lora_run["before"][n])]
    assert changed and all("lora_" in n for n in after)
    # LoRA B starts at zero; after two steps every B matrix has moved.
    assert all(n in changed for n in after if "lora_B" in n)


def test_reference_base_stays_frozen_and_unchanged(lora_run: Any) -> None:
    model = lora_run["trainer"].model
    base_after = _frozen(model)
    assert base_after.keys() == lora_run["base_before"].keys()
    assert all(torch.equal(base_after[n], lora_run["base_before"][n]) for n in base_after)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    assert check_reference_frozen(lora_run["trainer"])["reference_parameters"] > 0


def test_adapter_saves_and_reloads(lora_run: Any, tiny: Path) -> None:
    from peft import PeftModel

    from prefdata.models import load

    out = lora_run["out"]
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "recipe.yaml").is_file() and (out / "prefdata-train.json").is_file()
    base, tokenizer = load(tiny)
    reloaded = PeftModel.from_pretrained(base, str(out))
    trained = dict(lora_run["trainer"].model.named_parameters())
    for name, param in reloaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, trained[name]), name
    # The reloaded adapter changes the model's output, as training did.
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with_adapter = reloaded(input_ids=ids).logits
        with reloaded.disable_adapter():
            without = reloaded(input_ids=ids).logits
    assert not torch.allclose(with_adapter, without)


def test_resolved_recipe_reruns(lora_run: Any) -> None:
    from prefdata.train import load_recipe

    saved = load_recipe("dpo", lora_run["out"] / "recipe.yaml")
    assert saved.trl["max_steps"] == 2 and saved.peft["r"] == 4
    assert saved.trl["activation_checkpointing"] is False


def test_full_finetune_keeps_a_separate_frozen_reference(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "dpo",
        recipe=recipe(learning_rate=1e-4, prefdata={"full_finetune": True}),
        data=hh_pairs,
        model=tiny,
        out=tmp_path,
    )
    trainer = prepared.trainer
    assert prepared.report["reference"] == "separate frozen model"
    ref = trainer.accelerator.unwrap_model(trainer.ref_model)
    ref_before = {n: p.detach().clone() for n, p in ref.named_parameters()}
    policy_before = _trainable(trainer.model)
    report = prepared.fit(tmp_path)
    assert all(math.isfinite(x) for x in report["losses"])
    assert all(not p.requires_grad and p.grad is None for p in ref.parameters())
    assert all(torch.equal(p, ref_before[n]) for n, p in ref.named_parameters())
    policy_after = _trainable(trainer.model)
    assert sum(not torch.equal(policy_after[n], policy_before[n]) for n in policy_after) > 10
    assert (tmp_path / "model.safetensors").is_file()


def test_reference_guard_refuses_a_trainable_or_shared_reference(
    tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "dpo",
        recipe=recipe(prefdata={"full_finetune": True}),
        data=hh_pairs.head(4),
        model=tiny,
        out=tmp_path,
    )
    trainer = prepared.trainer
    ref = trainer.accelerator.unwrap_model(trainer.ref_model)
    param = next(iter(ref.parameters()))
    param.requires_grad_(True)
    with pytest.raises(TrainingError, match="trainable parameter"):
        check_reference_frozen(trainer)
    param.requires_grad_(False)
    check_reference_frozen(trainer)
    # A reference sharing a tensor with the policy would be trained through it.
    name, policy_param = next(iter(trainer.model.named_parameters()))
    module_name, _, attr = name.rpartition(".")
    setattr(ref.get_submodule(module_name), attr, torch.nn.Parameter(policy_param.data, False))
    with pytest.raises(TrainingError, match="shares"):
        check_reference_frozen(trainer)


@pytest.mark.parametrize(
    ("loss", "extra"),
    [
        ("sigmoid", {}),
        ("ipo", {}),
        ("hinge", {}),
        ("robust", {"prefdata": {"label_noise": 0.1}}),
    ],
)
def test_loss_types_give_a_finite_loss(
    loss: str, extra: dict[str, Any], tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    prepared = prepare(
        "dpo",
        recipe=recipe(loss_type=loss, **extra),
        data=pandalm_pairs.head(2),
        model=tiny,
        out=tmp_path,
    )
    trainer = prepared.trainer
    assert trainer.loss_types == [loss]
    if loss == "robust":
        assert trainer.label_smoothing == 0.1 and prepared.report["label_noise"] == 0.1
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    trainer.model.train()
    value = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(value)
    value.backward()
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_batch_sorting_losses_are_refused_with_weights(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(RecipeError, match="sorts values across the batch"):
        prepare("dpo", recipe=recipe(loss_type="aot"), data=pandalm_pairs, model=tiny, out=tmp_path)
    with pytest.raises(RecipeError, match="unknown DPO loss_type"):
        prepare(
            "dpo", recipe=recipe(loss_type="sigmoidd"), data=pandalm_pairs, model=tiny, out=tmp_path
        )


# --------------------------------------------------------------------------------------------
# Confidence weights change the gradient as intended
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weighted(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    out = tmp_path_factory.mktemp("dpo-weights")
    prepared = prepare(
        "dpo",
        # linear: each weight is the confidence itself (the default, centered, is tested below)
        recipe=recipe(prefdata={"normalize_weights": False, "confidence_weighting": "linear"}),
        data=pandalm_pairs.head(2),
        model=tiny,
        out=out,
    )
    trainer = prepared.trainer
    # LoRA B starts at zero, so the policy equals the reference: move B off zero so both
    # adapter matrices get gradients and the policy differs from the reference.
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return trainer


def _grad(trainer: Any, rows: list[int], weights: list[float] | None) -> dict[str, torch.Tensor]:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    if weights is None:
        batch.pop(WEIGHT_KEY)
    else:
        batch[WEIGHT_KEY] = torch.tensor(weights)
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    trainer.compute_loss(trainer.model, batch).backward()
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    scale = max(float(v.abs().max()) for v in b.values())
    assert scale > 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6 * scale)


def test_collator_carries_each_pairs_confidence(weighted: Any, pandalm_pairs: pl.DataFrame) -> None:
    assert type(weighted) is weighted_trainer_class()
    batch = weighted.data_collator([weighted.train_dataset[i] for i in range(2)])
    expected = pandalm_pairs.head(2)["confidence"].to_list()
    assert batch[WEIGHT_KEY].tolist() == pytest.approx(expected)


def test_weights_scale_each_pairs_gradient(weighted: Any) -> None:
    # g_i: the gradient of pair i alone (a batch of one, so no averaging).
    g1 = _grad(weighted, [0], [1.0])
    g2 = _grad(weighted, [1], [1.0])
    assert max(float((g1[n] - g2[n]).abs().max()) for n in g1) > 0
    # The batch's gradient is that of mean_i(w_i * loss_i) = (w_1 g_1 + w_2 g_2) / 2 ...
    w1, w2 = 0.3, 0.9
    mixed = _grad(weighted, [0, 1], [w1, w2])
    _close(mixed, {n: (w1 * g1[n] + w2 * g2[n]) / 2 for n in g1})
    # ... so a pair with weight 0 contributes nothing ...
    only_first = _grad(weighted, [0, 1], [1.0, 0.0])
    _close(only_first, {n: g1[n] / 2 for n in g1})
    # ... and equal weights of 1 give exactly TRL's own (unweighted) DPO gradient.
    ones = _grad(weighted, [0, 1], [1.0, 1.0])
    plain = _grad(weighted, [0, 1], None)
    _close(ones, plain)
    _close(plain, {n: (g1[n] + g2[n]) / 2 for n in g1})


def test_weighted_training_logs_the_mean_weight(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    report = train(
        "dpo",
        recipe=recipe(max_steps=1),
        data=pandalm_pairs.head(4),
        model=tiny,
        out=tmp_path,
        overrides=["prefdata.confidence_weighting=centered"],
    )
    conf = pandalm_pairs.head(4)["confidence"].to_list()
    raw = [2 * c - 1 for c in conf]
    assert report["weight_mean"] == pytest.approx(1.0)  # normalised over the training rows
    assert report["weight_max"] == pytest.approx(max(raw) / (sum(raw) / 4))
    logged = report["last_log"]["pair_weight_mean"]
    assert logged == pytest.approx(sum(raw[:2]) / 2 / (sum(raw) / 4), rel=1e-5)
    assert report["pairs_with_confidence"] == 4


def test_weighting_off_is_plain_trl(
    tiny: Path, pandalm_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    from trl import DPOTrainer

    prepared = prepare(
        "dpo",
        recipe=recipe(prefdata={"confidence_weighting": "none"}),
        data=pandalm_pairs.head(2),
        model=tiny,
        out=tmp_path,
    )
    assert type(prepared.trainer) is DPOTrainer
    assert prepared.trainer.args.remove_unused_columns is True


@pytest.mark.slow
def test_dpo_on_the_embedded_smollm2_with_lora(hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    from peft import PeftModel

    from prefdata.models import load

    prepared = prepare(
        "dpo",
        recipe=recipe(max_length=128, learning_rate=5e-4, peft={"r": 8, "lora_alpha": 16}),
        data=hh_pairs.head(4),
        model="smollm2",
        out=tmp_path,
    )
    before = _trainable(prepared.trainer.model)
    base_before = _frozen(prepared.trainer.model)
    report = prepared.fit(tmp_path)
    assert report["steps"] == 2 and all(math.isfinite(x) for x in report["losses"])
    assert report["losses"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert report["reference"] == "base model with the adapter disabled"
    assert report["reference_parameters"] > 134_000_000
    model = prepared.trainer.model
    after = _trainable(model)
    assert all(not torch.equal(after[n], before[n]) for n in after if "lora_B" in n)
    assert all(torch.equal(p, base_before[n]) for n, p in _frozen(model).items())
    base, _ = load("smollm2")
    reloaded = PeftModel.from_pretrained(base, str(tmp_path))
    for name, param in reloaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, after[name]), name
