"""The pairwise LLM judge: every pair shown in both orders, structured verdicts, bias figures.

    annotations, report = judge(pairs, judges=["anthropic:claude-sonnet-4-6"], cache=CallCache())
    verdicts = pool_orders(annotations)          # one row per (pair, judge)
    plan = estimate(pairs, judges=["anthropic:claude-sonnet-4-6"])   # calls and USD, no calls

Why both orders: LLM judges prefer a position (published swap studies: the verdict flips in
roughly 15-45% of pairs), and a tiny local model picks whatever is shown first. One order
measures that bias into the labels; two orders expose it (`position_consistency`) and, pooled,
cancel it.

How a verdict is read (never by looking for a letter in free text):
- anthropic: forced tool use with the schema `VERDICT_TOOL` (`verdict`: "A" / "B" / "tie",
  where A is the response shown first; `rationale`; optional `confidence` 0-1).
- openai (OpenAI-compatible servers): the same schema as JSON output (the client's
  json_schema / json_object mode).
- local: no generation at all. The next-token probabilities of "A" and "B" after the prompt
  (`Request.choices`), renormalised over the two: p(first shown) per vote; the vote's `p_a`
  is that probability mapped onto canonical side a.
A reply without a valid verdict (malformed JSON, a verdict outside the enum, a refusal, a
backend error) is an annotation row with `error` set and no label.

Input: a `pairs` table (`prompt`, `chosen`, `rejected`; optional `answer` used as the reference
for the math rubric) or a `candidates` table (`prompt_id`, `prompt`, `completion`, optional
`score`), from which the pairs to judge are chosen (prefdata.label.selection; `selection`:
"all"; "best-vs-worst" by `score`, rated first by the same judges when there is none
(prefdata.label.pointwise); "tournament", a budgeted knockout that picks each round's pairs
from the last round's verdicts (prefdata.label.tournament); `max_pairs_per_prompt`).

Output (annotations contract, one row per vote, i.e. per pair x judge x order): `item_id`
(= pair_id), `annotator` ("backend:model"), `annotator_kind` "llm", `label` a / b / tie on
canonical sides (prefdata.ids.canonical_sides, never "first shown"), `confidence` (the
judge's stated confidence; local: the probability of its label), `rationale`, `raw` (the tool
input / the choice probabilities as JSON), `error`, `order` ("ab": side a shown first),
`input_tokens` (all prompt tokens), `output_tokens`, `cost_usd`, `created_at`, and the extra
columns `cache_read_tokens`, `cache_write_tokens` (the prompt-cached part), `p_a`
(local: P(a better); others null), `template_version` (the rubric hash), `rubric`.

`pool_orders` turns the votes into one verdict per (pair, judge): a vote maps to P(a) (a: its
confidence or 1, b: 1 - that, tie: 0.5; local: p_a), the orders' mean is `p_a`; a judge whose
two orders name different winners is *inconsistent* and its verdict is `tie` with confidence
0.5 (no information), however sure each vote was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from prefdata import ids
from prefdata.errors import InputError
from prefdata.label.selection import (
    Selection,
    is_candidates,
    select_pairs,
    select_pairs_with_report,
)
from prefdata.llm.base import Client, Message, Params, Request, Response
from prefdata.llm.cache import CallCache, complete_cached
from prefdata.schema import CONTRACTS, conform, with_messages

__all__ = [
    "BUILTIN_RUBRICS",
    "ORDERS",
    "VERDICT_TOOL",
    "JudgeStats",
    "Rubric",
    "check_orders",
    "estimate",
    "judge",
    "judge_stats",
    "load_rubric",
    "make_answerer",
    "open_clients",
    "pair_items",
    "parse_judge",
    "parse_template",
    "pool_orders",
    "select_pairs",
]

ORDERS: tuple[str, ...] = ("ab", "ba")
BUILTIN_RUBRICS = ("helpfulness", "harmlessness", "honesty", "instruction-following", "math")

VERDICT_TOOL: dict[str, Any] = {
    "name": "record_verdict",
    "description": "Record which response is better. A is the response shown first, B second.",
    "input_schema": {
        "type": "object",
        "properties": {
            "rationale": {
                "type": "string",
                "description": "Two or three sentences of reasoning, written before deciding.",
            },
            "verdict": {"type": "string", "enum": ["A", "B", "tie"]},
            "confidence": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "Probability that the verdict is right.",
            },
        },
        "required": ["rationale", "verdict"],
    },
}
# Asked of text judges at the end of the user message; the local judge reads "A" / "B" as the
# next token, so its prompt ends by asking for exactly one letter.
_TOOL_ASK = "Reason briefly, then record your verdict with the record_verdict tool."
_LOCAL_ASK = "Answer with a single letter: A or B."
# The annotations contract's columns (a vote has no source record) plus the judge's own.
_VOTE_SCHEMA: dict[str, pl.DataType] = {
    **{k: v for k, v in CONTRACTS["annotations"].columns.items() if k != "record_id"},
    "cache_read_tokens": pl.Int64(),
    "cache_write_tokens": pl.Int64(),
    "p_a": pl.Float64(),
    "template_version": pl.String(),
    "rubric": pl.String(),
}


# ---- rubrics ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rubric:
    """A judge prompt template: `system` (criteria, the cacheable prefix) and `user` with the
    fields {conversation}, {first}, {second}, {reference_block} (literal braces: {{ }})."""

    name: str
    system: str
    user: str

    @property
    def version(self) -> str:
        """Hash of the template and the verdict schema: a changed template or schema never
        reuses a cached answer, and provenance says exactly which prompt produced a vote."""
        material = json.dumps([self.system, self.user, VERDICT_TOOL, _TOOL_ASK, _LOCAL_ASK])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def parse_template(
    text: str, source: str, *, fields: Sequence[str], required: Sequence[str]
) -> tuple[str, str]:
    """(system, user) from a template file's '### system' / '### user' sections; the user
    template must contain every field in `required` and no field outside `fields`."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip().lower()
        if stripped in ("### system", "### user"):
            current = stripped[4:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "user" not in sections:
        raise InputError(
            "a rubric file needs a '### user' section (and usually a '### system' one)",
            source=source,
        )
    user = "\n".join(sections["user"]).strip()
    for needed in required:
        if f"{{{needed}}}" not in user:
            raise InputError(f"the user template must contain {{{needed}}}", source=source)
    try:
        user.format(**dict.fromkeys(fields, ""))
    except (KeyError, IndexError, ValueError) as err:
        allowed = ", ".join(f"{{{f}}}" for f in fields)
        raise InputError(
            f"bad template field {err}; allowed: {allowed}; write literal braces as {{{{ and }}}}",
            source=source,
        ) from None
    return "\n".join(sections.get("system", [])).strip(), user


def _parse_rubric(text: str, name: str, source: str) -> Rubric:
    system, user = parse_template(
        text,
        source,
        fields=("conversation", "first", "second", "reference_block"),
        required=("first", "second", "conversation"),
    )
    return Rubric(name, system, user)


def load_rubric(rubric: str | Path | Rubric) -> Rubric:
    """A built-in rubric by name (BUILTIN_RUBRICS) or a template file of one's own."""
    if isinstance(rubric, Rubric):
        return rubric
    name = str(rubric)
    if name in BUILTIN_RUBRICS:
        text = resources.files("prefdata.label").joinpath(f"rubrics/{name}.txt").read_text("utf-8")
        return _parse_rubric(text, name, f"built-in rubric {name}")
    path = Path(rubric)
    if not path.exists():
        raise InputError(
            f"no rubric {name!r}: not a built-in ({', '.join(BUILTIN_RUBRICS)}) nor a file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the rubric: {err}", source=path) from None
    return _parse_rubric(text, path.stem, str(path))


# ---- pairs to judge --------------------------------------------------------------------


def render_conversation(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt as the judge sees it: a lone user message as is, a dialogue with roles."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return str(messages[0]["content"])
    return "\n\n".join(f"{str(m['role']).capitalize()}: {m['content']}" for m in messages)


def pair_items(table: pl.DataFrame, **selection: Any) -> pl.DataFrame:
    """The pairs to judge: `item_id` (pair_id), `prompt`, `a`, `b` (canonical sides),
    `reference` (null unless the input has `answer`). Input: pairs or candidates (see module)."""
    if "completion" in table.columns and "chosen" not in table.columns:
        table = select_pairs(table, **selection)
    for col in ("prompt", "chosen", "rejected"):
        if col not in table.columns:
            raise InputError(
                f"the judge needs a pairs table (prompt, chosen, rejected) or candidates "
                f"(prompt_id, prompt, completion); missing '{col}'",
                column=col,
            )
    table = ids.with_pair_ids(with_messages(table))
    sides = [
        ids.canonical_sides(c, r) for c, r in zip(table["chosen"], table["rejected"], strict=True)
    ]
    ref = (
        table["answer"]
        if "answer" in table.columns
        else pl.repeat(None, table.height, dtype=pl.String, eager=True)
    )
    out = pl.DataFrame(
        {
            "item_id": table["pair_id"],
            "prompt_id": table["prompt_id"],
            "prompt": table["prompt"],
            "a": [s[0] for s in sides],
            "b": [s[1] for s in sides],
            "reference": ref.cast(pl.String),
        }
    )
    # The same pair twice would be judged twice and counted twice in every figure.
    return out.unique("item_id", keep="first", maintain_order=True)


# ---- judges and requests ---------------------------------------------------------------


def parse_judge(spec: str) -> tuple[str, str]:
    """ "backend:model" -> (backend, model); a bare name means the local backend."""
    backend, sep, model = spec.partition(":")
    if not sep:
        return "local", spec
    if not model:
        raise InputError(f"judge {spec!r}: write backend:model, e.g. anthropic:claude-sonnet-4-6")
    return backend, model


def _client(judge_spec: str | Client, options: Mapping[str, Any]) -> Client:
    if not isinstance(judge_spec, str):
        return judge_spec
    from prefdata.llm.factory import make_client

    backend, model = parse_judge(judge_spec)
    return make_client(backend, model, **dict(options.get(backend, {})))


def _name(client: Client) -> str:
    return f"{client.backend}:{client.model}"


def reading_request(
    user: str,
    *,
    system: str,
    template_version: str,
    backend: str,
    asks: tuple[str, str],
    tool: dict[str, Any],
    choices: tuple[str, ...],
    custom_id: str,
    max_new_tokens: int,
) -> Request:
    """A judge's request, pairwise or pointwise: the local backend reads the next-token
    probabilities of `choices` (and gets `asks[0]`); remote backends get forced tool use
    (`tool`, `asks[1]`)."""
    local = backend == "local"
    messages: tuple[Message, ...] = (
        {"role": "user", "content": f"{user}\n{asks[0] if local else asks[1]}"},
    )
    return Request(
        messages=messages,
        # Judging is a reading, not a sample: greedy where the backend honours it (the
        # Anthropic API takes no sampling parameters; asking would only log a warning).
        params=Params(max_new_tokens=max_new_tokens)
        if backend == "anthropic"
        else Params(temperature=0.0, max_new_tokens=max_new_tokens),
        system=system or None,
        tool=None if local else tool,
        choices=choices if local else (),
        template_version=template_version,
        custom_id=custom_id,
    )


def reference_block(item: Mapping[str, Any]) -> str:
    """The rubric's `{reference_block}`: the reference answer when the item has one."""
    reference = item.get("reference")
    return f"\n[Reference answer]\n{reference}\n" if reference else ""


def build_request(
    rubric: Rubric,
    item: Mapping[str, Any],
    order: str,
    *,
    backend: str,
    max_new_tokens: int = 400,
) -> Request:
    """The request for one pair in one order ("ab": side a shown first as Response A)."""
    first, second = (item["a"], item["b"]) if order == "ab" else (item["b"], item["a"])
    user = rubric.user.format(
        conversation=render_conversation(item["prompt"]),
        first=first,
        second=second,
        reference_block=reference_block(item),
    )
    return reading_request(
        user,
        system=rubric.system,
        template_version=rubric.version,
        backend=backend,
        asks=(_LOCAL_ASK, _TOOL_ASK),
        tool=VERDICT_TOOL,
        choices=("A", "B"),
        custom_id=f"{item['item_id']}-{order}",
        max_new_tokens=max_new_tokens,
    )


def _vote(
    response: Response, order: str, name: str, item_id: str, rubric: Rubric, now: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "item_id": item_id,
        "annotator": name,
        "annotator_kind": "llm",
        "label": None,
        "confidence": None,
        "rationale": None,
        "raw": None,
        "error": response.error,
        "order": order,
        # All prompt tokens; the cached part of them is in the two cache columns.
        "input_tokens": response.input_tokens
        + response.cache_read_tokens
        + response.cache_write_tokens,
        "output_tokens": response.output_tokens,
        "cache_read_tokens": response.cache_read_tokens,
        "cache_write_tokens": response.cache_write_tokens,
        "cost_usd": response.cost_usd,
        "created_at": now,
        "p_a": None,
        "template_version": rubric.version,
        "rubric": rubric.name,
    }
    shown = {"A": "a", "B": "b"} if order == "ab" else {"A": "b", "B": "a"}
    if response.error is not None:
        if response.text:
            row["raw"] = response.text
        return row
    if response.choice_probs is not None:
        p_first = float(response.choice_probs["A"])
        p_a = p_first if order == "ab" else 1.0 - p_first
        row["raw"] = json.dumps({**response.choice_probs, "mass": response.choice_mass})
        row["p_a"] = p_a
        row["label"] = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
        row["confidence"] = max(p_a, 1.0 - p_a)
        return row
    data = response.tool_input
    if data is None:
        row["raw"] = response.text
        row["error"] = "no verdict: the reply is not the verdict tool's input"
        return row
    row["raw"] = json.dumps(data, ensure_ascii=False, sort_keys=True)
    verdict = data.get("verdict")
    rationale = data.get("rationale")
    row["rationale"] = rationale if isinstance(rationale, str) else None
    if not isinstance(verdict, str) or verdict.strip() not in ("A", "B", "tie"):
        row["error"] = f"verdict must be one of A, B, tie; got {verdict!r}"
        return row
    confidence = data.get("confidence")
    if confidence is not None:
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not (0 <= confidence <= 1)
        ):
            row["error"] = f"confidence must be a number in 0-1; got {confidence!r}"
            return row
        row["confidence"] = float(confidence)
    verdict = verdict.strip()
    row["label"] = "tie" if verdict == "tie" else shown[verdict]
    return row


Answerer = Callable[[Client, Sequence[Request], CallCache], Any]


async def _online(client: Client, requests: Sequence[Request], cache: CallCache) -> list[Response]:
    return await complete_cached(client, requests, cache)


def _batch_answerer(state: Path, poll_interval: float) -> Answerer:
    from prefdata.llm.anthropic import AnthropicClient
    from prefdata.llm.batches import run_batch

    async def answer(
        client: Client, requests: Sequence[Request], cache: CallCache
    ) -> list[Response]:
        if not isinstance(client, AnthropicClient):
            raise InputError(
                f"the Batches API (--batch) needs the anthropic backend; {_name(client)} is not"
            )
        path = state.with_name(f"{state.stem}.{client.model}{state.suffix}")
        return await run_batch(
            client, requests, cache=cache, state_path=path, poll_interval=poll_interval
        )

    return answer


def make_answerer(batch_state: str | Path | None, poll_interval: float = 30.0) -> Answerer:
    """How requests get answered: online through the call cache, or with `batch_state` (a
    path) through the Anthropic Message Batches API (one state file per model beside it)."""
    return _batch_answerer(Path(batch_state), poll_interval) if batch_state else _online


@contextlib.asynccontextmanager
async def open_clients(
    judges: Sequence[str | Client], options: Mapping[str, Mapping[str, Any]] | None
) -> AsyncIterator[list[Client]]:
    """Clients for "backend:model" specs (options[backend] go to make_client) or the clients
    given; on exit closes the ones it made (a client passed in is the caller's to close)."""
    clients: list[Client] = []
    try:
        for spec in judges:
            clients.append(_client(spec, options or {}))
        yield clients
    finally:
        for spec, client in zip(judges, clients, strict=False):
            if isinstance(spec, str):
                await client.aclose()


def check_orders(orders: Sequence[str]) -> tuple[str, ...]:
    """The orders as a tuple; InputError unless they are 'ab', 'ba' or both, once each."""
    out = tuple(orders)
    if not out or any(o not in ORDERS for o in out) or len(set(out)) < len(out):
        raise InputError(f"orders must be 'ab', 'ba' or both, got {list(out)}")
    return out


async def ajudge(
    table: pl.DataFrame,
    *,
    judges: Sequence[str | Client],
    cache: CallCache,
    rubric: str | Path | Rubric = "helpfulness",
    orders: Sequence[str] = ORDERS,
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    max_new_tokens: int = 400,
    client_options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_state: str | Path | None = None,
    poll_interval: float = 30.0,
    chunk_size: int = 256,
    progress: bool = False,
    min_human_agreement: float | None = None,
    gold: pl.DataFrame | None = None,
    pointwise_rubric: Any = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The async version of `judge` (same arguments)."""
    orders = check_orders(orders)
    if not judges:
        raise InputError("no judge given (e.g. --judge anthropic:claude-sonnet-4-6)")
    if min_human_agreement is not None and gold is None:
        raise InputError("min_human_agreement needs gold labels (--gold) to measure agreement")
    candidates = is_candidates(table)
    if candidates and selection == "tournament":
        if min_human_agreement is not None:
            raise InputError("min_human_agreement is not available with selection 'tournament'")
        if gold is not None:
            # Gold only feeds the min_human_agreement gate, which a tournament has not got:
            # refused rather than ignored, as the CLI refuses --gold here.
            raise InputError(
                "gold labels are not used with selection 'tournament' (they only feed "
                "min_human_agreement); score the votes against them with "
                "prefdata.label.panel.calibration, or use selection 'all' or 'best-vs-worst'"
            )
        from prefdata.label.tournament import atournament

        votes, _, t_report = await atournament(
            table,
            judges=judges,
            cache=cache,
            rubric=rubric,
            orders=orders,
            max_pairs_per_prompt=max_pairs_per_prompt,
            seed=seed,
            max_new_tokens=max_new_tokens,
            client_options=client_options,
            batch_state=batch_state,
            poll_interval=poll_interval,
            chunk_size=chunk_size,
            progress=progress,
        )
        return votes, t_report
    if gold is not None and "label" not in gold.columns:
        from prefdata.label.panel import gold_from_pairs

        gold = gold_from_pairs(gold)  # a pairs table: chosen is the human label
    the_rubric = load_rubric(rubric)
    answer = make_answerer(batch_state, poll_interval)
    from prefdata.progress import progress_bar

    report: dict[str, Any] = {}
    async with open_clients(judges, client_options) as clients:
        if candidates and selection == "best-vs-worst" and "score" not in table.columns:
            # No score to pick best and worst by: the same judges rate each candidate alone.
            from prefdata.label.pointwise import ascore_candidates, pointwise_rubric_for

            table, report["pointwise"] = await ascore_candidates(
                table,
                judges=clients,
                cache=cache,
                rubric=pointwise_rubric or pointwise_rubric_for(rubric),
                max_new_tokens=max_new_tokens,
                batch_state=batch_state,
                poll_interval=poll_interval,
                chunk_size=chunk_size,
                progress=progress,
            )
        if candidates:
            # Selected here rather than in pair_items, to keep the counts of prompts that
            # yield no pair (and why) for the report.
            table, report["selection"] = select_pairs_with_report(
                table, selection=selection, max_pairs_per_prompt=max_pairs_per_prompt, seed=seed
            )
        items = pair_items(table)
        if batch_state:
            # One submission for everything: a batch takes minutes to hours, so chunks would
            # wait one after another; run_batch's state file already makes the run resumable.
            chunk_size = max(1, items.height)
        records = items.to_dicts()
        rows: list[dict[str, Any]] = []
        report = {
            "pairs": items.height,
            "orders": list(orders),
            "rubric": the_rubric.name,
            "template_version": the_rubric.version,
            "judges": {},
            "calibration": {},
            **report,
        }
        with progress_bar(len(records) * len(orders) * len(clients), progress, "judging") as tick:
            for client in clients:
                name = _name(client)
                mine: list[dict[str, Any]] = []
                ordered = list(records)
                if gold is not None and min_human_agreement is not None:
                    # Gold items first: the gate is decided before paying for the rest.
                    gold_ids = set(gold["item_id"].to_list())
                    ordered.sort(key=lambda r: r["item_id"] not in gold_ids)
                    n_gold = sum(1 for r in ordered if r["item_id"] in gold_ids)
                    mine += await _judge_chunks(
                        client,
                        ordered[:n_gold],
                        orders,
                        the_rubric,
                        cache,
                        answer,
                        chunk_size,
                        max_new_tokens,
                        tick,
                    )
                    from prefdata.label.panel import calibration

                    cal = calibration(conform(_frame(mine), "annotations"), gold)
                    stats = cal["judges"].get(name, {})
                    acc = stats.get("accuracy_without_ties")
                    report["calibration"][name] = stats
                    if acc is None or acc < min_human_agreement:
                        rows += mine
                        report["judges"][name] = {
                            "stopped": f"agreement with humans {acc} < {min_human_agreement} "
                            f"on {n_gold} gold pairs; the other pairs were not judged"
                        }
                        continue
                    ordered = ordered[n_gold:]
                mine += await _judge_chunks(
                    client,
                    ordered,
                    orders,
                    the_rubric,
                    cache,
                    answer,
                    chunk_size,
                    max_new_tokens,
                    tick,
                )
                rows += mine
    annotations = conform(_frame(rows), "annotations")
    for name, stats in judge_stats(annotations, items).items():
        report["judges"].setdefault(name, {}).update(stats.as_dict())
    report["cache"] = cache.stats.line()
    return annotations, report


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=_VOTE_SCHEMA)


async def _judge_chunks(
    client: Client,
    records: Sequence[dict[str, Any]],
    orders: Sequence[str],
    rubric: Rubric,
    cache: CallCache,
    answer: Answerer,
    chunk_size: int,
    max_new_tokens: int,
    tick: Callable[[int], None],
) -> list[dict[str, Any]]:
    name = _name(client)
    out: list[dict[str, Any]] = []
    # Chunks: every chunk's answers are in the call cache before the next one starts, so an
    # interrupted run loses at most one chunk and a re-run pays for nothing twice.
    for start in range(0, len(records), chunk_size):
        chunk = records[start : start + chunk_size]
        jobs = [(r, o) for r in chunk for o in orders]
        requests = [
            build_request(rubric, r, o, backend=client.backend, max_new_tokens=max_new_tokens)
            for r, o in jobs
        ]
        responses = await answer(client, requests, cache)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for (r, o), response in zip(jobs, responses, strict=True):
            out.append(_vote(response, o, name, r["item_id"], rubric, now))
        tick(len(jobs))
    return out


def judge(
    table: pl.DataFrame,
    *,
    judges: Sequence[str | Client],
    cache: CallCache,
    rubric: str | Path | Rubric = "helpfulness",
    orders: Sequence[str] = ORDERS,
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    max_new_tokens: int = 400,
    client_options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_state: str | Path | None = None,
    poll_interval: float = 30.0,
    chunk_size: int = 256,
    progress: bool = False,
    min_human_agreement: float | None = None,
    gold: pl.DataFrame | None = None,
    pointwise_rubric: Any = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Judge every pair with every judge in `orders`; returns (votes, report).

    judges: "backend:model" strings (client_options[backend] go to make_client) or clients.
    batch_state: a path turns on the Anthropic Message Batches API (half price, resumable;
        one state file per model beside it). chunk_size: pairs per cache-safe chunk.
    min_human_agreement + gold (annotations with human labels, `item_id` = pair_id, or a
        pairs table whose chosen side is the human label): each
        judge first labels the gold pairs; below this accuracy (ties left out) it stops
        there, and the report says so.
    Candidates input (see `prefdata.label.selection`): selection "all" (optionally a seeded
        subset of `max_pairs_per_prompt` pairs per prompt, `seed`); "best-vs-worst" by the
        `score` column, and without one the same judges first rate every candidate alone
        (`prefdata.label.pointwise`, template `pointwise_rubric`, by default the pointwise
        version of `rubric`; its figures in report["pointwise"]; call
        `score_candidates` yourself to keep the scores); "tournament": a budgeted
        knockout of at most `max_pairs_per_prompt` comparisons per prompt
        (`prefdata.label.tournament`, which also returns the standings; here its votes
        and report; `gold` is refused there, as is min_human_agreement).
        report["selection"]: prompts, prompts_with_pairs and `skipped`, the prompts that
        gave no pair by reason (see `select_pairs_with_report`).
    Report: pairs, orders, rubric, template_version, cache, and per judge the figures of
    `judge_stats` (votes, errors, position_consistency, p_first_wins, p_longer_wins, ...).
    """
    from prefdata.progress import run_sync

    return run_sync(
        ajudge(
            table,
            judges=judges,
            cache=cache,
            rubric=rubric,
            orders=orders,
            selection=selection,
            max_pairs_per_prompt=max_pairs_per_prompt,
            max_new_tokens=max_new_tokens,
            client_options=client_options,
            batch_state=batch_state,
            poll_interval=poll_interval,
            chunk_size=chunk_size,
            progress=progress,
            min_human_agreement=min_human_agreement,
            gold=gold,
            pointwise_rubric=pointwise_rubric,
            seed=seed,
        )
    )


# ---- pooling the two orders, and per-judge figures -------------------------------------


def _vote_p_a(label: str | None, confidence: float | None, p_a: float | None) -> float | None:
    if p_a is not None:
        return p_a
    if label is None:
        return None
    c = 1.0 if confidence is None else confidence
    return {"a": c, "b": 1.0 - c}.get(label, 0.5)


def pool_orders(annotations: pl.DataFrame) -> pl.DataFrame:
    """One verdict per (item_id, annotator) from its votes in both orders.

    Input: judge votes (annotations with `order`; `p_a` optional). Output (annotations
    contract): `item_id`, `annotator`, `annotator_kind`, `label`, `confidence` (probability
    that the label's side is better, from p_a; 0.5 for a tie; null when a vote named a
    winner without stating a confidence), and extra columns `p_a` (mean over the
    orders), `consistent` (both orders name the same label; null with fewer than two valid
    votes), `n_orders` (valid votes pooled). Votes with `error` are left out; an item whose
    votes all failed gets label null and error "no valid vote".
    """
    table = annotations
    if "p_a" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias("p_a"))
    if "error" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias("error"))
    if "confidence" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias("confidence"))
    rows = []
    keys = ["item_id", "annotator"]
    for (item, annotator), group in table.group_by(keys, maintain_order=True):
        ok = group.filter(pl.col("error").is_null() & pl.col("label").is_not_null())
        kind = group["annotator_kind"][0]
        if not ok.height:
            rows.append(
                {
                    "item_id": item,
                    "annotator": annotator,
                    "annotator_kind": kind,
                    "label": None,
                    "confidence": None,
                    "error": "no valid vote",
                    "p_a": None,
                    "consistent": None,
                    "n_orders": 0,
                }
            )
            continue
        labels = ok["label"].to_list()
        ps = [
            _vote_p_a(lab, c, p)
            for lab, c, p in zip(
                labels, ok["confidence"].to_list(), ok["p_a"].to_list(), strict=True
            )
        ]
        p_a = sum(p for p in ps if p is not None) / len(ps)
        consistent = len(set(labels)) == 1 if len(labels) > 1 else None
        confidence: float | None
        if {"a", "b"} <= set(labels):
            # Opposite winners in the two orders: the judge followed the position, not the
            # content; its verdict carries no information about this pair.
            label, confidence = "tie", 0.5
        else:
            label = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
            # A winner named without a stated confidence has an unknown one, never 1.0.
            stated = all(
                c is not None or p is not None or lab == "tie"
                for lab, c, p in zip(
                    labels, ok["confidence"].to_list(), ok["p_a"].to_list(), strict=True
                )
            )
            confidence = max(p_a, 1.0 - p_a) if stated else None
        rows.append(
            {
                "item_id": item,
                "annotator": annotator,
                "annotator_kind": kind,
                "label": label,
                "confidence": confidence,
                "error": None,
                "p_a": p_a,
                "consistent": consistent,
                "n_orders": ok.height,
            }
        )
    schema = {
        "item_id": pl.String,
        "annotator": pl.String,
        "annotator_kind": pl.String,
        "label": pl.String,
        "confidence": pl.Float64,
        "error": pl.String,
        "p_a": pl.Float64,
        "consistent": pl.Boolean,
        "n_orders": pl.Int64,
    }
    return conform(pl.DataFrame(rows, schema=schema), "annotations")


@dataclass
class JudgeStats:
    """Per-judge figures (shares are None when there is nothing to count)."""

    votes: int = 0
    errors: int = 0
    ties: int = 0
    pairs_both_orders: int = 0
    consistent_pairs: int = 0
    first_wins: int = 0
    decided_with_order: int = 0
    longer_wins: int = 0
    decided_unequal_length: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error_examples: list[str] = field(default_factory=list)

    @property
    def position_consistency(self) -> float | None:
        return self.consistent_pairs / self.pairs_both_orders if self.pairs_both_orders else None

    @property
    def p_first_wins(self) -> float | None:
        return self.first_wins / self.decided_with_order if self.decided_with_order else None

    @property
    def p_longer_wins(self) -> float | None:
        return (
            self.longer_wins / self.decided_unequal_length if self.decided_unequal_length else None
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "votes": self.votes,
            "errors": self.errors,
            "ties": self.ties,
            "pairs_both_orders": self.pairs_both_orders,
            "position_consistency": self.position_consistency,
            "p_first_wins": self.p_first_wins,
            "first_wins": self.first_wins,
            "decided_with_order": self.decided_with_order,
            "p_longer_wins": self.p_longer_wins,
            "decided_unequal_length": self.decided_unequal_length,
            "inconsistent_pairs": self.pairs_both_orders - self.consistent_pairs,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "error_examples": self.error_examples,
        }


def judge_stats(annotations: pl.DataFrame, items: pl.DataFrame) -> dict[str, JudgeStats]:
    """Position consistency, P(first shown wins), P(longer wins) per judge.

    Input: votes (`item_id`, `annotator`, `label`, `order`, `error`, token / cost columns)
    and the judged pairs (`item_id`, `a`, `b`; from `pair_items`). Consistency: over pairs
    with a valid vote in both orders, the share whose two labels are equal. First wins: over
    a/b votes, the share whose winner was shown first. Longer wins: over a/b votes on pairs
    whose sides differ in length (characters), the share won by the longer side.
    """
    lengths = {
        r["item_id"]: (len(r["a"]), len(r["b"]))
        for r in items.select("item_id", "a", "b").to_dicts()
    }
    out: dict[str, JudgeStats] = {}
    for row in annotations.to_dicts():
        s = out.setdefault(row["annotator"], JudgeStats())
        s.votes += 1
        s.input_tokens += row.get("input_tokens") or 0
        s.output_tokens += row.get("output_tokens") or 0
        s.cost_usd += row.get("cost_usd") or 0.0
        if row.get("error") is not None or row["label"] is None:
            s.errors += 1
            if len(s.error_examples) < 3:
                s.error_examples.append(str(row.get("error")))
            continue
        label = row["label"]
        if label == "tie":
            s.ties += 1
            continue
        order = row.get("order")
        if order in ORDERS:
            s.decided_with_order += 1
            s.first_wins += int(label == order[0])
        la, lb = lengths.get(row["item_id"], (0, 0))
        if la != lb:
            s.decided_unequal_length += 1
            s.longer_wins += int((label == "a") == (la > lb))
    ok = annotations.filter(pl.col("error").is_null() & pl.col("label").is_not_null())
    if "order" in ok.columns:
        both = (
            ok.group_by("annotator", "item_id")
            .agg(pl.col("order").n_unique().alias("n"), pl.col("label").n_unique().alias("labels"))
            .filter(pl.col("n") == 2)
        )
        for name, group in both.group_by("annotator"):
            s = out[str(name[0])]
            s.pairs_both_orders = group.height
            s.consistent_pairs = int((group["labels"] == 1).sum())
    return out


# ---- cost estimate -----------------------------------------------------------------------


def _approx_tokens(text: str) -> int:
    # ~4 characters per token for English with the Claude / GPT tokenizers; an estimate is
    # for deciding whether to spend, so it is labelled approximate.
    return max(1, round(len(text) / 4))


@dataclass
class _Phase:
    """One kind of call in an estimate: how many, their own tokens, the cached prefix each."""

    calls: int = 0
    user_tokens: int = 0
    system_tokens: int = 0


def _candidate_phases(
    table: pl.DataFrame,
    rubric: Rubric,
    orders: Sequence[str],
    selection: Selection,
    max_pairs_per_prompt: int | None,
    pointwise_rubric: Any,
) -> tuple[_Phase, _Phase, int]:
    """(pairwise phase, pointwise phase, pairs) for selections whose pairs are only known
    once judged: upper bounds (tournament: `max_comparisons`, capped; best-vs-worst without
    a score: one call per candidate, then at most one pair per prompt)."""
    from prefdata.label.selection import candidate_groups
    from prefdata.label.tournament import max_comparisons

    groups = candidate_groups(table)
    pair = _Phase(
        system_tokens=_approx_tokens(rubric.system) + _approx_tokens(json.dumps(VERDICT_TOOL))
    )
    point = _Phase()
    if selection == "best-vs-worst":
        from prefdata.label.pointwise import (
            SCORE_TOOL,
            build_score_request,
            load_pointwise_rubric,
            pointwise_rubric_for,
        )

        prub = (
            load_pointwise_rubric(pointwise_rubric)
            if pointwise_rubric
            else pointwise_rubric_for(rubric)
        )
        point.system_tokens = _approx_tokens(prub.system) + _approx_tokens(json.dumps(SCORE_TOOL))
        for g in groups:
            for text in g.texts:
                item = {"item_id": "", "prompt": g.prompt, "completion": text}
                req = build_score_request(
                    prub, {**item, "reference": g.reference}, backend="anthropic"
                )
                point.calls += 1
                point.user_tokens += _approx_tokens(str(req.messages[0]["content"]))
    pairs = 0
    for g in groups:
        n = len(g.texts)
        if selection == "best-vs-worst":
            m = 1 if n >= 2 else 0
        else:
            m = min(max_comparisons(n), max_pairs_per_prompt or n * n)
        if not m:
            continue
        # Which pairs meet depends on the verdicts: price each as two candidates of the
        # prompt's mean length (tokens are counted from characters anyway).
        filler = "x" * round(sum(len(t) for t in g.texts) / n)
        item = {"item_id": "", "prompt": g.prompt, "a": filler, "b": filler}
        req = build_request(rubric, {**item, "reference": g.reference}, "ab", backend="anthropic")
        pairs += m
        pair.calls += m * len(orders)
        pair.user_tokens += m * len(orders) * _approx_tokens(str(req.messages[0]["content"]))
    return pair, point, pairs


def estimate(
    table: pl.DataFrame,
    *,
    judges: Sequence[str],
    rubric: str | Path | Rubric = "helpfulness",
    orders: Sequence[str] = ORDERS,
    selection: Selection = "all",
    max_pairs_per_prompt: int | None = None,
    output_tokens: int = 150,
    prices: Any = None,
    min_cache_tokens: int = 1024,
    pointwise_rubric: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Calls and USD before spending anything (no client is created, no call made).

    Tokens are approximate (characters / 4); `output_tokens` per call is the expected reply
    (a rationale plus the verdict or score). For each Anthropic judge three prices: online,
    batch (the Message Batches discount) and batch + prompt caching (the rubric, sent as the
    cached system prefix, billed at the cache-read price after the first call). Anthropic
    caches only prefixes of at least `min_cache_tokens` (1,024 for Sonnet / Opus, 2,048 for
    Haiku); a shorter rubric gets no caching and the report says so. Local judges cost 0.
    Candidates with selection "tournament", or "best-vs-worst" without a `score` column
    (which first rates every candidate: `pointwise_calls_per_judge`), give upper bounds
    (`pairs_upper_bound` true): the pairs are only known once judged. `calls_per_judge`
    counts every call; `all_pairs` (candidates input) is what "all" would judge.
    """
    from prefdata.llm.prices import load_prices

    the_rubric = load_rubric(rubric)
    orders = check_orders(orders)
    table_prices = load_prices(prices)
    adaptive = is_candidates(table) and (
        selection == "tournament" or (selection == "best-vs-worst" and "score" not in table.columns)
    )
    if adaptive:
        pair, point, n_pairs = _candidate_phases(
            table, the_rubric, orders, selection, max_pairs_per_prompt, pointwise_rubric
        )
    else:
        items = pair_items(
            table, selection=selection, max_pairs_per_prompt=max_pairs_per_prompt, seed=seed
        )
        system = _approx_tokens(the_rubric.system) + _approx_tokens(json.dumps(VERDICT_TOOL))
        pair, point, n_pairs = _Phase(system_tokens=system), _Phase(), items.height
        for r in items.to_dicts():
            for o in orders:
                req = build_request(the_rubric, r, o, backend="anthropic")
                pair.calls += 1
                pair.user_tokens += _approx_tokens(str(req.messages[0]["content"]))
    phases = [p for p in (pair, point) if p.calls]
    calls = pair.calls + point.calls
    out: dict[str, Any] = {
        "pairs": n_pairs,
        "pairs_upper_bound": adaptive,
        "orders": list(orders),
        "calls_per_judge": calls,
        "pointwise_calls_per_judge": point.calls,
        "approx_input_tokens_per_judge": sum(
            p.user_tokens + p.calls * p.system_tokens for p in phases
        ),
        "approx_output_tokens_per_judge": calls * output_tokens,
        "cached_prefix_tokens": pair.system_tokens,
        "judges": {},
    }
    if is_candidates(table):
        from prefdata.label.selection import candidate_groups

        out["all_pairs"] = sum(
            len(g.texts) * (len(g.texts) - 1) // 2 for g in candidate_groups(table)
        )
    for spec in judges:
        backend, model = parse_judge(spec)
        entry: dict[str, Any] = {"calls": calls}
        if backend == "local":
            entry["usd"] = 0.0
        elif table_prices.lookup(model) is None:
            entry["usd"] = None
            entry["note"] = f"no price known for {model!r} (add one with a prices file)"
        else:

            def usd(batch: bool, cache: bool, model: str = model) -> float:
                total = 0.0
                for p in phases:
                    cacheable = cache and p.system_tokens >= min_cache_tokens and p.calls > 1
                    total += table_prices.cost(
                        model,
                        input_tokens=p.user_tokens
                        + (0 if cacheable else p.calls * p.system_tokens),
                        output_tokens=p.calls * output_tokens,
                        cache_write_tokens=p.system_tokens if cacheable else 0,
                        cache_read_tokens=(p.calls - 1) * p.system_tokens if cacheable else 0,
                        batch=batch,
                    )
                return total

            entry["usd_online"] = round(usd(False, True), 6)
            entry["usd_online_no_cache"] = round(usd(False, False), 6)
            entry["usd_batch"] = round(usd(True, False), 6)
            entry["usd_batch_cached"] = round(usd(True, True), 6)
            entry["prompt_caching_applies"] = pair.system_tokens >= min_cache_tokens
        out["judges"][spec] = entry
    return out
