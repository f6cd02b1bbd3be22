"""Every interpretive sentence reads its figure together with its interval: a preference is
named only when the whole 95% interval is on one side of 0.5, in the right direction; an
interval that holds 0.5 says there is no clear preference. Checked on the sentences
themselves and on reports of data made to lean each way (the interval computed here with
statsmodels' Wilson interval)."""

from __future__ import annotations

from pathlib import Path

import pytest
from statsmodels.stats.proportion import proportion_confint

from prefdata.report import compute_report, interpret
from tests.report.conftest import make_pairs, write_report

OLD_SENTENCE = "Far from 0.5, labels prefer length"


@pytest.mark.parametrize(
    ("low", "high", "side"),
    [(0.52, 0.6, "above"), (0.425, 0.466, "below"), (0.49, 0.81, "unclear"), (None, None, "none")],
)
def test_side_of_half(low: float | None, high: float | None, side: str) -> None:
    assert interpret.side_of_half(low, high) == side


def test_length_bias_sentence_follows_the_interval() -> None:
    longer = interpret.length_bias(0.62, 0.6, 0.64, 2000)
    assert "Chosen is the longer side" in longer and "longer is better" in longer
    assert "0.620 (95% interval 0.600 – 0.640)" in longer
    # HH-RLHF's figure: chosen is the shorter side, and the sentence says so.
    shorter = interpret.length_bias(0.445, 0.425, 0.466, 2303)
    assert "Chosen is the shorter side" in shorter and "longer is better" not in shorter
    # 30 pairs whose interval holds 0.5: no preference is claimed, and the reach is given.
    unclear = interpret.length_bias(0.65, 0.49, 0.81, 30)
    assert unclear.startswith("No clear length preference") and "holds 0.5" in unclear
    assert "up to 0.31 either way" in unclear
    assert "prefer" not in unclear.replace("preference", "")
    assert "no length preference to measure" in interpret.length_bias(None, None, None, 0)


def test_position_and_length_sentences_of_a_judge() -> None:
    assert "shown first" in interpret.position_bias("j", 0.9, 0.8, 0.95, 100)
    assert "shown second" in interpret.position_bias("j", 0.2, 0.1, 0.3, 100)
    assert "no clear position preference" in interpret.position_bias("j", 0.55, 0.45, 0.65, 40)
    assert "longer response" in interpret.longer_wins("j", 0.8, 0.7, 0.9, 100)
    assert "shorter response" in interpret.longer_wins("j", 0.2, 0.1, 0.3, 100)
    assert "no clear length preference" in interpret.longer_wins("j", 0.5, 0.4, 0.6, 50)


def _leaning(n: int, chosen_longer: int) -> tuple[list[dict[str, str]], float, float]:
    """n pairs of which `chosen_longer` have the longer chosen side (the rest shorter)."""
    rows = [
        {
            "prompt": f"question {i}",
            "chosen": "a long and careful answer" if i < chosen_longer else "short",
            "rejected": "short" if i < chosen_longer else "a long and careful answer",
        }
        for i in range(n)
    ]
    lo, hi = proportion_confint(chosen_longer, n, alpha=0.05, method="wilson")
    return rows, float(lo), float(hi)


@pytest.mark.parametrize(
    ("n", "longer", "expected"),
    [
        (200, 150, "Chosen is the longer side"),
        (200, 60, "Chosen is the shorter side"),
        (30, 19, "No clear length preference"),  # 0.63, interval about 0.46 - 0.78
    ],
)
def test_the_report_reads_length_bias_each_way(
    n: int, longer: int, expected: str, tmp_path: Path
) -> None:
    rows, lo, hi = _leaning(n, longer)
    report = write_report(make_pairs(rows), tmp_path, tokenizer=None)
    bias = report["data"]["length_bias"]
    assert (bias["overall"]["low"], bias["overall"]["high"]) == pytest.approx((lo, hi))
    assert bias["reading"].startswith(expected)
    assert (lo <= 0.5 <= hi) == expected.startswith("No clear")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert expected in html and OLD_SENTENCE not in html
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert expected in card


def test_judge_readings_in_the_report() -> None:
    from prefdata.io.importers.common import annotations_table

    rows, _, _ = _leaning(60, 30)
    pairs = make_pairs(rows)
    # A judge that always picks the response shown first: a position preference.
    votes = annotations_table(
        [
            {
                "item_id": pid,
                "annotator": "first-picker",
                "annotator_kind": "llm",
                "label": "a" if k % 2 else "b",
                "order": "ab" if k % 2 else "ba",
            }
            for k, pid in enumerate(pairs["pair_id"])
        ]
    )
    judge = compute_report(pairs, annotations=votes, tokenizer=None)["data"]["judges"]
    reading = judge["annotators"]["first-picker"]["position"]["reading"]
    assert reading.startswith("first-picker prefers the response shown first")
    assert judge["humans"] == {}
