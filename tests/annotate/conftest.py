"""Fixtures for the Argilla tests: one real local server per test session, real PandaLM data.

The server is the real argilla-server 2.8.0 from annotate/.venv, started with the project's
own scripts (prefdata.annotate.service -> annotate/service.py) on a free port with a
temporary data folder, and stopped at the end. Tests skip only when annotate/.venv has not
been set up (`bash annotate/setup.sh`); a missing Redis, SDK or browser is a failure.

All tests here share the server: mark them `xdist_group("argilla")` so that
`pytest -n 2 --dist loadgroup` runs them on one worker (one server, not two).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from prefdata.annotate import service as annotate_service
from prefdata.io.importers.pandalm import import_pandalm
from tests.annotate.helpers import Running, free_port


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if not annotate_service.is_installed():
        pytest.skip("the annotation server is not set up: run `bash annotate/setup.sh` once")
    data = tmp_path_factory.mktemp("argilla-data")
    port = free_port()
    info = annotate_service.serve(port=port, data=data, timeout=120)
    try:
        yield Running(
            info["url"], info["api_key"], info["password"], data, port, info["start_seconds"]
        )
    finally:
        annotate_service.stop(data=data)


@dataclass(frozen=True)
class PandaLM:
    pairs: pl.DataFrame  # the 30 pushed pairs
    human: pl.DataFrame  # their human votes (annotator1..3), one per annotator and pair
    judges: pl.DataFrame  # every judge vote of the data set


@pytest.fixture(scope="session")
def pandalm30(shared_data: Path) -> PandaLM:
    """30 real PandaLM pairs shown once each (no pooled repeats) with all 3 human votes."""
    folder = shared_data / "pandalm_testset"
    imported = import_pandalm(
        folder / "testset-v1.json",
        judges=[folder / "gpt-3.5-turbo-testset-v1.json", folder / "pandalm-7b-testset-v1.json"],
    )
    pairs, votes = imported.tables["pairs"], imported.tables["annotations"]
    human = votes.filter(pl.col("annotator_kind") == "human")
    per_item = human.group_by("item_id").agg(
        pl.len().alias("n"), pl.col("record_id").n_unique().alias("records")
    )
    single = per_item.filter((pl.col("n") == 3) & (pl.col("records") == 1))["item_id"]
    chosen = pairs.filter(pl.col("pair_id").is_in(single.implode())).head(30)
    assert chosen.height == 30
    keep = chosen["pair_id"].implode()
    return PandaLM(
        pairs=chosen,
        human=human.filter(pl.col("item_id").is_in(keep)),
        judges=votes.filter(pl.col("annotator_kind") == "llm"),
    )
