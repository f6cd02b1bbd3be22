"""Constitutional critique and revision, with the revision's win *checked*, not assumed.

    result = critique(candidates, model="local:smollm2", cache=CallCache())
    pairs, votes = result.tables["pairs"], result.tables["annotations"]

For each response (a row of `candidates`: `prompt`, `completion`):
1. sample `k` principles of the constitution (seeded by the completion, so a re-run samples
   the same ones);
2. per principle: critique (the chat so far + the principle's critique request), then
   revision (+ the critique + the revision request);
3. compare original vs revision under that principle with the pairwise judge
   (prefdata.label.judge) in both orders; pooled: P(revision better) (`pool_orders`);
4. keep one pair per response: the revision with the highest P(revision better), only when
   the revision wins (> 0.5) and that probability reaches `min_confidence`. A popular
   recipe simply assumes every revision is better; the report counts how often the
   comparison disagreed (`revisions_not_preferred`).

Constitution file (TOML): `[[principle]]` tables with `id`, `statement` (what the comparison
judges), `critique` and `revision` (the two requests). The default ships in
prefdata/label/constitutions/default.toml.

Outputs: `pairs` (pairs contract: chosen = the revision, rejected = the original,
confidence = P(revision better) from the judge, provenance JSON with the sampled principle
ids, each one's P(revision better), the kept principle, the critique, the generator, the
judge and the template version); `votes` (the comparison votes, annotations contract with the
extra column `principle`); report: responses, revisions, revision_errors, kept,
revisions_not_preferred, mean_p_revision, per_principle {revisions, mean_p, kept}.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.io.importers.common import pairs_table
from prefdata.label.rubric import Rubric, load_rubric
from prefdata.label.runner import JudgeOptions, judge_name, judge_pairs, make_answerer
from prefdata.label.selection import pair_items
from prefdata.label.verdicts import votes_frame
from prefdata.llm.base import Message, Params, Request
from prefdata.llm.cache import CallCache, complete_cached
from prefdata.llm.factory import client_for
from prefdata.progress import synced
from prefdata.quality.pooling import pool_orders
from prefdata.schema import conform, with_messages
from prefdata.stage import File, Resource, StageResult, Table, stage

__all__ = ["Principle", "acritique", "critique", "load_constitution"]


@dataclass(frozen=True)
class Principle:
    id: str
    statement: str
    critique: str
    revision: str


def load_constitution(path: str | Path | None = None) -> list[Principle]:
    """The principles of a TOML constitution file (None: the default one we ship)."""
    if path is None:
        text = (
            resources.files("prefdata.label")
            .joinpath("constitutions/default.toml")
            .read_text("utf-8")
        )
        source = "default constitution"
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read the constitution: {err}", source=source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"not valid TOML: {err}", source=source) from None
    entries = data.get("principle")
    if not isinstance(entries, list) or not entries:
        raise InputError("a constitution needs [[principle]] tables", source=source)
    out: list[Principle] = []
    for n, entry in enumerate(entries, start=1):
        missing = [
            k
            for k in ("id", "statement", "critique", "revision")
            if not isinstance(entry.get(k), str) or not entry[k].strip()
        ]
        if missing:
            raise InputError(f"principle {n} lacks {missing}", source=source, row=n)
        out.append(Principle(entry["id"], entry["statement"], entry["critique"], entry["revision"]))
    if len({p.id for p in out}) < len(out):
        raise InputError("principle ids must be unique", source=source)
    return out


def principle_rubric(principle: Principle, base: Rubric) -> Rubric:
    """The comparison template for one principle: the base rubric's layout, judged by the
    principle's statement."""
    system = (
        "You are an impartial judge comparing two AI assistant responses to the same "
        "conversation. Judge only by this principle:\n"
        f"{principle.statement}\n"
        "The order in which the responses are shown is arbitrary and must not affect your "
        'decision. Answer "tie" only when both follow the principle equally well.'
    )
    return Rubric(f"principle:{principle.id}", system, base.user)


# The async function is the stage (declared here, so awaiting it converts and checks the
# tables as the sync one does); `critique` runs it to completion.
@stage("critique", outputs=("pairs", "annotations"))
async def acritique(
    candidates: Annotated[pl.DataFrame, Table("candidates", needs=("prompt", "completion"))],
    *,
    model: str = "local:smollm2",
    cache: Annotated[CallCache, Resource("cache")],
    judge: str | None = None,
    options: JudgeOptions = JudgeOptions(),  # noqa: B008 - frozen, so one shared default is safe
    constitution: Annotated[Path | None, File()] = None,
    principles_per_prompt: int = 2,
    min_confidence: float = 0.6,
    critique_tokens: int = 256,
    seed: int = 0,
    client_options: dict[str, dict[str, Any]] | None = None,
) -> StageResult:
    """Constitutional critique and revision; a pair is kept only when the comparison in both
    orders prefers the revision with enough confidence.

    Critique -> revise -> compare in both orders -> pairs (see the module doc). Input:
    candidates (`prompt`, `completion`). Tables: `pairs` (revision preferred) and
    `annotations` (the comparison votes). The comparison takes its template layout from
    the rubric and its criterion from the principle. `critique` is the same without async;
    a client object may stand for `model` or `judge`.

    Example: prefdata critique candidates.parquet -o revised.parquet --principles-per-prompt 2

    Args:
        candidates: responses to critique and revise (prompt, completion)
        model: backend:model that critiques and revises
        judge: backend:model that compares original and revision (default: the model)
        options: how the comparisons are made and read
        constitution: TOML of principles (default: the one shipped)
        principles_per_prompt: principles sampled per response
        min_confidence: keep a revision only when P(revision better) reaches this
        critique_tokens: reply budget of each critique and revision
        seed: principle sampling and the generation seeds
        client_options: make_client options per backend, e.g. openai='{"timeout": 30}'
    """
    from prefdata.llm.generate import derive_seed

    principles = load_constitution(constitution)
    if not 1 <= principles_per_prompt <= len(principles):
        raise InputError(
            f"principles_per_prompt must be 1..{len(principles)} (the constitution's size), "
            f"got {principles_per_prompt}"
        )
    if not 0 <= min_confidence <= 1:
        raise InputError(f"min_confidence must be in 0-1, got {min_confidence}")
    for col in ("prompt", "completion"):
        if col not in candidates.columns:
            raise InputError(f"critique needs column '{col}'", column=col)
    table = ids.with_completion_ids(with_messages(candidates))
    per_backend = options.client_options(client_options)
    generator = client_for(model, per_backend)
    judge_client = generator if judge is None else client_for(judge, per_backend)
    base = load_rubric(options.rubric)
    answer = make_answerer(options)

    # (row, principle) jobs, principles sampled per completion.
    jobs: list[tuple[dict[str, Any], Principle, int]] = []
    for row in table.to_dicts():
        rng = random.Random(f"{seed}/{row['completion_id']}")
        for j, p in enumerate(rng.sample(principles, principles_per_prompt)):
            jobs.append((row, p, derive_seed(seed, row["completion_id"], j)))

    def params(s: int) -> Params:
        return Params(temperature=0.7, max_new_tokens=critique_tokens, seed=s)

    def chat(row: dict[str, Any]) -> list[Message]:
        return [*row["prompt"], {"role": "assistant", "content": row["completion"]}]

    critiques = await complete_cached(
        generator,
        [
            Request(
                messages=(*chat(r), {"role": "user", "content": p.critique}),
                params=params(s),
                template_version=f"critique:{p.id}",
            )
            for r, p, s in jobs
        ],
        cache,
    )
    revisions = await complete_cached(
        generator,
        [
            Request(
                messages=(
                    *chat(r),
                    {"role": "user", "content": p.critique},
                    {"role": "assistant", "content": c.text or ""},
                    {"role": "user", "content": p.revision},
                ),
                params=params(s + 1),
                template_version=f"revision:{p.id}",
            )
            for (r, p, s), c in zip(jobs, critiques, strict=True)
        ],
        cache,
    )
    results: list[dict[str, Any]] = []
    errors = 0
    for (r, p, _), c, v in zip(jobs, critiques, revisions, strict=True):
        text = (v.text or "").strip()
        if c.error or v.error or not text or text == r["completion"].strip():
            errors += 1  # nothing to compare: no revision, or the same text back
            continue
        results.append({"row": r, "principle": p, "critique": c.text, "revision": text})

    # The comparison: one judge run per principle (each has its own template hash).
    votes_frames: list[pl.DataFrame] = []
    for p in principles:
        mine = [x for x in results if x["principle"].id == p.id]
        if not mine:
            continue
        pairs_in = pl.DataFrame(
            {
                "prompt": [x["row"]["prompt"] for x in mine],
                "chosen": [x["revision"] for x in mine],
                "rejected": [x["row"]["completion"] for x in mine],
            },
            schema={"prompt": table.schema["prompt"], "chosen": pl.String, "rejected": pl.String},
        )
        rows = await judge_pairs(
            judge_client,
            pair_items(pairs_in).to_dicts(),
            principle_rubric(p, base),
            options,
            cache,
            answer=answer,
        )
        votes = conform(votes_frame(rows), "annotations")
        votes_frames.append(votes.with_columns(pl.lit(p.id).alias("principle")))
        verdicts = pool_orders(votes)
        by_item = dict(verdicts.select("item_id", "p_a").iter_rows())
        for x in mine:
            pid = ids.pair_id(x["row"]["prompt_id"], x["revision"], x["row"]["completion"])
            a, _ = ids.canonical_sides(x["revision"], x["row"]["completion"])
            p_a = by_item.get(pid)
            if p_a is not None:
                x["p_revision"] = p_a if a == x["revision"] else 1.0 - p_a

    pair_rows: list[dict[str, Any]] = []
    by_completion: dict[str, list[dict[str, Any]]] = {}
    for x in results:
        if "p_revision" in x:
            by_completion.setdefault(x["row"]["completion_id"], []).append(x)
    for cid, xs in by_completion.items():
        best = max(xs, key=lambda x: x["p_revision"])
        # The revision must win (> 0.5) and by enough: a pair whose chosen side probably
        # loses would teach the opposite of the principle.
        if best["p_revision"] <= 0.5 or best["p_revision"] < min_confidence:
            continue
        row = best["row"]
        pair_rows.append(
            {
                "prompt_id": row["prompt_id"],
                "prompt": row["prompt"],
                "chosen": best["revision"],
                "rejected": row["completion"],
                "confidence": best["p_revision"],
                "margin": None,
                "n_votes": 2,
                "agreement": None,
                "source": "constitution",
                "provenance": {
                    "completion_id": cid,
                    "principles": [x["principle"].id for x in xs],
                    "p_revision": {x["principle"].id: x["p_revision"] for x in xs},
                    "kept_principle": best["principle"].id,
                    "critique": best["critique"],
                    "generator": judge_name(generator),
                    "judge": judge_name(judge_client),
                    "template_version": principle_rubric(best["principle"], base).version,
                },
            }
        )
    pairs = pairs_table(pair_rows, source="constitution")
    votes_all = (
        pl.concat(votes_frames, how="vertical")
        if votes_frames
        else conform(
            pl.DataFrame(
                schema={
                    "item_id": pl.String,
                    "annotator": pl.String,
                    "annotator_kind": pl.String,
                    "label": pl.String,
                }
            ),
            "annotations",
        )
    )
    compared = [x for x in results if "p_revision" in x]
    per_principle: dict[str, Any] = {}
    for p in principles:
        xs = [x for x in compared if x["principle"].id == p.id]
        if xs:
            per_principle[p.id] = {
                "revisions": len(xs),
                "mean_p_revision": sum(x["p_revision"] for x in xs) / len(xs),
                "preferred": sum(x["p_revision"] > 0.5 for x in xs),
            }
    report = {
        "responses": table.height,
        "principles_per_prompt": principles_per_prompt,
        "revisions": len(jobs),
        "revision_errors": errors,
        "compared": len(compared),
        "revisions_not_preferred": sum(x["p_revision"] <= 0.5 for x in compared),
        "mean_p_revision": (
            sum(x["p_revision"] for x in compared) / len(compared) if compared else None
        ),
        "kept": pairs.height,
        # responses whose best revision did not win, or not by min_confidence
        "dropped_not_preferred": len(by_completion) - pairs.height,
        "min_confidence": min_confidence,
        "per_principle": per_principle,
        "cache": cache.stats.line(),
    }
    # Close what we opened (a client passed in is the caller's), each once.
    opened = {
        id(c): c for c, spec in ((generator, model), (judge_client, judge)) if isinstance(spec, str)
    }
    for client in opened.values():
        await client.aclose()
    return StageResult(tables={"pairs": pairs, "annotations": votes_all}, report=report)


critique = synced(acritique)
