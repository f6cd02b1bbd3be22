"""Every CLI command fed every class of bad input (issue 22): no traceback, no silently wrong
result; every error is one line naming the file (and the row and column where there is one),
exit code 2, and nothing written.

The cases are data (bad_input_cases.py: commands x breakages; bad_input_specific.py: the
cases the issue names one by one). The CLI runs in-process through click's CliRunner on the
app's command, as a black box: argv in, exit code, stdout, stderr and files out. Commands
that would load a model or call a server get a model path and server address that do not
exist, so a bad input caught too late shows up as the wrong error.
"""

from __future__ import annotations

import hashlib
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner
from typer.main import get_command

from prefdata.cli import app
from tests.cli.bad_input_cases import Case, contract_cases, generic_cases, output_cases
from tests.cli.bad_input_fixtures import build
from tests.cli.bad_input_specific import specific_cases

CASES: list[Case] = generic_cases() + contract_cases() + output_cases() + specific_cases()
# typer builds the click command anew on each CliRunner.invoke (~0.1 s for this app): built once
# here, the same command every `prefdata` call runs.
COMMAND = get_command(app)


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("bad-input-fixtures"), shared_data)


def _listing(folder: Path) -> dict[str, str]:
    """Every path under `folder` with a digest of its content (folders: "dir")."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link"
        elif p.is_dir():
            out[str(p)] = "dir"
        else:
            out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def test_the_suite_is_large_enough() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 400


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case, fixtures: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "case"
    d.mkdir()
    subs = case.make(d, fixtures)
    values = {"d": str(d), "fx": {k: str(v) for k, v in fixtures.items()}, **subs}
    argv = [a.format_map(values) for a in case.argv]
    before = _listing(d)

    result = CliRunner().invoke(COMMAND, argv, prog_name="prefdata")

    shown = f"prefdata {' '.join(argv)}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"traceback\n{shown}\n{trace}")
    if case.expect == "ok":
        assert result.exit_code == 0, shown
        if case.check is not None:
            case.check(d, result.stdout)
        return
    assert result.exit_code == 2, shown
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), f"not one error line\n{shown}"
    for expected in case.says:
        assert expected.format_map(values) in errors[0], f"{expected!r} not named\n{shown}"
    if case.check is not None:
        case.check(d, result.stdout)
    after = _listing(d)
    if case.run_folder_ok:
        after = {k: v for k, v in after.items() if k in before or not k.startswith(f"{d}/run")}
    assert after == before, f"files changed although the command failed\n{shown}"
