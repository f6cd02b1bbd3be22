"""`prefdata agree --item-column record_id` reproduces PandaLM's per-record agreement from the
command line (issue 22): 999 records of 3 human votes, Fleiss' kappa 0.864 as published.

PandaLM's figure counts each of the 999 records as an item. prefdata's `item_id` pools the 136
records that repeat an earlier (prompt, response, response) into one item (863 items), which
is right for consensus but is not the published figure; `record_id` keeps them apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.ids import canonical_sides


def _fleiss(rows: list[list[str]], categories: list[str]) -> float:
    counts = np.array([[row.count(c) for c in categories] for row in rows])
    return float(fleiss_kappa(counts, method="fleiss"))


def test_agree_by_record_reproduces_pandalm(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "pandalm_testset" / "testset-v1.json"
    runner = CliRunner()
    done = runner.invoke(app, ["import", "pandalm", str(src), "-o", str(tmp_path / "p.parquet")])
    assert done.exit_code == 0, done.output
    votes = tmp_path / "p.annotations.parquet"
    by_record = runner.invoke(
        app, ["agree", str(votes), "--item-column", "record_id", "--bootstrap", "0"]
    )
    assert by_record.exit_code == 0, by_record.output
    report = json.loads(by_record.stdout)
    by_item = json.loads(runner.invoke(app, ["agree", str(votes), "--bootstrap", "0"]).stdout)

    # The reference, from the source file alone: each record's three votes, as shown
    # (0 tie, 1 response1, 2 response2) and as prefdata's sides a / b (by content digest).
    records = json.loads(src.read_text())
    shown, sides = [], []
    for r in records:
        votes_shown = [str(r[f"annotator{i}"]) for i in (1, 2, 3)]
        # A response that is not text (a few are JSON `true`) is its JSON form, as imported.
        one, two = (
            v if isinstance(v, str) else json.dumps(v) for v in (r["response1"], r["response2"])
        )
        first_is_a = canonical_sides(one, two)[0] == one
        to_side = {"0": "tie", "1": "a" if first_is_a else "b", "2": "b" if first_is_a else "a"}
        shown.append(votes_shown)
        sides.append([to_side[v] for v in votes_shown])
    assert len(records) == 999

    fleiss = report["fleiss_kappa"]
    assert report["items"] == 999 and report["item_column"] == "record_id"
    assert fleiss["items"] == 999 and fleiss["votes_per_item"] == 3
    assert fleiss["value"] == pytest.approx(_fleiss(sides, ["a", "b", "tie"]), abs=1e-9)
    # Published (PandaLM README / our MANIFEST): 0.864. Votes as shown give 0.8642, sides
    # a / b 0.8637: Fleiss' kappa depends on which answers share a category.
    assert round(_fleiss(shown, ["0", "1", "2"]), 4) == 0.8642
    assert round(fleiss["value"], 3) == 0.864
    # Without --item-column the repeated records pool: another figure over 863 items.
    assert by_item["items"] == 863 and by_item["fleiss_kappa"]["value"] != fleiss["value"]
