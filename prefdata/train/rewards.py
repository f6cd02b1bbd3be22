"""Reward functions for GRPO (and later RLOO), in TRL's reward-function signature.

TRL calls each one as `fn(prompts=..., completions=..., completion_ids=..., **columns)` once
per generation batch, where `columns` are the data set's other columns (here `answer` and
`prompt_id`), one value per completion, plus TRL's `trainer_state`, `log_extra`, `log_metric`.
Prompts are chat messages and each completion a list with one assistant message (plain strings
work too). Each function returns one float per completion, or None where it cannot score
(TRL leaves those out of that function's mean and, when every function says None, of the
advantage).

- `accuracy`: 1.0 when the completion's final answer equals the row's `answer`, else 0.0;
  None without a reference answer. Options: `answer_column` ("answer"),
  `fallback_last_number` (true).
- `format`: 1.0 when the completion matches `pattern` (default: one `<think>...</think>`
  block, then a non-empty answer), else 0.0; with `partial: true` the share of `parts` found.
  Options: `pattern`, `parts`, `partial` (false).
- `judge`: an LLM judge's 1-9 rating of the completion against a pointwise rubric, as
  (rating - 1) / 8 in [0, 1]; None when the judge gives no valid rating (or the call fails;
  logged as the share `judge/unscored`). Options: `judge`
  ("local:smollm2"), `rubric` ("helpfulness"; "math" for problems with reference answers),
  `reference_column` ("answer"), `cache`, `client_options`, `max_new_tokens`.
- `reward_model`: the score of a reward model trained with `prefdata train reward` (its
  output folder) on prompt + completion. Options: `path`, `batch_size`, `max_length`,
  `device`.

A recipe lists them under `prefdata.rewards` as `{name, weight, options}`; `build_rewards`
turns that list into the functions and TRL's `reward_weights`.

Answer checking (`accuracy`) lives in prefdata.train.answers. Partial credit of `format`: each
of its `parts` (regular expressions searched in the completion; for the default pattern: it
opens with `<think>`, has exactly one think block in order, and text follows `</think>`)
counts 1/len(parts); a full `pattern` match always scores 1.0.

The judge is pointwise, and rates exactly as prefdata.label.pointwise does (the same
rubrics, requests and parsing): one request per completion, shown the conversation, the
reference answer when the row has one, and the completion. The local backend reads the rating
from the next-token probabilities of "1".."9" (their expected value, no generation); anthropic
/ openai answer with the `record_score` tool. Every call goes through prefdata's call cache (a
repeated completion is never judged twice), on one event loop kept for the judge's lifetime
(the API clients' connections belong to the loop they started on).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import math
import re
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prefdata.errors import InputError
from prefdata.train.answers import answers_match, extract_answer
from prefdata.train.common import RecipeError

__all__ = [
    "DEFAULT_FORMAT",
    "REWARDS",
    "AccuracyReward",
    "FormatReward",
    "JudgeReward",
    "RewardFunc",
    "RewardModelReward",
    "Rewards",
    "build_reward",
    "build_rewards",
    "completion_text",
]

RewardFunc = Callable[..., list[float | None]]
T = TypeVar("T")


def completion_text(completion: Any) -> str:
    """The text of a completion: a string as is, a message list's assistant contents joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    parts: list[str] = []
    for message in completion or []:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, list):  # content blocks
            parts.extend(str(b.get("text", "")) for b in content if isinstance(b, Mapping))
        elif content is not None:
            parts.append(str(content))
    return "".join(parts)


def _messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def _column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise InputError(f"{len(values)} values in column '{name}' for {n} completions")
    return list(values)


class _Named:
    """TRL names a reward function by its `__name__` (metrics `rewards/<name>/mean`)."""

    __name__: str


# ---- accuracy ----------------------------------------------------------------------------


class AccuracyReward(_Named):
    """1.0 when the completion's final answer equals the row's reference answer, else 0.0.

    Input columns: `answer` (or `answer_column`): the reference answer (GSM8K "18", MATH-500
    LaTeX). Rows without one score None. The answer is extracted and compared as
    prefdata.train.answers describes; `fallback_last_number` lets a completion's last number
    count as its answer when it states none explicitly. Logs `<name>/answer_found` (share of
    completions with an extractable answer) where TRL offers `log_metric`.
    """

    def __init__(self, *, answer_column: str = "answer", fallback_last_number: bool = True) -> None:
        self.__name__ = "accuracy"
        self.answer_column = answer_column
        self.fallback_last_number = fallback_last_number

    def score(self, completion: Any, reference: str | None) -> float | None:
        """One completion against one reference answer."""
        if reference is None or not str(reference).strip():
            return None
        found = extract_answer(
            completion_text(completion), fallback_last_number=self.fallback_last_number
        )
        return 1.0 if answers_match(found, str(reference)) else 0.0

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        references = _column(kwargs, self.answer_column, len(completions))
        if all(r is None for r in references) and self.answer_column not in kwargs:
            raise InputError(
                f"the accuracy reward needs a reference answer column '{self.answer_column}' "
                "(GSM8K / MATH-500 prompts from `prefdata import gsm8k|math500` have `answer`)",
                column=self.answer_column,
            )
        texts = [completion_text(c) for c in completions]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and texts:
            found = [
                extract_answer(t, fallback_last_number=self.fallback_last_number) is not None
                for t in texts
            ]
            log_metric(f"{self.__name__}/answer_found", sum(found) / len(found))
        return [self.score(t, r) for t, r in zip(texts, references, strict=True)]


# ---- format ------------------------------------------------------------------------------

_NO_TAG = r"(?:(?!</?think>).)"
DEFAULT_FORMAT = rf"^\s*<think>{_NO_TAG}+</think>{_NO_TAG}*\S{_NO_TAG}*$"
"""One `<think>...</think>` block first, then a non-empty answer, no other think tags."""
_DEFAULT_PARTS = (
    r"^\s*<think>",
    rf"^{_NO_TAG}*<think>{_NO_TAG}*</think>{_NO_TAG}*$",
    r"</think>\s*\S",
)


class FormatReward(_Named):
    """1.0 when the completion matches `pattern` (Python regex, whole text, DOTALL), else 0.0.

    `partial`: a non-matching completion scores the share of `parts` (regexes searched in
    the text) it contains instead of 0 (for the default pattern: opens with <think>, one think
    block in order, text after </think>); a custom pattern with `partial` needs `parts`.
    """

    def __init__(
        self,
        *,
        pattern: str = DEFAULT_FORMAT,
        parts: Sequence[str] | None = None,
        partial: bool = False,
    ) -> None:
        self.__name__ = "format"
        try:
            self.pattern = re.compile(pattern, re.DOTALL)
            if parts is None and pattern == DEFAULT_FORMAT:
                parts = _DEFAULT_PARTS
            self.parts = [re.compile(p, re.DOTALL) for p in parts or ()]
        except re.error as err:
            raise RecipeError(f"format reward: not a valid regular expression: {err}") from None
        if partial and not self.parts:
            raise RecipeError(
                "format reward: partial credit with a custom pattern needs `parts` (the regexes "
                "that each earn a share)"
            )
        self.partial = partial

    def score(self, completion: Any) -> float:
        text = completion_text(completion)
        if self.pattern.fullmatch(text):
            return 1.0
        if not self.partial:
            return 0.0
        return sum(1 for p in self.parts if p.search(text)) / len(self.parts)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        return [self.score(c) for c in completions]


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


class JudgeReward(_Named):
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
        from prefdata.label.judge import parse_judge
        from prefdata.label.pointwise import load_pointwise_rubric

        self.__name__ = "judge"
        self.backend, self.model = parse_judge(judge)
        self.rubric = load_pointwise_rubric(rubric)
        self.reference_column = reference_column
        self.cache_path = cache
        self.client_options = dict(client_options or {})
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
        from prefdata.label.pointwise import build_score_request

        messages = _messages(prompt)
        text = completion_text(completion)
        item_id = hashlib.sha256(json.dumps([messages, text]).encode()).hexdigest()[:16]
        item = {"item_id": item_id, "prompt": messages, "completion": text, "reference": reference}
        return build_score_request(
            self.rubric, item, backend=self.backend, max_new_tokens=self.max_new_tokens
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
        from prefdata.label.pointwise import read_score
        from prefdata.llm.cache import complete_cached

        self._ensure()
        assert self._loop is not None
        requests = [
            self.request(p, c, r) for p, c, r in zip(prompts, completions, references, strict=True)
        ]
        responses = self._loop.run(complete_cached(self._client, requests, self._cache))
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
        references = _column(kwargs, self.reference_column, len(completions))
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


class RewardModelReward(_Named):
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
        self.__name__ = "reward_model"
        folder = Path(path)
        if (
            not (folder / "config.json").is_file()
            and not (folder / "adapter_config.json").is_file()
        ):
            raise InputError(
                "not a reward model folder (no config.json or adapter_config.json)", source=folder
            )
        from prefdata.train.common import read_train_report

        report = read_train_report(folder)
        if report is not None and report.get("method") != "reward":
            raise InputError(
                f"this folder holds a '{report.get('method')}' training output, not a reward "
                "model (train one with `prefdata train reward`)",
                source=folder,
            )
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
        from peft import PeftModel

        from prefdata.train.common import load_reward_model, load_tokenizer, model_path
        from prefdata.train.evaluation import _describe

        folder = Path(self.path)
        info = _describe(folder, None)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = (
            "bfloat16"
            if device.startswith("cuda") and torch.cuda.is_bf16_supported()
            else "float32"
        )
        if info["adapter"]:
            base = load_reward_model(model_path(info["base"]), dtype=dtype)
            model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
        else:
            model = load_reward_model(str(folder), dtype=dtype)
        tokenizer = load_tokenizer(str(folder))
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        if self.max_length is None:
            self.max_length = info.get("max_length")
        self._model, self._tokenizer = model, tokenizer

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        from prefdata.train.evaluation import _reward_scores

        self._load()
        scores = _reward_scores(
            self._model,
            self._tokenizer,
            [_messages(p) for p in prompts],
            [completion_text(c) for c in completions],
            batch_size=self.batch_size,
            max_length=self.max_length,
        )
        return [float(s) for s in scores]


# ---- recipes -----------------------------------------------------------------------------

REWARDS: dict[str, type[_Named]] = {
    "accuracy": AccuracyReward,
    "format": FormatReward,
    "judge": JudgeReward,
    "reward_model": RewardModelReward,
}
"""Reward name (as a recipe writes it) -> its class."""
_SPEC_KEYS = ("name", "weight", "options")


@dataclass
class Rewards:
    """The reward functions a recipe asks for, their weights and names (TRL's order)."""

    funcs: list[RewardFunc] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    specs: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> list[dict[str, Any]]:
        """name, weight and options of each reward (for the training report)."""
        return [
            {"name": n, "weight": w, "options": s.get("options", {})}
            for n, w, s in zip(self.names, self.weights, self.specs, strict=True)
        ]

    def close(self) -> None:
        for func in self.funcs:
            close = getattr(func, "close", None)
            if callable(close):
                close()


def build_reward(
    spec: Mapping[str, Any] | str, *, where: str = "prefdata.rewards"
) -> tuple[Any, float]:
    """One reward function and its weight from `{name, weight, options}`.

    Raises RecipeError naming the key for an unknown name, key or option, or a bad weight.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise RecipeError(
            f"each reward is a mapping {{name, weight, options}}, got {spec!r}", column=where
        )
    unknown = [k for k in spec if k not in _SPEC_KEYS]
    if unknown:
        raise RecipeError(
            f"unknown key '{unknown[0]}' in a reward (keys: {', '.join(_SPEC_KEYS)})",
            column=f"{where}.{unknown[0]}",
        )
    name = spec.get("name")
    if name not in REWARDS:
        raise RecipeError(
            f"unknown reward '{name}'; choose one of {', '.join(REWARDS)}", column=f"{where}.name"
        )
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise RecipeError(f"a reward weight is a finite number, got {weight!r}", column=where)
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise RecipeError("a reward's options are a mapping", column=f"{where}.options")
    cls = REWARDS[str(name)]
    try:
        inspect.signature(cls).bind(**options)
    except TypeError:
        accepted = [p for p in inspect.signature(cls).parameters]
        raise RecipeError(
            f"reward '{name}' takes the options {', '.join(accepted)}; got {', '.join(options)}",
            column=f"{where}.options",
        ) from None
    return cls(**options), float(weight)


def build_rewards(specs: Sequence[Mapping[str, Any] | str]) -> Rewards:
    """The reward functions and weights for a recipe's `prefdata.rewards` list.

    Two rewards with the same name get suffixes (`judge`, `judge_2`) so TRL's per-function
    metrics stay apart.
    """
    if isinstance(specs, str | Mapping) or not specs:
        raise RecipeError(
            "prefdata.rewards is a non-empty list of {name, weight, options}, e.g. "
            "[{name: accuracy}, {name: format, weight: 0.2}]",
            column="prefdata.rewards",
        )
    out = Rewards()
    for i, spec in enumerate(specs):
        func, weight = build_reward(spec, where=f"prefdata.rewards[{i}]")
        name = func.__name__
        count = sum(1 for n in out.names if n == name or n.startswith(f"{name}_"))
        if count:
            func.__name__ = f"{name}_{count + 1}"
        out.funcs.append(func)
        out.weights.append(weight)
        out.names.append(func.__name__)
        out.specs.append(dict(spec) if isinstance(spec, Mapping) else {"name": spec})
    return out
