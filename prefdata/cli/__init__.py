"""The `prefdata` command line (top floor): `app` is the typer application the console script
runs. Commands parse, call one library function and write its outputs; no logic lives here."""

from prefdata.cli.app import app

__all__ = ["app"]
