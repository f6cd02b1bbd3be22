"""Constitutional critique -> revision -> checked comparison, end to end on the embedded
model (short outputs), and the constitution file format."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from prefdata.errors import InputError
from prefdata.label.constitution import critique, load_constitution
from prefdata.llm.cache import CallCache
from prefdata.llm.local import LocalClient
from prefdata.schema import validate

CANDIDATES = pl.DataFrame(
    {
        "prompt": ["How do I boil an egg?", "What is the capital of France?"],
        "completion": ["Put it in water.", "I think it might be Lyon, not sure."],
    }
)


def test_default_constitution_and_bad_files(tmp_path: Path) -> None:
    principles = load_constitution()
    assert len(principles) == 6 and len({p.id for p in principles}) == 6
    bad = tmp_path / "c.toml"
    bad.write_text('[[principle]]\nid = "x"\nstatement = "s"\ncritique = "c"\n')
    with pytest.raises(InputError, match="revision"):
        load_constitution(bad)


def test_critique_pipeline_end_to_end(tmp_path: Path) -> None:
    client = LocalClient("smollm2", batch_size=8)
    cache = CallCache(tmp_path / "c.sqlite")
    result = critique(
        CANDIDATES,
        model=client,
        cache=cache,
        principles_per_prompt=2,
        min_confidence=0.0,
        critique_tokens=16,
    )
    pairs, votes, report = result.tables["pairs"], result.tables["annotations"], result.report
    assert report["responses"] == 2 and report["revisions"] == 4
    assert report["compared"] + report["revision_errors"] == 4
    # Two comparison votes (both orders) per compared revision, each naming its principle.
    assert votes.height == 2 * report["compared"]
    assert set(votes["order"].to_list()) <= {"ab", "ba"}
    assert votes["principle"].null_count() == 0
    validate(pairs, "pairs")
    assert report["kept"] == pairs.height and report["compared"] == 4
    assert pairs.height + report["dropped_not_preferred"] == 2
    # Only revisions the comparison prefers are kept, whatever min_confidence says.
    assert (pairs["confidence"] > 0.5).all()
    for row in pairs.to_dicts():
        prov = json.loads(row["provenance"])
        assert len(prov["principles"]) == 2 and prov["kept_principle"] in prov["principles"]
        assert row["confidence"] == pytest.approx(max(prov["p_revision"].values()))
        assert row["rejected"] in CANDIDATES["completion"].to_list()
    # A threshold no comparison can reach keeps nothing; the re-run is served by the cache.
    again = critique(
        CANDIDATES,
        model=client,
        cache=cache,
        principles_per_prompt=2,
        min_confidence=1.0,
        critique_tokens=16,
    )
    strict, strict_report = again.tables["pairs"], again.report
    cache.close()
    assert strict.height == 0
    assert strict_report["dropped_not_preferred"] == 2
    assert strict_report["mean_p_revision"] == pytest.approx(report["mean_p_revision"])
