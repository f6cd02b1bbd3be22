"""Synthetic pairs: a scorer (a function, or a real reward model built from a config) picks
each prompt's best and worst candidates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest

from prefdata import ids
from prefdata.errors import InputError
from prefdata.label.scorers import RewardModelScorer
from prefdata.label.synthetic import synthetic_pairs
from prefdata.llm.base import Message
from prefdata.schema import validate

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def _candidates(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    """Candidates from (prompt text, completion, generator)."""
    records = []
    for prompt, completion, generator in rows:
        messages = [{"role": "user", "content": prompt}]
        pid = ids.prompt_id(messages)
        records.append(
            {
                "prompt_id": pid,
                "prompt": messages,
                "completion_id": ids.completion_id(pid, completion),
                "completion": completion,
                "generator": generator,
                "params": "{}",
            }
        )
    return validate(pl.DataFrame(records), "candidates")


def test_synthetic_pairs_keep_top_against_bottom() -> None:
    candidates = _candidates(
        [
            ("q1", "short", "m1"),
            ("q1", "a much longer answer", "m2"),
            ("q1", "medium one", "m1"),
            ("q2", "same", "m1"),  # q2: all candidates tie
            ("q2", "size", "m2"),
            ("q3", "alone", "m1"),  # q3: one candidate
        ]
    )

    def length(prompt: Sequence[Message], completion: str) -> float:
        assert prompt[0]["role"] == "user"
        return float(len(completion))

    _result = synthetic_pairs(candidates, scorer=length)
    pairs, report = _result.tables["pairs"], _result.report
    validate(pairs, "pairs")
    assert pairs.height == 1
    pair = pairs.row(0, named=True)
    assert (pair["chosen"], pair["rejected"]) == ("a much longer answer", "short")
    assert pair["margin"] == 20 - 5
    assert pair["confidence"] is None and pair["agreement"] is None
    assert pair["n_votes"] == 1 and pair["source"] == "synthetic"
    provenance = json.loads(pair["provenance"])
    assert provenance["scorer"] == "test_synthetic_pairs_keep_top_against_bottom.<locals>.length"
    assert provenance["generator_chosen"] == "m2" and provenance["generator_rejected"] == "m1"
    assert provenance["scores_chosen"] == [20.0] and provenance["scores_rejected"] == [5.0]
    assert report["prompts"] == 3 and report["prompts_all_tied"] == 2 and report["pairs"] == 1
    # A margin threshold the only pair does not clear.
    _result = synthetic_pairs(candidates, scorer=length, min_margin=15)
    none, report = _result.tables["pairs"], _result.report
    assert none.height == 0 and report["pairs_below_margin"] == 1


def test_nan_scores_count_as_missing() -> None:
    candidates = _candidates([("q", "x", "m"), ("q", "y", "m"), ("q", "z", "m")])
    scores = {"x": 1.0, "y": float("nan"), "z": 0.5}
    _result = synthetic_pairs(candidates, scorer=lambda _p, c: scores[c])
    pairs, report = _result.tables["pairs"], _result.report
    assert pairs.row(0, named=True)["chosen"] == "x"
    assert pairs.row(0, named=True)["rejected"] == "z"
    assert report["completions_without_score"] == 1


def _tiny_reward_model(folder: Path, tokenizer_dir: Path, num_labels: int = 1) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        num_labels=num_labels,
    )
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reward_model_scorer_on_a_tiny_model(tmp_path: Path, smollm2_tokenizer_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = _tiny_reward_model(tmp_path / "rm", smollm2_tokenizer_dir)
    scorer = RewardModelScorer(folder, batch_size=2)
    assert scorer.name == "reward-model:rm"
    prompt: list[Message] = [{"role": "user", "content": "What is 2 + 2?"}]
    completions = ["4", "It is four, because two plus two makes four.", "5", "22, obviously."]
    batched = scorer.score_batch([prompt] * 4, completions)

    # Each one alone through transformers directly (no padding, no batch).
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.config.pad_token_id = tokenizer.pad_token_id
    expected = []
    for completion in completions:
        text = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": completion}], tokenize=False
        )
        encoded = tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            expected.append(float(model(**encoded).logits[0, 0]))
    assert batched == pytest.approx(expected, abs=1e-4)
    assert len(set(batched)) == 4
    assert scorer(prompt, completions[1]) == pytest.approx(expected[1], abs=1e-4)

    candidates = _candidates([("What is 2 + 2?", c, "m") for c in completions])
    _result = synthetic_pairs(candidates, scorer=scorer)
    pairs, report = _result.tables["pairs"], _result.report
    best = completions[max(range(4), key=lambda i: expected[i])]
    worst = completions[min(range(4), key=lambda i: expected[i])]
    assert pairs.height == 1
    assert (pairs["chosen"][0], pairs["rejected"][0]) == (best, worst)
    assert pairs["margin"][0] == pytest.approx(max(expected) - min(expected), abs=1e-4)
    assert report["scorer"] == "reward-model:rm"


def test_reward_model_scorer_refuses_wrong_folders(
    tmp_path: Path, smollm2_tokenizer_dir: Path
) -> None:
    with pytest.raises(InputError, match=r"config\.json is missing"):
        RewardModelScorer(tmp_path)
    folder = _tiny_reward_model(tmp_path / "two", smollm2_tokenizer_dir, num_labels=2)
    with pytest.raises(InputError, match="num_labels=1"):
        RewardModelScorer(folder)
