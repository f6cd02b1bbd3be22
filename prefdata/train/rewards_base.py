"""What every reward function shares: TRL's reward-function shape, the text of a completion,
the chat messages of a prompt, a data column's values (prefdata.train.rewards lists the
rewards)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prefdata.errors import InputError

__all__ = ["NamedReward", "RewardFunc", "chat_messages", "column_values", "completion_text"]

RewardFunc = Callable[..., list[float | None]]


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


def chat_messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(m) for m in prompt]


def column_values(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise InputError(f"{len(values)} values in column '{name}' for {n} completions")
    return list(values)


class NamedReward:
    """TRL names a reward function by its `__name__` (metrics `rewards/<name>/mean`)."""

    __name__: str
