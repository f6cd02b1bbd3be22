"""`prefdata import FORMAT SRC -o OUT`: one command per format, each derived from its
importer's signature (prefdata.io.importers.IMPORTERS is the one list of formats), so a
format's options are real flags with their help (`prefdata import rated --help`)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from prefdata.cli.derive import add_stage_command, flag
from prefdata.io.importers import IMPORTERS, importer
from prefdata.stage import spec_of


class _Formats(TyperGroup):
    """The import group: an unknown format is named as such, with the known ones."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        if found is None and cmd_name not in ("--help",):
            raise typer.BadParameter(
                f"unknown format '{cmd_name}'; choose one of: {', '.join(IMPORTERS)}"
            )
        return found


class _Format(TyperCommand):
    """One format's command: an option the format does not take is named with the ones it
    does (rather than click's bare "no such option")."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            if type(exc).__name__ != "NoSuchOption":
                raise
            takes = [flag(p.name) for p in spec_of(importer(self.name or "")).options]
            raise typer.BadParameter(
                f"format '{self.name}' takes no option {getattr(exc, 'option_name', '')}; "
                f"it takes {', '.join(takes) or 'no options'}"
            ) from None


def import_app() -> typer.Typer:
    """The `prefdata import` group."""
    group = typer.Typer(
        cls=_Formats,
        help="Import a public format into prefdata's tables: the main table goes to -o, "
        "companion tables (annotations, kto, prompts) and the rejected rows (with their reason) "
        "beside it as OUT-stem.<name>.<suffix>. Formats: " + ", ".join(IMPORTERS) + ".",
        no_args_is_help=True,
        add_completion=False,
    )
    for fmt in IMPORTERS:
        add_stage_command(group, spec_of(importer(fmt)), name=fmt, cls=_Format)
    return group
