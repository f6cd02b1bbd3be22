"""The dataset card: YAML front matter that Hugging Face reads, plus Markdown whose figures
are the report's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from markdown_it import MarkdownIt

from prefdata.io.importers.common import annotations_table
from prefdata.io.importers.hh_rlhf import import_hh_rlhf
from prefdata.quality.filter import filter_pairs
from prefdata.report.card import size_category
from tests.report.conftest import HOSTILE, make_pairs, pair_labels, write_report


def _data() -> tuple[pl.DataFrame, pl.DataFrame]:
    pairs = make_pairs(
        [
            {
                "prompt": f"question {i}",
                "chosen": f"a careful answer number {i}" + "!" * (i % 3),
                "rejected": f"no {i}",
                "confidence": 0.5 + (i % 5) / 10,
                "source": "web" if i % 2 else HOSTILE,
                "provenance": {"judge": "gpt-x", "rubric": "helpfulness v2"},
            }
            for i in range(30)
        ]
    )
    truth = pair_labels(pairs, ["chosen"] * 30)
    flip = {"a": "b", "b": "a"}
    records = []
    for k, (pid, lab) in enumerate(zip(pairs["pair_id"], truth, strict=True)):
        for who in ("ann1", "ann2", "ann3"):
            wrong = (who == "ann3" and k % 4 == 0) or (who == "ann2" and k % 9 == 0)
            records.append(
                {
                    "item_id": pid,
                    "annotator": who,
                    "annotator_kind": "human",
                    "label": flip[lab] if wrong else lab,
                }
            )
        records.append(
            {
                "item_id": pid,
                "annotator": "judge",
                "annotator_kind": "llm",
                "label": lab if k % 3 else flip[lab],
                "order": "ab" if k % 2 else "ba",
            }
        )
    return pairs, annotations_table(records)


def _split(card: str) -> tuple[dict[str, object], str]:
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict)
    return meta, body


def test_card_front_matter_and_markdown(tmp_path: Path) -> None:
    pairs, votes = _data()
    filtered = filter_pairs(pairs, min_confidence=0.7)
    kept, rejected = filtered.tables["pairs"], filtered.rejected
    settings = tmp_path / "clean.filter.json"
    settings.write_text(json.dumps(filtered.documents["filter"]))
    report = write_report(
        kept,
        tmp_path / "qa",
        before=pairs,
        annotations=votes,
        rejected=rejected,
        tokenizer=None,
        license="apache-2.0",
        filter_settings=settings,
        title="Soup <preferences>",
    )
    card = (tmp_path / "qa" / "README.md").read_text(encoding="utf-8")
    meta, body = _split(card)
    assert meta == {
        "license": "apache-2.0",  # given: it wins over what the sources say
        "pretty_name": "Soup <preferences>",
        "task_categories": ["text-generation"],
        "tags": ["preference", "rlhf", "dpo", "prefdata"],
        "size_categories": ["n<1K"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "data/train.parquet"}],
            }
        ],
    }
    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [
        "Soup &lt;preferences&gt;",
        "Dataset structure",
        "Sources",
        "Curation",
        "1. Labels",
        "2. Filter (`prefdata filter`)",
        "Quality",
        "Limitations",
    ]
    assert "html_block" not in {t.type for t in tokens}  # no raw HTML from the data
    assert "<script" not in card

    after = report["compare"]
    # Figures in the card are the report's.
    assert f"{after['overview']['rows']} preference pairs" in body
    alpha = after["agreement"]["headline"]["krippendorff_alpha"]["nominal"]["value"]
    assert f"| Krippendorff's alpha (nominal) | {alpha:.3g} |" in body
    filt = after["filtering"]
    assert f"Kept {filt['kept']}, dropped {filt['dropped']}" in body
    assert f"| low_confidence | {filt['dropped_by_reason']['low_confidence']} |" in body
    assert "| `min_confidence` | 0.7 |" in body  # the curation step's settings
    assert "| `judge` | gpt-x |" in body and "| `rubric` | helpfulness v2 |" in body
    judge = after["judges"]["annotators"]["judge"]
    hum = judge["agreement_with_humans"]
    assert (
        f"| judge | llm | {judge['votes']} | {judge['position']['p_first_shown_wins']:.3g} "
        f"| {hum['agreement']:.3g} | {hum['kappa']:.3g} |"
    ) in body
    # Humans are in their own table, without the judge-only columns.
    assert "Human annotators:" in body and "| ann1 | human |" in body
    assert "## Limitations" in body and after["length_bias"]["reading"] in body


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")


def _load(folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import datasets

    _offline(monkeypatch)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))


def test_card_validates_and_loads_with_datasets(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import DatasetCard, DatasetCardData

    # Real HH-RLHF pairs with a held-out split: two split names, MIT from the importer.
    pairs = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    pairs = pairs.head(60).with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0)
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
        .alias("split")
    )
    folder = tmp_path / "qa"
    write_report(pairs, folder, tokenizer=None)
    card = DatasetCard.load(folder / "README.md")
    data = card.data
    assert isinstance(data, DatasetCardData)
    assert data.license == "mit"  # from the rows' provenance (the importer) and the source
    (config,) = data.configs
    files = {f["split"]: f["path"] for f in config["data_files"]}
    assert files == {"test": "data/test.parquet", "train": "data/train.parquet"}
    assert all((folder / path).is_file() for path in files.values())  # relative to the card
    text = card.text
    assert "<https://github.com/anthropics/hh-rlhf>" in text and "@article{bai2022training" in text
    assert "Content warning:" in card.content and "offensive" in card.content
    assert "- Offensive content:" in text  # and again among the limitations

    loaded = _load(folder, monkeypatch, tmp_path)
    assert sorted(loaded) == ["test", "train"]
    assert loaded["test"].num_rows == 15 and loaded["train"].num_rows == 45
    got = sorted(loaded["train"]["pair_id"])
    assert got == sorted(pairs.filter(pl.col("split") == "train")["pair_id"].to_list())
    first = loaded["test"][0]
    assert first["prompt"][0]["role"] == "user" and first["chosen"]


@pytest.mark.parametrize(
    ("sources", "given", "expected"),
    [
        (["pandalm"], None, "apache-2.0"),
        (["pandalm", "hh-rlhf"], None, ["apache-2.0", "mit"]),
        (["my-own-data"], None, "unknown"),
        (["hh-rlhf"], "cc-by-4.0", "cc-by-4.0"),
    ],
)
def test_licence_comes_from_the_sources_unless_given(
    sources: list[str], given: str | None, expected: str | list[str], tmp_path: Path
) -> None:
    pairs = make_pairs(
        [
            {"prompt": f"q {i}", "chosen": f"answer {i}", "rejected": "no", "source": s}
            for i, s in enumerate(sources * 3)
        ]
    )
    write_report(pairs, tmp_path, tokenizer=None, license=given)
    meta, body = _split((tmp_path / "README.md").read_text(encoding="utf-8"))
    assert meta["license"] == expected
    if expected == "unknown":
        assert "The sources are not known to prefdata" in body


def test_no_data_files_no_configs(tmp_path: Path) -> None:
    pairs = make_pairs([{"prompt": "q", "chosen": "yes", "rejected": "no"}])
    write_report(pairs, tmp_path, tokenizer=None, data_files=False)
    meta, _ = _split((tmp_path / "README.md").read_text(encoding="utf-8"))
    assert "configs" not in meta and not (tmp_path / "data").exists()


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 2303, 10_000, 999_999, 1_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("harmless-base_test.jsonl.gz", "test"),
        ("testset-v1.json", "test"),
        ("dev.csv", "validation"),
        ("train-00000-of-00001.parquet", "train"),
        ("latest.jsonl", None),  # "test" inside a word says nothing
        ("train_test.jsonl", None),  # two splits named: no guess
        (None, None),
    ],
)
def test_split_of_a_source_file(name: str | None, split: str | None) -> None:
    from prefdata.report.build import split_of_file

    assert split_of_file(name) == split


def test_test_sets_are_published_as_test(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import DatasetCard

    from prefdata.io.importers.pandalm import import_pandalm

    # The importers write no split column; their source files are test sets.
    hh = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz").tables["pairs"]
    panda = import_pandalm(shared_data / "pandalm_testset" / "testset-v1.json").tables["pairs"]
    assert "split" not in hh.columns and "split" not in panda.columns
    for name, pairs in (("hh", hh.head(30)), ("pandalm", panda.head(30))):
        folder = tmp_path / name
        write_report(pairs, folder, tokenizer=None)
        (config,) = DatasetCard.load(folder / "README.md").data.configs
        assert config["data_files"] == [{"split": "test", "path": "data/test.parquet"}]
        assert sorted(p.name for p in (folder / "data").iterdir()) == ["test.parquet"]
        loaded = _load(folder, monkeypatch, tmp_path / f"{name}-cache")
        assert list(loaded) == ["test"] and loaded["test"].num_rows == 30
    # A split column wins over the file name; rows without one fall back to it.
    mixed = hh.head(4).with_columns(pl.Series("split", ["train", None, "validation", None]))
    write_report(mixed, tmp_path / "mixed", tokenizer=None)
    (config,) = DatasetCard.load(tmp_path / "mixed" / "README.md").data.configs
    assert {f["split"] for f in config["data_files"]} == {"train", "test", "validation"}
    assert pl.read_parquet(tmp_path / "mixed" / "data" / "test.parquet").height == 2


@pytest.mark.parametrize(
    ("longer_chosen", "pairs", "bullet"),
    [
        (40, 40, "prefer the longer response"),  # every chosen longer: interval above 0.5
        (0, 40, "prefer the shorter response"),  # every chosen shorter: below 0.5
        (19, 30, None),  # 0.63 over 30 pairs: the interval holds 0.5, no claim
    ],
)
def test_length_limitation_follows_the_interval(
    longer_chosen: int, pairs: int, bullet: str | None, tmp_path: Path
) -> None:
    from statsmodels.stats.proportion import proportion_confint

    rows = [
        {
            "prompt": f"q {i}",
            "chosen": f"answer {i}, said at length" if i < longer_chosen else f"no {i}",
            "rejected": f"no {i}" if i < longer_chosen else f"answer {i}, said at length",
        }
        for i in range(pairs)
    ]
    write_report(make_pairs(rows), tmp_path, tokenizer=None)
    _, body = _split((tmp_path / "README.md").read_text(encoding="utf-8"))
    limitations = body.split("## Limitations", 1)[1]
    low, high = proportion_confint(longer_chosen, pairs, method="wilson")
    assert (low > 0.5 or high < 0.5) == (bullet is not None)  # the independent interval
    if bullet is None:
        assert "prefer the" not in limitations and "lean towards" not in limitations
    else:
        assert bullet in limitations
