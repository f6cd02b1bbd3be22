"""Programmatic labelling: a scorer function rates every candidate, and pairs follow the ratings.

    result = rule_label(candidates, scorer="vader", pairing="all", min_margin=0.3)
    pairs, ratings = result.tables["pairs"], result.tables["ratings"]

Where a quality can be computed (sentiment, a test that passes, an answer that checks, a
length limit, a reward model), a function labels faster, cheaper and more consistently than a
judge, and with a known true reward it is the ground truth of a controlled experiment
(bench/curation_effect.py): label with it, flip a known share of the pairs, and measure what
curation wins back.

Scorers (`scorer=`), each `(prompt_messages, completion) -> float`, higher is better:

- `vader`: the VADER compound sentiment of the completion, -1 (negative) to +1 (positive).
  The lexicon ships inside the `vaderSentiment` wheel (no download): the true reward of the
  controlled-sentiment experiment (the DPO paper's IMDb setting, on short chat answers).
- `length`: the completion's length in characters (a baseline, and the length bias a rule
  check looks for).
- `reward-model:PATH`: a sequence-classification reward model folder
  (prefdata.label.scorers.RewardModelScorer; e.g. `prefdata train reward`'s output).
- `module:function` or `path/to/file.py:function`: any callable of one's own, imported by
  path. An object with `score_batch(prompts, completions) -> list[float]` is called once for
  all candidates instead (a model). A None or NaN score means "no score".

Pairing (`pairing=`), within each prompt's candidates (prefdata.io.convert.ratings_to_pairs):
"best-vs-worst" (one pair per prompt: top against bottom) or "all" (every pair whose scores
differ by more than `min_margin`). Identical completions are one candidate; a prompt whose
candidates all tie gives no pair.

Seeded flips (`flip_rate=`): to measure what label noise costs and what curation recovers,
exactly round(flip_rate x pairs) pairs, chosen with `seed`, get chosen and rejected swapped.
Which ones is returned apart (`flips`, see `flip_labels`), never written into the pairs, so an
audit cannot read the answer from the data.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import polars as pl

from prefdata import ids
from prefdata.errors import InputError, MissingExtraError, PrefdataError
from prefdata.llm.base import Message
from prefdata.schema import conform
from prefdata.stage import StageResult, Table, stage

__all__ = [
    "BUILTIN_SCORERS",
    "flip_labels",
    "label_with",
    "length_chars",
    "resolve_scorer",
    "rule_label",
    "score_all",
    "vader_compound",
]

Pairing = Literal["best-vs-worst", "all"]
ScoreFn = Callable[[Sequence[Message], str], float | None]

_VADER: Any = None


def vader_compound(prompt: Sequence[Message], completion: str) -> float:
    """VADER's compound sentiment of `completion` in [-1, 1] (the prompt is not read)."""
    global _VADER
    if _VADER is None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise MissingExtraError(
                "the vader scorer needs vaderSentiment. Install with: pip install 'prefdata[rules]'"
            ) from None
        _VADER = SentimentIntensityAnalyzer()
    return float(_VADER.polarity_scores(completion)["compound"])


def length_chars(prompt: Sequence[Message], completion: str) -> float:
    """The completion's length in characters."""
    return float(len(completion))


BUILTIN_SCORERS: dict[str, ScoreFn] = {"vader": vader_compound, "length": length_chars}
"""Scorers known by name; see the module docstring for the others (`reward-model:PATH`,
`module:function`)."""


def _import_callable(spec: str) -> Any:
    """The object `function` of `module:function`, the module given by import path or file."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise InputError(f"a scorer by import path is 'module:function', got {spec!r}")
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise InputError("no such scorer file", source=path)
        loader_spec = importlib.util.spec_from_file_location(f"_prefdata_scorer_{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None:
            raise InputError("cannot import this file as Python", source=path)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise InputError(f"cannot import the scorer's module {module_name!r}: {err}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"module {module_name!r} has no {attr!r} (scorer {spec!r})") from None


def resolve_scorer(scorer: str | Callable[..., Any]) -> tuple[Any, str]:
    """(the scorer object, its name) for a built-in name, `reward-model:PATH`,
    `module:function` / `file.py:function`, or a callable given directly."""
    if not isinstance(scorer, str):
        name = getattr(scorer, "name", None)
        if not isinstance(name, str):
            name = str(getattr(scorer, "__qualname__", type(scorer).__qualname__))
        return scorer, name
    if scorer in BUILTIN_SCORERS:
        return BUILTIN_SCORERS[scorer], scorer
    if scorer.startswith("reward-model:"):
        from prefdata.label.scorers import RewardModelScorer

        model = RewardModelScorer(scorer.split(":", 1)[1])
        return model, model.name
    if ":" in scorer:
        found = _import_callable(scorer)
        if not callable(found) and not hasattr(found, "score_batch"):
            raise InputError(f"scorer {scorer!r} is not callable")
        return found, scorer
    raise InputError(
        f"unknown scorer {scorer!r}: use one of {', '.join(BUILTIN_SCORERS)}, "
        "reward-model:PATH, or module:function"
    )


def score_all(
    scorer: Any, prompts: Sequence[Sequence[Message]], completions: Sequence[str]
) -> list[float | None]:
    """One score per (prompt, completion): None where the scorer gave None, NaN or infinity.
    An object with `score_batch` is called once for all of them."""
    if hasattr(scorer, "score_batch"):
        raw = list(scorer.score_batch(prompts, completions))
    else:
        raw = [scorer(p, c) for p, c in zip(prompts, completions, strict=True)]
    if len(raw) != len(completions):
        raise PrefdataError(
            f"the scorer returned {len(raw)} scores for {len(completions)} candidates"
        )
    out: list[float | None] = []
    for value in raw:
        number = None if value is None else float(value)
        out.append(number if number is not None and math.isfinite(number) else None)
    return out


def flip_labels(
    pairs: pl.DataFrame, *, rate: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Swap chosen and rejected in exactly round(rate x n) pairs, chosen at random with `seed`.

    Input: a pairs table. Output: (the pairs with those rows swapped, in the same order and
    with the same pair_id, which does not depend on the order; `flips`: pair_id, flipped).
    The same seed and table always flip the same pairs.
    """
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"flip_rate must lie in [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    flipped = np.zeros(pairs.height, dtype=bool)
    flipped[rng.choice(pairs.height, round(rate * pairs.height), replace=False)] = True
    mask = pl.Series(flipped)
    swapped = pairs.with_columns(
        chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
    )
    return swapped, pl.DataFrame({"pair_id": pairs["pair_id"], "flipped": flipped})


def _annotations(table: pl.DataFrame, scores: list[float | None], name: str) -> pl.DataFrame:
    """One rating row per candidate (label = the score as text; a missing score keeps its row,
    with `error` set and no label)."""
    return conform(
        pl.DataFrame(
            {
                "item_id": table["completion_id"],
                "annotator": [name] * table.height,
                "annotator_kind": ["rule"] * table.height,
                "label": [None if s is None else repr(s) for s in scores],
                "error": [None if s is not None else "no score" for s in scores],
            },
            schema={
                "item_id": pl.String,
                "annotator": pl.String,
                "annotator_kind": pl.String,
                "label": pl.String,
                "error": pl.String,
            },
        ),
        "annotations",
    )


def label_with(
    candidates: pl.DataFrame,
    scorer: Any,
    *,
    name: str | None = None,
    pairing: Pairing = "best-vs-worst",
    min_margin: float = 0.0,
    confidence_scale: float | None = None,
    flip_rate: float = 0.0,
    seed: int = 0,
    source: str = "rule",
) -> StageResult:
    """`rule_label` with a scorer object (a callable, or an object with `score_batch`) instead
    of its name; `name` is recorded as the annotator (default: the object's name)."""
    from prefdata.io.convert import ratings_to_pairs

    if pairing not in get_args(Pairing):
        raise InputError(f"pairing must be one of {', '.join(get_args(Pairing))}, got {pairing!r}")
    if confidence_scale is not None and not confidence_scale > 0:
        raise InputError(f"confidence_scale must be positive, got {confidence_scale}")
    table = conform(candidates, "candidates")
    function, found_name = resolve_scorer(scorer)
    name = name or found_name
    scores = score_all(function, table["prompt"].to_list(), table["completion"].to_list())
    rated = table.select("prompt", "completion", "generator").with_columns(
        pl.Series("score", scores, dtype=pl.Float64), table["prompt_id"].alias("group")
    )
    converted = ratings_to_pairs(rated, mode=pairing, min_margin=min_margin, source=source)
    pairs, pair_report = converted.tables["pairs"], converted.report
    # With seeded flips, the scores (and generators) of each side would give the flips away
    # to anything reading provenance; the annotations keep them.
    hidden = ("scores_chosen", "scores_rejected", "generator_chosen", "generator_rejected")
    extra: dict[str, Any] = {"scorer": name}
    if flip_rate:
        extra.update(flip_rate=flip_rate, flip_seed=seed)
    provenance = [
        ids.canonical_json(
            {
                **{k: v for k, v in json.loads(p).items() if not (flip_rate and k in hidden)},
                **extra,
            }
        )
        for p in pairs["provenance"]
    ]
    confidence = (
        (1.0 / (1.0 + (-pl.col("margin") / confidence_scale).exp()))
        if confidence_scale is not None
        else pl.lit(None, pl.Float64)
    )
    pairs = pairs.with_columns(
        confidence.alias("confidence"),
        pl.lit(None, pl.Float64).alias("agreement"),
        pl.Series("provenance", provenance, dtype=pl.String),
    )
    pairs, flips = flip_labels(pairs, rate=flip_rate, seed=seed)
    valid = [s for s in scores if s is not None]
    unscored = table.filter(pl.Series([s is None for s in scores], dtype=pl.Boolean))
    report = {
        "candidates": table.height,
        "scored": len(valid),
        "unscored": table.height - len(valid),
        **pair_report,
        "flipped": int(flips["flipped"].sum()),
        "flip_rate": flip_rate,
        "scorer": name,
        "pairing": pairing,
        "score_mean": float(np.mean(valid)) if valid else None,
        "score_min": min(valid) if valid else None,
        "score_max": max(valid) if valid else None,
    }
    return StageResult(
        tables={
            "pairs": pairs,
            "ratings": _annotations(table, scores, name),
            "flips": flips,
        },
        rejected=unscored.with_columns(pl.lit("no score").alias("reason")),
        report=report,
    )


@stage("rule-label", outputs=("pairs", "ratings", "flips"))
def rule_label(
    candidates: Annotated[pl.DataFrame, Table("candidates")],
    *,
    scorer: str = "vader",
    pairing: Pairing = "best-vs-worst",
    min_margin: float = 0.0,
    confidence_scale: float | None = None,
    flip_rate: float = 0.0,
    seed: int = 0,
    source: str = "rule",
) -> StageResult:
    """Programmatic labels: a scorer function rates every candidate and each prompt's
    candidates are paired by score.

    Input: the candidates contract. Output tables (see the module doc):
    - `pairs`: the pairs contract; margin = the score gap, n_votes 1, agreement null,
      confidence sigmoid(gap / confidence_scale) or null; provenance {scores_chosen,
      scores_rejected, mode, min_margin, scorer, generators}; with flip_rate, provenance
      leaves out the scores and generators (they would give the flips away) and records
      flip_rate and flip_seed instead.
    - `ratings`: the annotations contract, one rating per candidate (item_id =
      completion_id, annotator = the scorer, annotator_kind "rule", label = the score as
      text; no score: `error` set). Named apart from pair votes, so a pipeline never hands
      them to a stage that reads votes on pairs.
    - `flips`: pair_id, flipped (all false without flip_rate).
    Rejected: candidates the scorer gave no score (reason "no score"). Report: candidates,
    scored, unscored, prompts, prompts_all_tied, pairs_below_margin, pairs, flipped,
    scorer, pairing, score_mean / score_min / score_max.

    Example: prefdata rule-label candidates.parquet -o pairs.parquet --scorer vader
    --pairing all --min-margin 0.3

    Args:
        candidates: the candidates to label (several per prompt)
        scorer: vader | length | reward-model:PATH | module:function | file.py:function (a
            callable (prompt messages, completion) -> float, higher is better)
        pairing: best-vs-worst (one pair per prompt) or all (every pair past min_margin)
        min_margin: a pair needs a score gap strictly above this
        confidence_scale: confidence = sigmoid(gap / scale), Bradley-Terry in the scorer's
            units; unset leaves confidence empty (a gap is not a probability)
        flip_rate: share of pairs whose chosen and rejected are swapped on purpose, seeded
            (experiments on label noise; the flips table names them)
        seed: which pairs flip_rate swaps
        source: the pairs' source column
    """
    return label_with(
        candidates,
        scorer,
        pairing=pairing,
        min_margin=min_margin,
        confidence_scale=confidence_scale,
        flip_rate=flip_rate,
        seed=seed,
        source=source,
    )
