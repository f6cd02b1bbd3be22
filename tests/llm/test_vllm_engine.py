"""The vllm backend with the real engine: vLLM's CPU build on the embedded SmolLM2.

vLLM's pins differ from ours, so it lives in .venv-vllm (scripts/vllm-env.sh, run by
scripts/test.sh); tests/llm/vllm_run.py drives the backend there and writes what it saw, and
this test checks it in the main venv against an independent path through the same weights
(transformers, float32): the A/B next-token probabilities, the log-probabilities of the greedy
tokens (teacher-forced), the resume from the call cache, and the JSON verdicts of structured
outputs against the rubric's own schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from prefdata.llm.base import Request

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not VLLM_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must build .venv-vllm (scripts/test.sh runs scripts/vllm-env.sh)")
        pytest.skip("no .venv-vllm here: bash scripts/vllm-env.sh")
    work = tmp_path_factory.mktemp("vllm")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            str(VLLM_PYTHON),
            str(REPO / "tests" / "llm" / "vllm_run.py"),
            str(work / "seen.json"),
            str(work),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        pytest.fail(f"vllm_run.py failed ({done.returncode}):\n{done.stderr[-4000:]}")
    data: dict[str, Any] = json.loads((work / "seen.json").read_text())
    data["work"] = work
    return data


@pytest.fixture(scope="module")
def reference() -> Any:
    from prefdata.llm.local import LocalClient

    client = LocalClient("smollm2", batch_size=1, dtype="float32")
    client.load()
    return client


def _user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def test_choice_probabilities_match_transformers(seen: dict[str, Any], reference: Any) -> None:
    from tests.llm.vllm_run import CHOICE_PROMPTS

    expected = reference.complete_sync(
        [Request(messages=_user(p), choices=("A", "B")) for p in CHOICE_PROMPTS]
    )
    for got, want in zip(seen["choices"], expected, strict=True):
        assert got["error"] is None
        assert got["choice_probs"]["A"] == pytest.approx(want.choice_probs["A"], abs=2e-4)
        assert got["choice_mass"] == pytest.approx(want.choice_mass, abs=2e-4)


def test_greedy_tokens_and_logprobs_match_a_forward_pass(
    seen: dict[str, Any], reference: Any
) -> None:
    import torch

    from tests.llm.vllm_run import GREEDY_PROMPTS

    model, tokenizer = reference.load()
    for prompt, got in zip(GREEDY_PROMPTS, seen["greedy"], strict=True):
        assert got["error"] is None and got["finish_reason"] in ("length", "stop")
        chat = tokenizer.apply_chat_template(
            list(_user(prompt)), add_generation_prompt=True, tokenize=False
        )
        prompt_ids = tokenizer(chat, add_special_tokens=False)["input_ids"]
        text_ids = tokenizer(got["text"], add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt_ids + text_ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        start = len(prompt_ids)
        forced = [float(logp[start + k - 1, t]) for k, t in enumerate(text_ids)]
        greedy = [int(logp[start + k - 1].argmax()) == t for k, t in enumerate(text_ids)]
        # Greedy: every token the engine drew is transformers' most likely token too.
        assert all(greedy), (prompt, got["text"])
        assert got["token_logprobs"] == pytest.approx(forced, abs=2e-3)


def test_seeded_sampling_repeats_and_differs_by_seed(seen: dict[str, Any]) -> None:
    first, again, other = seen["sampled"]
    assert first["text"] == again["text"]
    assert first["text"] and other["text"]


def test_generate_resumes_from_the_call_cache(seen: dict[str, Any]) -> None:
    first, second = seen["generate_reports"]
    assert first["backend"] == ["vllm"]
    assert first["new_calls"] == first["requests"] == 8
    assert second["new_calls"] == 0 and second["cache_hits"] == 8
    a = pl.read_parquet(seen["work"] / "candidates-1.parquet")
    b = pl.read_parquet(seen["work"] / "candidates-2.parquet")
    assert a.equals(b) and a.height >= 4


def test_json_verdicts_follow_the_rubric_schema(seen: dict[str, Any]) -> None:
    from prefdata.label.rubric import VERDICT_TOOL

    votes = pl.read_parquet(seen["work"] / "json-votes.parquet")
    assert votes.height == seen["json_pairs"]
    allowed = set(VERDICT_TOOL["input_schema"]["properties"]["verdict"]["enum"])
    read = votes.filter(pl.col("error").is_null())
    # A reply that ran out of tokens is an error row, never a guessed label; the schema
    # keeps the rest to the rubric's verdicts.
    assert read.height >= 1, votes["error"].to_list()
    for raw, label in zip(read["raw"], read["label"], strict=True):
        verdict = json.loads(raw)["verdict"]
        assert verdict in allowed
        assert label == {"A": "a", "B": "b"}.get(verdict, "tie")


def test_the_backend_is_listed_and_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from prefdata.llm import factory\n"
        "assert 'vllm' in factory.BACKENDS\n"
        "caps = factory.capabilities('vllm')\n"
        "assert caps.reads_choice_probs and caps.structured_output and caps.whole_table\n"
        "assert 'vllm' not in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
