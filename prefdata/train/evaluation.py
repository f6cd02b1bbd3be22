"""Held-out preference accuracy of a training output, so cleaning can be judged by its effect.

`evaluate(model, heldout)` (the stage `prefdata train eval`) scores every held-out pair (a
pairs table: prompt, chosen, rejected) and returns the share the model orders like the label:

- DPO / KTO outputs: the implicit reward r(y) = beta * (log pi(y|x) - log pi_ref(y|x)), summed
  over the completion tokens exactly as TRL's training metrics (`rewards/accuracies`,
  `rewards/margins`); the reference is the base model (adapter disabled for LoRA outputs, the
  recorded base model for full fine-tuning). `accuracy` counts r(chosen) > r(rejected); ties
  (an untrained adapter gives r = 0 everywhere) are counted apart, not as half right.
  `reference_logp_accuracy` is the base model's own log-likelihood ordering, a baseline.
- reward-model outputs: the score head's r(prompt + response); accuracy and margin as above.
- ORPO outputs (no reference): mean per-token log-probability of chosen vs rejected.

The method, base model, beta and max_length come from `<model_dir>/prefdata-train.json`
(written by prefdata.train.train). Other folders: a LoRA adapter folder is scored against its
base model; a full model needs `reference=` for rewards, else only log-probabilities count.

Per-pair scores (pair_id, chosen / rejected scores, margin, correct) come back from
`score_pairs`; `evaluate` returns them as its `per_pair` table. Scoring shows a progress bar on
stderr (one step per sequence scored: 2 per pair, 4 with a reference); `progress=False`
turns it off.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl

from prefdata.errors import InputError
from prefdata.models.loader import load_tokenizer
from prefdata.progress import progress_bar
from prefdata.stage import Input, Resource, StageResult, Table, stage
from prefdata.train.data import read_data, token_ids
from prefdata.train.models import pad_token_id
from prefdata.train.outputs import read_train_report

__all__ = [
    "RLHF_MODELS",
    "describe_model",
    "evaluate",
    "reward_scores",
    "rlhf_model_folder",
    "score_pairs",
    "sequence_logps",
]

RlhfModel = Literal["policy", "reward_model", "sft_model"]

_POLICY_METHODS = ("dpo", "kto")


def _device_and_dtype() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        return "cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "cpu", "float32"


def _tokenize_pair_side(
    tokenizer: Any, prompt: list[dict[str, str]], completion: str, max_length: int | None
) -> tuple[list[int], int]:
    """Token ids of prompt + completion (chat template, as TRL builds them) and where the
    completion starts; truncated from the end to max_length like TRL's keep_start."""
    from trl.data_utils import common_prefix_length

    prompt_ids = token_ids(
        tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    )
    full = token_ids(
        tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": completion}], tokenize=True
        )
    )
    start = common_prefix_length(prompt_ids, full)
    if max_length is not None:
        full = full[:max_length]
    return full, start


def _padded(rows: Sequence[list[int]], pad: int) -> tuple[Any, Any]:
    """A batch of token-id lists as right-padded input_ids and their attention mask."""
    import torch

    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
    return input_ids, attention


def sequence_logps(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    completions: Sequence[str],
    *,
    batch_size: int = 4,
    max_length: int | None = 1024,
    advance: Callable[[int], None] | None = None,
) -> tuple[list[float], list[int]]:
    """Summed log-probability of each completion given its prompt, and its token count.

    Uses TRL's fused LM head (per-token log-probs without the full logits), so the numbers are
    the ones TRL's DPO metrics use. Completions cut away entirely by max_length give 0.0 / 0.
    `advance(n)` is called after each batch of n completions (a progress bar's).
    """
    import torch
    from accelerate.utils import is_peft_model
    from trl.trainer.utils import add_fused_lm_head

    target = model.get_base_model() if is_peft_model(model) else model
    if not getattr(target, "_prefdata_fused_head", False):
        add_fused_lm_head(target)
        target._prefdata_fused_head = True
    pad = pad_token_id(tokenizer)
    encoded = [
        _tokenize_pair_side(tokenizer, p, c, max_length)
        for p, c in zip(prompts, completions, strict=True)
    ]
    device = next(model.parameters()).device
    logps: list[float] = []
    counts: list[int] = []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i : i + batch_size]
        input_ids, attention = _padded([ids for ids, _ in chunk], pad)
        labels = torch.full_like(input_ids, -100)
        for row, (ids, start) in enumerate(chunk):
            labels[row, start : len(ids)] = torch.tensor(ids[start:], dtype=torch.long)
        with torch.no_grad():
            out = model(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                labels=labels.to(device),
                fused_lm_head=True,
                use_cache=False,
            )
        per_token = out.log_probs.float().cpu()
        logps.extend(per_token.sum(dim=1).tolist())
        counts.extend((labels[:, 1:] != -100).sum(dim=1).tolist())
        if advance is not None:
            advance(len(chunk))
    return logps, counts


def reward_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[dict[str, str]]],
    completions: Sequence[str],
    *,
    batch_size: int,
    max_length: int | None,
    advance: Callable[[int], None] | None = None,
) -> list[float]:
    import torch

    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    scores: list[float] = []
    texts = [
        token_ids(
            tokenizer.apply_chat_template([*p, {"role": "assistant", "content": c}], tokenize=True)
        )
        for p, c in zip(prompts, completions, strict=True)
    ]
    if max_length is not None:
        texts = [ids[:max_length] for ids in texts]
    for i in range(0, len(texts), batch_size):
        chunk = texts[i : i + batch_size]
        input_ids, attention = _padded(chunk, pad)
        with torch.no_grad():
            logits = model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False
            ).logits
        scores.extend(logits[:, 0].float().cpu().tolist())
        if advance is not None:
            advance(len(chunk))
    return scores


def describe_model(model_dir: Path, reference: str | Path | None) -> dict[str, Any]:
    """What a model folder holds and how to score it: method, base model, beta (DPO / KTO
    only: the implicit reward's scale as trained; None for every other method), max_length."""
    import dataclasses

    from prefdata.models.folders import inspect_model

    found = inspect_model(model_dir)
    report = read_train_report(found.path)
    trl: dict[str, Any] = (report or {}).get("trl_config", {})
    method = found.method
    beta = None
    if method in _POLICY_METHODS:
        beta = trl.get("beta", (report or {}).get("beta"))
        if beta is None:
            raise InputError(f"a {method} output without its beta", source=found.path)
    if reference is not None and found.adapter:
        found = dataclasses.replace(found, base=str(reference))
    base = found.base if found.adapter else (str(reference) if reference else None)
    if base is None and report is not None and report.get("model"):
        base = str(report["model"])
    return {
        "found": found,
        "method": method,
        "model_kind": found.kind,
        "base": base,
        "beta": None if beta is None else float(beta),
        "max_length": trl.get("max_length") or 1024,
        "adapter": found.adapter,
        "loaded": found.describe(),
    }


def score_pairs(
    model_dir: str | Path,
    data: str | Path | pl.DataFrame,
    *,
    reference: str | Path | None = None,
    beta: float | None = None,
    batch_size: int = 4,
    max_length: int | None = None,
    progress: bool = True,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Per-pair scores and the description of how they were made (see the module doc), with a
    progress bar on stderr unless `progress` is False.

    Output columns: pair_id, score_chosen, score_rejected, margin (chosen - rejected),
    correct (margin > 0), tie (margin == 0), and for policies logp_chosen / logp_rejected and,
    with a reference, ref_logp_chosen / ref_logp_rejected.
    """
    from prefdata.models.folders import inspect_model
    from prefdata.models.loader import from_pretrained

    # The data first: a bad file is reported before a model folder is even looked at.
    pairs, _, _ = read_data(data, ("pairs",))
    info = describe_model(Path(model_dir), reference)
    found = info["found"]
    if beta is not None:
        info["beta"] = beta
    if max_length is not None:
        info["max_length"] = max_length
    if pairs.height == 0:
        raise InputError("no pairs to evaluate")
    prompts = pairs["prompt"].to_list()
    chosen = pairs["chosen"].to_list()
    rejected = pairs["rejected"].to_list()
    device, dtype = _device_and_dtype()
    tokenizer = load_tokenizer(found)
    limit = info["max_length"]
    table = pl.DataFrame({"pair_id": pairs["pair_id"]})

    if found.kind == "reward_model":
        model: Any = from_pretrained(found, dtype=dtype)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        with progress_bar(2 * len(prompts), progress, "scoring pairs") as advance:
            kwargs = {"batch_size": batch_size, "max_length": limit, "advance": advance}
            sc = reward_scores(model, tokenizer, prompts, chosen, **kwargs)
            sr = reward_scores(model, tokenizer, prompts, rejected, **kwargs)
        table = table.with_columns(pl.Series("score_chosen", sc), pl.Series("score_rejected", sr))
        info["kind"] = "reward model score"
    else:
        # An adapter stays a PeftModel: with the adapter disabled it is its own reference.
        model = from_pretrained(found, dtype=dtype, merge=False)
        model.to(device).eval()
        # ORPO has no reference; a full model folder only when its base is recorded or given.
        with_reference = info["method"] != "orpo" and bool(info["adapter"] or info["base"])
        ref_model: Any = None
        if with_reference and not info["adapter"]:
            reference_folder = inspect_model(info["base"], want="causal_lm", what="train eval")
            ref_model = from_pretrained(reference_folder, dtype=dtype)
            ref_model.to(device).eval()
        passes = 4 if with_reference else 2
        with progress_bar(passes * len(prompts), progress, "scoring pairs") as advance:
            kwargs = {"batch_size": batch_size, "max_length": limit, "advance": advance}
            lc, nc = sequence_logps(model, tokenizer, prompts, chosen, **kwargs)
            lr, nr = sequence_logps(model, tokenizer, prompts, rejected, **kwargs)
            if with_reference and info["adapter"]:
                # The same weights with the adapter disabled are the reference.
                with model.disable_adapter():
                    rc, _ = sequence_logps(model, tokenizer, prompts, chosen, **kwargs)
                    rr, _ = sequence_logps(model, tokenizer, prompts, rejected, **kwargs)
            elif with_reference:
                rc, _ = sequence_logps(ref_model, tokenizer, prompts, chosen, **kwargs)
                rr, _ = sequence_logps(ref_model, tokenizer, prompts, rejected, **kwargs)
        table = table.with_columns(
            pl.Series("logp_chosen", lc),
            pl.Series("logp_rejected", lr),
            pl.Series("tokens_chosen", nc),
            pl.Series("tokens_rejected", nr),
        )
        if with_reference:
            # DPO / KTO's implicit reward is beta times the log-ratio; other methods have no
            # such beta, so their score is the plain log-ratio (the accuracy is the same either
            # way; only the margins' scale would be invented).
            b = 1.0 if info["beta"] is None else float(info["beta"])
            table = table.with_columns(
                pl.Series("ref_logp_chosen", rc),
                pl.Series("ref_logp_rejected", rr),
            ).with_columns(
                (b * (pl.col("logp_chosen") - pl.col("ref_logp_chosen"))).alias("score_chosen"),
                (b * (pl.col("logp_rejected") - pl.col("ref_logp_rejected"))).alias(
                    "score_rejected"
                ),
            )
            trained = info["method"] or "this model"
            info["kind"] = (
                "implicit reward beta * (log pi - log pi_ref)"
                if info["beta"] is not None
                else f"log-ratio log pi - log pi_ref ({trained} has no DPO beta, so no "
                "implicit reward)"
            )
        else:
            # No reference (ORPO, or a plain model folder): the mean per-token log-prob.
            table = table.with_columns(
                (pl.col("logp_chosen") / pl.col("tokens_chosen").clip(1)).alias("score_chosen"),
                (pl.col("logp_rejected") / pl.col("tokens_rejected").clip(1)).alias(
                    "score_rejected"
                ),
            )
            info["kind"] = "mean per-token log-probability"
    table = table.with_columns(
        (pl.col("score_chosen") - pl.col("score_rejected")).alias("margin")
    ).with_columns((pl.col("margin") > 0).alias("correct"), (pl.col("margin") == 0).alias("tie"))
    return table, info


RLHF_MODELS = {
    "policy": ("rl", "model"),
    "reward_model": ("reward", "model"),
    "sft_model": ("sft", "model"),
}
"""An rlhf run folder's models (the keys of rlhf-summary.json's `outputs`) -> their folder."""


def rlhf_model_folder(folder: Path, rlhf_model: str = "policy") -> Path:
    """The model folder to score: `folder` itself, or for an rlhf run folder (one with
    rlhf-summary.json) the stage output `rlhf_model` names (RLHF_MODELS). InputError when
    `rlhf_model` is not "policy" and `folder` is no rlhf run."""
    if (folder / "rlhf-summary.json").is_file():
        return folder.joinpath(*RLHF_MODELS[rlhf_model])
    if rlhf_model != "policy":
        raise InputError(
            f"rlhf_model: {rlhf_model} needs an rlhf run folder (with rlhf-summary.json)",
            source=folder,
        )
    return folder


@stage("eval", outputs=("eval", "per_pair"))
def evaluate(
    model: Annotated[str | Path, Input("model")],
    heldout: Annotated[pl.DataFrame, Table("pairs")],
    *,
    reference: str | None = None,
    beta: float | None = None,
    batch_size: int = 4,
    max_length: int | None = None,
    max_pairs: int | None = None,
    rlhf_model: RlhfModel = "policy",
    progress: Annotated[bool, Resource("progress")] = True,
) -> StageResult:
    """Held-out preference accuracy of a trained model (DPO / KTO: the implicit reward; reward
    models: the score; other policies: the log-ratio to the reference), with the base model's
    own log-probability ordering beside it.

    Report (also the document `eval`): method, kind (what was scored), pairs, accuracy
    (chosen scored above rejected), ties, margin_mean, margin_median, and for policies with a
    reference reference_logp_accuracy and policy_logp_accuracy (summed log-prob orderings).
    Table `per_pair`: the per-pair scores (see score_pairs).

    Example: prefdata train eval runs/dpo heldout.parquet -o eval.json

    Args:
        model: the trained output folder (or any model folder; an rlhf run folder: see
            rlhf_model)
        heldout: held-out pairs
        reference: the reference model (default: the trained one's base)
        beta: the implicit reward's beta (default: the trained one's)
        batch_size: pairs per batch
        max_length: truncate each sequence to this many tokens (default: the trained one's)
        max_pairs: score only the first N pairs
        rlhf_model: for an rlhf run folder: which of its models (policy, reward_model,
            sft_model)
        progress: a progress bar on stderr
    """
    model_dir = rlhf_model_folder(Path(model), rlhf_model)
    data = heldout if max_pairs is None else heldout.head(max_pairs)
    table, info = score_pairs(
        model_dir,
        data,
        reference=reference,
        beta=beta,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    margins = table["margin"].to_list()
    n = table.height
    result: dict[str, Any] = {
        "model_dir": str(model_dir),
        "method": info["method"],
        "kind": info["kind"],
        "loaded": info["loaded"],
        "base_model": info["base"],
        "pairs": n,
        "accuracy": int(table["correct"].sum()) / n,
        "ties": int(table["tie"].sum()),
        "margin_mean": statistics.fmean(margins),
        "margin_median": statistics.median(margins),
    }
    if info["kind"].startswith("implicit"):
        result["beta"] = info["beta"]
    if "logp_chosen" in table.columns:
        result["policy_logp_accuracy"] = float(
            (table["logp_chosen"] > table["logp_rejected"]).mean()  # type: ignore[arg-type]
        )
    if "ref_logp_chosen" in table.columns:
        result["reference_logp_accuracy"] = float(
            (table["ref_logp_chosen"] > table["ref_logp_rejected"]).mean()  # type: ignore[arg-type]
        )
    return StageResult(tables={"per_pair": table}, report=result, documents={"eval": result})
