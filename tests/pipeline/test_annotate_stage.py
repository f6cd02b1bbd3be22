"""The annotate-push and annotate-pull stages against the real local Argilla server: the
first run pushes real PandaLM pairs and stops at the pull, saying where to annotate; after an
annotator answers, the next run pulls the responses and the stages after it run; a run with
no new responses re-runs only the push and the pull (they read a server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefdata.annotate import bridge as argilla
from prefdata.io.tables import read_table
from prefdata.pipeline import StageFailed, load_pipeline, run_pipeline
from tests.annotate.conftest import argilla_server  # noqa: F401 (the session's server)
from tests.annotate.helpers import Running, my_queue, respond, rest
from tests.pipeline.conftest import Writer

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]


def test_push_wait_pull_then_the_rest(
    argilla_server: Running,  # noqa: F811
    write_pipeline: Writer,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    stages: list[dict[str, Any]] = [
        {
            "kind": "import",
            "format": "pandalm",
            "path": str(shared_data / "pandalm_testset" / "testset-v1.json"),
            "limit": 4,
        },
        {"kind": "annotate-push", "dataset": "pipeline-4", "workspace": "argilla"},
        {
            "kind": "annotate-pull",
            "dataset": "pipeline-4",
            "workspace": "argilla",
            "min_responses": 4,
        },
        {"kind": "agree", "bootstrap": 20},
        {"kind": "consensus", "method": "majority"},
        {"kind": "export", "formats": ["trl-conversational"]},
    ]
    path = write_pipeline(stages)
    run_dir = tmp_path / "run"
    with pytest.raises(StageFailed) as err:
        run_pipeline(load_pipeline(path), run_dir, progress=False)
    message = str(err.value)
    assert "stage 3 'annotate-pull'" in message and "'pipeline-4'" in message
    assert "0 responses so far" in message and "then run again" in message
    assert (run_dir / "import" / "manifest.json").exists()
    assert not (run_dir / "annotate-pull" / "manifest.json").exists()

    user = argilla.add_user("dora", workspaces=["argilla"])
    with argilla.connection() as conn:
        dataset = argilla.find_dataset(conn, "pipeline-4", "argilla")
    assert dataset is not None
    with rest(argilla_server, str(user["api_key"])) as client:
        records = my_queue(client, str(dataset["id"]))
        assert len(records) == 4
        for record in records:
            respond(client, record["id"], {"label": "a"})

    second = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert second.stage("import").status == "skipped"
    assert second.ran == ["annotate-push", "annotate-pull", "agree", "consensus", "export"]
    votes = read_table(second.stage("annotate-pull").outputs["annotations"])
    assert votes.height == 4 and set(votes["annotator"]) == {"dora"}
    consensus = second.stage("consensus").report["pairs"]
    assert consensus["pairs_in"] == 4 and consensus["pairs_out"] == 4

    third = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert third.ran == ["annotate-push", "annotate-pull"]
    assert third.stage("annotate-pull").reason == "reads a server, so it always runs"
