"""The offline demo: the bundled ratings -> pairs -> validate -> TRL / KTO / OpenAI exports.

This is the README's main job until the full pipeline demo (generation, judging, training)
lands; it needs no network and no model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefdata.convert import ratings_to_pairs
from prefdata.describe import describe
from prefdata.io.exporters import export
from prefdata.io.tables import atomic_path, read_table, write_table
from prefdata.schema import validate

EXAMPLES = Path(__file__).parent / "examples"


def run_demo(out_dir: str | Path) -> dict[str, Any]:
    """Run the demo into `out_dir`; return a report of what was written and the counts."""
    out = Path(out_dir)
    rated = read_table(EXAMPLES / "ratings.jsonl")
    pairs, conversion = ratings_to_pairs(rated, mode="all", min_margin=0.5, source="demo")
    pairs = validate(pairs, "pairs", source="ratings_to_pairs")
    written = {"pairs": str(write_table(pairs, out / "pairs.parquet"))}
    for fmt, name in [
        ("trl", "train.trl.jsonl"),
        ("trl-conversational", "train.trl-conversational.jsonl"),
        ("kto", "train.kto.jsonl"),
        ("openai", "train.openai.jsonl"),
    ]:
        written[fmt] = export(pairs, out / name, fmt)["path"]  # type: ignore[arg-type]
    summary = {"conversion": conversion, "pairs": describe(pairs), "written": written}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    summary["written"]["report"] = str(out / "report.json")
    return summary
