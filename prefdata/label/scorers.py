"""Scorers: what scores a completion to a prompt (higher is better), for programmatic labels
(`prefdata.label.programmatic`, `scorer=`) and synthetic pairs (`prefdata.label.synthetic`):
the two protocols, and the reward-model scorer (a local reward model folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prefdata.llm.base import Message

if TYPE_CHECKING:
    import torch

__all__ = ["BatchScorer", "RewardModelScorer", "Scorer"]


class Scorer(Protocol):
    """Scores one completion to one prompt (chat messages); higher is better."""

    def __call__(self, prompt: Sequence[Message], completion: str) -> float: ...


@runtime_checkable
class BatchScorer(Protocol):
    """A scorer that is faster on many items at once (a model); synthetic_pairs prefers it."""

    def score_batch(
        self, prompts: Sequence[Sequence[Message]], completions: Sequence[str]
    ) -> list[float]: ...


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
