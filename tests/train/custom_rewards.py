"""Reward functions given to recipes by import path in the tests
(`prefdata.rewards: [{name: "tests.train.custom_rewards:length_only"}]`), as a user's own
module would be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefdata.train.rewards_base import completion_text


def length_only(
    prompts: Sequence[Any], completions: Sequence[Any], *, scale: float = 100.0, **kwargs: Any
) -> list[float]:
    """Pays for characters and nothing else: the reward a length-hacking policy exploits."""
    return [len(completion_text(c)) / scale for c in completions]


def always_zero(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """The same reward for every completion: no group has a spread, so no advantage is
    non-zero and nothing can be learned."""
    return [0.0 for _ in completions]


def one_score(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """A broken reward: one score whatever the number of completions."""
    return [0.0]
