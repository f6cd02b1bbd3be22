"""Good input files for the bad-input suite (tests/cli/test_bad_input.py).

Every table a command reads, small and valid, built once per session: the importers' sources
are the first records of the real data sets in ../shared/data (or small hand-written logs),
and the prefdata tables are made from them through the CLI itself, so the suite starts from
what a user would hold. Each bad-input case copies one of these and breaks it in one way.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
from typer.testing import CliRunner

from prefdata.cli import app
from prefdata.ids import prompt_id
from prefdata.io.tables import read_table, write_table
from prefdata.schema import with_messages

REPO = Path(__file__).resolve().parents[2]

TRL_ROWS = [
    {"prompt": "Name a prime number.", "chosen": "7 is prime.", "rejected": "8 is prime."},
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
    {"prompt": "2 + 2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go away."},
]

FEEDBACK_ROWS = [
    ("s1", "Capital of France?", "Paris.", "thumbs_up", "u1"),
    ("s1", "Capital of France?", "Lyon.", "thumbs_down", "u1"),
    ("s2", "Capital of France?", "Paris.", "accepted", "u2"),
    ("s2", "Capital of France?", "Lyon.", "regenerated", "u2"),
]
FEEDBACK_HEADER = ("session_id", "prompt", "completion", "event", "user_id")

OPENAI_ROWS = [
    {
        "input": {"messages": [{"role": "user", "content": r["prompt"]}]},
        "preferred_output": [{"role": "assistant", "content": r["chosen"]}],
        "non_preferred_output": [{"role": "assistant", "content": r["rejected"]}],
    }
    for r in TRL_ROWS
]

RATED_ROWS = [
    {"prompt": "Capital of France?", "completion": "Paris.", "score": 5, "model": "m1"},
    {"prompt": "Capital of France?", "completion": "Lyon.", "score": 1, "model": "m2"},
    {"prompt": "2 + 2?", "completion": "4", "score": 5, "model": "m1"},
    {"prompt": "2 + 2?", "completion": "5", "score": 2, "model": "m2"},
]


def recipe(method: str) -> Path:
    """The built-in recipe for `method` (package data once it ships there, else train/)."""
    packaged = REPO / "prefdata" / "train" / "recipes" / f"{method}.yaml"
    return packaged if packaged.exists() else REPO / "train" / f"{method}.yaml"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Path:
    import csv

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _head_lines(src: Path, n: int) -> str:
    opener = gzip.open if src.name.endswith(".gz") else open
    with opener(src, "rt", encoding="utf-8") as fh:
        return "".join(next(fh) for _ in range(n))


def _head_array(src: Path, n: int) -> str:
    return json.dumps(json.loads(src.read_text(encoding="utf-8"))[:n], ensure_ascii=False)


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"fixture step failed: prefdata {' '.join(args)}\n{result.output}")


def build(folder: Path, shared: Path) -> dict[str, Path]:
    """Write every good input into `folder`; returns name -> path."""
    fx: dict[str, Path] = {}
    src = folder / "src"
    src.mkdir(parents=True)

    # Importer sources: the first records of the real files, or small hand-written ones.
    heads = {
        "hh-rlhf": ("hh.jsonl", _head_lines(shared / "hh_rlhf/harmless-base_test.jsonl.gz", 4)),
        "oasst": ("oasst.jsonl", _head_lines(shared / "oasst_en_100/en_100_tree.jsonl", 2)),
        "gsm8k": ("gsm8k.jsonl", _head_lines(shared / "gsm8k/test.jsonl", 4)),
        "gsm8k-solutions": (
            "solutions.jsonl",
            _head_lines(shared / "gsm8k/example_model_solutions.jsonl", 4),
        ),
        "math500": ("math500.jsonl", _head_lines(shared / "math500/test.jsonl", 4)),
        "pandalm": ("pandalm.json", _head_array(shared / "pandalm_testset/testset-v1.json", 6)),
        "hhh": ("hhh.json", _head_array(shared / "hhh_alignment/hhh_alignment_eval.json", 6)),
    }
    for fmt, (name, text) in heads.items():
        (src / name).write_text(text, encoding="utf-8")
        fx[f"src_{fmt}"] = src / name
    fx["src_trl"] = write_jsonl(src / "trl.jsonl", TRL_ROWS)
    fx["src_openai"] = write_jsonl(src / "openai.jsonl", OPENAI_ROWS)
    fx["src_rated"] = write_jsonl(src / "rated.jsonl", RATED_ROWS)
    fx["src_feedback"] = write_csv(src / "feedback.csv", FEEDBACK_HEADER, FEEDBACK_ROWS)
    pandalm_dir = src / "pandalm"
    pandalm_dir.mkdir()
    (pandalm_dir / "testset-v1.json").write_text(heads["pandalm"][1], encoding="utf-8")
    fx["src_pandalm-folder"] = pandalm_dir

    # prefdata's own tables, made through the CLI.
    pairs = folder / "pairs.parquet"
    _cli("import", "trl", str(fx["src_trl"]), "-o", str(pairs))
    fx["pairs"] = pairs
    table = read_table(pairs)
    fx["pairs.jsonl"] = write_table(table, folder / "pairs.jsonl")
    kto = folder / "kto.parquet"
    _cli("convert", "pairs-to-kto", str(pairs), "-o", str(kto))
    fx["kto"] = kto

    votes = [("annotator1", "a"), ("annotator2", "a"), ("annotator3", "b")]
    fx["annotations"] = write_table(
        pl.DataFrame(
            [
                {"item_id": pid, "annotator": who, "annotator_kind": "human", "label": label}
                for pid in table["pair_id"]
                for who, label in votes
            ]
        ),
        folder / "annotations.parquet",
    )
    fx["issues"] = write_table(
        pl.DataFrame(
            {
                "item_id": table["pair_id"],
                "issue": ["near_duplicate"] * table.height,
                "score": [0.9, 0.2, 0.8, 0.7],
                "is_issue": [False, True, False, False],
                "reason": ["", "close to another pair", "", ""],
            }
        ),
        folder / "issues.parquet",
    )
    fx["sample"] = write_table(
        table.select("pair_id").with_columns(
            pl.Series("mislabeled", [False, True, False, None], dtype=pl.Boolean)
        ),
        folder / "sample.parquet",
    )
    prompts = with_messages(pl.DataFrame({"prompt": [r["prompt"] for r in TRL_ROWS]}))
    prompts = prompts.with_columns(
        pl.Series("prompt_id", [prompt_id(p) for p in prompts["prompt"].to_list()])
    ).select("prompt_id", "prompt")
    fx["prompts"] = write_table(prompts, folder / "prompts.parquet")
    candidates = pl.DataFrame(
        {
            "prompt_id": [pid for pid in prompts["prompt_id"] for _ in range(2)],
            "prompt": [p for p in prompts["prompt"].to_list() for _ in range(2)],
            "completion_id": [f"c{i}" for i in range(8)],
            "completion": [t for r in TRL_ROWS for t in (r["chosen"], r["rejected"])],
            "generator": ["m1", "m2"] * 4,
            "params": ["{}"] * 8,
        },
        schema_overrides={"prompt": prompts.schema["prompt"]},
    )
    fx["candidates"] = write_table(candidates, folder / "candidates.parquet")
    fx["ratings"] = write_jsonl(folder / "ratings.jsonl", RATED_ROWS)
    fx["rankings"] = write_jsonl(
        folder / "rankings.jsonl",
        [{**r, "rank": 0 if r["score"] == 5 else 1} for r in RATED_ROWS],
    )
    fx["thumbs"] = write_jsonl(
        folder / "thumbs.jsonl",
        [
            {"prompt": r["prompt"], "completion": r["completion"], "up": 3, "down": i % 2}
            for i, r in enumerate(RATED_ROWS)
        ],
    )
    fx["pipeline"] = folder / "pipeline.yaml"
    fx["pipeline"].write_text(
        "name: tiny\nstages:\n  - kind: import\n    format: trl\n"
        f"    path: {fx['src_trl']}\n  - kind: export\n    formats: [trl]\n"
    )
    return fx
