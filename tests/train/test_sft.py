"""SFT on real demonstrations (OpenAssistant's best-ranked replies, HH-RLHF pairs, OASST
conversations) with a tiny SmolLM2-shaped model: what becomes a training row, where the loss
goes, that it falls, saving, and the CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from prefdata.errors import InputError
from prefdata.train import prepare
from prefdata.train.recipe import builtin_recipe
from prefdata.train.sft import PREFDATA_DEFAULTS, assistant_masks_supported, demonstrations
from tests.train.conftest import recipe

REPO = Path(__file__).resolve().parents[2]
SETTINGS = dict(PREFDATA_DEFAULTS)

# SmolLM2's template with {% generation %} markers around each assistant reply, its end-of-turn
# token and newline (as TRL's own training templates for ChatML models mark them), as TRL's
# assistant_only_loss needs.
MARKED_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>\\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _trees(shared_data: Path) -> Path:
    return shared_data / "oasst_en_100" / "en_100_tree.jsonl"


def _rank0_replies(path: Path) -> tuple[set[str], int]:
    """Independently of prefdata: the text of every rank-0 assistant reply, and the number of
    sibling groups that carry ranks."""
    best: set[str] = set()
    groups = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack = [json.loads(line)["prompt"]]
        while stack:
            message = stack.pop()
            replies = [r for r in message.get("replies") or [] if not r.get("deleted")]
            ranked = [r for r in replies if r.get("rank") is not None]
            if ranked and all(r["role"] == "assistant" for r in ranked):
                groups += 1
                best.update(r["text"] for r in ranked if r["rank"] == 0)
            stack.extend(replies)
    return best, groups


def _text(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


@pytest.fixture(scope="module")
def oasst_demos(shared_data: Path) -> pl.DataFrame:
    """OpenAssistant's best-ranked replies as SFT rows, shortest first."""
    rows = demonstrations(_trees(shared_data), SETTINGS, split=None).rows
    size = [_text(p) + _text(c) for p, c in zip(rows["prompt"], rows["completion"], strict=True)]
    return rows.with_columns(pl.Series("size", size)).sort("size").drop("size")


def test_oasst_trees_give_one_best_ranked_reply_per_group(shared_data: Path) -> None:
    demos = demonstrations(_trees(shared_data), SETTINGS, split=None)
    best, groups = _rank0_replies(_trees(shared_data))
    completions = [c[0]["content"] for c in demos.rows["completion"].to_list()]
    assert groups == 212 and len(completions) == groups
    assert set(completions) <= best
    assert all(c[0]["role"] == "assistant" for c in demos.rows["completion"].to_list())
    # Every pair of the import is accounted for: kept, a lower-ranked chosen, or a repeat.
    dropped = demos.dropped()
    assert demos.input_rows == 754
    assert dropped == {"dropped_duplicate": 217, "dropped_not_best_ranked": 325}
    assert sum(dropped.values()) + len(completions) == demos.input_rows
    assert demos.data_format.startswith("pairs with OpenAssistant ranks")
    # Without the rank filter every distinct chosen reply is a demonstration.
    every = demonstrations(_trees(shared_data), {**SETTINGS, "best_ranked_only": False})
    assert every.rows.height > len(completions) and "not_best_ranked" not in every.dropped()


def test_other_formats_and_drop_reasons(
    oasst_kto: pl.DataFrame, hh_pairs: pl.DataFrame, tmp_path: Path
) -> None:
    # A kto table: its desirable rows only.
    kto = demonstrations(oasst_kto, SETTINGS)
    n_bad = int((~oasst_kto["label"]).sum())
    assert kto.rows.height == oasst_kto.height - n_bad
    assert kto.dropped() == {"dropped_undesirable": n_bad}
    # Pairs without ranks: the chosen side, repeats dropped.
    pairs = demonstrations(hh_pairs, SETTINGS)
    assert [c[0]["content"] for c in pairs.rows["completion"].to_list()] == list(
        dict.fromkeys(hh_pairs["chosen"].to_list())
    )
    # TRL's text formats, from JSONL.
    raw = tmp_path / "pc.jsonl"
    pl.DataFrame({"prompt": ["Name a colour.", "  "], "completion": ["Blue.", "x"]}).write_ndjson(
        raw
    )
    chat = demonstrations(raw, SETTINGS)
    assert chat.rows.to_dicts()[0] == {
        "prompt": [{"role": "user", "content": "Name a colour."}],
        "completion": [{"role": "assistant", "content": "Blue."}],
    }
    assert chat.dropped() == {"dropped_no_prompt": 1}
    plain = demonstrations(raw, {**SETTINGS, "text_prompts": "raw"})
    assert plain.layout == "raw" and plain.rows.row(0) == ("Name a colour.", "Blue.")
    text = demonstrations(pl.DataFrame({"text": ["Some text.", ""]}), SETTINGS)
    assert text.layout == "text" and text.dropped() == {"dropped_empty_text": 1}
    hi = {"role": "user", "content": "Hi"}
    conversations = pl.DataFrame(
        {
            "messages": [
                [hi],
                [{"role": "assistant", "content": "Hello"}],
                [hi, {"role": "assistant", "content": " "}],
                [hi, {"role": "assistant", "content": "Hello"}],
            ]
        }
    )
    with pytest.raises(InputError, match="no demonstrations left"):
        demonstrations(conversations.head(3), SETTINGS)
    mixed = demonstrations(conversations, SETTINGS)
    assert mixed.rows.height == 1
    assert mixed.dropped() == {
        "dropped_no_assistant_turn": 1,
        "dropped_no_prompt_or_empty_reply": 2,
    }
    assert mixed.rejected["row"].to_list() == [1, 2, 3]
    with pytest.raises(InputError, match="SFT reads pairs"):
        demonstrations(pl.DataFrame({"question": ["q"]}), SETTINGS)


# --------------------------------------------------------------------------------------------
# Training on OpenAssistant's best replies
# --------------------------------------------------------------------------------------------


def completion_loss(model: Any, batch: dict[str, torch.Tensor]) -> float:
    """Mean next-token cross-entropy over the positions whose label is not -100."""
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logits = logits[:, :-1]
    keep = labels != -100
    return float(torch.nn.functional.cross_entropy(logits[keep], labels[keep]))


@pytest.fixture(scope="module")
def oasst_run(
    tiny: Path, oasst_demos: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """8 steps on the same batch of the 4 shortest best-ranked replies, high learning rate."""
    out = tmp_path_factory.mktemp("sft")
    rows = oasst_demos.head(4)
    prepared = prepare(
        "sft",
        recipe=recipe(
            max_steps=8,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            max_length=192,
        ),
        data=rows,
        model=tiny,
        out=out,
    )
    trainer = prepared.trainer
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    before = completion_loss(trainer.model, batch)
    report = prepared.fit(out)
    after = completion_loss(trainer.model, batch)
    return {
        "rows": rows,
        "out": out,
        "trainer": trainer,
        "batch": batch,
        "before": before,
        "after": after,
        "report": report,
    }


def test_completion_loss_falls_on_real_demonstrations(oasst_run: dict[str, Any]) -> None:
    report = oasst_run["report"]
    assert report["method"] == "sft" and report["steps"] == 8
    assert report["rows"] == 4 and report["examples"] == 4
    assert report["examples_after_tokenization"] == 4 and report["rows_dropped"] == 0
    assert report["loss_on"].startswith("completion tokens")
    assert report["finetune"] == "lora" and report["reference"] == "none (SFT)"
    # The first logged loss is TRL's on this very batch before any update: the same number as
    # the completion-token cross-entropy computed here.
    assert report["losses"][0] == pytest.approx(oasst_run["before"], rel=1e-4)
    assert oasst_run["before"] > 10.0  # a random model: about ln(49152) = 10.8
    # The tiny model's logits are bounded (RMS-normed width-32 states times frozen embeddings
    # of std 0.02 give logits within about +-0.7), so LoRA cannot move the loss far from
    # ln(vocabulary); it falls steadily all the same (10.81 -> 10.71 measured).
    assert oasst_run["after"] < oasst_run["before"] - 0.05
    losses = report["losses"]
    assert all(b <= a + 1e-3 for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0] - 0.05
    assert math.isfinite(report["train_loss"])
    # Token counts: the loss tokens are exactly the non -100 labels of the batch.
    batch = oasst_run["batch"]
    assert report["loss_tokens"] == int((batch["labels"] != -100).sum())
    assert report["tokens"] == int(batch["attention_mask"].sum())


def test_prompt_tokens_carry_no_loss(oasst_run: dict[str, Any]) -> None:
    trainer, batch, rows = oasst_run["trainer"], oasst_run["batch"], oasst_run["rows"]
    tokenizer = trainer.processing_class
    # TRL keeps the rows' order (shuffle_dataset is off), so batch row i is demonstration i.
    for i, row in enumerate(rows.to_dicts()):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        n = int(batch["attention_mask"][i].sum())
        prompt_ids = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        p = len(prompt_ids)
        assert ids[:p].tolist() == list(prompt_ids)
        assert (labels[:p] == -100).all()  # the whole prompt, chat template included
        assert torch.equal(labels[p:n], ids[p:n])  # every completion token, end of turn too
        assert (labels[n:] == -100).all()  # padding
        assert tokenizer.decode(ids[p:n]) == row["completion"][0]["content"] + "<|im_end|>\n"


def test_adapter_saves_and_reloads(oasst_run: dict[str, Any], tiny: Path) -> None:
    from peft import PeftModel

    from prefdata.models import load

    out = oasst_run["out"]
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "recipe.yaml").is_file() and (out / "prefdata-train.json").is_file()
    saved = json.loads((out / "prefdata-train.json").read_text())
    assert saved["examples"] == 4 and saved["steps"] == 8
    base, _ = load(tiny)
    reloaded = PeftModel.from_pretrained(base, str(out))
    assert completion_loss(reloaded, oasst_run["batch"]) == pytest.approx(
        oasst_run["after"], rel=1e-5
    )
    with reloaded.disable_adapter():
        assert completion_loss(reloaded, oasst_run["batch"]) == pytest.approx(
            oasst_run["before"], rel=1e-5
        )


def test_packing_keeps_the_completion_mask(
    tiny: Path, oasst_demos: pl.DataFrame, tmp_path: Path
) -> None:
    rows = oasst_demos.head(4)
    plain = prepare("sft", recipe=recipe(max_length=192), data=rows, model=tiny, out=tmp_path)
    packed = prepare(
        "sft", recipe=recipe(max_length=512, packing=True), data=rows, model=tiny, out=tmp_path
    )
    assert packed.report["packing"] is True
    assert packed.report["sequences_after_packing"] < 4  # several examples per sequence
    assert packed.report["loss_tokens"] == plain.report["loss_tokens"]
    assert packed.report["tokens"] == plain.report["tokens"]


# --------------------------------------------------------------------------------------------
# Other inputs: pairs, a messages file
# --------------------------------------------------------------------------------------------


def test_sft_from_a_pairs_table(tiny: Path, hh_pairs: pl.DataFrame, tmp_path: Path) -> None:
    prepared = prepare("sft", recipe=recipe(max_steps=1), data=hh_pairs, model=tiny, out=tmp_path)
    assert prepared.report["data_format"] == "pairs: the chosen replies"
    trainer = prepared.trainer
    tokenizer = trainer.processing_class
    trained = set()
    for example in trainer.train_dataset:
        ids, labels = example["input_ids"], example["labels"]
        trained.add(
            tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        )
    kept = {f"{c}<|im_end|>\n" for c in hh_pairs["chosen"].to_list()}
    assert trained <= kept and len(trained) == prepared.report["examples_after_tokenization"]
    report = prepared.fit(tmp_path)
    assert report["steps"] == 1 and math.isfinite(report["losses"][0])


@pytest.fixture(scope="module")
def conversations(shared_data: Path) -> pl.DataFrame:
    """Real multi-turn OASST conversations: a prompt of 3+ turns and its best reply."""
    from prefdata.io.importers.oasst import import_oasst

    pairs = import_oasst(_trees(shared_data)).tables["pairs"]
    ranks = [json.loads(p)["rank_chosen"] for p in pairs["provenance"].to_list()]
    multi = pairs.with_columns(pl.Series("rank", ranks)).filter(
        (pl.col("prompt").list.len() >= 3) & (pl.col("rank") == 0)
    )
    multi = multi.unique(subset=["pair_id"]).sort("pair_id")
    size = [_text(p) + len(c) for p, c in zip(multi["prompt"], multi["chosen"], strict=True)]
    multi = multi.with_columns(pl.Series("size", size)).sort("size").head(3)
    messages = [
        [*p, {"role": "assistant", "content": c}]
        for p, c in zip(multi["prompt"].to_list(), multi["chosen"].to_list(), strict=True)
    ]
    return pl.DataFrame({"messages": messages})


def test_sft_from_a_messages_file(tiny: Path, conversations: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "messages.jsonl"
    conversations.write_ndjson(path)
    turns = [
        [m["content"] for m in conv if m["role"] == "assistant"]
        for conv in conversations["messages"].to_list()
    ]
    assert all(len(t) >= 2 for t in turns)  # multi-turn: earlier assistant turns too
    prepared = prepare(
        "sft",
        recipe=recipe(max_steps=1, max_length=512),
        data=path,
        model=tiny,
        out=tmp_path / "run",
    )
    report = prepared.report
    assert report["data_format"] == "messages, one row per assistant turn (all)"
    assert report["rows"] == 3 and report["examples"] == sum(len(t) for t in turns)
    tokenizer = prepared.trainer.processing_class
    trained = []
    for example in prepared.trainer.train_dataset:
        ids, labels = example["input_ids"], example["labels"]
        trained.append(
            tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        )
    # Each assistant turn is trained once, alone; user turns never carry loss.
    assert sorted(trained) == sorted(f"{t}<|im_end|>\n" for conv in turns for t in conv)
    assert prepared.fit(tmp_path / "run")["steps"] == 1

    # assistant_only_loss with SmolLM2's template (no generation markers): the same rows, said.
    asked = prepare(
        "sft",
        recipe=recipe(max_length=512, assistant_only_loss=True),
        data=path,
        model=tiny,
        out=tmp_path / "run2",
    )
    assert asked.trainer.args.assistant_only_loss is False
    assert asked.report["loss_tokens"] == report["loss_tokens"]
    assert any("{% generation %}" in note for note in asked.report["notes"])


def test_assistant_only_loss_when_the_template_has_generation_markers(
    tiny: Path, conversations: pl.DataFrame, tmp_path: Path
) -> None:
    from prefdata.models.loader import load_tokenizer

    assert not assistant_masks_supported(load_tokenizer(str(tiny)))
    template = tmp_path / "marked.jinja"
    template.write_text(MARKED_TEMPLATE)
    tokenizer = load_tokenizer(str(tiny))
    tokenizer.chat_template = MARKED_TEMPLATE
    assert assistant_masks_supported(tokenizer)
    whole = prepare(
        "sft",
        recipe=recipe(max_length=512, assistant_only_loss=True, chat_template_path=str(template)),
        data=conversations,
        model=tiny,
        out=tmp_path / "whole",
    )
    split = prepare(
        "sft", recipe=recipe(max_length=512), data=conversations, model=tiny, out=tmp_path / "split"
    )
    assert whole.report["data_format"] == "messages" and whole.report["examples"] == 3
    assert whole.report["loss_on"] == "assistant tokens (TRL's assistant mask)"
    # TRL's mask over whole conversations and prefdata's per-turn rows train the same tokens.
    assert whole.report["loss_tokens"] == split.report["loss_tokens"]
    assert whole.report["tokens"] < split.report["tokens"]  # prompts are not repeated


def test_cli_train_sft_once(tiny: Path, oasst_demos: pl.DataFrame, tmp_path: Path) -> None:
    from prefdata.cli import app
    from tests.train.test_cli_train import last_json
    from tests.train.test_entry import SMALL

    data = tmp_path / "demos.parquet"
    oasst_demos.head(4).write_parquet(data)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "sft",
            *SMALL,
            "max_length=256",
            "--recipe",
            str(builtin_recipe("sft")),
            "--data",
            str(data),
            "--model",
            str(tiny),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = last_json(result.stdout)
    assert report["steps"] == 1 and report["examples"] == 4
    assert report["loss_on"] == "completion tokens (prompt labels are -100)"
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_sft_on_the_embedded_smollm2_with_lora(oasst_demos: pl.DataFrame, tmp_path: Path) -> None:
    rows = oasst_demos.head(4)
    prepared = prepare(
        "sft",
        recipe=recipe(
            max_steps=4,
            per_device_train_batch_size=4,
            max_length=256,
            learning_rate=1e-3,
            peft={"r": 8, "lora_alpha": 16},
        ),
        data=rows,
        model="smollm2",
        out=tmp_path,
        eval_data=rows,
    )
    report = prepared.fit(tmp_path)
    losses = report["losses"]
    # Measured on this batch: 2.63, 2.16, 1.83, 1.59 (then 1.41, 1.29 at 6 steps).
    assert 1.5 < losses[0] < 4.0
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0] - 0.5
    assert report["trainable_parameters"] > 1_000_000
