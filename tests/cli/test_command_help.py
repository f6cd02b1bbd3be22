"""A derived command's --help reads as prose: docstring line breaks do not survive into it."""

from __future__ import annotations

from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.cli.derive import command_help
from prefdata.pipeline.catalog import STAGES, stage_spec


def test_prose_paragraphs_are_joined_and_list_items_kept() -> None:
    text = (
        "Short summary\nover two lines.\n\nInput: a table\nof pairs.\n\n"
        "- one item\n  wrapped\n- two"
    )
    assert command_help(text) == (
        "Short summary over two lines.\n\nInput: a table of pairs.\n\n\b- one item wrapped\n- two"
    )


def test_every_derived_help_has_no_ragged_docstring_lines() -> None:
    for name in STAGES:
        description = stage_spec(name).description
        for paragraph in command_help(description).split("\n\n"):
            if not paragraph.startswith("\b"):
                assert "\n" not in paragraph, (name, paragraph)


def test_audit_help_keeps_a_sentence_on_one_line() -> None:
    result = CliRunner().invoke(app, ["audit", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    # In the docstring this phrase is split over two lines; in the help it is one.
    assert "(votes on the pairs, item_id = pair_id)" in result.output
