"""Every public stage takes the tables users hold (issue 21): polars, LazyFrame, pandas,
`datasets.Dataset`, pyarrow and a path, with identical results, on real data: PandaLM's
human votes (and its two LLM judges' verdicts) and HH-RLHF pairs with multi-turn chat
prompts.

Each case runs the stage once per kind of input and compares everything it returns with the
polars run: tables exactly (values and types), rejected rows, documents, warnings and the
report (less the keys that name the input: a file, or `argument 'x'`). The model-backed
stages run with tiny settings on a few pairs (judge, generate: a 2-layer model; train: one
LoRA DPO step) and are marked slow. The importers are in tests/io/test_import_objects.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata import ids
from prefdata.io.convert import pairs_to_kto, rankings_to_pairs, ratings_to_pairs, thumbs_to_kto
from prefdata.io.describe import info, validate_file
from prefdata.io.exporting import export_files
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.io.importers.pandalm import import_pandalm
from prefdata.io.split import split_heldout
from prefdata.label.programmatic import rule_label
from prefdata.label.synthetic import synthetic_pairs
from prefdata.quality.agreement import agreement
from prefdata.quality.audit import audit
from prefdata.quality.bias import bias_stats
from prefdata.quality.consensus import consensus_pairs
from prefdata.quality.filter import filter_pairs
from prefdata.quality.judge_eval import judge_eval
from prefdata.quality.sample import mislabel_rate
from prefdata.stage import StageResult
from tests.table_kinds import KINDS, as_kind, assert_same_result

pytest.importorskip("datasets")

Given = Callable[[pl.DataFrame], Any]


class Data:
    """The real tables the cases read, made once."""

    def __init__(self, shared: Path) -> None:
        hh = import_hh_rlhf(shared / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
        # 300 pairs keep a case under a few seconds; their prompts run up to many turns.
        self.hh = hh.head(300)
        folder = shared / "pandalm_testset"
        imported = import_pandalm(
            folder / "testset-v1.json",
            judges=[
                folder / "gpt-3.5-turbo-testset-v1.json",
                folder / "pandalm-7b-testset-v1.json",
            ],
        )
        self.pandalm_pairs = imported.tables["pairs"]
        votes = imported.tables["annotations"]
        self.humans = votes.filter(pl.col("annotator_kind") == "human")
        self.judges = votes.filter(pl.col("annotator_kind") == "llm")
        self.votes = votes
        # Candidates: each HH prompt's two replies, as a generator would have made them.
        replies = pl.concat(
            [
                self.hh.head(60).select(
                    "prompt", pl.col(side).alias("completion"), pl.lit(side).alias("generator")
                )
                for side in ("chosen", "rejected")
            ]
        )
        self.candidates = ids.with_completion_ids(replies).with_columns(
            pl.lit("{}").alias("params")
        )


@pytest.fixture(scope="module")
def data(shared_data: Path) -> Data:
    return Data(shared_data)


def _audit(given: Given, d: Data, **options: Any) -> StageResult:
    return audit(given(d.pandalm_pairs), **options)


def _audit_with_everything(given: Given, d: Data) -> StageResult:
    # Votes, a test split and user scores (here: the log length ratio of the two replies).
    scores = d.pandalm_pairs.select(
        "pair_id",
        pl.col("chosen").str.len_chars().log1p().alias("score_chosen"),
        pl.col("rejected").str.len_chars().log1p().alias("score_rejected"),
    )
    return _audit(
        given,
        d,
        annotations=given(d.votes),
        test=given(d.hh.head(50)),
        model="scores",
        scores=given(scores),
        sample=30,
    )


def _export(given: Given, d: Data, folder: Path) -> StageResult:
    out = folder / f"export-{len(list(folder.iterdir()))}"
    formats = ("trl-conversational", "kto-conversational", "openai")
    result = export_files(given(d.hh), out, formats=formats)
    # The files' bytes, and the report less the paths that differ between runs.
    files = {fmt: (out / f"{fmt}.jsonl").read_bytes() for fmt in formats}
    report = {fmt: {k: v for k, v in r.items() if k != "path"} for fmt, r in result.report.items()}
    return StageResult(
        documents={"files": {k: v.decode() for k, v in files.items()}}, report=report
    )


def _report(given: Given, d: Data, folder: Path) -> StageResult:
    # The QA report of the PandaLM pairs with their votes and the pairs they came from: its
    # figures (report.json), the dataset card and the data written beside it.
    from prefdata.report.build import build_report

    out = folder / f"report-{len(list(folder.iterdir()))}"
    kept = d.pandalm_pairs.filter(pl.col("confidence") >= 0.7)
    result = build_report(
        given(kept),
        out=out,
        before=given(d.pandalm_pairs),
        annotations=given(d.votes),
        tokenizer=None,
        bootstrap=50,
    )
    # Less the time they were written, the only thing that differs between the runs.
    documents = {
        name: re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "<time>", (out / name).read_text())
        for name in ("report.json", "README.md")
    }
    tables = {p.stem: pl.read_parquet(p) for p in sorted((out / "data").glob("*.parquet"))}
    report = {k: v for k, v in result.report.items() if k != "files"}
    return StageResult(tables=tables, documents=documents, report=report)


def _filter(given: Given, d: Data) -> StageResult:
    issues = audit(d.pandalm_pairs, sample=0).tables["issues"]
    return filter_pairs(
        given(d.pandalm_pairs),
        issues=given(issues),
        min_confidence=0.7,
        drop_issues=["duplicate_pair", "truncated_response"],
        ties="kto",
    )


def _review(given: Given, d: Data) -> StageResult:
    # A review of the audit sample: a pair counts as mislabelled when its annotators split.
    sample = audit(d.pandalm_pairs, sample=40).tables["sample"]
    reviewed = sample.with_columns((pl.col("agreement") < 1).alias("mislabeled"))
    return mislabel_rate(given(reviewed))


def _ratings(d: Data) -> pl.DataFrame:
    # Each reply rated by VADER sentiment (rule-label's per-candidate ratings).
    ratings = rule_label(d.candidates, scorer="vader").tables["ratings"]
    scores = ratings.select(
        pl.col("item_id").alias("completion_id"), pl.col("label").cast(pl.Float64).alias("score")
    )
    return d.candidates.join(scores, on="completion_id").select("prompt", "completion", "score")


def _rankings(d: Data) -> pl.DataFrame:
    return d.candidates.with_columns(
        pl.when(pl.col("generator") == "chosen").then(0).otherwise(1).alias("rank")
    )


def _thumbs(d: Data) -> pl.DataFrame:
    # Each PandaLM reply with the human votes for and against it.
    votes = pl.col("provenance").str.json_path_match
    base = d.pandalm_pairs.with_columns(
        votes("$.votes.a").cast(pl.Int64).alias("va"),
        votes("$.votes.b").cast(pl.Int64).alias("vb"),
        votes("$.chosen_side").alias("side"),
    ).with_columns(
        pl.when(pl.col("side") == "a").then("va").otherwise("vb").alias("for_chosen"),
        pl.when(pl.col("side") == "a").then("vb").otherwise("va").alias("for_rejected"),
    )
    return pl.concat(
        [
            base.select(
                "prompt",
                pl.col("chosen").alias("completion"),
                pl.col("for_chosen").alias("up"),
                pl.col("for_rejected").alias("down"),
            ),
            base.select(
                "prompt",
                pl.col("rejected").alias("completion"),
                pl.col("for_rejected").alias("up"),
                pl.col("for_chosen").alias("down"),
            ),
        ]
    )


# name -> (run it given a kind, report keys that name the input)
CASES: dict[str, tuple[Callable[[Given, Data, Path], StageResult], tuple[str, ...]]] = {
    "validate": (lambda g, d, f: validate_file(g(d.hh), contract="pairs"), ("ok",)),
    "info": (lambda g, d, f: info(g(d.hh)), ()),
    "pairs-to-kto": (lambda g, d, f: pairs_to_kto(g(d.hh)), ()),
    "ratings-to-pairs": (lambda g, d, f: ratings_to_pairs(g(_ratings(d)), mode="all"), ()),
    "rankings-to-pairs": (lambda g, d, f: rankings_to_pairs(g(_rankings(d))), ()),
    "thumbs-to-kto": (lambda g, d, f: thumbs_to_kto(g(_thumbs(d))), ()),
    "split": (lambda g, d, f: split_heldout(g(d.hh), heldout=0.25, seed=3), ()),
    "export": (lambda g, d, f: _export(g, d, f), ()),
    "agree": (
        lambda g, d, f: agreement(g(d.humans), item_column="record_id", bootstrap=50, seed=1),
        (),
    ),
    "consensus": (
        lambda g, d, f: consensus_pairs(g(d.humans), pairs=g(d.pandalm_pairs)),
        (),
    ),
    "judge-eval": (lambda g, d, f: judge_eval(g(d.judges), gold=g(d.humans)), ()),
    "bias": (lambda g, d, f: bias_stats(g(d.pandalm_pairs), annotations=g(d.votes)), ()),
    "audit": (lambda g, d, f: _audit(g, d, annotations=g(d.humans), sample=20), ()),
    "audit-everything": (lambda g, d, f: _audit_with_everything(g, d), ()),
    "audit-rate": (lambda g, d, f: _review(g, d), ()),
    "filter": (lambda g, d, f: _filter(g, d), ()),
    "report": (lambda g, d, f: _report(g, d, f), ()),
    "rule-label": (lambda g, d, f: rule_label(g(d.candidates), scorer="vader"), ()),
    "synthetic-pairs": (lambda g, d, f: synthetic_pairs(g(d.candidates), scorer="length"), ()),
}


@functools.cache
def _reference(name: str, data: Data, folder: Path) -> StageResult:
    run, _ = CASES[name]
    folder.mkdir(parents=True, exist_ok=True)
    return run(lambda table: table, data, folder)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "polars"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_stage_gives_the_same_result_from_each_kind_of_table(
    name: str, kind: str, data: Data, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp(f"{name}-{kind}")
    want = _reference(name, data, tmp_path_factory.getbasetemp() / f"ref-{name}")
    run, names_source = CASES[name]
    got = run(lambda table: as_kind(table, kind, folder), data, folder)
    assert_same_result(got, want, names_source=names_source)


def test_the_cases_do_real_work(data: Data, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The references are not empty results that would compare equal whatever happened."""

    def ref(name: str) -> StageResult:
        return _reference(name, data, tmp_path_factory.getbasetemp() / f"ref-{name}")

    assert ref("validate").report["rows"] == 300
    assert ref("pairs-to-kto").tables["kto"].height == 600
    assert ref("ratings-to-pairs").tables["pairs"].height > 0
    assert ref("rankings-to-pairs").tables["pairs"].height == 60
    assert ref("thumbs-to-kto").tables["kto"].height > 0
    split = ref("split").tables
    assert split["pairs"].height == 300 and 0 < split["heldout"].height < 300
    # Three annotators on each of 999 records.
    assert ref("agree").tables["per_item"].height == 999
    assert 700 < ref("consensus").tables["pairs"].height <= data.pandalm_pairs.height
    assert set(ref("judge-eval").tables["judges"]["judge"]) >= {"gpt-3.5-turbo"}
    assert ref("audit").report["pairs_flagged"] > 0
    assert ref("audit-everything").report["split_overlap"] is not None
    assert ref("audit-rate").report["reviewed"] == 40
    assert 0 < ref("filter").tables["pairs"].height < data.pandalm_pairs.height
    assert ref("rule-label").tables["pairs"].height > 0
    assert ref("synthetic-pairs").tables["pairs"].height > 0
    report = ref("report")
    assert {"agreement", "pairs"} <= set(report.report["sections"])
    assert sum(t.height for t in report.tables.values()) > 0
    files = ref("export").documents["files"]
    assert {fmt: text.count("\n") for fmt, text in files.items()} == {
        "trl-conversational": 300,
        "kto-conversational": 600,
        "openai": 300,
    }


# Stages and importers with no case here, and why.
NO_CASE = {
    # They talk to an Argilla server (tests/annotate runs them against a real one); their
    # tables go through the same wrapper as every stage's (prefdata.stage_call).
    "annotate-push": "Argilla",
    "annotate-pull": "Argilla",
}


def test_every_stage_and_importer_has_a_case() -> None:
    """A stage or importer added later gets a case (a stage: or a reason in NO_CASE)."""
    pytest.importorskip("transformers")
    from prefdata.io.importers import IMPORTERS
    from prefdata.pipeline.catalog import STAGES
    from tests.io.test_import_objects import CASES as IMPORT_CASES
    from tests.test_api_inputs_models import CASES as MODEL_CASES

    covered = set(CASES) | set(MODEL_CASES) | set(NO_CASE)
    assert set(STAGES) - covered == set()
    assert set(IMPORTERS) == set(IMPORT_CASES)
