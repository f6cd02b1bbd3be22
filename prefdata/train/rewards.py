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
  output folder, or an rlhf run's) on prompt + completion. Options: `path`, `batch_size`,
  `max_length`, `device`.
- any function by import path, `name: mypkg.rewards:length_penalty` (`CustomReward`): called
  as TRL calls a reward function, with `options` as keyword arguments; logged, weighted and
  monitored like the built-in ones.

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

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefdata.errors import InputError
from prefdata.train.answer_match import answers_match
from prefdata.train.answers import extract_answer
from prefdata.train.recipe import RecipeError
from prefdata.train.rewards_base import (
    NamedReward,
    RewardFunc,
    column_values,
    completion_text,
)
from prefdata.train.rewards_models import JudgeReward, RewardModelReward

__all__ = [
    "DEFAULT_FORMAT",
    "REWARDS",
    "AccuracyReward",
    "CustomReward",
    "FormatReward",
    "JudgeReward",
    "RewardFunc",
    "RewardModelReward",
    "Rewards",
    "build_reward",
    "build_rewards",
    "completion_text",
]


# ---- accuracy ----------------------------------------------------------------------------


class AccuracyReward(NamedReward):
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
        references = column_values(kwargs, self.answer_column, len(completions))
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


class FormatReward(NamedReward):
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


# ---- recipes -----------------------------------------------------------------------------

REWARDS: dict[str, type[NamedReward]] = {
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
    if isinstance(name, str) and ":" in name:
        return _custom_reward(name, spec, where), _weight(spec, where)
    if name not in REWARDS:
        raise RecipeError(
            f"unknown reward '{name}'; choose one of {', '.join(REWARDS)}, or a function by "
            "import path (mypkg.rewards:length_penalty)",
            column=f"{where}.name",
        )
    weight = _weight(spec, where)
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
    return cls(**options), weight


def _weight(spec: Mapping[str, Any], where: str) -> float:
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise RecipeError(f"a reward weight is a finite number, got {weight!r}", column=where)
    return float(weight)


class CustomReward(NamedReward):
    """A reward function given by import path (`mypkg.rewards:length_penalty`), called as TRL
    calls any reward function (`prompts=`, `completions=`, the data's columns, TRL's extras),
    with the entry's `options` as keyword arguments. A class at the path is instantiated with
    the options and then called. Named after the function (TRL logs `rewards/<name>/mean`),
    so it is logged, weighted and watched by the monitor as the built-in rewards are. Its
    scores must be one float (or None) per completion."""

    def __init__(self, path: str, options: Mapping[str, Any], where: str) -> None:
        import importlib

        module_name, _, attribute = path.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as err:
            raise RecipeError(
                f"cannot import the reward function {path}: {err}", column=f"{where}.name"
            ) from None
        options = dict(options)
        if inspect.isclass(target):
            target = target(**options)
            options = {}
        if not callable(target):
            raise RecipeError(f"{path} is not callable", column=f"{where}.name")
        self.func = target
        self.options = options
        self.path = path
        self.__name__ = attribute.rsplit(".", 1)[-1]

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        scores = list(self.func(prompts=prompts, completions=completions, **kwargs, **self.options))
        if len(scores) != len(completions):
            raise InputError(
                f"the reward function {self.path} returned {len(scores)} scores for "
                f"{len(completions)} completions"
            )
        return [None if s is None else float(s) for s in scores]

    def close(self) -> None:
        closer = getattr(self.func, "close", None)
        if callable(closer):
            closer()


def _custom_reward(path: str, spec: Mapping[str, Any], where: str) -> CustomReward:
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise RecipeError("a reward's options are a mapping", column=f"{where}.options")
    return CustomReward(path, options, where)


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
