"""The browsable table at 100k pairs: the page holds the most-flagged pairs up to its cap plus
a seeded sample, says so, and stays small; the choice is checked against an independent
ranking computed here from the issues table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.report.conftest import make_pairs, write_report

N_PAIRS = 100_000
N_FLAGGED = 30_000
CAP = 5000


@pytest.mark.slow
def test_100k_pairs_page_holds_the_most_flagged_and_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    words = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])
    texts = [" ".join(rng.choice(words, 30)) for _ in range(2000)]
    pairs = make_pairs(
        [
            {
                "prompt": f"question {i}",
                "chosen": f"{texts[i % 2000]} ({i})",
                "rejected": f"{texts[(i * 7) % 2000]} [{i}]",
                "split": "train",
            }
            for i in range(N_PAIRS)
        ]
    )
    pair_ids = pairs["pair_id"].to_list()
    # 30k flagged pairs with 1 to 3 heuristic flags each and a score each flag fired with.
    flagged = rng.choice(N_PAIRS, N_FLAGGED, replace=False)
    n_flags = rng.integers(1, 4, N_FLAGGED)
    # near_duplicate_pair rows, as an audit writes them, so the report reads its duplicates
    # from the issues table instead of running dedup again.
    names = ["length_ratio", "near_duplicate_pair", "refusal_vs_answer"]
    issue_rows = [
        {
            "item_id": pair_ids[i],
            "issue": names[k],
            "score": float(round(rng.uniform(0, 0.5), 3)),
            "is_issue": True,
            "reason": f"{names[k]}: like pair {pair_ids[(i + 1) % N_PAIRS]}",
        }
        for i, n in zip(flagged.tolist(), n_flags.tolist(), strict=True)
        for k in range(n)
    ]
    issues = pl.DataFrame(issue_rows)
    report = write_report(pairs, tmp_path / "qa", issues=issues, tokenizer=None, bootstrap=50)

    # Independent ranking: most flags first, then the lowest score, then the id.
    per: dict[str, list[float]] = {}
    for r in issue_rows:
        per.setdefault(r["item_id"], []).append(r["score"])
    ranked = sorted(per, key=lambda i: (-len(per[i]), min(per[i]), i))
    table = report["data"]["pairs"]
    assert table["included"] == {
        "flagged": CAP,
        "flagged_total": N_FLAGGED,
        "sample": 200,
        "unflagged_total": N_PAIRS - N_FLAGGED,
        "seed": 0,
        "text_chars": 1500,
        "max_rows": CAP,
        "order": "flags",
    }
    rows = table["rows"]
    assert [r["id"] for r in rows if r["flagged"]] == ranked[:CAP]
    unflagged = [r["id"] for r in rows if not r["flagged"]]
    assert len(set(unflagged)) == 200 and not set(unflagged) & set(per)

    # The page carries exactly these rows, says what it holds, and stays small.
    html_path = tmp_path / "qa" / "report.html"
    html = html_path.read_text(encoding="utf-8")
    block = re.search(
        r'<script type="application/json" class="browse-data">(.*?)</script>', html, re.S
    )
    assert block is not None
    assert [r["id"] for r in json.loads(block.group(1))["rows"]] == [r["id"] for r in rows]
    assert "5,000 of the 30,000 flagged pairs" in html
    assert "the page holds at most 5,000" in html
    assert "200 of the 70,000 unflagged pairs" in html
    assert html_path.stat().st_size < 15_000_000
