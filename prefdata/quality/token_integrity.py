"""Pair integrity at the token level: the pairs a TRL trainer will see as identical, empty or
cut, found before training sees them.

What TRL 1.16 does with a conversational pair (trl/trainer/dpo_trainer.py, kto_trainer.py,
reward_trainer.py; `_prepare_dataset` and the data collators):

- DPO: three chat-template renders, each tokenized without extra special tokens: the prompt
  with the generation prompt, prompt + chosen, prompt + rejected. The prompt part is the
  shorter of the two common prefixes (prompt ids vs each full render); the training sequence
  of a side is its whole render. With `max_length` and `truncation_mode="keep_start"` a pair
  whose prompt part has `max_length` tokens or more is dropped (no completion token would be
  left), and the collator keeps each sequence's first `max_length` tokens; with "keep_end" it
  keeps the last `max_length` tokens and drops nothing. TRL 1.16 has no `max_prompt_length`:
  a prompt is cut only by that one budget.
- KTO: the pair becomes two rows (chosen desirable, rejected undesirable), each with its own
  prompt part; a row whose prompt part reaches `max_length` is dropped; sequences keep their
  first `max_length` tokens (KTO has no truncation mode).
- Reward: prompt + chosen and prompt + rejected rendered without the generation prompt; a pair
  with either side longer than `max_length` is dropped, nothing is cut.

The flags (one issue row per pair and flag, every one an issue; `position` and `cut` columns
name the token positions, 0-based, in the rendered sequence):

- `prompt_fills_context`: TRL drops the pair because its prompt part alone reaches
  `max_length` (DPO keep_start, KTO, reward). No other flag is set on a pair TRL drops.
- `dropped_over_length` (reward only): TRL's reward trainer drops the pair because a side is
  longer than `max_length` (the prompt alone fits).
- `identical_after_truncation`: the token sequences the trainer sees for chosen and rejected
  are equal, so the pair has zero gradient (DPO's loss stays at ln 2): the cut removed every
  difference, the template erased it, or the texts are the same.
- `difference_truncated`: the sides' renders differ, but the first differing token lies beyond
  the cut: keep_start (and KTO), at or past `max_length`; keep_end, before the kept window of a
  side (that side is trained without its prompt and without the point where the sides part).
- `empty_after_truncation`: a side keeps no token of its response inside the window (only the
  template's closing tokens, such as `<|im_end|>`, or nothing): an empty response, or a cut
  right after the prompt.
- `template_collapse`: the sides differ as text but their renders are identical token for token
  (a template that trims whitespace, a normalising tokenizer).

A pair is degenerate when it has any flag; `refusal()` turns a share of degenerate pairs above a
limit into the one line `prefdata train` refuses with.

Speed: renders in batches; the fast tokenizer sees each shared head (everything before the last
special token of the prompt render, e.g. the `<|im_start|>` of the assistant turn) once instead
of three times. A special token is cut out of the text before any other tokenization step, so
head + tail tokenize exactly as the whole; that is checked on a few whole renders of every
batch, and a mismatch switches the run to whole renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl

from prefdata.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DEGENERATE_FIX",
    "FLAGS",
    "METHODS",
    "Budget",
    "chat_messages",
    "degenerate_ids",
    "integrity_issues",
    "load_check_tokenizer",
    "pair_token_integrity",
    "refusal",
    "render_chats",
]

Method = Literal["dpo", "kto", "reward"]
TruncationMode = Literal["keep_start", "keep_end"]
METHODS: tuple[str, ...] = ("dpo", "kto", "reward")
TRUNCATION_MODES: tuple[str, ...] = ("keep_start", "keep_end")
FLAGS: tuple[str, ...] = (
    "prompt_fills_context",
    "dropped_over_length",
    "identical_after_truncation",
    "difference_truncated",
    "empty_after_truncation",
    "template_collapse",
)
DEGENERATE_FIX: dict[str, str] = {
    "prompt_fills_context": "raise max_length",
    "dropped_over_length": "raise max_length",
    "identical_after_truncation": "raise max_length",
    "difference_truncated": "raise max_length, or truncation_mode=keep_start",
    "empty_after_truncation": "drop empty responses",
    "template_collapse": "fix the whitespace of the responses or the chat template",
}
"""What helps against each flag (the refusal line names the ones that apply)."""

BATCH = 1024
_CHECKED_PER_BATCH = 4


@dataclass(frozen=True)
class Budget:
    """What the trainer does with lengths: the method whose rendering is mirrored, its
    `max_length` (None: no limit) and DPO's `truncation_mode` (KTO always keeps the start;
    the reward trainer drops instead of cutting)."""

    method: Method = "dpo"
    max_length: int | None = 1024
    truncation_mode: TruncationMode = "keep_start"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.truncation_mode not in TRUNCATION_MODES:
            raise InputError(
                f"truncation_mode must be keep_start or keep_end; got {self.truncation_mode!r}"
            )
        if self.max_length is not None and self.max_length < 1:
            raise InputError(f"max_length must be at least 1; got {self.max_length}")

    @property
    def mode(self) -> str:
        """The truncation that applies: keep_start, keep_end, drop (reward) or none."""
        if self.max_length is None:
            return "none"
        if self.method == "reward":
            return "drop"
        return self.truncation_mode if self.method == "dpo" else "keep_start"

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "max_length": self.max_length, "truncation": self.mode}


# ---- rendering -----------------------------------------------------------------------------


def chat_messages(prompt: str | Sequence[dict[str, Any]] | None) -> list[dict[str, str]]:
    """A prompt's messages as plain {role, content} dicts (TRL's rows carry only these)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = [{"role": m["role"], "content": m["content"] or ""} for m in prompt or []]
    # An empty prompt (a contract problem other checks count) still renders.
    return messages or [{"role": "user", "content": ""}]


def render_chats(
    tok: PreTrainedTokenizerBase, conversations: list[list[dict[str, str]]], **kwargs: Any
) -> list[str]:
    """Chat-template renders of many conversations; a failure names the row."""
    try:
        return list(tok.apply_chat_template(conversations, tokenize=False, **kwargs))
    except Exception:
        for row, conversation in enumerate(conversations, start=1):
            try:
                tok.apply_chat_template(conversation, tokenize=False, **kwargs)
            except Exception as err:
                raise InputError(
                    f"the tokenizer's chat template fails on this prompt: {err}",
                    row=row,
                    column="prompt",
                ) from None
        raise


def load_check_tokenizer(spec: str | Any) -> tuple[Any, str]:
    """(tokenizer, name) for "smollm2", a local model folder, or a loaded tokenizer. The
    trainers get prefdata's rows as chat messages, so a chat template is required."""
    if not isinstance(spec, str):
        tok = spec
        name = str(getattr(tok, "name_or_path", "") or type(tok).__name__)
    else:
        from prefdata.models.loader import load_tokenizer

        tok = load_tokenizer(spec, need_chat_template=True)
        name = spec
    if not getattr(tok, "chat_template", None):
        raise InputError(
            "the tokenizer has no chat template; TRL renders prefdata's pairs with one",
            source=name,
        )
    return tok, name


def _prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix; slices compare in C, so long equal runs cost little."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1  # a[:lo] == b[:lo] and a[:hi + 1] != b[:hi + 1]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _suffix(a: Sequence[int], b: Sequence[int]) -> int:
    return _prefix(a[::-1], b[::-1])


def _split_tokens(tok: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Special tokens the tokenizer cuts out before anything else (none strips neighbours)."""
    decoder = getattr(tok, "added_tokens_decoder", {}) or {}
    return tuple(
        t.content
        for t in decoder.values()
        if t.special and t.content and not t.lstrip and not t.single_word
    )


def _closing_tokens(tok: PreTrainedTokenizerBase) -> int:
    """How many tokens the template writes after an assistant message's content (e.g.
    `<|im_end|>` and a newline): a completion shorter than this has no content left."""
    prompt = [{"role": "user", "content": "x"}]
    ids = tok(render_chats(tok, [prompt], add_generation_prompt=True), add_special_tokens=False)
    full = tok(
        render_chats(tok, [[*prompt, {"role": "assistant", "content": ""}]]),
        add_special_tokens=False,
    )
    p, f = ids["input_ids"][0], full["input_ids"][0]
    return max(0, len(f) - _prefix(p, f))


class _Measurer:
    """Token numbers of pairs, batch by batch (see the module doc for the head / tail split)."""

    def __init__(self, tok: PreTrainedTokenizerBase) -> None:
        self.tok = tok
        self.specials = _split_tokens(tok)
        self.split = bool(self.specials)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return list(self.tok(texts, add_special_tokens=False)["input_ids"])

    def _cut(self, prompt: str, chosen: str, rejected: str) -> int:
        if not self.split:
            return 0
        k = max(prompt.rfind(s) for s in self.specials)
        if k <= 0 or not (chosen.startswith(prompt[:k]) and rejected.startswith(prompt[:k])):
            return 0
        return k

    def batch(
        self, prompts: list[str], chosen: list[str], rejected: list[str]
    ) -> tuple[list[list[int]], list[list[int]], list[list[int]], list[list[int]]]:
        """(heads, prompt tails, chosen tails, rejected tails) as token ids."""
        cuts = [self._cut(p, c, r) for p, c, r in zip(prompts, chosen, rejected, strict=True)]
        heads = self._encode([p[:k] for p, k in zip(prompts, cuts, strict=True)])
        n = len(prompts)
        tails = self._encode(
            [p[k:] for p, k in zip(prompts, cuts, strict=True)]
            + [c[k:] for c, k in zip(chosen, cuts, strict=True)]
            + [r[k:] for r, k in zip(rejected, cuts, strict=True)]
        )
        tp, tc, tr = tails[:n], tails[n : 2 * n], tails[2 * n :]
        if self.split and n:
            check = list(range(min(n, _CHECKED_PER_BATCH)))
            whole = self._encode([chosen[i] for i in check])
            if any(whole[j] != heads[i] + tc[i] for j, i in enumerate(check)):
                # This tokenizer does not cut at special tokens first: whole renders from now on.
                self.split = False
                return self.batch(prompts, chosen, rejected)
        return heads, tp, tc, tr


_NUMBERS = (
    "prompt_chosen",
    "prompt_rejected",
    "chosen_tokens",
    "rejected_tokens",
    "first_diff",
    "common_suffix",
    "chosen_diff_id",
    "rejected_diff_id",
)


def _pair_numbers(
    head: list[int], tp: list[int], tc: list[int], tr: list[int]
) -> tuple[int, int, int, int, int, int, int, int]:
    h = len(head)
    lc, lr = h + len(tc), h + len(tr)
    pc, pr = h + _prefix(tp, tc), h + _prefix(tp, tr)
    if tc == tr:
        return pc, pr, lc, lr, -1, lc, -1, -1
    d = _prefix(tc, tr)
    cs = _suffix(tc, tr)
    if cs == min(len(tc), len(tr)):
        # One tail ends the other: the shared end runs on into the head.
        longer = tc if len(tc) > len(tr) else tr
        cs += _suffix(head, head + longer[: len(longer) - cs])
    cid = tc[d] if d < len(tc) else -1
    rid = tr[d] if d < len(tr) else -1
    return pc, pr, lc, lr, h + d, cs, cid, rid


def _measure(
    tok: PreTrainedTokenizerBase, pairs: pl.DataFrame, batch_size: int, measurer: _Measurer
) -> dict[str, np.ndarray]:
    values: dict[str, list[int]] = {k: [] for k in _NUMBERS}
    prompts_all = pairs["prompt"].to_list()
    chosen_all = [x or "" for x in pairs["chosen"].to_list()]
    rejected_all = [x or "" for x in pairs["rejected"].to_list()]
    for start in range(0, pairs.height, batch_size):
        stop = start + batch_size
        prompts = [chat_messages(p) for p in prompts_all[start:stop]]
        try:
            texts = render_chats(tok, prompts, add_generation_prompt=True)
            full = {
                side: render_chats(
                    tok,
                    [
                        [*p, {"role": "assistant", "content": x}]
                        for p, x in zip(prompts, xs, strict=True)
                    ],
                )
                for side, xs in (("c", chosen_all[start:stop]), ("r", rejected_all[start:stop]))
            }
        except InputError as err:
            raise InputError(err.detail, row=start + (err.row or 1), column=err.column) from None
        heads, tp, tc, tr = measurer.batch(texts, full["c"], full["r"])
        for i in range(len(prompts)):
            for key, value in zip(
                _NUMBERS, _pair_numbers(heads[i], tp[i], tc[i], tr[i]), strict=True
            ):
                values[key].append(value)
    return {k: np.asarray(v, dtype=np.int64) for k, v in values.items()}


# ---- flags ---------------------------------------------------------------------------------


def _windows(n: dict[str, np.ndarray], budget: Budget) -> dict[str, np.ndarray]:
    """Each side's kept window [start, end) and the prompt part TRL uses for it."""
    L = budget.max_length or 0  # only read where the mode says there is a limit
    out: dict[str, np.ndarray] = {}
    for side in ("chosen", "rejected"):
        length = n[f"{side}_tokens"]
        if budget.method == "kto":
            prompt = n[f"prompt_{side}"]  # KTO: each row its own prompt part
        else:
            prompt = np.minimum(n["prompt_chosen"], n["prompt_rejected"])
        start = np.zeros_like(length)
        end = length.copy()
        if budget.mode == "keep_start":
            end = np.minimum(length, L)
        elif budget.mode == "keep_end":
            start = np.maximum(0, length - L)
        out[f"{side}_prompt"], out[f"{side}_start"], out[f"{side}_end"] = prompt, start, end
    return out


def _flags(
    n: dict[str, np.ndarray],
    w: dict[str, np.ndarray],
    texts_differ: np.ndarray,
    budget: Budget,
    closing: int,
) -> dict[str, np.ndarray]:
    L = budget.max_length
    d, cs = n["first_diff"], n["common_suffix"]
    equal = d < 0
    rows = d.shape[0]
    no = np.zeros(rows, dtype=bool)
    over_prompt = no.copy()
    over_length = no.copy()
    if L is not None and budget.mode != "keep_end":
        over_prompt = (w["chosen_prompt"] >= L) | (w["rejected_prompt"] >= L)
    if budget.mode == "drop":
        longest = np.maximum(n["chosen_tokens"], n["rejected_tokens"])
        over_length = (longest > L) & ~over_prompt
    kept = ~over_prompt & ~over_length
    if budget.mode == "keep_start":
        cut_identical = ~equal & (d >= L)
        diff_cut = cut_identical
    elif budget.mode == "keep_end":
        cut_identical = ~equal & (cs >= L)
        diff_cut = ~equal & (
            ((d < w["chosen_start"]) & (d < n["chosen_tokens"]))
            | ((d < w["rejected_start"]) & (d < n["rejected_tokens"]))
        )
    else:
        cut_identical = diff_cut = no
    empty = no.copy()
    for side in ("chosen", "rejected"):
        content_end = n[f"{side}_tokens"] - closing
        first = np.maximum(w[f"{side}_start"], w[f"{side}_prompt"])
        empty |= np.minimum(w[f"{side}_end"], content_end) - first <= 0
    return {
        "prompt_fills_context": over_prompt,
        "dropped_over_length": over_length,
        "identical_after_truncation": kept & (equal | cut_identical),
        "difference_truncated": kept & diff_cut,
        "empty_after_truncation": kept & empty,
        "template_collapse": kept & equal & texts_differ,
    }


def pair_token_integrity(
    pairs: pl.DataFrame,
    tokenizer: Any,
    budget: Budget | None = None,
    *,
    batch_size: int = BATCH,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The token-level check of every pair (see the module doc).

    Input: a pairs table (`pair_id`, `prompt` as chat messages, `chosen`, `rejected`) and a
    loaded tokenizer with a chat template. Output: (details, report). `details` has one row
    per pair: `pair_id`; `prompt_tokens` (TRL's prompt part; KTO: the shorter one);
    `chosen_tokens` / `rejected_tokens` (whole renders); `first_diff` (first token where the
    renders differ, null when equal); `common_suffix`; `chosen_start` / `chosen_end` and the
    same for rejected (the window the trainer keeps, [start, end)); `chosen_diff_token` /
    `rejected_diff_token` (the token at `first_diff`, decoded); one bool column per flag and
    `degenerate`. `report`: the budget, `pairs`, `degenerate`, `degenerate_share`, `counts`
    (pairs per flag), the tokenizer's `closing_tokens`, `tokenization` (split / whole).
    """
    budget = budget or Budget()
    tok = tokenizer
    measurer = _Measurer(tok)
    closing = _closing_tokens(tok)
    n = _measure(tok, pairs, batch_size, measurer)
    w = _windows(n, budget)
    texts_differ = (pairs["chosen"].fill_null("") != pairs["rejected"].fill_null("")).to_numpy()
    flags = _flags(n, w, texts_differ, budget, closing)
    degenerate = np.zeros(pairs.height, dtype=bool)
    for v in flags.values():
        degenerate |= v
    decode = _decoder(tok)
    details = pl.DataFrame(
        {
            "pair_id": pairs["pair_id"],
            "prompt_tokens": np.minimum(n["prompt_chosen"], n["prompt_rejected"]),
            "chosen_tokens": n["chosen_tokens"],
            "rejected_tokens": n["rejected_tokens"],
            "first_diff": pl.Series(n["first_diff"]).replace(-1, None),
            "common_suffix": n["common_suffix"],
            "chosen_start": w["chosen_start"],
            "chosen_end": w["chosen_end"],
            "rejected_start": w["rejected_start"],
            "rejected_end": w["rejected_end"],
            "chosen_diff_token": [decode(i) for i in n["chosen_diff_id"].tolist()],
            "rejected_diff_token": [decode(i) for i in n["rejected_diff_id"].tolist()],
            **flags,
            "degenerate": degenerate,
        }
    )
    count = int(degenerate.sum())
    report: dict[str, Any] = {
        **budget.describe(),
        "pairs": pairs.height,
        "degenerate": count,
        "degenerate_share": count / pairs.height if pairs.height else 0.0,
        "counts": {k: int(v.sum()) for k, v in flags.items()},
        "closing_tokens": closing,
        "tokenization": "split at special tokens" if measurer.split else "whole renders",
    }
    return details, report


def _decoder(tok: PreTrainedTokenizerBase) -> Any:
    cache: dict[int, str | None] = {-1: None}

    def decode(i: int) -> str | None:
        if i not in cache:
            cache[i] = str(tok.decode([i]))
        return cache[i]

    return decode


# ---- issues, the refusal line --------------------------------------------------------------


def _q(token: Any) -> str:
    return "end of sequence" if token is None else repr(token)


def _reason(flag: str, row: dict[str, Any], budget: Budget) -> tuple[str, int | None]:
    """(reason, position) of one flag on one pair."""
    L = budget.max_length
    d = row["first_diff"]
    where = f"chosen {_q(row['chosen_diff_token'])} vs rejected {_q(row['rejected_diff_token'])}"
    if flag == "prompt_fills_context":
        return (
            f"the prompt alone is {row['prompt_tokens']} tokens, max_length {L}: TRL drops "
            "the pair",
            row["prompt_tokens"],
        )
    if flag == "dropped_over_length":
        return (
            f"chosen {row['chosen_tokens']} / rejected {row['rejected_tokens']} tokens, over "
            f"max_length {L}: the reward trainer drops the pair",
            L,
        )
    if flag == "template_collapse":
        return (
            f"the texts differ but both render to the same {row['chosen_tokens']} tokens",
            row["chosen_tokens"],
        )
    if flag == "identical_after_truncation":
        if d is None:
            return f"both sides render to the same {row['chosen_tokens']} tokens", None
        return (
            f"the trainer keeps tokens {row['chosen_start']}-{row['chosen_end']} of both "
            f"sides and they are equal; they first differ at token {d} ({where})",
            d,
        )
    if flag == "difference_truncated":
        if budget.mode == "keep_end":
            return (
                f"the sides first differ at token {d} ({where}), before the kept window "
                f"(chosen from {row['chosen_start']}, rejected from {row['rejected_start']})",
                d,
            )
        return f"the sides first differ at token {d} ({where}), past the cut at {L}", d
    first = row["prompt_tokens"]
    return (
        f"a side keeps no response token: responses start at token {first}, kept windows "
        f"end at {row['chosen_end']} (chosen) and {row['rejected_end']} (rejected)",
        first,
    )


def integrity_issues(details: pl.DataFrame, budget: Budget) -> pl.DataFrame:
    """Issue rows for every flag of every pair: the issues contract (score 0.0: each flag
    makes the pair useless or lost to training) plus `position` and `cut` (token positions),
    `method` and `truncation` (the budget's mode), which the QA report's section reads."""
    rows: list[dict[str, Any]] = []
    flagged = details.filter(pl.col("degenerate"))
    for row in flagged.iter_rows(named=True):
        for flag in FLAGS:
            if row[flag]:
                reason, position = _reason(flag, row, budget)
                rows.append(
                    {
                        "item_id": row["pair_id"],
                        "issue": flag,
                        "score": 0.0,
                        "is_issue": True,
                        "reason": reason,
                        "position": position,
                        "cut": budget.max_length,
                        "method": budget.method,
                        "truncation": budget.mode,
                    }
                )
    schema = {
        "item_id": pl.String,
        "issue": pl.String,
        "score": pl.Float64,
        "is_issue": pl.Boolean,
        "reason": pl.String,
        "position": pl.Int64,
        "cut": pl.Int64,
        "method": pl.String,
        "truncation": pl.String,
    }
    return pl.DataFrame(rows, schema=schema)


def degenerate_ids(details: pl.DataFrame) -> list[str]:
    """The pair_ids with any flag."""
    return details.filter(pl.col("degenerate"))["pair_id"].to_list()


def refusal(report: dict[str, Any], max_share: float) -> str | None:
    """The one line `prefdata train` refuses with when more than `max_share` of the pairs are
    degenerate (None otherwise): the share, the reasons with counts, and how to fix each."""
    share = report["degenerate_share"]
    every = report["pairs"] > 0 and report["degenerate"] == report["pairs"]
    if share <= max_share and not every:
        return None
    allowed = "nothing would be left" if every else f"more than the {max_share:.0%} allowed"
    counts = {k: v for k, v in report["counts"].items() if v}
    reasons = ", ".join(f"{k} {v}" for k, v in counts.items())
    fixes = list(dict.fromkeys(DEGENERATE_FIX[k] for k in counts))
    L = report["max_length"]
    line = (
        f"{share:.1%} of the {report['pairs']} pairs ({report['degenerate']}) would be degenerate "
        f"in TRL's {report['method']} trainer at max_length={L}, truncation {report['truncation']}"
        f" ({allowed}): {reasons}. Fix: {'; '.join(fixes)}"
    )
    if every:
        return line
    return (
        f"{line}; or drop them: prefdata audit DATA --max-length {L} -o issues.parquet, then "
        f"prefdata filter DATA --issues issues.parquet --drop-issues {','.join(counts)}; or "
        "train anyway with --allow-degenerate (prefdata.max_degenerate_share=1)"
    )
