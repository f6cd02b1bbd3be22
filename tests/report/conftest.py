"""Small hand-made tables for the report's edge cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.io.importers.common import pairs_table

HOSTILE = '<script>window.__pwned = 1; console.error("ran")</script>'
HOSTILE_IMG = '<img src="http://example.invalid/x.png" onerror="window.__pwned = 2">'


def make_pairs(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A pairs table from dicts with prompt (text), chosen, rejected and optional fields
    (confidence, source, provenance (a dict), split)."""
    full = [{**r, "prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows]
    return pairs_table(full, source="test")


def pair_labels(pairs: pl.DataFrame, winners: list[str]) -> list[str]:
    """a / b labels (canonical sides) for 'chosen' / 'rejected' winners."""
    out = []
    for chosen, rejected, w in zip(pairs["chosen"], pairs["rejected"], winners, strict=True):
        a, _ = ids.canonical_sides(chosen, rejected)
        side = chosen if w == "chosen" else rejected
        out.append("a" if side == a else "b")
    return out


def write_report(data: Any, out: Path, **options: Any) -> dict[str, Any]:
    """Run the report stage into `out`; the report dict it wrote (report.json)."""
    import json

    from prefdata.report import build_report

    build_report(data, out=out, **options)
    loaded: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return loaded
