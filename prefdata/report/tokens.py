"""Token lengths as TRL's DPO / KTO trainers see them, for the report's length section.

TRL 1.x tokenizes a conversational example as three chat-template renders: the prompt with
the generation prompt, prompt + chosen, prompt + rejected (each rendered, then tokenized
without extra special tokens, as `apply_chat_template(tokenize=True)` does). The prompt part
is the common prefix of the prompt render and each full render; the completion is the rest;
the training sequence is the full render, cut at `max_length` (keep_start), and an example
whose prompt alone reaches `max_length` is dropped. We compute the same numbers, rendering
in batches and tokenizing with the fast tokenizer in chunks.

A tokenizer without a chat template gets TRL's plain-text path: the prompt is its messages'
contents joined by blank lines, tokenized with the tokenizer's own special tokens, and the
completion is appended to it as text with the eos token (TRL adds eos to plain completions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from prefdata.errors import InputError, MissingExtraError
from prefdata.quality.token_integrity import chat_messages, render_chats

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IntArray = npt.NDArray[np.int64]
_CHUNK = 2048
_INSTALL = "pip install 'prefdata[models]'"


@dataclass(frozen=True)
class Tokenizer:
    """A loaded tokenizer and the name the report shows for it."""

    tokenizer: PreTrainedTokenizerBase
    name: str


def load_tokenizer(spec: str | Path | Tokenizer | Any | None) -> Tokenizer | None:
    """The tokenizer for `spec`: "smollm2" (the embedded model's), a local folder with
    tokenizer files, an already loaded tokenizer (a transformers tokenizer or a
    `Tokenizer`), or None (no token counts).

    Never reaches a model hub: a name that is not "smollm2" must be a local folder.
    """
    if spec is None or isinstance(spec, Tokenizer):
        return spec
    if not isinstance(spec, (str, Path)):
        return Tokenizer(spec, type(spec).__name__)
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingExtraError(f"token counts need transformers: {_INSTALL}") from None
    from prefdata.models import EMBEDDED_MODEL, EMBEDDED_MODEL_ID, embedded_model_path

    if str(spec) == EMBEDDED_MODEL:
        folder = embedded_model_path()
        name = f"{EMBEDDED_MODEL} ({EMBEDDED_MODEL_ID})"
    else:
        folder = Path(spec).expanduser()
        name = str(spec)
        if not folder.is_dir():
            raise InputError(
                f"no tokenizer folder here; pass '{EMBEDDED_MODEL}' or a local folder with "
                "tokenizer files (there is no model hub)",
                source=spec,
            )
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"could not load a tokenizer: {err}", source=folder) from None
    return Tokenizer(tok, name)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return int(np.argmax(np.asarray(a[:n]) != np.asarray(b[:n])))


def _encode(tok: PreTrainedTokenizerBase, texts: list[str], special: bool) -> list[list[int]]:
    out: list[list[int]] = []
    for start in range(0, len(texts), _CHUNK):
        batch = tok(texts[start : start + _CHUNK], add_special_tokens=special)
        out.extend(batch["input_ids"])
    return out


def token_lengths(table: pl.DataFrame, tokenizer: Tokenizer) -> dict[str, IntArray]:
    """Per-row token counts of a pairs table (`prompt` as chat messages, `chosen`,
    `rejected`) or a kto table (`prompt`, `completion`).

    Output arrays (one entry per row): `prompt` (TRL's prompt part), one per completion
    column (`chosen`, `rejected` or `completion`: TRL's completion part), and `sequence_<col>`
    (the whole training sequence, prompt + completion).
    """
    tok = tokenizer.tokenizer
    sides = [c for c in ("chosen", "rejected", "completion") if c in table.columns]
    prompts = [chat_messages(p) for p in table["prompt"].to_list()]
    completions = {c: [x or "" for x in table[c].to_list()] for c in sides}
    if not prompts:
        empty = np.zeros(0, dtype=np.int64)
        return {
            "prompt": empty,
            **{c: empty for c in sides},
            **{f"sequence_{c}": empty for c in sides},
        }
    if getattr(tok, "chat_template", None):
        prompt_ids = _encode(tok, render_chats(tok, prompts, add_generation_prompt=True), False)
        full_ids = {
            c: _encode(
                tok,
                render_chats(
                    tok,
                    [
                        [*p, {"role": "assistant", "content": x}]
                        for p, x in zip(prompts, completions[c], strict=True)
                    ],
                ),
                False,
            )
            for c in sides
        }
    else:
        eos = tok.eos_token or ""
        plain = ["\n\n".join(m["content"] for m in p) for p in prompts]
        prompt_ids = _encode(tok, plain, True)
        full_ids = {
            c: _encode(
                tok,
                [
                    p + (x if x.endswith(eos) else x + eos)
                    for p, x in zip(plain, completions[c], strict=True)
                ],
                True,
            )
            for c in sides
        }
    prompt_len = np.array(
        [min(_common_prefix(p, full_ids[c][i]) for c in sides) for i, p in enumerate(prompt_ids)],
        dtype=np.int64,
    )
    out: dict[str, IntArray] = {"prompt": prompt_len}
    for c in sides:
        seq = np.array([len(x) for x in full_ids[c]], dtype=np.int64)
        out[c] = seq - prompt_len
        out[f"sequence_{c}"] = seq
    return out
