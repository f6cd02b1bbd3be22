"""The bridge's pure parts, without a server: display order, suggestions, un-randomising."""

from __future__ import annotations

import json
from collections import Counter

import polars as pl
import pytest

from prefdata import ids
from prefdata.annotate import bridge as pa
from prefdata.annotate.connection import Kind
from prefdata.errors import ContractError
from tests.annotate.helpers import push_report


def test_shown_order_is_stable_balanced_and_seeded() -> None:
    items = [ids.digest(str(i)) for i in range(2000)]
    orders = [pa.shown_order(i) for i in items]
    assert orders == [pa.shown_order(i) for i in items]  # a re-push shows the same order
    share = Counter(orders)["ab"] / len(orders)
    assert 0.45 < share < 0.55
    assert sum(pa.shown_order(i, seed=1) != o for i, o in zip(items, orders, strict=True)) > 800


def test_prompt_text() -> None:
    assert pa.prompt_text([{"role": "user", "content": "Hi there"}]) == "Hi there"
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    assert (
        pa.prompt_text(chat)
        == "[system]\nBe brief.\n\n[user]\nHi\n\n[assistant]\nHello\n\n[user]\nBye"
    )


def _votes(rows: list[tuple[str, str, str, str | None, float | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "item_id": i,
                "annotator": who,
                "annotator_kind": kind,
                "label": label,
                "confidence": conf,
                "error": err,
            }
            for i, who, kind, label, conf, err in rows
        ],
        schema={
            "item_id": pl.String,
            "annotator": pl.String,
            "annotator_kind": pl.String,
            "label": pl.String,
            "confidence": pl.Float64,
            "error": pl.String,
        },
    )


def test_judge_suggestions_rule() -> None:
    votes = _votes(
        [
            ("p1", "judge-x", "llm", "a", None, None),
            ("p1", "judge-y", "llm", "a", None, None),
            ("p1", "judge-z", "llm", "b", None, None),
            ("p1", "annotator1", "human", "b", None, None),  # humans are not suggestions
            ("p2", "judge-x", "llm", "a", None, None),
            ("p2", "judge-y", "llm", "b", None, None),  # split: no suggestion
            ("p3", "gpt@4+mini", "llm", "tie", 0.7, None),  # one judge: its confidence
            ("p4", "judge-x", "llm", None, None, "unparseable"),
            ("p5", "rules", "rule", "b", None, None),
        ]
    )
    sugg, counts = pa.judge_suggestions(votes)
    assert counts == {
        "used": 7,
        "skipped_human": 1,
        "skipped_error": 1,
        "items_judges_split": 1,
    }
    assert (sugg["p1"].label, sugg["p1"].agent) == ("a", "judge-x / judge-y")
    assert sugg["p1"].score == pytest.approx(2 / 3)
    assert sugg["p2"].label == "" and sugg["p2"].votes == [("judge-x", "a"), ("judge-y", "b")]
    assert (sugg["p3"].label, sugg["p3"].score, sugg["p3"].agent) == ("tie", 0.7, "gpt_4_mini")
    assert "p4" not in sugg
    assert (sugg["p5"].label, sugg["p5"].score) == ("b", None)


def test_response_rows_undo_the_shown_order() -> None:
    def rec(order: str) -> dict[str, object]:
        return {"id": "r1", "external_id": "pair1", "metadata": {"order": order}}

    def resp(label: str | None, status: str = "submitted") -> dict[str, object]:
        values = {} if label is None else {"label": {"value": label}, "strength": {"value": 4}}
        return {"values": values, "status": status}

    for order, shown, canonical in [
        ("ab", "a", "a"),
        ("ab", "b", "b"),
        ("ba", "a", "b"),
        ("ba", "b", "a"),
        ("ba", "tie", "tie"),
    ]:
        (row,) = pa.response_rows("pairs", rec(order), resp(shown), "ann", "t")
        assert (row["label"], row["order"], row["item_id"]) == (canonical, order, "pair1")
        assert row["strength"] == 4 and row["error"] is None
        assert json.loads(row["raw"])["label"]["value"] == shown
    (gone,) = pa.response_rows("pairs", rec("ba"), resp(None, "discarded"), "ann", "t")
    assert gone["label"] is None and gone["error"] == pa.DISCARDED and gone["status"] == "discarded"


def test_response_rows_for_rankings_map_positions_to_completions() -> None:
    record = {
        "id": "r",
        "external_id": "prompt1",
        "metadata": {"completion_ids": ["c3", "c1", "c2"]},
    }
    ranking = [
        {"value": "response_2", "rank": 1},
        {"value": "response_3", "rank": 2},
        {"value": "response_1", "rank": 3},
    ]
    rows = pa.response_rows(
        "ranking",
        record,
        {"values": {"ranking": {"value": ranking}}, "status": "submitted"},
        "u",
        "t",
    )
    assert {r["item_id"]: r["label"] for r in rows} == {"c1": "1", "c2": "2", "c3": "3"}
    assert {r["record_id"] for r in rows} == {"prompt1"}


def test_push_refuses_tables_it_cannot_show() -> None:
    with pytest.raises(ContractError, match=r"missing column\(s\) \['chosen', 'rejected'\]"):
        push_report(
            pl.DataFrame({"prompt": ["q"], "answer": ["x"]}),
            dataset="d",
            url="http://x",
            api_key="k",
        )


@pytest.mark.parametrize("kind", ["pairs", "ranking", "review"])
def test_default_guidelines_are_for_annotators_and_come_first(kind: Kind) -> None:
    own = pa.guidelines(kind)
    # Nothing meant for the curator: no commands, no options, no setup.
    for curator_word in ("prefdata", "--", "annotate push", "setup.sh", "API key"):
        assert curator_word not in own, (kind, curator_word)
    assert own.startswith("# ")  # the task, as a heading, first
    panel = pa.annotator_guidelines(kind, k=3, records=40)
    assert panel.startswith(own)
    assert "40 records; each needs 3 answers from different annotators" in panel
    assert "stays at 0% until some record has 3 answers" in panel
    assert ("## The judges' verdict" in panel) == (kind == "pairs")
    assert "nothing is selected for you" in panel or kind != "pairs"
    prefilled = pa.annotator_guidelines(kind, k=1, records=2, suggestions="prefill")
    assert ("already selected" in prefilled) == (kind == "pairs")
    assert "stays at 0%" not in prefilled
