"""Supervised fine-tuning (SFT) on demonstrations with TRL's SFTTrainer; LoRA and a loss on the
completion tokens only, by default.

Input (`data`, a path or a table), recognised by its columns:

- **pairs** (`prompt`, `chosen`, `rejected`: a prefdata pairs table or a TRL preference file):
  the chosen side. The same chosen reply appears in several pairs (OASST's "all" mode gives
  every ranked sibling pair), so repeats of a (prompt, reply) are dropped as `duplicate`.
  When the pairs carry OpenAssistant ranks (`rank_chosen` in `provenance`, as
  prefdata.io.importers.oasst writes), only replies ranked best among their siblings (rank 0)
  are kept (`prefdata.best_ranked_only`); the others are dropped as `not_best_ranked`.
- **OpenAssistant trees** (the raw JSONL with `message_tree_id`): imported with
  prefdata.io.importers.oasst, then as its pairs above: the best-ranked reply of every ranked
  sibling group.
- **messages** (TRL's conversational language-modelling format, a list of {role, content}).
- **prompt + completion** (TRL's prompt-completion format; prompt text or messages, completion
  text or assistant messages). With a boolean `label` column (a kto table, TRL's unpaired
  format), only desirable rows are kept; the others are dropped as `undesirable`.
- **text** (TRL's language-modelling format): plain text, the loss on every token.

Files may be JSONL, Parquet, JSON, CSV or a datasets folder (prefdata.io.tables.read_table).
A `split` column selects rows as in the other methods (`prefdata.split`).

What TRL sees and where the loss goes:

- Everything with a prompt becomes conversational prompt-completion rows (a text prompt
  becomes one user message, a text completion one assistant message; `prefdata.text_prompts:
  raw` keeps text prompt-completion files as plain text instead). TRL's
  `completion_only_loss` (unset = on for prompt-completion data) then puts the loss on the
  completion's tokens only; the prompt's labels are -100.
- `messages` rows: TRL's `assistant_only_loss` needs a chat template with
  `{% generation %}` markers. SmolLM2's has none, and TRL 1.16 cannot patch it (its
  get_training_chat_template raises for templates it does not know), so SFTTrainer would
  refuse. prefdata therefore turns each assistant turn into one prompt-completion row (the
  conversation before it as prompt; `prefdata.messages_turns: last` keeps only the final turn)
  and the completion mask puts the loss on exactly the assistant tokens, end-of-turn token
  included. Only when the recipe sets `assistant_only_loss: true` and the model's template
  supports it do messages reach TRL unchanged. With `completion_only_loss: false`, messages
  stay whole and the loss covers every token.
- `packing` and every other SFTConfig field pass through (TRL packs after building the labels,
  so the completion mask survives packing).

The report counts input rows, the examples TRL trains on, every dropped row by reason
(`dropped_<reason>`; the rows themselves go to `<out>/rejected.parquet` with `row`, `reason`,
`record`), tokens and loss tokens after TRL's tokenization, and, after fit, the train loss.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefdata.errors import InputError
from prefdata.io.importers.common import REJECTED_SCHEMA, rejected_rows
from prefdata.models.loader import load_tokenizer
from prefdata.train.data import PROMPT_FILLS, check_kept, select_split
from prefdata.train.method import Data, MethodRun, build_trainer
from prefdata.train.models import model_path
from prefdata.train.outputs import Prepared
from prefdata.train.recipe import MethodSpec, Recipe, RecipeError
from prefdata.train.reference import trainable_parameters

__all__ = [
    "PREFDATA_DEFAULTS",
    "SPEC",
    "Demonstrations",
    "assistant_masks_supported",
    "demonstrations",
    "prepare",
    "read_demonstrations",
]

PREFDATA_DEFAULTS: dict[str, Any] = {
    # Pairs with OpenAssistant ranks: only the replies ranked best among their siblings.
    "best_ranked_only": True,
    # messages -> one prompt-completion row per assistant turn ("all") or for the last ("last").
    "messages_turns": "all",
    # Text prompt-completion files: "chat" (a user message and an assistant reply, the chat
    # template applies) or "raw" (TRL's standard format: the two texts concatenated).
    "text_prompts": "chat",
}
_TURNS = ("all", "last")
_TEXT_PROMPTS = ("chat", "raw")
_CONVERSATION = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def _sft_config() -> type:
    from trl import SFTConfig

    return SFTConfig


SPEC = MethodSpec(
    "sft", _sft_config, PREFDATA_DEFAULTS, reference="none", data_contracts=("pairs", "kto")
)


# --------------------------------------------------------------------------------------------
# Demonstrations
# --------------------------------------------------------------------------------------------


@dataclass
class Demonstrations:
    """Training rows in one TRL SFT format, with what was dropped and why.

    `rows` columns by `layout`: "prompt_completion" -> `prompt`, `completion` (message lists);
    "raw" -> `prompt`, `completion` (text); "messages" -> `messages`; "text" -> `text`.
    `rejected`: `row` (1-based among the rows read, after the split selection; for
    OpenAssistant trees, among the imported pairs), `reason`, `record` (JSON).
    """

    rows: pl.DataFrame
    layout: str
    data_format: str
    input_rows: int
    rejected: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=REJECTED_SCHEMA))
    notes: list[str] = field(default_factory=list)

    def dropped(self) -> dict[str, int]:
        counts = Counter(self.rejected["reason"].to_list())
        return {f"dropped_{reason}": n for reason, n in sorted(counts.items())}


class _Rows:
    """Collects kept rows and rejected rows while reading a table."""

    def __init__(self) -> None:
        self.kept: list[dict[str, Any]] = []
        self.bad: list[tuple[int, str, Any]] = []

    def drop(self, row: int, reason: str, record: Any) -> None:
        self.bad.append((row, reason, record))

    def rejected(self) -> pl.DataFrame:
        return rejected_rows(self.bad)


def _messages(value: Any, role: str) -> list[dict[str, str]] | None:
    """Text -> one message of `role`; a message list -> its {role, content}; else None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        out = []
        for m in value:
            if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                return None
            out.append({"role": m["role"], "content": m["content"]})
        return out
    return None


def _blank(messages: list[dict[str, str]] | None) -> bool:
    return not messages or all(not m["content"].strip() for m in messages)


def _best_rank(provenance: Any) -> int | None:
    """The OpenAssistant rank of the chosen reply in a pair's provenance (None without one)."""
    if not isinstance(provenance, str):
        return None
    try:
        prov = json.loads(provenance)
    except json.JSONDecodeError:
        return None
    rank = prov.get("rank_chosen") if isinstance(prov, dict) else None
    # Two siblings with the same text carry a list of ranks; the text is as good as its best.
    if isinstance(rank, list):
        rank = min((r for r in rank if isinstance(r, int)), default=None)
    return rank if isinstance(rank, int) else None


def _from_pairs(table: pl.DataFrame, settings: dict[str, Any], out: _Rows) -> str:
    ranks = (
        [_best_rank(p) for p in table["provenance"].to_list()]
        if "provenance" in table.columns
        else [None] * table.height
    )
    ranked = any(r is not None for r in ranks)
    best_only = ranked and bool(settings["best_ranked_only"])
    seen: set[str] = set()
    for i, (row, rank) in enumerate(zip(table.iter_rows(named=True), ranks, strict=True)):
        record = {"prompt": row["prompt"], "chosen": row["chosen"]}
        prompt = _messages(row["prompt"], "user")
        completion = _messages(row["chosen"], "assistant")
        if best_only and rank != 0:
            out.drop(i + 1, "not_best_ranked", {**record, "rank_chosen": rank})
        elif _blank(prompt):
            out.drop(i + 1, "no_prompt", record)
        elif _blank(completion):
            out.drop(i + 1, "empty_completion", record)
        else:
            key = json.dumps([prompt, completion], ensure_ascii=False)
            if key in seen:
                out.drop(i + 1, "duplicate", record)
                continue
            seen.add(key)
            out.kept.append({"prompt": prompt, "completion": completion})
    if best_only:
        return "pairs with OpenAssistant ranks: the best-ranked (rank 0) replies"
    return "pairs: the chosen replies"


def _from_prompt_completion(table: pl.DataFrame, settings: dict[str, Any], out: _Rows) -> str:
    labelled = "label" in table.columns and table["label"].dtype == pl.Boolean
    raw = settings["text_prompts"] == "raw"
    text_only = table["prompt"].dtype == pl.String and table["completion"].dtype == pl.String
    if raw and not text_only:
        raise RecipeError(
            "prefdata.text_prompts=raw needs text prompts and completions; this data has "
            f"prompt {table['prompt'].dtype} and completion {table['completion'].dtype}",
            column="prefdata.text_prompts",
        )
    for i, row in enumerate(table.iter_rows(named=True)):
        record = {"prompt": row["prompt"], "completion": row["completion"]}
        if labelled and row["label"] is not True:
            out.drop(i + 1, "undesirable", {**record, "label": row["label"]})
            continue
        if raw:
            if not (row["prompt"] or "").strip():
                out.drop(i + 1, "no_prompt", record)
            elif not (row["completion"] or "").strip():
                out.drop(i + 1, "empty_completion", record)
            else:
                out.kept.append(record)
            continue
        prompt = _messages(row["prompt"], "user")
        completion = _messages(row["completion"], "assistant")
        if _blank(prompt):
            out.drop(i + 1, "no_prompt", record)
        elif _blank(completion):
            out.drop(i + 1, "empty_completion", record)
        else:
            out.kept.append({"prompt": prompt, "completion": completion})
    kind = "kto (the desirable rows)" if labelled else "prompt-completion"
    return f"{kind}, as plain text" if raw else kind


def _from_messages(table: pl.DataFrame, turns: str | None, out: _Rows) -> None:
    """Conversations -> prompt-completion rows per assistant turn, or (turns=None) kept whole."""
    for i, value in enumerate(table["messages"].to_list()):
        messages = _messages(value, "user")
        if messages is None:
            out.drop(i + 1, "not_messages", value)
            continue
        answers = [
            j
            for j, m in enumerate(messages)
            if m["role"] == "assistant" and j > 0 and m["content"].strip()
        ]
        if not any(m["role"] == "assistant" for m in messages):
            out.drop(i + 1, "no_assistant_turn", value)
        elif not answers:
            out.drop(i + 1, "no_prompt_or_empty_reply", value)
        elif turns is None:
            out.kept.append({"messages": messages})
        else:
            for j in answers if turns == "all" else answers[-1:]:
                out.kept.append({"prompt": messages[:j], "completion": [messages[j]]})


def _from_text(table: pl.DataFrame, out: _Rows) -> None:
    for i, text in enumerate(table["text"].to_list()):
        if not isinstance(text, str) or not text.strip():
            out.drop(i + 1, "empty_text", text)
        else:
            out.kept.append({"text": text})


def _is_oasst_trees(path: Path) -> bool:
    """Whether a JSONL file's first record is an OpenAssistant message tree."""
    import gzip

    if not path.is_file() or not path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        return False
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    first = json.loads(line)
                    return isinstance(first, dict) and "message_tree_id" in first
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def _kind(columns: set[str]) -> str | None:
    """Which accepted format a table's columns make it (checked in this order)."""
    if {"prompt", "chosen", "rejected"} <= columns:
        return "pairs"
    if "messages" in columns:
        return "messages"
    if {"prompt", "completion"} <= columns:
        return "prompt_completion"
    if "text" in columns:
        return "text"
    return None


def read_demonstrations(data: str | Path | pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """The table behind `data` (OpenAssistant trees are imported to pairs first) and notes."""
    from prefdata.io.frames import to_polars
    from prefdata.io.tables import read_table

    if not isinstance(data, str | Path):
        return to_polars(data, what="data"), []
    if _is_oasst_trees(Path(data)):
        from prefdata.io.importers.oasst import import_oasst

        imported = import_oasst(data)
        pairs = imported.tables["pairs"]
        return pairs, [
            f"OpenAssistant trees: {imported.report['trees']} trees, "
            f"{imported.report['ranked_groups']} ranked sibling groups -> {pairs.height} pairs"
        ]
    return read_table(data), []


def demonstrations(
    data: str | Path | pl.DataFrame,
    settings: dict[str, Any],
    *,
    split: str | None = "auto",
    keep_messages: bool = False,
    source: str | None = None,
) -> Demonstrations:
    """Any accepted demonstration table or file (see the module doc) -> TRL SFT rows.

    `settings`: the recipe's `prefdata` section (best_ranked_only, messages_turns,
    text_prompts). `split`: as `prefdata.split`. `keep_messages`: pass `messages` rows through
    whole (TRL masks the assistant turns itself, or the loss covers everything) instead of one
    row per assistant turn. Raises InputError naming the columns when the table is none of
    the accepted formats, or when no row is left.
    """
    if source is None and not isinstance(data, pl.DataFrame):
        source = str(data)
    for key, allowed in (("messages_turns", _TURNS), ("text_prompts", _TEXT_PROMPTS)):
        if settings[key] not in allowed:
            raise RecipeError(
                f"prefdata.{key} must be one of {', '.join(allowed)}, got '{settings[key]}'",
                column=f"prefdata.{key}",
            )
    table, notes = read_demonstrations(data)
    table = select_split(table, split, notes)
    out = _Rows()
    layout = "prompt_completion"
    kind = _kind(set(table.columns))
    if kind == "pairs":
        described = _from_pairs(table, settings, out)
    elif kind == "messages":
        _from_messages(table, None if keep_messages else str(settings["messages_turns"]), out)
        if keep_messages:
            layout, described = "messages", "messages"
        else:
            described = f"messages, one row per assistant turn ({settings['messages_turns']})"
    elif kind == "prompt_completion":
        described = _from_prompt_completion(table, settings, out)
        if settings["text_prompts"] == "raw":
            layout = "raw"
    elif kind == "text":
        _from_text(table, out)
        layout, described = "text", "text (language modelling: the loss on every token)"
    else:
        raise InputError(
            f"found columns {table.columns}; SFT reads pairs (prompt, chosen, rejected), "
            "messages, prompt + completion (with an optional boolean label), text, or "
            "OpenAssistant trees",
            source=source,
        )
    if not out.kept:
        reasons = Counter(reason for _, reason, _ in out.bad)
        raise InputError(
            f"no demonstrations left out of {table.height} rows (dropped: {dict(reasons)})",
            source=source,
        )
    return Demonstrations(
        rows=_frame(out.kept, layout),
        layout=layout,
        data_format=described,
        input_rows=table.height,
        rejected=out.rejected(),
        notes=notes,
    )


def _frame(rows: list[dict[str, Any]], layout: str) -> pl.DataFrame:
    schemas: dict[str, dict[str, pl.DataType]] = {
        "prompt_completion": {"prompt": _CONVERSATION, "completion": _CONVERSATION},
        "raw": {"prompt": pl.String(), "completion": pl.String()},
        "messages": {"messages": _CONVERSATION},
        "text": {"text": pl.String()},
    }
    return pl.DataFrame(rows, schema=schemas[layout])


# --------------------------------------------------------------------------------------------
# Loss mask choice
# --------------------------------------------------------------------------------------------


def assistant_masks_supported(tokenizer: Any) -> bool:
    """Whether TRL's `assistant_only_loss` can work with this tokenizer's chat template: the
    template has `{% generation %}` markers, or TRL ships a patched training template for it."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return False
    return True


def _loss_plan(recipe: Recipe, table: pl.DataFrame, tokenizer_path: str) -> tuple[bool, list[str]]:
    """Whether `messages` rows stay whole, and notes on where the loss goes. May set
    recipe.trl["assistant_only_loss"] = False when the template cannot mask."""
    notes: list[str] = []
    if _kind(set(table.columns)) != "messages":
        return False, notes
    if recipe.trl.get("assistant_only_loss"):
        tokenizer = load_tokenizer(tokenizer_path)
        template = recipe.trl.get("chat_template_path")
        if isinstance(template, str) and template.endswith((".jinja", ".j2")):
            # TRL swaps this template in when it builds the trainer: judge that one.
            tokenizer.chat_template = Path(template).read_text(encoding="utf-8")
        if assistant_masks_supported(tokenizer):
            notes.append("messages kept whole: TRL masks the assistant turns (assistant_only_loss)")
            return True, notes
        recipe.trl["assistant_only_loss"] = False
        notes.append(
            "assistant_only_loss=true needs {% generation %} markers that this model's chat "
            "template lacks (and TRL cannot patch it): each assistant turn became a "
            "prompt-completion row instead, which puts the loss on the same tokens"
        )
        return False, notes
    if recipe.trl.get("completion_only_loss") is False:
        notes.append("completion_only_loss=false: messages kept whole, the loss on every token")
        return True, notes
    return False, notes


# --------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------


def _token_counts(dataset: Any, max_length: int | None) -> dict[str, int]:
    lengths = [len(ids) for ids in dataset["input_ids"]]
    loss_tokens = sum(sum(1 for t in labels if t != -100) for labels in dataset["labels"])
    counts = {"tokens": sum(lengths), "loss_tokens": int(loss_tokens)}
    if max_length is not None:
        counts["examples_at_max_length"] = sum(n >= max_length for n in lengths)
    return counts


def _loss_on(trainer: Any, layout: str) -> str:
    if layout == "text":
        return "every token (text has no prompt)"
    if layout == "messages":
        if trainer.args.assistant_only_loss:
            return "assistant tokens (TRL's assistant mask)"
        return "every token"
    if trainer.completion_only_loss:
        return "completion tokens (prompt labels are -100)"
    return "every token (completion_only_loss=false)"


def prepare(recipe: Recipe, data: Data, run: MethodRun) -> Prepared:
    """Build TRL's SFTTrainer from a resolved recipe and demonstrations (see the module doc).

    Writes `<out>/rejected.parquet` (row, reason, record) when rows were dropped.
    """
    from trl import SFTTrainer

    from prefdata.io.tables import write_table

    recipe = recipe.copy()
    source = None if isinstance(data, pl.DataFrame) else str(data)
    table, read_notes = read_demonstrations(data)
    keep_messages, notes = _loss_plan(recipe, table, model_path(run.model))
    demos = demonstrations(
        table,
        recipe.prefdata,
        split=recipe.prefdata["split"],
        keep_messages=keep_messages,
        source=source,
    )
    notes = read_notes + demos.notes + notes

    config, models = run.load(recipe, SPEC)
    eval_rows = None
    if run.eval_data is not None:
        held = demonstrations(
            run.eval_data, recipe.prefdata, split=None, keep_messages=keep_messages
        )
        eval_rows = held.rows
    trainer = build_trainer(SFTTrainer, config, models, demos.rows, eval_rows)
    dataset = trainer.train_dataset
    report: dict[str, Any] = {
        "model": models.path,
        "data": source,
        "data_format": demos.data_format,
        "model_loaded": models.loaded,
        "rows": demos.input_rows,
        "examples": demos.rows.height,
        "rows_dropped": demos.rejected.height,
        **demos.dropped(),
        "loss_on": _loss_on(trainer, demos.layout),
        "packing": bool(config.packing),
        "weights_dtype": models.dtype,
        "finetune": models.finetune,
        "reference": "none (SFT)",
        "trainable_parameters": trainable_parameters(trainer.model),
        "notes": notes,
    }
    if config.packing:
        report["sequences_after_packing"] = len(dataset)
    else:
        report["examples_after_tokenization"] = len(dataset)
        lost = demos.rows.height - len(dataset)
        if lost:
            # TRL drops rows that truncation leaves without a single loss token.
            report["dropped_prompt_fills_max_length"] = lost
            check_kept(
                report, trainer, demos.rows.height, rows="examples", why=PROMPT_FILLS, source=source
            )
    report.update(_token_counts(dataset, None if config.packing else config.max_length))
    if demos.rejected.height and trainer.is_world_process_zero():
        report["rejected"] = str(write_table(demos.rejected, Path(run.out) / "rejected.parquet"))
    return Prepared(trainer, SPEC, recipe, run.hardware, report)
