"""Synthetic pairs: score each prompt's candidates with a scorer (a reward model, or any
function) and pair the best against the worst.

    pairs = synthetic_pairs(candidates, reward_model="path/to/rm").tables["pairs"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol, runtime_checkable

import polars as pl

from prefdata.errors import InputError
from prefdata.llm.base import Message
from prefdata.stage import Input, StageResult, Table, stage

if TYPE_CHECKING:
    import torch

__all__ = ["BatchScorer", "RewardModelScorer", "Scorer", "synthetic_pairs"]


class Scorer(Protocol):
    """Scores one completion to one prompt (chat messages); higher is better."""

    def __call__(self, prompt: Sequence[Message], completion: str) -> float: ...


@runtime_checkable
class BatchScorer(Protocol):
    """A scorer that is faster on many items at once (a model); synthetic_pairs prefers it."""

    def score_batch(
        self, prompts: Sequence[Sequence[Message]], completions: Sequence[str]
    ) -> list[float]: ...


@stage("synthetic-pairs", outputs=("pairs", "rejected"))
def synthetic_pairs(
    candidates: Annotated[pl.DataFrame, Table("candidates")],
    *,
    reward_model: Annotated[Path | None, Input("model", auto=False)] = None,
    scorer: str | Scorer | None = None,
    min_margin: float = 0.0,
    device: str = "cpu",
    source: str = "synthetic",
) -> StageResult:
    """Score each candidate with a reward model (or any scorer) and pair each prompt's best
    with its worst: the synthetic-data loop of "sample N, score, best vs worst".

    Output: `pairs` (pairs contract, one pair per prompt whose top and bottom scores differ by
    more than `min_margin`: chosen = the top completion, rejected = the bottom one, margin =
    the score gap, n_votes = 1, confidence and agreement null (one scorer's gap is not a
    probability), provenance = both scores, both generators and the scorer's name); a prompt
    whose candidates all tie (or that has a single candidate) gives no pair; `rejected`: the
    candidates the scorer gave no score (NaN or None). Report: candidates, prompts,
    prompts_all_tied, pairs_below_margin, pairs, scorer. The same scoring and pairing as
    `prefdata rule-label --pairing best-vs-worst`.

    Example: prefdata synthetic-pairs candidates.parquet --reward-model rm/ -o pairs.parquet

    Args:
        candidates: the candidates (several per prompt)
        reward_model: a reward-model folder (a `prefdata train reward` output, or any
            sequence-classification model with one output)
        scorer: instead of a reward model: a scorer spec as in `prefdata rule-label`
            (vader, length, module:function), or in Python any callable
            (prompt messages, completion) -> float (one with `score_batch` is called once)
        min_margin: the smallest score gap that makes a pair
        device: where the reward model runs (cpu, cuda)
        source: the `source` column of the pairs
    """
    # One implementation of scoring and pairing: the programmatic labeller's.
    from prefdata.label.programmatic import label_with

    if (reward_model is None) == (scorer is None):
        raise InputError("give either a reward model (--reward-model) or a scorer (--scorer)")
    chosen_scorer = RewardModelScorer(reward_model, device=device) if reward_model else scorer
    labelled = label_with(
        candidates, chosen_scorer, pairing="best-vs-worst", min_margin=min_margin, source=source
    )
    return StageResult(
        tables={"pairs": labelled.tables["pairs"]},
        rejected=labelled.rejected,
        report=labelled.report,
    )


class RewardModelScorer:
    """A sequence-classification reward model (one output: the reward) from a local folder:
    a full reward model, a LoRA reward adapter over its base (`prefdata train reward`'s output),
    or the reward model of a `prefdata train rlhf` run (prefdata.models loads them).

    Each (prompt, completion) is written with the tokenizer's chat template (the completion as
    the assistant turn), or as "role: content" lines without one, and truncated from the
    *left* to the model's length limit, so a long prompt loses its beginning rather than the
    completion being judged. Batches of `batch_size`, sorted by length.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        batch_size: int = 8,
        dtype: str | None = None,
        max_length: int | None = None,
    ) -> None:
        from prefdata.llm.local import default_dtype
        from prefdata.models.folders import inspect_model
        from prefdata.models.loader import load_reward_model

        # The one model loader: a full reward model, a LoRA reward adapter (`prefdata train
        # reward`'s output) over its base, or an rlhf run's reward model; a policy is refused.
        found = inspect_model(path, want="reward_model", what="the reward-model scorer")
        self.name = f"reward-model:{Path(found.path).name}"
        self.device = device
        self.batch_size = batch_size
        model, self.tokenizer = load_reward_model(
            path, device=device, dtype=dtype or default_dtype(device), what="the scorer"
        )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if model.config.pad_token_id is None:
            # The model finds each row's last real token by the pad id; without one it
            # refuses batches larger than 1.
            model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.tokenizer.padding_side = "right"
        limits = [self.tokenizer.model_max_length, 1 << 20]
        position_limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(position_limit, int):
            limits.append(position_limit)
        self.max_length = max_length or int(min(limits))
        self.model = model

    def text(self, prompt: Sequence[Message], completion: str) -> str:
        chat = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        chat.append({"role": "assistant", "content": completion})
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(chat, tokenize=False))
        return "\n".join(f"{m['role']}: {m['content']}" for m in chat)

    def score_batch(
        self, prompts: Sequence[Sequence[Message]], completions: Sequence[str]
    ) -> list[float]:
        import torch

        texts = [self.text(p, c) for p, c in zip(prompts, completions, strict=True)]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                logits: torch.Tensor = self.model(**encoded).logits
            for i, value in zip(idx, logits[:, 0].float().tolist(), strict=True):
                out[i] = float(value)
        return out

    def __call__(self, prompt: Sequence[Message], completion: str) -> float:
        return self.score_batch([prompt], [completion])[0]
