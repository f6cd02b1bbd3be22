"""Calling the judge from tests: keyword arguments that are JudgeOptions fields go into the
options, the others to the function; results as the (votes, report) the tests read."""

from __future__ import annotations

import dataclasses
from typing import Any

import polars as pl

from prefdata.label.judge import judge
from prefdata.label.runner import JudgeOptions

OPTION_FIELDS = {f.name for f in dataclasses.fields(JudgeOptions)}


def split_options(kw: dict[str, Any]) -> dict[str, Any]:
    """`kw` with its JudgeOptions fields moved into `options`."""
    rest = {k: v for k, v in kw.items() if k not in OPTION_FIELDS}
    chosen = {k: v for k, v in kw.items() if k in OPTION_FIELDS}
    return {**rest, "options": JudgeOptions(**chosen)} if chosen else rest


def judge_votes(table: pl.DataFrame, **kw: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(votes, report) of `judge(table, **kw)`."""
    result = judge(table, **split_options(kw))
    return result.tables["annotations"], result.report
