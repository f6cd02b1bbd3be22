"""Stages that bring data in and out: import, generate, split, export.

Each calls the library function behind the CLI command of the same name (`prefdata import`,
`generate`, `export`); `split` has no command: it marks a seeded share of the prompts as
held out, so that a later `eval` stage scores pairs whose prompts training never saw.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError
from prefdata.pipeline.kinds import Opt, Slot, StageKind, StageOutputs, StageRun


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    """`data` as indented JSON, written atomically."""
    from prefdata.io.tables import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str, ensure_ascii=False) + "\n")
    return path


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
            raise ValueError(
                f"'options.{key}': format '{fmt}' takes no option '{key}'; it takes "
                f"{list(declared)}"
            )
        try:
            option(declared[key]).check(value)
        except ValueError as exc:
            raise ValueError(f"'options.{key}': {exc}") from None


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


# ---- split -------------------------------------------------------------------------------


def split_by_prompt(pairs: pl.DataFrame, *, heldout: float, seed: int = 0) -> pl.DataFrame:
    """Pairs with a `split` column: "test" for a seeded share `heldout` of the prompts (every
    pair of a held-out prompt, so training never sees its prompt), "train" for the rest.

    Input: a pairs table (`prompt_id`). Output: the same rows and columns plus `split`. At
    least one prompt stays in each split when there are two or more prompts and heldout > 0.
    The choice is a hash of (seed, prompt_id): stable across runs, and adding prompts never
    moves another prompt between the splits.
    """
    if not 0 <= heldout < 1:
        raise InputError(f"heldout must be a share in [0, 1), got {heldout}")
    prompts = pairs["prompt_id"].unique().to_list()
    ranked = sorted(prompts, key=lambda p: hashlib.sha256(f"{seed}/{p}".encode()).hexdigest())
    n_test = 0
    if heldout > 0 and len(ranked) > 1:
        n_test = min(max(1, math.floor(heldout * len(ranked) + 0.5)), len(ranked) - 1)
    test = ranked[:n_test]
    split = pl.when(pl.col("prompt_id").is_in(pl.Series(test, dtype=pl.String).implode()))
    return pairs.with_columns(split.then(pl.lit("test")).otherwise(pl.lit("train")).alias("split"))


def run_split(stage: StageRun) -> StageOutputs:
    """A `split` column on the pairs; the held-out ones also alone as `heldout.parquet`."""
    from prefdata.io.tables import write_table

    pairs = split_by_prompt(
        stage.table("pairs", "pairs"), heldout=stage.options["heldout"], seed=stage.options["seed"]
    )
    heldout = pairs.filter(pl.col("split") == "test")
    outputs = {
        "pairs": write_table(pairs, stage.out("pairs.parquet")),
        "heldout": write_table(heldout, stage.out("heldout.parquet")),
    }
    report = {
        "pairs": pairs.height,
        "train_pairs": pairs.height - heldout.height,
        "heldout_pairs": heldout.height,
        "heldout_prompts": heldout["prompt_id"].n_unique(),
    }
    return outputs, report


SPLIT = StageKind(
    "split",
    run_split,
    "hold out a seeded share of the prompts for evaluation",
    {"heldout": Opt(0.2, "float"), "seed": Opt(0, "int")},
    inputs=(Slot(("pairs",)),),
    outputs=("pairs", "heldout"),
)
