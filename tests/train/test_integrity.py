"""`prefdata train` runs the token-level pair check before the first step: it refuses a set
with 20% degenerate pairs in one line, and with --allow-degenerate trains without them and
says which it left out. Real HH-RLHF pairs: short ones, and ones whose multi-turn prompt alone
fills max_length (which pairs those are is counted here with the tokenizer, one at a time)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from prefdata.cli import app
from tests.train.conftest import short_pairs
from tests.train.test_entry import SMALL

runner = CliRunner()
MAX_LENGTH = 96  # SMALL's


@pytest.fixture(scope="module")
def mixed(shared_data: Path, tiny: Path) -> tuple[pl.DataFrame, list[str]]:
    """40 short real pairs and 10 degenerate ones (20%): 8 whose multi-turn prompt fills
    max_length, and 2 long answers whose rejected side is the chosen one with a sentence added
    at its end, past the cut. Returns (pairs, the degenerate pair_ids)."""
    from transformers import AutoTokenizer

    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    tok = AutoTokenizer.from_pretrained(tiny)
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]

    def render(prompt: list[dict[str, str]], answer: str | None = None) -> list[int]:
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
        if answer is None:
            out = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        else:
            messages.append({"role": "assistant", "content": answer})
            out = tok.apply_chat_template(messages, tokenize=True)
        return list(out["input_ids"])

    short = short_pairs(pairs, 200).head(40)
    long = pairs.filter(pl.col("prompt").list.len() >= 3).head(30)
    long = long.filter(
        pl.Series([len(render(p)) >= MAX_LENGTH for p in long["prompt"].to_list()])
    ).head(8)
    wordy = pairs.filter(
        (pl.col("prompt").list.len() == 1) & (pl.col("chosen").str.len_chars() > 600)
    ).head(2)
    wordy = wordy.with_columns((pl.col("chosen") + " That is all.").alias("rejected"))
    assert long.height == 8 and wordy.height == 2
    assert all(len(render(p)) < MAX_LENGTH for p in [*short["prompt"], *wordy["prompt"]])
    for row in wordy.iter_rows(named=True):  # the sides part only past the cut
        c, r = render(row["prompt"], row["chosen"]), render(row["prompt"], row["rejected"])
        assert c[:MAX_LENGTH] == r[:MAX_LENGTH] and c != r
    table = pl.concat([short, long, wordy]).sample(fraction=1.0, shuffle=True, seed=1)
    assert table.height == 50
    return table, [*long["pair_id"], *wordy["pair_id"]]


def _train(data: Path, out: Path, tiny: Path, *extra: str) -> object:
    return runner.invoke(
        app,
        ["train", "dpo", *SMALL, "--data", str(data), "--model", str(tiny), "-o", str(out), *extra],
    )


def test_train_refuses_twenty_percent_degenerate_pairs(
    tiny: Path, mixed: tuple[pl.DataFrame, list[str]], tmp_path: Path
) -> None:
    table, _ = mixed
    data = tmp_path / "pairs.parquet"
    table.write_parquet(data)
    out = tmp_path / "run"
    result = _train(data, out, tiny)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    text = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert f"{data}: 20.0% of the 50 pairs (10) would be degenerate" in text
    assert "max_length=96, truncation keep_start (more than the 5% allowed)" in text
    assert "prompt_fills_context 8, identical_after_truncation 2, difference_truncated 2" in text
    assert "raise max_length" in text and "prefdata filter" in text
    assert "--allow-degenerate" in text
    assert not out.exists()  # refused before anything was written


def test_allow_degenerate_trains_without_them_and_reports_them(
    tiny: Path, mixed: tuple[pl.DataFrame, list[str]], tmp_path: Path
) -> None:
    table, degenerate = mixed
    data = tmp_path / "pairs.parquet"
    table.write_parquet(data)
    out = tmp_path / "run"
    result = _train(data, out, tiny, "--allow-degenerate")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    report = json.loads((out / "prefdata-train.json").read_text())
    assert report["data"] == str(data)
    assert report["pairs"] == 40 and report["pairs_after_tokenization"] == 40
    integrity = report["token_integrity"]
    assert integrity["dropped"] == 10 and integrity["max_degenerate_share"] == 1.0
    assert sorted(integrity["dropped_pair_ids"]) == sorted(degenerate)
    assert integrity["counts"]["prompt_fills_context"] == 8
    assert integrity["counts"]["difference_truncated"] == 2
