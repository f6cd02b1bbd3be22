"""Every error a user can cause is a PrefdataError (printed as one line, exit code 2); none is
a bare ValueError that reaches the user as a traceback. ruff's TRY rules have no check for
that, so this test reads the source."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from prefdata.errors import (
    ContractError,
    InputError,
    OptionError,
    OutputError,
    PrefdataError,
    RowError,
    located,
    one_line,
    shorten,
)

PACKAGE = Path(__file__).resolve().parents[1] / "prefdata"
BUILTIN_ERRORS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
# Raised on purpose, each for a reason a user cannot cause with bad input or options.
ALLOWED = {
    "AssertionError",  # an internal invariant broken: a bug to report, with its traceback
    "NotImplementedError",
    "StopIteration",
    "KeyboardInterrupt",
    "SystemExit",
}
ALLOWED_AT = {
    # Lookups by a name the program chose (a KeyError is the lookup protocol), or whose
    # KeyError the caller turns into a located InputError.
    ("prefdata/io/importers/rated.py", "_get", "KeyError"),
    ("prefdata/pipeline/spec.py", "stage", "KeyError"),
    ("prefdata/pipeline/runner.py", "stage", "KeyError"),
    # A module's __getattr__ must raise AttributeError: that is how Python's attribute
    # lookup (and hasattr) learn the name is missing.
    ("prefdata/train/__init__.py", "__getattr__", "AttributeError"),
    # A transformers or TRL internal that changed shape: a bug in the combination of
    # versions, not in the user's input.
    ("prefdata/models/loader.py", "generate_text", "TypeError"),
    ("prefdata/train/dpo.py", "_scale_pair_gradients", "RuntimeError"),
    # A stage declared wrongly (an option type with no command-line form, a stage that
    # returns something else than a StageResult): a programming error, found at import.
    ("prefdata/stage.py", "call", "TypeError"),
    ("prefdata/stage.py", "_hints", "TypeError"),
    ("prefdata/stage.py", "derive", "TypeError"),
    ("prefdata/stage.py", "_cached_spec", "TypeError"),
    ("prefdata/cli/derive.py", "_option_param", "TypeError"),
    ("prefdata/cli/derive.py", "_resource_params", "TypeError"),
}


def _raises(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(enclosing function, raised builtin name, line) for each `raise Builtin(...)`."""
    found = []

    def walk(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name) and exc.id in BUILTIN_ERRORS:
                    found.append((name, exc.id, child.lineno))
            walk(child, name)

    walk(tree, "<module>")
    return found


def test_no_bare_builtin_errors_reach_users() -> None:
    bare = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        for function, name, line in _raises(ast.parse(path.read_text(), rel)):
            if name in ALLOWED or (rel, function, name) in ALLOWED_AT:
                continue
            bare.append(f"{rel}:{line} raise {name} in {function}()")
    assert not bare, "use a prefdata.errors class (InputError, OptionError, ...):\n" + "\n".join(
        bare
    )


def test_the_allow_list_is_current() -> None:
    seen = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        seen |= {(rel, f, n) for f, n, _ in _raises(ast.parse(path.read_text(), rel))}
    assert seen >= ALLOWED_AT, f"stale entries: {ALLOWED_AT - seen}"


def test_user_errors_keep_callers_of_value_error_working() -> None:
    for cls in (InputError, ContractError, OptionError, RowError):
        assert issubclass(cls, PrefdataError) and issubclass(cls, ValueError)
    assert issubclass(OptionError, InputError)
    assert issubclass(OutputError, PrefdataError)
    with pytest.raises(ValueError, match="row 3"):
        raise InputError("bad", source="f.jsonl", row=3)


def test_messages_name_the_place_and_stay_one_short_line() -> None:
    err = InputError("line one\nline two", source="a.jsonl", row=2, column="chosen")
    assert str(err) == "a.jsonl, row 2, column 'chosen': line one line two"
    assert str(OptionError("must be >= 1", option="n")) == "n: must be >= 1"
    cut = shorten("z" * 10_000)
    assert len(cut) < 200 and "10,002 characters" in cut
    assert len(one_line("y" * 100_000)) < 2100


def test_located_names_the_file_an_error_came_from() -> None:
    with pytest.raises(InputError) as caught, located("votes.parquet"):
        raise InputError("vote without an annotator", row=4, column="annotator")
    assert str(caught.value) == (
        "votes.parquet, row 4, column 'annotator': vote without an annotator"
    )
    with pytest.raises(InputError) as kept, located("other.parquet"):
        raise InputError("x", source="first.parquet")
    assert str(kept.value).startswith("first.parquet")
