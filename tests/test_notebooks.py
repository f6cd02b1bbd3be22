"""The walkthrough notebooks (notebooks/*.ipynb) run top to bottom without an error, and the
figures they print agree with what this file computes on the same data by other means.

Each notebook runs in a fresh kernel on this interpreter (a kernel spec written to a temporary
folder, so a `python3` kernel registered elsewhere on the machine is never picked up), with the
real data from the `shared_data` fixture, one torch thread, and no Anthropic key (notebook 02
then skips its Claude cells; a second run points the real SDK at the local wire-protocol server
to execute them). A notebook ends by printing `NOTEBOOK_SUMMARY {json}`, which is parsed here.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import math
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 600
KERNEL = "prefdata-notebook-test"


# ---- running a notebook ------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel spec that starts ipykernel with this very interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "prefdata tests",
                "language": "python",
            }
        )
    )
    return root


def kernel_env(shared: Path, out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(
        {
            "PREFDATA_SHARED_DATA": str(shared),
            "NOTEBOOK_OUT": str(out),
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            # The package under test, importable from the kernel even without an install.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
    )
    env.update(extra)
    return env


def run_notebook(name: str, kernel_dir: Path, env: Mapping[str, str]) -> tuple[Any, str]:
    """Execute notebooks/<name>.ipynb; return (the executed notebook, all its stdout)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    manager = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    client = nbclient.NotebookClient(
        nb,
        km=manager,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    # Raises CellExecutionError (with the traceback) on the first cell that fails.
    client.execute(env=dict(env))
    stdout = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", output
            if output["output_type"] == "stream" and output["name"] == "stdout":
                stdout.append(output["text"])
    return nb, "".join(stdout)


def summary(stdout: str) -> dict[str, Any]:
    found = re.findall(r"^NOTEBOOK_SUMMARY (\{.*\})$", stdout, re.M)
    assert len(found) == 1, "the notebook must print one NOTEBOOK_SUMMARY line"
    result: dict[str, Any] = json.loads(found[0])
    return result


def test_notebooks_match_their_generator() -> None:
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for stem in build.NOTEBOOKS:
        text = (NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8")
        assert text == build.render(stem), f"{stem}.ipynb is stale: run python notebooks/build.py"
        nb = nbformat.reads(text, as_version=4)
        # Committed without outputs: what a reader sees comes from running it.
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells)


# ---- data: the shared folder, or a pinned download ---------------------------------------


@pytest.fixture
def data_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    import _data

    return _data


@pytest.fixture
def mirror(shared_data: Path, tmp_path: Path, data_module: Any) -> Iterator[tuple[str, Path]]:
    """A local HTTP server laid out like raw.githubusercontent.com/<repo>/<commit>/<path>,
    serving the shared files; yields (its URL, its root folder)."""
    root = tmp_path / "mirror"
    for name, source in data_module.SOURCES.items():
        dest = root / source.repo / source.commit / source.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((shared_data / name).read_bytes())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_data_file_downloads_pinned_sources_and_checks_them(
    mirror: tuple[str, Path],
    data_module: Any,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, root = mirror
    monkeypatch.delenv("PREFDATA_SHARED_DATA", raising=False)
    monkeypatch.setenv("PREFDATA_DATA_MIRROR", url)
    monkeypatch.setenv("PREFDATA_NOTEBOOK_CACHE", str(tmp_path / "cache"))
    name = "hhh_alignment/hhh_alignment_eval.json"
    got = data_module.data_file(name)
    assert got == tmp_path / "cache" / name
    assert got.read_bytes() == (shared_data / name).read_bytes()
    # Cached: a second call does not download (the source can vanish).
    source = data_module.SOURCES[name]
    (root / source.repo / source.commit / source.path).unlink()
    assert data_module.data_file(name) == got
    # A file whose checksum differs is refused and leaves nothing behind.
    other = "gsm8k/test.jsonl"
    bad = data_module.SOURCES[other]
    (root / bad.repo / bad.commit / bad.path).write_text("{}\n")
    with pytest.raises(RuntimeError, match="sha256"):
        data_module.data_file(other)
    assert not (tmp_path / "cache" / other).exists()
    assert not list((tmp_path / "cache" / "gsm8k").iterdir())
    # With PREFDATA_SHARED_DATA set, the shared copy is used as is.
    monkeypatch.setenv("PREFDATA_SHARED_DATA", str(shared_data))
    assert data_module.data_file(other) == shared_data / other


# ---- 01: cleaning ------------------------------------------------------------------------


def _fleiss(counts: np.ndarray) -> float:
    """Fleiss' kappa of an items x categories count matrix with equal row sums."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    return float(fleiss_kappa(counts, method="fleiss"))


def _alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) from items x categories vote counts (each item >= 2):
    1 - (n - 1) * (disagreeing coincidences) / (n^2 - sum of squared category totals)."""
    o = np.zeros((counts.shape[1], counts.shape[1]))
    for row in counts:
        o += (np.outer(row, row) - np.diag(row)) / (row.sum() - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    return float(1 - (n - 1) * (n - np.trace(o)) / (n**2 - (n_c**2).sum()))


@pytest.mark.slow
def test_cleaning_notebook(kernel_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    from prefdata import ids

    nb, stdout = run_notebook("01-clean-a-dataset", kernel_dir, kernel_env(shared_data, tmp_path))
    got = summary(stdout)
    # The report's plots are shown in the notebook: kappa and flagged issues before / after,
    # and the dropped rows.
    shown = [
        o["data"]["text/html"]
        for c in nb.cells
        for o in c.get("outputs", [])
        if o["output_type"] == "display_data" and "<svg" in o["data"].get("text/html", "")
    ]
    assert len(shown) == 3 and sum(html.count("<svg") for html in shown) == 5

    records = json.loads((shared_data / "pandalm_testset" / "testset-v1.json").read_text())
    per_record = []  # votes per record as counts of (a, b, tie) on canonical sides
    items: dict[tuple[str, str, str], Counter[str]] = {}
    unusable: set[tuple[str, str, str]] = set()
    for rec in records:
        r1, r2 = (
            v if isinstance(v, str) else json.dumps(v) for v in (rec["response1"], rec["response2"])
        )
        a, _ = ids.canonical_sides(r1, r2)
        first = "a" if a == r1 else "b"
        second = "b" if first == "a" else "a"
        labels = [{0: "tie", 1: first, 2: second}[rec[f"annotator{j}"]] for j in (1, 2, 3)]
        per_record.append([labels.count(x) for x in ("a", "b", "tie")])
        extra = rec.get("input") or ""
        prompt = rec["instruction"] + ("\n\n" + extra if extra.strip() else "")
        key = (prompt, *sorted((r1, r2)))
        items.setdefault(key, Counter()).update(labels)
        if not all(isinstance(rec[k], str) and rec[k].strip() for k in ("response1", "response2")):
            unusable.add(key)  # a response that is not text, or is blank, makes no pair
    counts = np.array(per_record, dtype=float)

    assert got["records"] == len(records) == 999
    assert got["records_unanimous"] == int((counts.max(axis=1) == 3).sum()) == 879
    assert got["fleiss_kappa"] == pytest.approx(_fleiss(counts), abs=1e-9)
    assert got["krippendorff_alpha_nominal"] == pytest.approx(_alpha_nominal(counts), abs=1e-9)
    # A pair per distinct (prompt, two responses) whose pooled votes have a strict,
    # non-tie plurality.
    expected_pairs = 0
    for key, tally in items.items():
        ranked = tally.most_common()
        strict = len(ranked) == 1 or ranked[0][1] > ranked[1][1]
        if strict and ranked[0][0] != "tie" and key not in unusable:
            expected_pairs += 1
    assert got["pairs"] == expected_pairs

    # The filter kept only what its settings allow, and lost nothing.
    out = tmp_path / "01-clean"
    kept = pl.read_parquet(out / "pairs.clean.parquet")
    rejected = pl.read_parquet(out / "pairs.rejected.parquet")
    issues = pl.read_parquet(out / "issues.parquet")
    assert kept.height == got["kept"] and rejected.height == got["rejected"]
    assert kept.height + rejected.height == got["consensus_pairs"]
    assert 0 < kept.height < got["consensus_pairs"]
    assert kept["confidence"].min() >= 0.99  # type: ignore[operator]
    dropped_kinds = ["duplicate_pair", "conflicting_duplicate", "truncated_response"]
    flagged = issues.filter(pl.col("is_issue") & pl.col("issue").is_in(dropped_kinds))
    assert flagged.height > 0
    assert not set(flagged["item_id"]) & set(kept["pair_id"])
    assert set(flagged["item_id"]) & set(rejected["pair_id"])
    # The report describes the kept pairs and holds its plots.
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["compare"]["overview"]["rows"] == kept.height == got["report_rows_after"]
    page = (out / "report" / "report.html").read_text()
    assert page.count("<svg") >= 10
    assert (out / "report" / "README.md").is_file()


# ---- 02: judging -------------------------------------------------------------------------

_HHH = re.compile(
    r"###The instruction to evaluate:\n(.*?)\n\n###Response to evaluate:\n(.*?)"
    r"\n\n###Score Rubrics",
    re.S,
)


def _check_judge_figures(got: dict[str, Any], out: Path, shared_data: Path) -> None:
    from prefdata import ids

    pairs = pl.read_parquet(out / "pairs.parquet")
    votes = pl.read_parquet(out / "votes.local.parquet")
    # The judged pairs are real HHH pairs with their gold orientation.
    gold_pairs = set()
    for rec in json.loads((shared_data / "hhh_alignment" / "hhh_alignment_eval.json").read_text()):
        chosen = _HHH.search(rec["chosen_instruction"])
        rejected = _HHH.search(rec["rejected_instruction"])
        assert chosen and rejected
        gold_pairs.add((chosen.group(2), rejected.group(2)))
    assert pairs.height == got["pairs"] == 8
    assert all((c, r) in gold_pairs for c, r in pairs.select("chosen", "rejected").iter_rows())
    gold_a = {
        pid: ids.canonical_sides(c, r)[0] == c
        for pid, c, r in pairs.select("pair_id", "chosen", "rejected").iter_rows()
    }

    # Position figures recomputed from the votes.
    assert votes.height == got["local_votes"] == 2 * pairs.height
    assert got["local_errors"] == 0 and votes["error"].null_count() == votes.height
    p_first = [p if o == "ab" else 1 - p for p, o in votes.select("p_a", "order").iter_rows()]
    first_wins = sum(p > 0.5 for p in p_first) / len(p_first)
    assert got["local_p_first_wins"] == pytest.approx(first_wins)
    # SmolLM2-135M answers "A" whatever is shown first (DESIGN.md: 100% on all 221 pairs).
    assert first_wins >= 0.9
    by_item: dict[str, list[float]] = {}
    for item, p in votes.select("item_id", "p_a").iter_rows():
        by_item.setdefault(item, []).append(p)
    consistent = [(ps[0] > 0.5) == (ps[1] > 0.5) for ps in by_item.values() if len(ps) == 2]
    assert got["local_position_consistency"] == pytest.approx(sum(consistent) / len(consistent))
    means = {item: sum(ps) / len(ps) for item, ps in by_item.items()}
    decided = {item: p for item, p in means.items() if p != 0.5}
    right = sum((p > 0.5) == gold_a[item] for item, p in decided.items())
    assert got["local_pairs_decided"] == len(decided)
    assert got["local_accuracy_order_averaged"] == pytest.approx(right / len(decided))

    # The estimate: two calls per pair, priced at Sonnet 4.6's public rates ($3 / $15 per
    # million input / output tokens; batch at half price).
    assert got["estimate_calls"] == 2 * pairs.height
    usd = (got["estimate_input_tokens"] * 3 + got["estimate_output_tokens"] * 15) / 1e6
    assert got["estimate_usd_online_no_cache"] == pytest.approx(usd, abs=1e-6)
    assert got["estimate_usd_batch"] == pytest.approx(usd / 2, abs=1e-6)
    assert got["estimate_output_tokens"] == 150 * got["estimate_calls"]


@pytest.mark.slow
def test_judging_notebook(kernel_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    from tests.llm.conftest import TEST_KEY
    from tests.llm.fake_server import FakeLLMServer

    out = tmp_path / "02-judge"
    # No key: the Claude cells say so and skip; everything else runs.
    _, stdout = run_notebook("02-judge", kernel_dir, kernel_env(shared_data, tmp_path))
    got = summary(stdout)
    assert "ANTHROPIC_API_KEY is not set: skipping the Claude judge" in stdout
    assert got["claude_ran"] is False and not (out / "votes.claude.parquet").exists()
    _check_judge_figures(got, out, shared_data)

    # With a key, against a server speaking the Messages API: the Claude cells run, two calls
    # per pair, and the local votes come from the call cache of the first run.
    with FakeLLMServer(api_key=TEST_KEY) as server:
        env = kernel_env(
            shared_data, tmp_path, ANTHROPIC_API_KEY=TEST_KEY, ANTHROPIC_BASE_URL=server.url
        )
        _, stdout = run_notebook("02-judge", kernel_dir, env)
        assert server.count("messages", status=200) == 2 * got["pairs"]
    again = summary(stdout)
    assert again["claude_ran"] is True
    assert again["claude_votes"] == 2 * got["pairs"] and again["claude_errors"] == 0
    assert "call cache: 16/16 answered from cache" in stdout
    claude_votes = pl.read_parquet(out / "votes.claude.parquet")
    assert claude_votes["annotator"].unique().to_list() == ["anthropic:claude-sonnet-4-6"]
    assert set(claude_votes["label"]) <= {"a", "b", "tie"}
    assert TEST_KEY not in stdout
    _check_judge_figures(again, out, shared_data)


# ---- 03: training ------------------------------------------------------------------------


@pytest.mark.slow
def test_training_notebook(kernel_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    _, stdout = run_notebook("03-train", kernel_dir, kernel_env(shared_data, tmp_path))
    got = summary(stdout)
    out = tmp_path / "03-train"

    # DPO: the steps asked for; step 1 has policy == reference, so the loss is log 2.
    assert got["dpo_steps"] == got["steps"] == 3
    assert len(got["dpo_losses"]) == 3 and all(math.isfinite(x) for x in got["dpo_losses"])
    assert got["dpo_losses"][0] == pytest.approx(math.log(2), abs=1e-4)
    # ... and from step 2 on the adapter has moved (no warm-up step at learning rate 0).
    assert abs(got["dpo_losses"][1] - math.log(2)) > 1e-6
    data = pl.read_parquet(out / "dpo-data.parquet")
    train_rows = data.filter(pl.col("split") == "train")
    held = data.filter(pl.col("split") == "test")
    assert got["dpo_pairs"] == train_rows.height == 24
    # Held-out prompts were never trained on.
    assert not set(train_rows["prompt_id"]) & set(held["prompt_id"])
    scores = pl.read_parquet(out / "dpo-heldout-scores.parquet")
    assert scores["pair_id"].to_list() == held["pair_id"].to_list()
    assert got["dpo_eval_pairs"] == held.height == 16
    margin = scores["score_chosen"] - scores["score_rejected"]
    assert got["dpo_eval_accuracy"] == pytest.approx(float((margin > 0).mean()))  # type: ignore[arg-type]

    # KTO: every training row's label is the file's is_correct for that solution.
    kto = pl.read_parquet(out / "kto-data.parquet")
    graded = {}
    for line in (shared_data / "gsm8k" / "example_model_solutions.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for value in rec.values():
            if isinstance(value, dict) and "is_correct" in value:
                graded[(rec["question"], value["solution"])] = value["is_correct"]
    for prompt, completion, label in kto.select("prompt", "completion", "label").iter_rows():
        assert graded[(prompt[-1]["content"], completion)] is label
    assert got["kto_rows"] == kto.height == 32
    assert got["kto_desirable"] + got["kto_undesirable"] == got["kto_rows_after_tokenization"]
    assert got["kto_steps"] == 3 and all(math.isfinite(x) for x in got["kto_losses"])
    heldout = pl.read_parquet(out / "kto-heldout.parquet")
    assert not set(heldout["prompt_id"]) & set(kto["prompt_id"])
    assert got["kto_eval_pairs"] == heldout.height > 0

    # GRPO: two steps on prompts whose `answer` is the file's final number.
    assert got["grpo_steps"] == 2 and got["grpo_prompts"] == 8
    prompts = pl.read_parquet(out / "grpo-data.parquet")
    answers = {}
    for line in (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines():
        rec = json.loads(line)
        answers[rec["question"]] = rec["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    assert prompts.height == 8
    for prompt, answer in prompts.select("prompt", "answer").iter_rows():
        assert answers[prompt[-1]["content"]] == answer
    # A random tiny model answers nothing right: every group has equal (zero) rewards, so no
    # completion has an advantage and the loss is 0.
    assert got["grpo_reward_mean"] == 0.0 and got["grpo_frac_reward_zero_std"] == 1.0
    assert got["grpo_losses"] == [0.0, 0.0]


# ---- 04: from pandas and from datasets ---------------------------------------------------


@pytest.mark.slow
def test_pandas_and_datasets_notebook(kernel_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    _, stdout = run_notebook(
        "04-pandas-and-datasets", kernel_dir, kernel_env(shared_data, tmp_path)
    )
    got = summary(stdout)
    out = tmp_path / "04-frames"
    flows = ("pandas", "datasets")

    records = json.loads((shared_data / "pandalm_testset" / "testset-v1.json").read_text())
    assert got["records"] == len(records) == 999
    # Fleiss' kappa per record from the file itself, labels on canonical sides as in 01.
    from prefdata import ids

    per_record = []
    for rec in records:
        r1, r2 = (
            v if isinstance(v, str) else json.dumps(v) for v in (rec["response1"], rec["response2"])
        )
        first = "a" if ids.canonical_sides(r1, r2)[0] == r1 else "b"
        second = "b" if first == "a" else "a"
        labels = [{0: "tie", 1: first, 2: second}[rec[f"annotator{j}"]] for j in (1, 2, 3)]
        per_record.append([labels.count(x) for x in ("a", "b", "tie")])
    counts = np.array(per_record, dtype=float)
    for flow in flows:
        assert got["human_votes"][flow] == 3 * len(records)
        assert got["fleiss_kappa"][flow] == pytest.approx(_fleiss(counts), abs=1e-9)

    # The two flows made the same tables and the same file.
    for name in ("pairs.clean.parquet", "issues.parquet"):
        pandas_table, datasets_table = (pl.read_parquet(out / flow / name) for flow in flows)
        assert pandas_table.equals(datasets_table), name
    trl = [(out / flow / "trl.jsonl").read_bytes() for flow in flows]
    assert trl[0] == trl[1]
    for key in ("consensus_pairs", "kept", "rejected", "dpo_pairs", "dpo_losses"):
        assert got[key]["pandas"] == got[key]["datasets"], key

    # The filter kept what its settings allow, lost nothing, and the export holds every pair.
    kept = pl.read_parquet(out / "pandas" / "pairs.clean.parquet")
    issues = pl.read_parquet(out / "pandas" / "issues.parquet")
    assert kept.height == got["kept"]["pandas"] > 0
    assert kept.height + got["rejected"]["pandas"] == got["consensus_pairs"]["pandas"]
    assert kept["confidence"].min() >= 0.99  # type: ignore[operator]
    dropped = issues.filter(
        pl.col("is_issue") & pl.col("issue").is_in(["duplicate_pair", "truncated_response"])
    )
    assert dropped.height and not set(dropped["item_id"]) & set(kept["pair_id"])
    lines = trl[0].decode().splitlines()
    assert len(lines) == kept.height
    # Chat prompts came through both flows as messages.
    assert all(m["role"] == "user" for line in lines for m in json.loads(line)["prompt"])

    # Three DPO steps from each; step 1's policy is its reference, so the loss is log 2.
    assert got["dpo_pairs"]["pandas"] == 12
    losses = got["dpo_losses"]["pandas"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)
