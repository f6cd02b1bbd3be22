"""What goes to Argilla: records (pairs, rankings, audit reviews), the judges' verdicts on
them, the dataset settings (fields, questions, guidelines) and the annotator guidelines.

Pairs: one record per pair with fields `prompt`, `response_a`, `response_b`. Which response
is shown first is randomised per record (a hash of `seed` and the pair id) and stored in the
record's metadata `order`: "ab" when canonical side a (prefdata.ids.canonical_sides) is shown
as Response A. Humans thus get no position bias, and chosen / rejected is never revealed.
Questions: `label` (a / b / tie, as shown), optional `strength` (rating 1-5), `rationale`.

Candidates are grouped by prompt: two per prompt make pair records as above; more make a
ranking dataset with fields `response_1` .. `response_K` (a per-record random order, kept in
metadata `completion_ids`) and a `ranking` question. An audit sample (`review=True`) shows
`chosen` and `rejected` as labelled and asks `label_right` (yes / no / unsure).

Judges (pairs only): an annotations table of machine votes (LLM judges, rules; human votes,
votes with an `error` and votes without a pair label are skipped and counted) gives each
pair one verdict: the judges' strict plurality label, its `agent` (the judges that voted it,
" / "-joined) and `score` (the share of the pair's judge votes behind it; a single judge's
own `confidence` when there is one vote). Pairs whose judges split evenly get no verdict,
never a guessed one. How the verdict is shown (`suggestions`):

- "hint" (default): in the record's `judge` field, below the responses, as text ("Response B
  is better; judges: gpt-4 / llama; score 1.00, 2 of 2 judge votes"), so no answer is
  selected for the annotator. Argilla 2.8 pre-selects every suggestion of a pending record
  as its answer (its web app fills the form from the suggestion), so a suggestion can not be
  shown without pre-filling: the hint is a field instead.
- "prefill": an Argilla suggestion on the `label` question (agent and score shown), which
  the web app pre-selects: pressing Submit sends the judge's label unless it is changed.

Every judge vote is also in the record's metadata `judge_votes`, in the shown order.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import polars as pl

from prefdata import ids
from prefdata.annotate.connection import LABEL, RANKING, REVIEW, Kind
from prefdata.schema import PAIR_LABELS, conform

STRENGTH = "strength"
RATIONALE = "rationale"
JUDGE_FIELD = "judge"
REVIEW_LABELS = ("yes", "no", "unsure")
SuggestionMode = Literal["hint", "prefill"]

SHOWN_LABELS = {"a": "Response A is better", "b": "Response B is better", "tie": "Tie"}
_SHORT = {"a": "Response A", "b": "Response B", "tie": "Tie"}
REVIEW_TEXT = {
    "yes": "Yes: the chosen response is better",
    "no": "No: the rejected response is better (mislabeled)",
    "unsure": "Can't tell",
}
DISCARDED = "discarded by the annotator"


def guidelines(kind: Kind) -> str:
    """The annotator guidelines of a kind of dataset (Markdown shipped with prefdata:
    prefdata/annotate/guidelines/<kind>.md). Only what annotators need, task first; the
    curator's instructions are in annotate/README.md."""
    text = resources.files("prefdata.annotate").joinpath("guidelines", f"{kind}.md")
    return text.read_text(encoding="utf-8").strip()


_VERDICT_NOTE = {
    "hint": (
        "A record may show the **Judges' verdict** below the responses: what automatic "
        "judges voted, their names, and a score (the share of their votes behind it). It is "
        "a hint to check, never the answer: nothing is selected for you. Read both "
        "responses and choose yourself; when you disagree with the judges, say why in one "
        "sentence."
    ),
    "prefill": (
        "A record may come with the judges' vote **already selected** (a sparkle mark, the "
        "judges' names and a score on one option). It is a hint to check, never the answer: "
        "read both responses and change the selection when you disagree; say why in one "
        "sentence. Pressing Submit without looking sends the judges' label as yours."
    ),
}


def annotator_guidelines(
    kind: Kind,
    *,
    k: int,
    records: int,
    suggestions: SuggestionMode = "hint",
    custom: str | None = None,
) -> str:
    """What the dataset's guidelines panel shows: the annotator guidelines (`custom` text,
    or the kind's own), then how the judges' verdict appears (pairs), then what the
    progress figures on the page mean for this dataset."""
    parts = [custom.strip() if custom else guidelines(kind)]
    if kind == "pairs":
        parts.append("## The judges' verdict\n\n" + _VERDICT_NOTE[suggestions])
    need = "1 answer" if k == 1 else f"{k} answers from different annotators"
    parts.append(
        "## Your progress\n\n"
        f"This dataset has {records:,} records; each needs {need}. The bar at the bottom of "
        "the annotation page is the team's progress: the share of records that have all "
        + ("their answers" if k > 1 else "their answer")
        + (f", so it stays at 0% until some record has {k} answers" if k > 1 else "")
        + ". Your own count is the **Submitted** number beside it; the **Pending** filter at "
        "the top lists the records still waiting for you. A record leaves your queue once "
        "you answer it, or once it has all its answers."
    )
    return "\n\n".join(parts) + "\n"


def prompt_text(messages: Sequence[dict[str, Any]]) -> str:
    """A prompt as annotators read it: a lone user message as is, a conversation by turns."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return str(messages[0]["content"])
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def shown_order(item_id: str, seed: int = 0) -> Literal["ab", "ba"]:
    """Which canonical side goes first for one item: a hash, so every push agrees."""
    return "ab" if int(ids.digest(f"{seed}\x1f{item_id}"), 16) % 2 == 0 else "ba"


def swap(label: str) -> str:
    return {"a": "b", "b": "a"}.get(label, label)


def shown_permutation(item_id: str, n: int, seed: int) -> list[int]:
    keys = [ids.digest(f"{seed}\x1f{item_id}\x1f{i}") for i in range(n)]
    return sorted(range(n), key=lambda i: keys[i])


@dataclass
class Batch:
    """Records to log, the dataset settings they need, and what was left out."""

    kind: Kind
    records: list[dict[str, Any]]
    n_responses: int = 2
    report: dict[str, Any] = field(default_factory=dict)


def pair_records(table: pl.DataFrame, seed: int) -> Batch:
    if "pair_id" not in table.columns:
        table = ids.with_pair_ids(table)
    seen: set[str] = set()
    records = []
    for row in table.select("pair_id", "prompt_id", "prompt", "chosen", "rejected").iter_rows(
        named=True
    ):
        pid = row["pair_id"]
        if pid in seen:
            continue  # the same two responses twice: one record
        seen.add(pid)
        a, b = ids.canonical_sides(row["chosen"], row["rejected"])
        records.append(_pair_record(pid, row["prompt_id"], row["prompt"], a, b, seed))
    return Batch("pairs", records, report={"duplicate_pairs": table.height - len(records)})


def _pair_record(
    pid: str, prompt_id: str, prompt: Sequence[dict[str, Any]], a: str, b: str, seed: int
) -> dict[str, Any]:
    order = shown_order(pid, seed)
    first, second = (a, b) if order == "ab" else (b, a)
    return {
        "id": pid,
        "fields": {"prompt": prompt_text(prompt), "response_a": first, "response_b": second},
        "metadata": {"order": order, "prompt_id": prompt_id},
    }


def candidate_records(table: pl.DataFrame, seed: int) -> Batch:
    if "completion_id" not in table.columns or "prompt_id" not in table.columns:
        table = ids.with_completion_ids(table)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in table.select("prompt_id", "prompt", "completion_id", "completion").iter_rows(
        named=True
    ):
        group = groups[row["prompt_id"]]
        if all(c["completion_id"] != row["completion_id"] for c in group):
            group.append(row)
    sizes = Counter(len(g) for g in groups.values())
    k = max(sizes) if sizes else 0
    rejected: Counter[str] = Counter()
    records = []
    if k == 2:
        for prompt_id, group in groups.items():
            if len(group) != 2:
                rejected["one_candidate"] += 1
                continue
            first, second = group[0]["completion"], group[1]["completion"]
            pid = ids.pair_id(prompt_id, first, second)
            a, b = ids.canonical_sides(first, second)
            records.append(_pair_record(pid, prompt_id, group[0]["prompt"], a, b, seed))
        return Batch("pairs", records, report={"rejected_prompts": dict(rejected)})
    for prompt_id, group in groups.items():
        if len(group) != k:
            rejected[f"{len(group)}_candidates_not_{k}"] += 1
            continue
        perm = shown_permutation(prompt_id, k, seed)
        shown = [group[i] for i in perm]
        fields = {"prompt": prompt_text(group[0]["prompt"])}
        fields.update({f"response_{i + 1}": c["completion"] for i, c in enumerate(shown)})
        records.append(
            {
                "id": prompt_id,
                "fields": fields,
                "metadata": {"completion_ids": [c["completion_id"] for c in shown]},
            }
        )
    return Batch("ranking", records, n_responses=k, report={"rejected_prompts": dict(rejected)})


def review_records(table: pl.DataFrame) -> Batch:
    if "pair_id" not in table.columns:
        table = ids.with_pair_ids(table)
    records = []
    seen: set[str] = set()
    for row in table.select("pair_id", "prompt", "chosen", "rejected").iter_rows(named=True):
        if row["pair_id"] in seen:
            continue
        seen.add(row["pair_id"])
        records.append(
            {
                "id": row["pair_id"],
                "fields": {
                    "prompt": prompt_text(row["prompt"]),
                    "chosen": row["chosen"],
                    "rejected": row["rejected"],
                },
                "metadata": {},
            }
        )
    return Batch("review", records, report={"duplicate_pairs": table.height - len(records)})


@dataclass
class Verdict:
    """The judges' verdict on one pair (see the module doc); `label` is "" when they split."""

    label: str  # canonical
    score: float | None
    agent: str
    votes: list[tuple[str, str]]  # every judge vote (judge, canonical label)


def judge_suggestions(votes: pl.DataFrame) -> tuple[dict[str, Verdict], dict[str, int]]:
    """Machine votes (annotations contract) -> one verdict per item, and skip counts.

    See the module doc for the rule (strict plurality; score = share of votes; agent = the
    judges behind the label).
    """
    from prefdata.io.importers.pandalm import winner

    votes = conform(votes, "annotations", source="suggestions")
    counts: Counter[str] = Counter()
    by_item: dict[str, list[tuple[str, str, float | None]]] = defaultdict(list)
    has_conf = "confidence" in votes.columns
    has_err = "error" in votes.columns
    for row in votes.iter_rows(named=True):
        if row["annotator_kind"] == "human":
            counts["skipped_human"] += 1
        elif has_err and row["error"] is not None:
            counts["skipped_error"] += 1
        elif row["label"] not in PAIR_LABELS:
            counts["skipped_not_a_pair_label"] += 1
        else:
            conf = row["confidence"] if has_conf else None
            by_item[row["item_id"]].append((row["annotator"], row["label"], conf))
            counts["used"] += 1
    out: dict[str, Verdict] = {}
    for item, item_votes in by_item.items():
        tally = Counter(label for _, label, _ in item_votes)
        top, _why = winner(tally)
        listing = [(who, label) for who, label, _ in item_votes]
        if top is None:
            counts["items_judges_split"] += 1
            out[item] = Verdict("", None, "", listing)
            continue
        backers = sorted({who for who, label, _ in item_votes if label == top})
        score = item_votes[0][2] if len(item_votes) == 1 else tally[top] / len(item_votes)
        out[item] = Verdict(top, score, " / ".join(_agent(b) for b in backers), listing)
    return out, dict(counts)


def _agent(name: str) -> str:
    # Argilla accepts letters, digits, spaces and - _ : . / in an agent name.
    return re.sub(r"[^A-Za-z0-9\-_:./ ]", "_", name) or "judge"


def dataset_settings(
    rg: Any,
    batch: Batch,
    k: int,
    *,
    rating: bool,
    text: str,
    suggestions: SuggestionMode,
) -> Any:
    """The Argilla settings of a new dataset; `text`: its guidelines."""
    distribution = rg.TaskDistribution(min_submitted=k)
    rationale = rg.TextQuestion(
        name=RATIONALE, title="Why? (optional)", required=False, use_markdown=False
    )
    if batch.kind == "pairs":
        questions = [
            rg.LabelQuestion(
                name=LABEL, title="Which response is better?", labels=SHOWN_LABELS, required=True
            )
        ]
        if rating:
            questions.append(
                rg.RatingQuestion(
                    name=STRENGTH,
                    title="How clear is the difference? (1 = barely, 5 = very)",
                    values=[1, 2, 3, 4, 5],
                    required=False,
                )
            )
        fields = [
            rg.TextField(name="prompt", title="Prompt"),
            rg.TextField(name="response_a", title="Response A"),
            rg.TextField(name="response_b", title="Response B"),
        ]
        if suggestions == "hint":
            # Optional: a record without a judge verdict simply has no hint.
            fields.append(
                rg.TextField(
                    name=JUDGE_FIELD,
                    title="Judges' verdict: a hint to check, not the answer",
                    required=False,
                )
            )
        metadata = [
            rg.TermsMetadataProperty(
                name="order", options=["ab", "ba"], visible_for_annotators=False
            )
        ]
    elif batch.kind == "ranking":
        names = [f"response_{i + 1}" for i in range(batch.n_responses)]
        fields = [rg.TextField(name="prompt", title="Prompt")]
        fields += [rg.TextField(name=n, title=f"Response {n.split('_')[1]}") for n in names]
        questions = [
            rg.RankingQuestion(
                name=RANKING,
                title="Rank the responses (1 = best)",
                values={n: f"Response {n.split('_')[1]}" for n in names},
                required=True,
            )
        ]
        metadata = []
    else:
        fields = [
            rg.TextField(name="prompt", title="Prompt"),
            rg.TextField(name="chosen", title="CHOSEN (labelled better)"),
            rg.TextField(name="rejected", title="REJECTED (labelled worse)"),
        ]
        questions = [
            rg.LabelQuestion(
                name=REVIEW, title="Is the label right?", labels=REVIEW_TEXT, required=True
            )
        ]
        metadata = []
    return rg.Settings(
        fields=fields,
        questions=[*questions, rationale],
        metadata=metadata,
        guidelines=text,
        allow_extra_metadata=True,
        distribution=distribution,
    )


def hint_text(verdict: Verdict, order: str) -> str:
    """The judges' verdict as the `judge` field shows it, in the shown order: the label,
    the agent and the score; when the judges split, each judge's vote and no verdict."""
    n = len(verdict.votes)
    if not verdict.label:
        listing = "; ".join(f"{who}: {_SHORT[shown(label, order)]}" for who, label in verdict.votes)
        return f"The judges split ({listing}): no verdict."
    backing = sum(1 for _, label in verdict.votes if label == verdict.label)
    score = "" if verdict.score is None else f"score {verdict.score:.2f}, "
    return (
        f"{SHOWN_LABELS[shown(verdict.label, order)]}; judges: {verdict.agent}; "
        f"{score}{backing} of {n} judge vote{'s' if n != 1 else ''}."
    )


def shown(label: str, order: str) -> str:
    """A canonical pair label as it is shown (Response A / B) under `order`, and back."""
    return label if order == "ab" else swap(label)


def sdk_record(
    rg: Any,
    rec: dict[str, Any],
    verdicts: dict[str, Verdict],
    questions: set[str],
    suggestions: SuggestionMode,
) -> Any:
    """The SDK record of one pushed record, with its judges' verdict shown as asked."""
    metadata = dict(rec["metadata"])
    fields = dict(rec["fields"])
    sdk_suggestions = []
    v = verdicts.get(rec["id"])
    if v is not None:
        order = metadata["order"]
        # In the shown order, since annotators may read it.
        metadata["judge_votes"] = "; ".join(
            f"{who}: {_SHORT[shown(label, order)]}" for who, label in v.votes
        )
        if suggestions == "hint":
            fields[JUDGE_FIELD] = hint_text(v, order)
        elif v.label and LABEL in questions:
            sdk_suggestions.append(
                rg.Suggestion(
                    question_name=LABEL,
                    value=shown(v.label, order),
                    score=v.score,
                    agent=v.agent,
                    type="model",
                )
            )
    return rg.Record(id=rec["id"], fields=fields, metadata=metadata, suggestions=sdk_suggestions)
