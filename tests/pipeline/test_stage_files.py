"""Files named by stage options are inputs, and failures name the stage: a rubric file of
one's own (relative to the pipeline file, hashed like an input, so editing it re-runs the
judge; the judge talks to the local wire-protocol server), and a stage fed a corrupt file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefdata.errors import InputError
from prefdata.pipeline import StageFailed, load_pipeline, run_pipeline
from tests.llm.conftest import api_key, fake_server  # noqa: F401
from tests.llm.fake_server import FakeLLMServer
from tests.pipeline.conftest import Writer

RUBRIC = (
    "### system\nYou judge {what}.\n### user\n{{conversation}}\n"
    "[A]\n{{first}}\n[B]\n{{second}}\nWhich is better?\n"
)


def test_editing_a_rubric_file_reruns_the_judge(
    write_pipeline: Writer,
    shared_data: Path,
    fake_server: FakeLLMServer,  # noqa: F811
    api_key: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rubric = tmp_path / "my_rubric.txt"
    rubric.write_text(RUBRIC.format(what="helpfulness"))
    stages: list[dict[str, Any]] = [
        {
            "kind": "import",
            "format": "hhh",
            "path": str(shared_data / "hhh_alignment" / "hhh_alignment_eval.json"),
            "limit": 2,
        },
        {
            "kind": "judge",
            "judges": ["openai:judge-x"],
            "base_url": fake_server.url + "/v1",
            "rubric": "my_rubric.txt",  # relative to the pipeline file, not the cwd
        },
    ]
    path = write_pipeline(stages)
    monkeypatch.chdir(shared_data)
    pipeline = load_pipeline(path)
    assert pipeline.stage("judge").options["rubric"] == str(rubric)
    run_dir = tmp_path / "run"
    first = run_pipeline(pipeline, run_dir, progress=False)
    assert first.ran == ["import", "judge"]
    assert first.stage("judge").calls_new == 4 == fake_server.served("chat.completions")
    assert run_pipeline(load_pipeline(path), run_dir, progress=False).ran == []

    rubric.write_text(RUBRIC.format(what="harmlessness"))
    third = run_pipeline(load_pipeline(path), run_dir, progress=False)
    assert third.ran == ["judge"]
    assert third.stage("judge").reason == "inputs changed"
    # The new rubric is a new request: nothing is answered from the cache.
    assert third.stage("judge").calls_new == 4 and third.stage("judge").calls_cached == 0
    assert "harmlessness" in str(fake_server.entries("chat.completions")[-1].body)

    # A built-in name stays a name; anything else must be a file.
    stages[1]["rubric"] = "honesty"
    assert load_pipeline(write_pipeline(stages)).stage("judge").options["rubric"] == "honesty"
    stages[1]["rubric"] = "helpfulnes"
    with pytest.raises(
        InputError,
        match=r"key 'rubric': not a built-in \(helpfulness, .*"
        r"file not found: .*helpfulnes",
    ):
        load_pipeline(write_pipeline(stages))


def test_a_corrupt_input_file_names_the_pipeline_and_stage(
    write_pipeline: Writer, tmp_path: Path
) -> None:
    bad = tmp_path / "pairs.csv"
    bad.write_text("prompt,chosen,rejected\nq,a,b\nq2,a,b,extra,more\n")
    path = write_pipeline([{"kind": "split", "inputs": {"pairs": str(bad)}}])
    with pytest.raises(StageFailed) as err:
        run_pipeline(load_pipeline(path), tmp_path / "run", progress=False)
    message = str(err.value)
    # The reader names the file and the row (issue 22), not polars' ComputeError.
    assert message.startswith(f"{path}: stage 1 'split' (split): {bad}, row 2: ")
    assert "5 cells where the header has 3" in message
    # The original error stays attached, for a traceback.
    assert type(err.value.__cause__).__name__ == "InputError"
    assert not (tmp_path / "run" / "split" / "manifest.json").exists()
