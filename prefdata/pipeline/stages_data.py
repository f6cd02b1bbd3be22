"""The pipeline's `import` stage: `format:` picks the importer (prefdata.io.importers), whose
own options go under `options:` and are checked against the importer's signature, the same
declaration `prefdata import FORMAT` is derived from. (Every other data stage is derived:
see prefdata.pipeline.catalog.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import OptionError
from prefdata.pipeline.kinds import Opt, StageKind, StageOutputs, StageRun

# ---- import ------------------------------------------------------------------------------


def _importer(fmt: str) -> Any:
    from prefdata.io.importers import importer

    return importer(fmt)


def _import_formats() -> tuple[str, ...]:
    from prefdata.io.importers import IMPORTERS

    return tuple(IMPORTERS)


def _check_import(options: Mapping[str, Any]) -> None:
    """The importer's own options, checked as its signature declares them (names, types,
    choices): the same declaration the CLI's `prefdata import FORMAT` is derived from."""
    from prefdata.pipeline.derive import option
    from prefdata.stage import spec_of

    fmt = options.get("format")
    if fmt is None:
        return
    declared = {p.name: p for p in spec_of(_importer(fmt)).options}
    for key, value in (options.get("options") or {}).items():
        if key not in declared:
            raise OptionError(
                f"'options.{key}': format '{fmt}' takes no option '{key}'; it takes "
                f"{list(declared)}"
            )
        try:
            option(declared[key]).check(value)
        except ValueError as exc:
            raise OptionError(f"'options.{key}': {exc}") from None


def _limit(tables: dict[str, pl.DataFrame], limit: int) -> dict[str, pl.DataFrame]:
    name, main = next(iter(tables.items()))
    main = main.head(limit)
    out = {name: main}
    for other, table in tables.items():
        if other == name:
            continue
        if "pair_id" in main.columns and "item_id" in table.columns:
            # Votes follow their pairs, so consensus and agreement see whole items.
            out[other] = table.filter(pl.col("item_id").is_in(main["pair_id"].implode()))
        else:
            out[other] = table.head(limit)
    return out


def run_import(stage: StageRun) -> StageOutputs:
    """`prefdata import FORMAT PATH`: the importer's tables (pairs, annotations, kto,
    prompts) as `<table>.parquet`, its rejected source rows as `rejected.parquet`."""
    from prefdata.io.tables import write_table

    opts = stage.options
    result = _importer(opts["format"])(Path(opts["path"]), **(opts["options"] or {}))
    tables = dict(result.tables)
    if opts["limit"] is not None:
        tables = _limit(tables, opts["limit"])
    outputs = {
        name: write_table(table, stage.out(f"{name}.parquet")) for name, table in tables.items()
    }
    if result.rejected.height:
        outputs["invalid"] = write_table(result.rejected, stage.out("rejected.parquet"))
    report = {**result.report, "rows": {k: t.height for k, t in tables.items()}}
    return outputs, report


IMPORT = StageKind(
    "import",
    run_import,
    "read a public format (prefdata import)",
    {
        "format": Opt(type="str", required=True),
        "path": Opt(type="path", required=True),
        "options": Opt({}, "dict"),
        "limit": Opt(None, "int"),
    },
    outputs=("pairs", "annotations", "kto", "prompts", "invalid"),
    check=_check_import,
)
