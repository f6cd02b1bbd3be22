"""Fixtures for the pipeline tests: pipeline files written from a dict, the tiny model for
fast training stages, and the real GSM8K questions as prompts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

Writer = Callable[..., Path]


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Writer:
    """write_pipeline(stages, name="p.yaml", **top) -> the path of a pipeline file."""

    def write(stages: list[dict[str, Any]], name: str = "p.yaml", **top: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({**top, "stages": stages}, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer SmolLM2-shaped model with the real tokenizer: a training step in a second."""
    pytest.importorskip("trl")
    from prefdata.models.tiny import tiny_model

    return tiny_model(tmp_path_factory.mktemp("models") / "tiny", layers=2, hidden=32, heads=4)


@pytest.fixture
def gsm8k_questions(shared_data: Path) -> dict[str, Any]:
    """An import stage reading the first real GSM8K questions as prompts."""
    return {
        "kind": "import",
        "name": "questions",
        "format": "gsm8k",
        "path": str(shared_data / "gsm8k" / "test.jsonl"),
        "limit": 4,
    }
