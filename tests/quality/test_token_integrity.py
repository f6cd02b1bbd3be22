"""The token-level pair check against an independent reading of what TRL 1.16 does, on real
HH-RLHF multi-turn dialogues at max_length 128 and 512.

The reference is built the way TRL's trainers build it, one pair at a time: each render
tokenized by `apply_chat_template(tokenize=True)` (as TRL's `_tokenize`), TRL's own
`common_prefix_length` for the prompt part, TRL's own filter conditions for the pairs it drops,
and TRL's own data collators for the truncation (what the loss sees). Flags are then read off
those tensors token by token. The check under test renders in batches, tokenizes heads and tails
separately and reads the flags off arithmetic on lengths; the two must agree on every pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.quality.token_integrity import (
    FLAGS,
    Budget,
    integrity_issues,
    load_check_tokenizer,
    pair_token_integrity,
    refusal,
)

pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

from trl.data_utils import common_prefix_length  # noqa: E402
from trl.trainer.dpo_trainer import DataCollatorForPreference  # noqa: E402
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference  # noqa: E402

CLOSING = "<|im_end|>\n"  # what SmolLM2's template writes after every message's content


@pytest.fixture(scope="module")
def tok() -> Any:
    return load_check_tokenizer("smollm2")[0]


@pytest.fixture(scope="module")
def hh(shared_data: Path) -> pl.DataFrame:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    multi_turn = pairs.filter(pl.col("prompt").list.len() >= 3)
    assert multi_turn.height > 1000
    return pairs


def _ids(tok: Any, conversation: list[dict[str, str]], **kwargs: Any) -> list[int]:
    out = tok.apply_chat_template(conversation, tokenize=True, return_dict=True, **kwargs)
    return [int(i) for i in out["input_ids"]]


def trl_tokens(tok: Any, pairs: pl.DataFrame) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt ids, prompt + chosen ids, prompt + rejected ids) per pair, one call each."""
    out = []
    for row in pairs.iter_rows(named=True):
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
        out.append(
            (
                _ids(tok, prompt, add_generation_prompt=True),
                _ids(tok, [*prompt, {"role": "assistant", "content": row["chosen"]}]),
                _ids(tok, [*prompt, {"role": "assistant", "content": row["rejected"]}]),
            )
        )
    return out


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _seen(tokens: list[int], mask: Any, completion: Any, start: int) -> dict[str, Any]:
    """What the collator kept of one sequence: ids, original positions, completion positions."""
    n = int(mask.sum())
    return {
        "ids": [int(t) for t in tokens[:n]],
        "positions": range(start, start + n),
        "completion": [start + j for j in range(n) if int(completion[j]) == 1],
    }


def reference_flags(
    tok: Any, pairs: pl.DataFrame, tokens: list[Any], budget: Budget
) -> dict[str, list[bool]]:
    """Each flag per pair, from TRL's own pieces, token by token."""
    L = budget.max_length
    closing = len(tok(CLOSING, add_special_tokens=False)["input_ids"])
    flags: dict[str, list[bool]] = {f: [] for f in FLAGS}
    texts = zip(pairs["chosen"].to_list(), pairs["rejected"].to_list(), strict=True)
    for (p, c, r), (chosen_text, rejected_text) in zip(tokens, texts, strict=True):
        pc, pr = common_prefix_length(p, c), common_prefix_length(p, r)
        lost = over = False
        if budget.method == "dpo":
            P = min(pc, pr)
            lost = L is not None and budget.truncation_mode == "keep_start" and not P < L
            batch = DataCollatorForPreference(
                pad_token_id=0, max_length=L, truncation_mode=budget.truncation_mode
            )([{"prompt_ids": c[:P], "chosen_ids": c[P:], "rejected_ids": r[P:]}])
            views = []
            for row, full in ((0, c), (1, r)):
                kept = int(batch["attention_mask"][row].sum())
                start = len(full) - kept if budget.truncation_mode == "keep_end" else 0
                views.append(
                    _seen(
                        batch["input_ids"][row].tolist(),
                        batch["attention_mask"][row],
                        batch["completion_mask"][row],
                        start,
                    )
                )
        elif budget.method == "kto":
            lost = L is not None and not (pc < L and pr < L)
            collator = DataCollatorForUnpairedPreference(pad_token_id=0, max_length=L)
            views = []
            for full, part in ((c, pc), (r, pr)):
                batch = collator(
                    [{"prompt_ids": full[:part], "completion_ids": full[part:], "label": True}]
                )
                views.append(
                    _seen(
                        batch["input_ids"][0].tolist(),
                        batch["attention_mask"][0],
                        batch["completion_mask"][0],
                        0,
                    )
                )
        else:  # reward: nothing cut, too long dropped
            keep = L is None or (len(c) <= L and len(r) <= L)
            lost = not keep and min(pc, pr) >= L
            over = not keep and not lost
            P = min(pc, pr)
            views = [
                {
                    "ids": full,
                    "positions": range(len(full)),
                    "completion": list(range(P, len(full))),
                }
                for full in (c, r)
            ]
        gone = lost or over
        d = _first_difference(c, r)
        identical = views[0]["ids"] == views[1]["ids"]
        hidden = d is not None and any(
            d < len(full) and d not in view["positions"]
            for full, view in zip((c, r), views, strict=True)
        )
        empty = any(
            not [j for j in view["completion"] if j < len(full) - closing]
            for full, view in zip((c, r), views, strict=True)
        )
        flags["prompt_fills_context"].append(lost)
        flags["dropped_over_length"].append(over)
        flags["identical_after_truncation"].append(not gone and identical)
        flags["difference_truncated"].append(not gone and hidden)
        flags["empty_after_truncation"].append(not gone and empty)
        flags["template_collapse"].append(not gone and c == r and chosen_text != rejected_text)
    return flags


def _compare(tok: Any, pairs: pl.DataFrame, tokens: list[Any], budget: Budget) -> dict[str, int]:
    details, report = pair_token_integrity(pairs, tok, budget, batch_size=256)
    expected = reference_flags(tok, pairs, tokens, budget)
    for flag in FLAGS:
        got = details[flag].to_list()
        wrong = [i for i, (a, b) in enumerate(zip(got, expected[flag], strict=True)) if a != b]
        assert not wrong, f"{flag} at {budget}: pairs {wrong[:5]} differ from TRL's reading"
        assert report["counts"][flag] == sum(expected[flag])
    # The numbers behind the flags, too: lengths and prompt part as TRL counts them.
    assert details["chosen_tokens"].to_list() == [len(c) for _, c, _ in tokens]
    assert details["rejected_tokens"].to_list() == [len(r) for _, _, r in tokens]
    assert details["first_diff"].to_list() == [_first_difference(c, r) for _, c, r in tokens]
    prompt_part = [
        min(common_prefix_length(p, c), common_prefix_length(p, r)) for p, c, r in tokens
    ]
    assert details["prompt_tokens"].to_list() == prompt_part
    return dict(report["counts"])


@pytest.mark.slow
@pytest.mark.parametrize("max_length", [128, 512])
def test_every_flag_matches_trl_on_hh_rlhf(tok: Any, hh: pl.DataFrame, max_length: int) -> None:
    tokens = trl_tokens(tok, hh)
    counts = {}
    for budget in (
        Budget("dpo", max_length, "keep_start"),
        Budget("dpo", max_length, "keep_end"),
        Budget("kto", max_length),
        Budget("reward", max_length),
    ):
        counts[(budget.method, budget.truncation_mode)] = _compare(tok, hh, tokens, budget)
    start, end = counts[("dpo", "keep_start")], counts[("dpo", "keep_end")]
    # The real data exercise the flags (so the comparison above could fail).
    assert start["prompt_fills_context"] > (500 if max_length == 128 else 5)
    assert end["prompt_fills_context"] == 0  # keep_end drops nothing
    assert end["difference_truncated"] > 0
    if max_length == 128:
        assert start["identical_after_truncation"] > 0
        assert start["difference_truncated"] > 0
    assert counts[("reward", "keep_start")]["dropped_over_length"] > 0


def test_flags_on_a_slice_of_hh_rlhf(tok: Any, hh: pl.DataFrame) -> None:
    """The quick version: 300 multi-turn pairs, both truncation modes, at 128."""
    pairs = hh.filter(pl.col("prompt").list.len() >= 3).head(300)
    tokens = trl_tokens(tok, pairs)
    start = _compare(tok, pairs, tokens, Budget("dpo", 128, "keep_start"))
    end = _compare(tok, pairs, tokens, Budget("dpo", 128, "keep_end"))
    assert start["prompt_fills_context"] > 50 and end["difference_truncated"] > 0


def test_empty_and_collapsed_sides_of_real_pairs(tok: Any, hh: pl.DataFrame) -> None:
    """Real pairs with one side emptied, and a trimming chat template (as many models' are)
    over real pairs whose sides differ only in surrounding whitespace."""
    base = hh.filter(pl.col("prompt").list.len() == 1).head(40)
    edited = pl.concat(
        [
            base.head(10).with_columns(pl.lit("").alias("rejected")),
            base.slice(10, 10).with_columns((pl.col("chosen") + "  \n").alias("rejected")),
            base.slice(20, 20),
        ]
    )
    trimming = tok.__class__.from_pretrained(tok.name_or_path)
    trimming.chat_template = tok.chat_template.replace(
        "message['content']", "message['content'] | trim"
    )
    for tokenizer, collapsed in ((tok, 0), (trimming, 10)):
        tokens = trl_tokens(tokenizer, edited)
        for budget in (Budget("dpo", 512), Budget("dpo", 512, "keep_end"), Budget("reward", 512)):
            counts = _compare(tokenizer, edited, tokens, budget)
            assert counts["empty_after_truncation"] == 10
            assert counts["template_collapse"] == collapsed
            assert counts["identical_after_truncation"] == collapsed


def test_issue_rows_name_positions(tok: Any, hh: pl.DataFrame) -> None:
    pairs = hh.head(200)
    budget = Budget("dpo", 128)
    details, report = pair_token_integrity(pairs, tok, budget)
    issues = integrity_issues(details, budget)
    assert set(issues.columns) >= {"item_id", "issue", "score", "is_issue", "reason", "position"}
    counted = issues.group_by("issue").len()
    assert dict(counted.iter_rows()) == {k: v for k, v in report["counts"].items() if v}
    fills = issues.filter(pl.col("issue") == "prompt_fills_context")
    joined = fills.join(details, left_on="item_id", right_on="pair_id")
    assert (joined["position"] == joined["prompt_tokens"]).all()
    assert (joined["position"] >= 128).all()
    assert all(
        f"is {p} tokens, max_length 128" in r
        for p, r in zip(joined["position"], joined["reason"], strict=True)
    )


def test_refusal_names_share_reasons_and_fixes() -> None:
    report = {
        "method": "dpo",
        "max_length": 128,
        "truncation": "keep_start",
        "pairs": 50,
        "degenerate": 10,
        "degenerate_share": 0.2,
        "counts": {"prompt_fills_context": 8, "difference_truncated": 2, "template_collapse": 0},
    }
    line = refusal(report, 0.05)
    assert line is not None and "\n" not in line
    assert line.startswith("20.0% of the 50 pairs (10)")
    assert "prompt_fills_context 8, difference_truncated 2" in line
    assert "template_collapse" not in line
    assert "raise max_length" in line and "truncation_mode=keep_start" in line
    assert "prefdata filter" in line and "--allow-degenerate" in line
    assert refusal(report, 0.2) is None
    assert "nothing would be left" in str(refusal({**report, "degenerate": 50}, 1.0))
