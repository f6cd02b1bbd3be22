"""The requests a judge is sent: one pair in one order, or one candidate alone.

What the request asks for depends on what the judge's backend can do (its `Capabilities`),
never on its name: a backend that reads next-token probabilities gets the rubric's
`choices` and is asked for one token; any other gets the rubric's tool (forced tool use or
JSON output). Judging is a reading, not a sample: greedy where the backend takes sampling
parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefdata.label.rubric import Rubric
from prefdata.llm.base import Capabilities, Message, Params, Request

__all__ = [
    "build_request",
    "build_score_request",
    "reading_request",
    "reference_block",
    "render_conversation",
]


def render_conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt as the judge sees it: a lone user message as is, a dialogue with roles."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return str(messages[0]["content"])
    return "\n\n".join(f"{str(m['role']).capitalize()}: {m['content']}" for m in messages)


def reference_block(item: Mapping[str, Any]) -> str:
    """The rubric's `{reference_block}`: the reference answer when the item has one."""
    reference = item.get("reference")
    return f"\n[Reference answer]\n{reference}\n" if reference else ""


def reading_request(
    user: str,
    rubric: Rubric,
    *,
    capabilities: Capabilities,
    custom_id: str,
    max_new_tokens: int,
) -> Request:
    """A judge's request for the filled-in user template `user`: next-token choices for a
    backend that reads them, the rubric's tool for the others."""
    reading = rubric.reading
    choices = capabilities.reads_choice_probs
    ask = reading.choice_ask if choices else reading.tool_ask
    messages: tuple[Message, ...] = ({"role": "user", "content": f"{user}\n{ask}"},)
    return Request(
        messages=messages,
        # A backend that takes no sampling parameters (the Anthropic API) gets the defaults:
        # asking for temperature 0 would only log a warning there.
        params=Params(temperature=0.0, max_new_tokens=max_new_tokens)
        if capabilities.takes_sampling_params
        else Params(max_new_tokens=max_new_tokens),
        system=rubric.system or None,
        tool=None if choices else reading.tool,
        choices=reading.choices if choices else (),
        template_version=rubric.version,
        custom_id=custom_id,
    )


def build_request(
    rubric: Rubric,
    item: Mapping[str, Any],
    order: str,
    *,
    capabilities: Capabilities,
    max_new_tokens: int = 400,
) -> Request:
    """The request for one pair (`item`: `item_id`, `prompt` messages, sides `a`, `b`,
    optional `reference`) in one order ("ab": side a shown first as Response A)."""
    first, second = (item["a"], item["b"]) if order == "ab" else (item["b"], item["a"])
    user = rubric.user.format(
        conversation=render_conversation(item["prompt"]),
        first=first,
        second=second,
        reference_block=reference_block(item),
    )
    return reading_request(
        user,
        rubric,
        capabilities=capabilities,
        custom_id=f"{item['item_id']}-{order}",
        max_new_tokens=max_new_tokens,
    )


def build_score_request(
    rubric: Rubric,
    item: Mapping[str, Any],
    *,
    capabilities: Capabilities,
    max_new_tokens: int = 400,
) -> Request:
    """The request that rates one candidate (`item`: `item_id`, `prompt` messages,
    `completion`, optional `reference`) with a pointwise rubric."""
    user = rubric.user.format(
        conversation=render_conversation(item["prompt"]),
        response=item["completion"],
        reference_block=reference_block(item),
    )
    return reading_request(
        user,
        rubric,
        capabilities=capabilities,
        custom_id=f"{item['item_id']}-score",
        max_new_tokens=max_new_tokens,
    )
