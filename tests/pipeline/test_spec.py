"""Pipeline files: bad ones give one InputError naming the file, the stage and the key (no
model is loaded); the shipped examples parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefdata.errors import InputError
from prefdata.pipeline import load_pipeline
from prefdata.pipeline.spec import StageRef
from tests.pipeline.conftest import Writer

EXAMPLES = Path(__file__).resolve().parents[2] / "prefdata" / "examples" / "pipelines"
PROMPTS = EXAMPLES.parent / "demo_prompts.jsonl"


def gen(**options: Any) -> dict[str, Any]:
    return {"kind": "generate", "inputs": {"prompts": str(PROMPTS)}, **options}


BAD: list[tuple[str, list[dict[str, Any]], list[str]]] = [
    (
        "unknown kind",
        [gen(), {"kind": "judgee"}],
        ["stage 2", "unknown stage kind 'judgee'", "did you mean 'judge'?"],
    ),
    (
        "unknown option",
        [gen(), {"kind": "judge", "judgs": ["local:smollm2"]}],
        ["stage 2 'judge'", "key 'judgs'", "did you mean 'judges'?"],
    ),
    (
        "missing input",
        [{"kind": "consensus"}],
        ["stage 1 'consensus'", "needs annotations", "judge"],
    ),
    (
        "input file not there",
        [{"kind": "generate", "inputs": {"prompts": "nowhere.jsonl"}}],
        ["stage 1 'generate'", "inputs.prompts", "file not found", "nowhere.jsonl"],
    ),
    (
        "input from a later stage",
        [gen(inputs={"prompts": "later"}), {"kind": "generate", "name": "later"}],
        ["stage 1 'generate'", "stage 'later' comes later"],
    ),
    (
        "wrong type",
        [gen(n="four")],
        ["stage 1 'generate'", "key 'n': must be a whole number", "'four'"],
    ),
    (
        "bad choice",
        [gen(), {"kind": "judge", "orders": "sideways"}],
        ["stage 2 'judge'", "key 'orders'", "both, ab, ba", "'sideways'"],
    ),
    (
        "required option",
        [gen(), {"kind": "judge"}, {"kind": "consensus"}, {"kind": "train", "recipe": {}}],
        ["stage 4 'train'", "key 'method': missing, and this option is required"],
    ),
    (
        "duplicate names",
        [gen(), gen()],
        ["stage 2", "two stages are named 'generate'"],
    ),
    (
        "unknown input slot",
        [gen(), {"kind": "judge", "inputs": {"pears": "generate"}}],
        ["stage 2 'judge'", "inputs.pears", "did you mean 'pairs'?"],
    ),
    (
        "importer option",
        [{"kind": "import", "format": "gsm8k", "path": str(PROMPTS), "options": {"mod": 1}}],
        ["stage 1 'import'", "key 'options.mod'", "takes no option 'mod'"],
    ),
    (
        "stage that makes no such table",
        [gen(), {"kind": "export", "inputs": {"pairs": "generate"}}],
        ["stage 2 'export'", "stage 'generate' makes no pairs or kto"],
    ),
]


@pytest.mark.parametrize(("what", "stages", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_pipeline_names_file_stage_and_key(
    write_pipeline: Writer, what: str, stages: list[dict[str, Any]], expected: list[str]
) -> None:
    path = write_pipeline(stages)
    with pytest.raises(InputError) as err:
        load_pipeline(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for piece in expected:
        assert piece in message, (what, message)


def test_errors_carry_the_line_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "stages:\n"
        f"  - kind: generate\n    inputs: {{prompts: {PROMPTS}}}\n"
        "  - kind: judge\n"
        "    rubric: helpfulness\n"
        "    judgs: [local:smollm2]\n"
    )
    with pytest.raises(InputError, match=r"stage 2 'judge' \(line 6\): key 'judgs'"):
        load_pipeline(path)


def test_file_level_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - kind: generate\n   n: 3\n")
    with pytest.raises(InputError, match=r"p\.yaml: line 3: not valid YAML"):
        load_pipeline(path)
    path.write_text("stagse: []\n")
    with pytest.raises(InputError, match=r"unknown key 'stagse'; did you mean 'stages'"):
        load_pipeline(path)
    path.write_text(
        f"stages:\n  - kind: generate\n    inputs: {{prompts: {PROMPTS}}}\n    n: 2\n    n: 3\n"
    )
    with pytest.raises(InputError, match=r"line 5: not valid YAML: key 'n' appears twice"):
        load_pipeline(path)


def test_sets_and_profiles_change_options_and_are_checked(write_pipeline: Writer) -> None:
    path = write_pipeline(
        [gen(n=4), {"kind": "judge"}],
        profiles={"small": {"generate": {"n": 2, "max_prompts": 3}}},
    )
    p = load_pipeline(path, profile="small", sets=["judge.judges=[anthropic:claude-x]"])
    assert p.stage("generate").options["n"] == 2
    assert p.stage("generate").options["max_prompts"] == 3
    assert p.stage("judge").options["judges"] == ["anthropic:claude-x"]
    # Defaults are filled in, so the manifest hash sees every option.
    assert p.stage("judge").options["orders"] == "both"
    with pytest.raises(InputError, match="no profile 'big' \\(profiles: small\\)"):
        load_pipeline(path, profile="big")
    with pytest.raises(InputError, match="no stage named 'judg'; did you mean 'judge'"):
        load_pipeline(path, sets=["judg.judges=x"])
    with pytest.raises(InputError, match=r"stage 1 'generate'.*key 'n': must be a whole number"):
        load_pipeline(path, sets=["generate.n=many"])
    with pytest.raises(InputError, match=r"--set expects stage\.key=value"):
        load_pipeline(path, sets=["generate"])


def test_inputs_resolve_to_stages_and_files(write_pipeline: Writer, tmp_path: Path) -> None:
    (tmp_path / "votes.parquet").write_bytes(b"")
    path = write_pipeline(
        [
            gen(),
            {"kind": "judge", "name": "j1"},
            {"kind": "consensus", "inputs": {"pairs": "j1.pairs", "annotations": "votes.parquet"}},
            {"kind": "report", "inputs": {"before": "j1"}},
        ]
    )
    p = load_pipeline(path)
    assert p.stage("consensus").inputs == {
        "pairs": StageRef("j1", ("pairs",)),
        "annotations": tmp_path / "votes.parquet",
    }
    assert p.stage("report").inputs == {"before": StageRef("j1", ("before", "pairs", "kto"))}


def test_environment_variables_in_paths(
    write_pipeline: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = {"kind": "import", "format": "gsm8k", "path": "${PREFDATA_TEST_DIR}/demo_prompts.jsonl"}
    path = write_pipeline([stage])
    monkeypatch.delenv("PREFDATA_TEST_DIR", raising=False)
    with pytest.raises(InputError, match="environment variable PREFDATA_TEST_DIR is not set"):
        load_pipeline(path)
    monkeypatch.setenv("PREFDATA_TEST_DIR", str(PROMPTS.parent))
    assert load_pipeline(path).stage("import").options["path"] == str(PROMPTS)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_shipped_examples_parse(
    name: str, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFDATA_SHARED_DATA", str(shared_data))
    p = load_pipeline(EXAMPLES / name)
    assert p.stages and all(s.options for s in p.stages)
    if name == "demo.yaml":
        quick = load_pipeline(EXAMPLES / name, profile="quick")
        assert quick.stage("generate").options["max_prompts"] == 6
        # A profile merges into the inline recipe instead of replacing it.
        recipe = quick.stage("train").options["recipe"]
        assert recipe["max_steps"] == 1 and recipe["beta"] == 0.1
        assert recipe["peft"] == {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}


def test_examples_are_package_data() -> None:
    import tomllib

    config = tomllib.loads((EXAMPLES.parents[2] / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["prefdata"]
    assert "examples/pipelines/*.yaml" in globs and "examples/*" in globs


def test_cli_prints_one_located_line_for_a_bad_file(write_pipeline: Writer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from prefdata.cli import app

    path = write_pipeline([gen(), {"kind": "judge", "rubrik": "helpfulness"}])
    result = CliRunner().invoke(app, ["run", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"error: {path}: stage 2 'judge'" in result.output
    assert "key 'rubrik': unknown option for a judge stage; did you mean 'rubric'?" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    good = write_pipeline([gen(), {"kind": "judge"}], name="good.yaml")
    checked = CliRunner().invoke(app, ["run", str(good), "-o", str(tmp_path / "run"), "--check"])
    assert checked.exit_code == 0, checked.output
    listed = json.loads(checked.stdout)["stages"]
    assert [s["stage"] for s in listed] == ["generate", "judge"]
    assert listed[1]["options"]["judges"] == ["local:smollm2"]
    assert not (tmp_path / "run").exists()
