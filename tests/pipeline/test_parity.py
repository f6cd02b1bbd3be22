"""One declaration per stage: the CLI command and the pipeline stage kind of every stage in the
catalog are derived from the library function, so they take the same options and write the
same outputs for the same input.

The option check reads what typer and the pipeline actually built (not the derivation's own
bookkeeping); the output check runs both on real data and compares every table they write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import typer.main
import yaml

from prefdata.cli import app
from prefdata.io.tables import read_table, write_table
from prefdata.pipeline import load_pipeline, run_pipeline
from prefdata.pipeline.catalog import STAGES, cli_path, stage_spec
from prefdata.pipeline.stages import REGISTRY
from prefdata.stage import Param
from tests.annotate.conftest import argilla_server  # noqa: F401 (the session's server)


def _click_command(name: str) -> Any:
    """The click command typer built (typer vendors its own click classes: duck-typed)."""
    command: Any = typer.main.get_command(app)
    for word in cli_path(name):
        command = command.commands[word]
    return command


def _cli_names(command: Any) -> set[str]:
    """The parameter names the command really takes, less the CLI's own (-o, cache...; the
    engine's --engine / --address open the engine a stage gets as a resource)."""
    own = {"out", "rejected_out", "no_cache", "help", "engine", "address"}
    return {p.name for p in command.params if p.name and p.name not in own}


def _library_names(params: list[Param]) -> set[str]:
    return {p.name for p in params}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_cli_and_pipeline_take_exactly_the_library_options(name: str) -> None:
    spec = stage_spec(name)
    command = _click_command(name)
    library = _library_names(
        [
            p
            for p in spec.params
            if p.role != "output" and not (p.resource is not None and p.resource.name == "engine")
        ]
    )
    assert _cli_names(command) == library, name
    kind = REGISTRY[name]
    assert set(kind.options) == _library_names(spec.options), name
    slots = {s.key for s in kind.inputs} if isinstance(kind.inputs, tuple) else set()
    assert slots == _library_names(spec.inputs), name
    # Defaults agree: the pipeline's default is the signature's default.
    for p in spec.options:
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        assert kind.options[p.name].default == (None if p.required else default), (name, p.name)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_option_is_documented(name: str) -> None:
    spec = stage_spec(name)
    assert spec.summary, f"stage {name} has no docstring summary"
    undocumented = [p.name for p in spec.params if p.role != "resource" and not p.help]
    assert not undocumented, f"stage {name}: no `Args:` line for {undocumented}"


# ---- same input, same outputs ------------------------------------------------------------

Case = Callable[[Path, Path], tuple[dict[str, Path], dict[str, Any], str]]
"""(shared data, tmp) -> (input param -> file, options, the CLI's -o file name)."""


def _pandalm_pairs(shared: Path, tmp: Path) -> tuple[Path, Path]:
    from prefdata.io.importers.pandalm import import_pandalm

    imported = import_pandalm(shared / "pandalm_testset" / "testset-v1.json")
    pairs = write_table(imported.tables["pairs"].head(120), tmp / "pairs.parquet")
    votes = imported.tables["annotations"]
    return pairs, write_table(votes, tmp / "votes.parquet")


def _filter_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    pairs, _ = _pandalm_pairs(shared, tmp)
    return {"pairs": pairs}, {"min_confidence": 0.9, "ties": "drop"}, "main.parquet"


def _agree_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    _, votes = _pandalm_pairs(shared, tmp)
    return {"annotations": votes}, {"bootstrap": 50, "seed": 3}, "main.json"


def _consensus_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    pairs, votes = _pandalm_pairs(shared, tmp)
    return {"annotations": votes, "pairs": pairs}, {"method": "dawid-skene"}, "main.parquet"


def _pairs_only(**options: Any) -> Case:
    def case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
        pairs, _ = _pandalm_pairs(shared, tmp)
        return {"pairs": pairs}, options, "main.parquet"

    return case


def _file_case(param: str, **options: Any) -> Case:
    def case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
        pairs, _ = _pandalm_pairs(shared, tmp)
        return {param: pairs}, options, "main.parquet"

    return case


def _bias_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    pairs, votes = _pandalm_pairs(shared, tmp)
    return {"pairs": pairs, "annotations": votes}, {"unit": "words"}, "main.parquet"


def _audit_rate_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    reviewed = pl.DataFrame({"mislabeled": [True, False, False, None, True] * 8})
    return {"reviewed": write_table(reviewed, tmp / "r.parquet")}, {}, "main.parquet"


def _rule_label_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata import ids

    # MT-Bench's four model answers per question, as candidates
    rated = pl.read_json(shared / "mt_bench_ratings" / "mt_bench_eval.json").head(40)
    text = rated["instruction"].str.split("###Response to evaluate:\n")
    candidates = pl.DataFrame(
        {
            "prompt": rated["idx"].cast(pl.String),
            "completion": text.list.get(1).str.split("\n\n###Reference Answer").list.first(),
            "generator": rated["response_source"],
            "params": ["{}"] * rated.height,
        }
    ).unique(["prompt", "completion"], maintain_order=True)
    table = ids.with_completion_ids(
        candidates.with_columns(
            pl.concat_list(pl.struct(role=pl.lit("user"), content="prompt")).alias("prompt")
        )
    )
    options = {"pairing": "all", "flip_rate": 0.25, "seed": 3}
    return {"candidates": write_table(table, tmp / "candidates.parquet")}, options, "main.parquet"


def _ratings_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata.pipeline.demo import EXAMPLES

    rated = read_table(EXAMPLES / "ratings.jsonl")
    return {"rated": write_table(rated, tmp / "rated.parquet")}, {"mode": "all"}, "main.parquet"


def _rankings_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata.pipeline.demo import EXAMPLES

    rated = read_table(EXAMPLES / "ratings.jsonl")
    mean = pl.col("score").list.mean()
    ranked = rated.with_columns((-mean).rank("dense").over("prompt").cast(pl.Int64).alias("rank"))
    path = write_table(ranked.drop("score"), tmp / "ranked.parquet")
    return {"ranked": path}, {"mode": "best-vs-worst"}, "main.parquet"


def _thumbs_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    thumbs = pl.DataFrame(
        {
            "prompt": [f"question {i % 5}" for i in range(20)],
            "completion": [f"answer {i}" for i in range(20)],
            "up": [i % 4 for i in range(20)],
            "down": [(i * 7) % 3 for i in range(20)],
        }
    )
    return {"thumbs": write_table(thumbs, tmp / "thumbs.parquet")}, {}, "main.parquet"


def _hhh_pairs(shared: Path, tmp: Path, n: int) -> Path:
    from prefdata.io.importers.hhh import import_hhh

    pairs = import_hhh(shared / "hhh_alignment" / "hhh_alignment_eval.json").tables["pairs"]
    short = pairs.sort(pl.col("chosen").str.len_chars() + pl.col("rejected").str.len_chars())
    return write_table(short.head(n), tmp / "hhh.parquet")


def _judge_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    # The embedded model reads P(A) / P(B): a real judge with no server.
    pairs = _hhh_pairs(shared, tmp, 3)
    return {"pairs": pairs}, {"judges": ["local:smollm2"], "batch_size": 6}, "main.parquet"


def _judge_eval_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata.io.importers.pandalm import import_pandalm

    folder = shared / "pandalm_testset"
    votes = import_pandalm(
        folder / "testset-v1.json", judges=[folder / "gpt-3.5-turbo-testset-v1.json"]
    ).tables["annotations"]
    judge = write_table(votes.filter(pl.col("annotator_kind") == "llm"), tmp / "judge.parquet")
    human = write_table(votes.filter(pl.col("annotator_kind") == "human"), tmp / "human.parquet")
    return {"votes": judge, "gold": human}, {"min_human_agreement": 0.6}, "main.parquet"


def _critique_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata import ids

    pairs = read_table(_hhh_pairs(shared, tmp, 2))
    candidates = ids.with_completion_ids(
        pairs.select("prompt_id", "prompt", pl.col("rejected").alias("completion"))
    )
    table = write_table(candidates, tmp / "candidates.parquet")
    options = {"principles_per_prompt": 1, "critique_tokens": 12}
    return {"candidates": table}, options, "main.parquet"


def _export_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    pairs, _ = _pandalm_pairs(shared, tmp)
    return {"pairs": pairs}, {"formats": ["trl", "kto"], "minimal": True}, "exports"


def _generate_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata.pipeline.demo import EXAMPLES

    prompts = read_table(EXAMPLES / "demo_prompts.jsonl").head(2)
    options = {"n": 2, "max_new_tokens": 6, "seed": 4, "temperature": 1.0}
    return {"prompts": write_table(prompts, tmp / "prompts.parquet")}, options, "main.parquet"


def _synthetic_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    inputs, _, out = _rule_label_case(shared, tmp)
    return inputs, {"scorer": "length", "min_margin": 5.0}, out


def _argilla_pairs(shared: Path, tmp: Path, n: int) -> tuple[Path, pl.DataFrame]:
    from prefdata.io.importers.pandalm import import_pandalm

    pairs = import_pandalm(shared / "pandalm_testset" / "testset-v1.json").tables["pairs"]
    head = pairs.head(n)
    return write_table(head, tmp / "argilla-pairs.parquet"), head


def _push_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    path, _ = _argilla_pairs(shared, tmp, 4)
    return {"pairs": path}, {"dataset": "parity-push", "annotators_per_item": 2}, "unused"


def _pull_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    """Four pairs pushed, each answered once by an annotator over REST: something to pull."""
    from prefdata.annotate import bridge as pa
    from tests.annotate.helpers import my_queue, respond

    _, pairs = _argilla_pairs(shared, tmp, 4)
    report = pa.push(pairs, dataset="parity-pull").report
    user = pa.add_user("parity-annotator")
    with httpx.Client(
        base_url=report["url"], headers={"X-Argilla-Api-Key": str(user["api_key"])}
    ) as client:
        for i, record in enumerate(my_queue(client, report["dataset_id"])):
            respond(client, record["id"], {"label": ["a", "b", "tie", "a"][i]})
    return {}, {"dataset": "parity-pull"}, "main.parquet"


def _report_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata.quality.audit import audit
    from prefdata.quality.filter import filter_pairs

    pairs, votes = _pandalm_pairs(shared, tmp)
    issues = audit(read_table(pairs), sample=0).tables["issues"]
    filtered = filter_pairs(read_table(pairs), issues=issues, drop_issues="all")
    settings = tmp / "clean.filter.json"
    settings.write_text(json.dumps(filtered.documents["filter"]))
    inputs = {
        "data": write_table(filtered.tables["pairs"], tmp / "clean.parquet"),
        "before": pairs,
        "annotations": votes,
        "issues": write_table(issues, tmp / "issues.parquet"),
        "rejected": write_table(filtered.rejected, tmp / "rejected.parquet"),
        "filter_settings": settings,
    }
    return inputs, {"tokenizer": "none", "bootstrap": 50, "license": "apache-2.0"}, "qa"


def _same_folders(cli: Path, pipeline: Path) -> None:
    """The same files with the same content, but for the time each was written."""
    names = sorted(p.relative_to(cli).as_posix() for p in cli.rglob("*") if p.is_file())
    assert names == sorted(
        p.relative_to(pipeline).as_posix() for p in pipeline.rglob("*") if p.is_file()
    )
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")  # when it was written
    for name in names:
        a, b = cli / name, pipeline / name
        if a.suffix == ".parquet":
            assert read_table(a).to_dicts() == read_table(b).to_dicts(), name
        else:
            text_a, text_b = (stamp.sub("T", p.read_text(encoding="utf-8")) for p in (a, b))
            assert text_a == text_b, name


# Cases that need the session's Argilla server (tests.annotate.conftest).
ARGILLA_CASES = ("annotate-push", "annotate-pull")


def _eval_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    from prefdata.models.tiny import tiny_model

    model = tiny_model(tmp / "tiny", layers=1, hidden=16, heads=2)
    pairs, _ = _pandalm_pairs(shared, tmp)
    short = read_table(pairs).head(4)
    heldout = write_table(short, tmp / "heldout.parquet")
    return {"model": model, "heldout": heldout}, {"batch_size": 2}, "main.json"


def _audit_case(shared: Path, tmp: Path) -> tuple[dict[str, Path], dict[str, Any], str]:
    pairs, votes = _pandalm_pairs(shared, tmp)
    return {"pairs": pairs, "annotations": votes}, {"sample": 5, "seed": 2}, "main.parquet"


CASES: dict[str, Case] = {
    "audit": _audit_case,
    "eval": _eval_case,
    "split": _file_case("pairs", heldout=0.3, seed=5),
    "synthetic-pairs": _synthetic_case,
    "generate": _generate_case,
    "judge": _judge_case,
    "judge-eval": _judge_eval_case,
    "critique": _critique_case,
    "export": _export_case,
    "pairs-to-kto": _file_case("pairs"),
    "ratings-to-pairs": _ratings_case,
    "rankings-to-pairs": _rankings_case,
    "thumbs-to-kto": _thumbs_case,
    "validate": _file_case("file", contract="pairs"),
    "info": _file_case("table"),
    "bias": _bias_case,
    "audit-rate": _audit_rate_case,
    "consensus": _consensus_case,
    "agree": _agree_case,
    "filter": _filter_case,
    "rule-label": _rule_label_case,
    "report": _report_case,
    "annotate-push": _push_case,
    "annotate-pull": _pull_case,
}


def test_every_stage_has_an_output_case() -> None:
    assert set(CASES) == set(STAGES)


def _cli_args(
    name: str, inputs: dict[str, Path], options: dict[str, Any], cache: Path
) -> list[str]:
    spec = stage_spec(name)
    args: list[str] = list(cli_path(name))
    if any(p.resource is not None and p.resource.name == "cache" for p in spec.params):
        # The pipeline's own call cache: the CLI answers first, the pipeline replays those
        # answers (model calls are paid once, and both write the same votes).
        args += ["--cache", str(cache)]
    for p in spec.inputs:
        if p.name in inputs:
            flag = "--" + p.name.replace("_", "-")
            args += [str(inputs[p.name])] if p.positional else [flag, str(inputs[p.name])]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool):
                args.append(flag if v else f"--no-{key.replace('_', '-')}")
            else:
                args += [flag, str(v)]
    return args


def _case_params() -> list[Any]:
    argilla = [pytest.mark.integration, pytest.mark.xdist_group("argilla")]
    return [
        pytest.param(name, marks=argilla if name in ARGILLA_CASES else ()) for name in sorted(CASES)
    ]


# Push twice to one dataset: the second push updates what the first created.
_PUSH_COUNTS = ("created", "updated", "workspace_created", "settings_updated")


@pytest.mark.parametrize("name", _case_params())
def test_cli_and_pipeline_write_the_same_tables(
    name: str,
    shared_data: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    if name in ARGILLA_CASES:
        server = request.getfixturevalue("argilla_server")
        monkeypatch.setenv("ARGILLA_API_URL", server.url)
        monkeypatch.setenv("ARGILLA_API_KEY", server.api_key)
    inputs, options, out_name = CASES[name](shared_data, tmp_path)
    out = tmp_path / "cli" / out_name
    out.parent.mkdir()
    spec = stage_spec(name)
    cache = tmp_path / "run" / "calls.sqlite"
    cache.parent.mkdir()
    args = _cli_args(name, inputs, options, cache) + (["-o", str(out)] if spec.outputs else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    pipeline = tmp_path / "p.yaml"
    stage = {"kind": name, "inputs": {k: str(v) for k, v in inputs.items()}, **options}
    pipeline.write_text(yaml.safe_dump({"stages": [stage]}))
    run = run_pipeline(load_pipeline(pipeline), tmp_path / "run", progress=False)
    written = run.stage(name).outputs
    if not spec.outputs:  # a report-only stage: the same report
        cli_report = json.loads(result.stdout)
        pipeline_report = json.loads(json.dumps(run.stage(name).report))
        if name == "annotate-push":
            assert cli_report["created"] == pipeline_report["updated"] == cli_report["records"]
            for key in _PUSH_COUNTS:
                cli_report.pop(key, None)
                pipeline_report.pop(key, None)
        assert cli_report == pipeline_report
        return
    # The CLI says what it wrote, by output name; compare each with the pipeline's file.
    cli_written = json.loads(result.stdout)["written"]
    compared = 0
    for output, path in written.items():
        cli_path = Path(cli_written[output])
        assert cli_path.exists(), (output, cli_path)
        if path.suffix == ".json":
            assert json.loads(cli_path.read_text()) == json.loads(path.read_text()), output
        elif path.is_dir():
            _same_folders(cli_path, path)
        else:
            assert read_table(cli_path).to_dicts() == read_table(path).to_dicts(), output
        compared += 1
    assert compared >= 1


def test_train_takes_the_options_train_declares() -> None:
    """`train` keeps a hand-written kind (its data slot depends on the method), so its CLI
    commands and pipeline kind are held to `prefdata.train.train`'s signature here."""
    import inspect

    from prefdata.train import METHODS, train

    declared = set(inspect.signature(train).parameters)
    kind = REGISTRY["train"]
    slots = {s.key for s in kind.slots({"method": "dpo"})}
    # The data slot is named by the method's contract; the rest is one to one.
    assert set(kind.options) | {"data", "out"} | (slots - {"pairs"}) == declared
    for method in METHODS:
        command = _click_command_path(("train", method))
        cli = {p.name for p in command.params if p.name}
        # CLI-only: how to launch (accelerate), and shortcuts for two recipe overrides
        # (--allow-small-groups, --allow-degenerate: prefdata.max_degenerate_share=1).
        own = {"launcher", "accelerate_config", "allow_small_groups", "allow_degenerate", "help"}
        assert cli - own == declared - {"method"}, method


def _click_command_path(words: tuple[str, ...]) -> Any:
    command: Any = typer.main.get_command(app)
    for word in words:
        command = command.commands[word]
    return command
