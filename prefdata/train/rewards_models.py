"""The rewards that ask a model: an LLM judge's pointwise rating (`JudgeReward`) and a reward
model's score (`RewardModelReward`); prefdata.train.rewards documents both and builds them
from a recipe."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prefdata.train.rewards_base import (
    NamedReward,
    chat_messages,
    column_values,
    completion_text,
)

__all__ = ["JudgeReward", "RewardModelReward"]

T = TypeVar("T")

# ---- judge -------------------------------------------------------------------------------


class _LoopThread:
    """One event loop in a daemon thread, for a client that must keep its loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


_KEPT_ERRORS = 5  # judge error messages kept as examples (JudgeReward.errors)


class JudgeReward(NamedReward):
    """An LLM judge's pointwise rating of each completion, as a reward in [0, 1].

    The rating is prefdata.label.pointwise's: the judge sees the conversation, the reference
    answer when the row has one, and the completion, and rates it 1-9 against `rubric`; the
    reward is (rating - 1) / 8 (local backend: the expected rating from the next-token
    probabilities of "1".."9"; anthropic / openai: the `record_score` tool). None when the
    reply has no valid rating.

    `judge`: "backend:model" ("local:smollm2", "local:/path/to/model", "anthropic:MODEL",
    "openai:MODEL"; a bare name is local). `rubric`: a built-in name ("helpfulness", "math",
    ...; its pointwise version) or a pointwise template file. `reference_column`: the column
    with a reference answer, shown when present ("answer"). `cache`: the call cache file
    (default prefdata's), or false for none. `client_options`: passed to the backend
    (prefdata.llm.factory.make_client), e.g. {"base_url": ..., "device": "cuda"}.

    Completions left unscored (a failed call, a reply without a valid rating) are counted in
    `unscored` (the first few messages in `errors`), and each call logs `<name>/unscored`
    (their share of its completions) where TRL offers `log_metric`.
    """

    def __init__(
        self,
        *,
        judge: str = "local:smollm2",
        rubric: str = "helpfulness",
        reference_column: str = "answer",
        cache: str | bool | None = None,
        client_options: Mapping[str, Any] | None = None,
        max_new_tokens: int = 300,
    ) -> None:
        from prefdata.label.rubric import load_pointwise_rubric
        from prefdata.llm.factory import parse_spec

        self.__name__ = "judge"
        self.backend, self.model, endpoint = parse_spec(judge)
        self.rubric = load_pointwise_rubric(rubric)
        self.reference_column = reference_column
        self.cache_path = cache
        self.client_options = dict(client_options or {})
        if endpoint is not None:  # "openai:MODEL@http://host:8000/v1"
            self.client_options["base_url"] = endpoint
        self.max_new_tokens = int(max_new_tokens)
        self._client: Any = None
        self._cache: Any = None
        self._loop: _LoopThread | None = None
        self.calls = 0
        self.unscored = 0
        self.errors: list[str] = []

    def __getstate__(self) -> dict[str, Any]:
        # The client, cache connection and loop thread are rebuilt on first use after pickling.
        state = dict(self.__dict__)
        state.update(_client=None, _cache=None, _loop=None)
        return state

    def request(self, prompt: Any, completion: Any, reference: str | None = None) -> Any:
        """The judge request for one completion (a prefdata.llm.base.Request)."""
        from prefdata.label.requests import build_score_request
        from prefdata.llm.factory import capabilities

        messages = chat_messages(prompt)
        text = completion_text(completion)
        item_id = hashlib.sha256(json.dumps([messages, text]).encode()).hexdigest()[:16]
        item = {"item_id": item_id, "prompt": messages, "completion": text, "reference": reference}
        return build_score_request(
            self.rubric,
            item,
            capabilities=capabilities(self.backend),
            max_new_tokens=self.max_new_tokens,
        )

    def _ensure(self) -> None:
        if self._loop is not None:
            return
        from prefdata.llm.cache import CallCache
        from prefdata.llm.factory import make_client

        self._loop = _LoopThread()
        if self.cache_path is False:
            self._cache = CallCache(enabled=False)
        elif isinstance(self.cache_path, str):
            self._cache = CallCache(Path(self.cache_path))
        else:
            self._cache = CallCache()

        async def build() -> Any:
            return make_client(self.backend, self.model, **self.client_options)

        self._client = self._loop.run(build())

    def scores(
        self, prompts: Sequence[Any], completions: Sequence[Any], references: Sequence[Any]
    ) -> list[float | None]:
        """The judge's score in [0, 1] of each completion (None where it gave none)."""
        from prefdata.label.verdicts import read_score, valid_score
        from prefdata.llm.cache import complete_cached

        self._ensure()
        assert self._loop is not None
        requests = [
            self.request(p, c, r) for p, c, r in zip(prompts, completions, references, strict=True)
        ]
        # Only valid ratings are cached: an invalid one is asked again next time.
        responses = self._loop.run(
            complete_cached(self._client, requests, self._cache, accept=valid_score)
        )
        self.calls += sum(1 for r in responses if not r.cached)
        out: list[float | None] = []
        for response in responses:
            score, _, error = read_score(response)
            if error is not None:
                # A failed call or a reply without a valid rating: the row drops out of the
                # judge's mean, so count it or a broken judge looks like a quiet one.
                self.unscored += 1
                if len(self.errors) < _KEPT_ERRORS:
                    self.errors.append(error)
            out.append(score)
        return out

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        references = column_values(kwargs, self.reference_column, len(completions))
        scores = self.scores(prompts, completions, references)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and scores:
            unscored = sum(1 for s in scores if s is None)
            log_metric(f"{self.__name__}/unscored", unscored / len(scores))
        return scores

    def close(self) -> None:
        """Release the client, the cache connection and the loop thread."""
        if self._loop is None:
            return
        if self._client is not None:
            self._loop.run(self._client.aclose())
        if self._cache is not None:
            self._cache.close()
        self._loop.close()
        self._client = self._cache = self._loop = None


# ---- reward model ------------------------------------------------------------------------


class RewardModelReward(NamedReward):
    """The score of a prefdata reward model (the output folder of `prefdata train reward`,
    full weights or a LoRA adapter over its base) on each prompt + completion.

    Scored exactly as `prefdata train eval` scores reward models (the chat template of prompt
    and completion, the score head's output). `device`: "auto" (CUDA when available) or a torch
    device; bf16 on GPUs that support it. `max_length`: tokens kept (default: the training
    report's max_length). The model loads on the first call.
    """

    def __init__(
        self,
        *,
        path: str,
        batch_size: int = 8,
        max_length: int | None = None,
        device: str = "auto",
    ) -> None:
        from prefdata.models.folders import inspect_model

        self.__name__ = "reward_model"
        # Checked now, so a policy given as the reward model fails before any training.
        found = inspect_model(path, want="reward_model", what="the reward_model reward")
        folder = Path(found.path)
        self.path = str(folder)
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_model=None, _tokenizer=None)
        return state

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch

        from prefdata.models.loader import load_reward_model
        from prefdata.train.evaluation import describe_model

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = (
            "bfloat16"
            if device.startswith("cuda") and torch.cuda.is_bf16_supported()
            else "float32"
        )
        model, tokenizer = load_reward_model(
            self.path, device=device, dtype=dtype, what="the reward_model reward"
        )
        if self.max_length is None:
            self.max_length = describe_model(Path(self.path), None).get("max_length")
        self._model, self._tokenizer = model, tokenizer

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        from prefdata.train.evaluation import reward_scores

        self._load()
        scores = reward_scores(
            self._model,
            self._tokenizer,
            [chat_messages(p) for p in prompts],
            [completion_text(c) for c in completions],
            batch_size=self.batch_size,
            max_length=self.max_length,
        )
        return [float(s) for s in scores]
