"""The QA report's token-integrity section on real HH-RLHF pairs, from the audit's token issues
at max_length 128: counts by reason, the worst examples token by token (checked against one
tokenization per pair done here), and the section on the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.quality.token_integrity import Budget, integrity_issues, pair_token_integrity
from prefdata.report.integrity import integrity_html, token_integrity_section
from prefdata.report.tokens import Tokenizer, load_tokenizer

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    found = load_tokenizer("smollm2")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def hh(shared_data: Path) -> pl.DataFrame:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    return pairs.head(600)


def _ids(tok: Any, pair: dict[str, Any], side: str) -> list[int]:
    messages = [{"role": m["role"], "content": m["content"]} for m in pair["prompt"]]
    messages.append({"role": "assistant", "content": pair[side]})
    return list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def test_section_counts_and_worst_examples(tokenizer: Tokenizer, hh: pl.DataFrame) -> None:
    tok = tokenizer.tokenizer
    budget = Budget("dpo", 128)
    issues = integrity_issues(pair_token_integrity(hh, tok, budget)[0], budget)
    section = token_integrity_section(hh, issues, tokenizer, worst=4)
    assert section is not None and section["pairs"] == 600
    assert section["counts"]["prompt_fills_context"] > 100
    # Degenerate at keep_start: the prompt alone fills 128 tokens, or the first 128 agree.
    expected = 0
    for p in hh.iter_rows(named=True):
        messages = [{"role": m["role"], "content": m["content"]} for m in p["prompt"]]
        prompt = tok.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        same = _ids(tok, p, "chosen")[:128] == _ids(tok, p, "rejected")[:128]
        expected += len(prompt) >= 128 or same
    assert section["degenerate"] == expected
    examples = section["examples"]
    assert len(examples) == 4
    # Worst first: a pair the trainer keeps but sees as identical outranks a dropped one.
    ranks = [0 if "identical_after_truncation" in e["flags"] else 1 for e in examples]
    assert ranks == sorted(ranks)
    pairs = {p["pair_id"]: p for p in hh.iter_rows(named=True)}
    for ex in examples:
        for side in ("chosen", "rejected"):
            ids = _ids(tok, pairs[ex["pair_id"]], side)
            shown = ex["sides"][side]
            assert shown["cut"] == (128 if len(ids) > 128 else None)
            assert shown["before_cut"] == [tok.decode([i]) for i in ids[122:128]]
            assert shown["after_cut"] == [tok.decode([i]) for i in ids[128:134]]
        if "identical_after_truncation" in ex["flags"]:
            c = _ids(tok, pairs[ex["pair_id"]], "chosen")
            r = _ids(tok, pairs[ex["pair_id"]], "rejected")
            d = next(i for i, (a, b) in enumerate(zip(c, r, strict=False)) if a != b)
            assert ex["first_diff"] == d >= 128
            assert ex["sides"]["chosen"]["at_diff"] == tok.decode([c[d]])

    page = integrity_html(section)
    assert "prompt_fills_context" in page and "✂" in page and "Worst examples" in page


def test_report_has_the_section(tokenizer: Tokenizer, hh: pl.DataFrame, tmp_path: Path) -> None:
    from prefdata.quality.audit import audit
    from prefdata.quality.token_check import TokenCheck
    from tests.report.conftest import write_report

    pairs = hh.head(100)
    _audited = audit(pairs, sample=0, tokens=TokenCheck(max_length=128))
    issues, _, _ = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    report = write_report(pairs, tmp_path, tokenizer=tokenizer, issues=issues)
    section = report["data"]["token_integrity"]
    assert section["pairs"] == 100 and section["max_length"] == 128
    flagged = issues.filter(pl.col("issue") == "prompt_fills_context")["item_id"].n_unique()
    assert section["counts"]["prompt_fills_context"] == flagged > 0
    page = (tmp_path / "report.html").read_text()
    assert 'id="token_integrity"' in page and "degenerate pairs" in page
    # Without token issues (an audit without --max-length) there is no section.
    _audited = audit(pairs, sample=0)
    plain, _, _ = _audited.tables["issues"], _audited.tables["sample"], _audited.report
    again = write_report(pairs, tmp_path / "b", tokenizer=tokenizer, issues=plain)
    assert "token_integrity" not in again["data"]
