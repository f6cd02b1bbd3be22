"""bench/curation_effect.py: its prompt split, its recipe overrides per condition, its figures
(recomputed here from the per-seed numbers), and one smoke run at the tiny size."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path
from types import ModuleType

import numpy as np
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "curation_effect", REPO / "bench" / "curation_effect.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["curation_effect"] = module
    spec.loader.exec_module(module)
    return module


def test_heldout_prompts_share_no_topic_with_training(bench: ModuleType) -> None:
    train, held = bench.load_prompts(40)
    assert train.height + held.height == 160  # 40 topics x 4 phrasings
    assert held["topic"].n_unique() == 10 and train["topic"].n_unique() == 30
    assert not set(train["topic"]) & set(held["topic"])
    assert not set(train["prompt"]) & set(held["prompt"])


def test_conditions_differ_only_in_their_loss(bench: ModuleType) -> None:
    args = Namespace(steps=6, batch=8, max_length=96, lr=3e-3, beta=0.1, lora_r=8, lora_layers=30)
    runs = {name: bench.overrides(name, args, 3, 0.7) for name in bench.CONDITIONS}
    shared = set(runs["clean"])
    assert "seed=3" in shared and "max_steps=6" in shared
    assert set(runs["noisy"]) == shared and set(runs["audit_drop"]) == shared
    assert set(runs["weighted"]) - shared == {"prefdata.confidence_weighting=centered"}
    # the robust loss reads the audit's estimate, kept below 0.5 (where labels carry nothing)
    assert set(runs["robust"]) - shared == {"loss_type=[robust]", "prefdata.label_noise=0.45"}
    assert "prefdata.label_noise=0.2" in bench.overrides("robust", args, 3, 0.2)
    assert set(runs["ipo"]) - shared == {"loss_type=[ipo]"}


def test_summary_matches_an_independent_computation(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    rewards = {
        s: {
            "clean": 0.5 + 0.05 * s,
            "noisy": 0.3 + rng.normal(0, 0.02),
            "audit_drop": 0.42 + s / 50,
        }
        for s in range(3)
    }
    runs = {
        s: {c: {"reward": r, "kl": 0.1 * r, "heldout_accuracy": r} for c, r in row.items()}
        for s, row in rewards.items()
    }
    summary = bench.summarize(runs, ["clean", "noisy", "audit_drop"])
    gaps = np.array([rewards[s]["clean"] - rewards[s]["noisy"] for s in range(3)])
    wins = np.array([rewards[s]["audit_drop"] - rewards[s]["noisy"] for s in range(3)])
    assert summary["gap"] == pytest.approx(gaps.mean())
    assert summary["gap_se"] == pytest.approx(gaps.std(ddof=1) / math.sqrt(3))
    rec = summary["recovered"]["audit_drop"]
    assert rec["recovered"] == pytest.approx(wins.mean() / gaps.mean())
    # delta method for a ratio of two correlated means (both share the noisy run)
    r, n = wins.mean() / gaps.mean(), 3
    var_w, var_g = wins.var(ddof=1) / n, gaps.var(ddof=1) / n
    cov = np.cov(np.vstack([wins, gaps]))[0, 1] / n
    expected_se = math.sqrt(var_w + r**2 * var_g - 2 * r * cov) / abs(gaps.mean())
    assert rec["recovered_se"] == pytest.approx(expected_se)
    clean = summary["conditions"]["clean"]
    values = [rewards[s]["clean"] for s in range(3)]
    assert clean["reward"] == pytest.approx(np.mean(values))
    assert clean["reward_se"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(3))


def test_one_seed_takes_the_gap_error_from_paired_samples(bench: ModuleType) -> None:
    clean, noisy = [0.5, 0.9, 0.1, 0.7], [0.2, 0.8, 0.3, 0.1]
    runs = {
        0: {
            "clean": {"reward": float(np.mean(clean)), "per_sample": clean},
            "noisy": {"reward": float(np.mean(noisy)), "per_sample": noisy},
        }
    }
    summary = bench.summarize(runs, ["clean", "noisy"])
    d = np.array(clean) - np.array(noisy)
    assert summary["gap_se"] == pytest.approx(d.std(ddof=1) / 2)


def _pool(n: int) -> pl.DataFrame:
    """A pairs table of n pairs over n // 4 prompts (the contract's columns)."""
    from prefdata.io.importers.common import pairs_table

    return pairs_table(
        [
            {
                "prompt": [{"role": "user", "content": f"p{i // 4}"}],
                "chosen": f"good {i}",
                "rejected": f"bad {i}",
            }
            for i in range(n)
        ],
        source="test",
    )


def test_every_condition_sees_the_same_number_of_pairs_in_one_order(bench: ModuleType) -> None:
    from prefdata.label.programmatic import flip_labels

    clean = _pool(40)
    noisy, flips = flip_labels(clean, rate=0.4, seed=3)
    p = np.linspace(0.0, 1.0, 40)  # P(flipped) per pair, as the audit would give it
    flags = p > 0.7
    audit = {"p_flipped": p, "flags": flags, "relabel": p > 0.5, "rate": 0.4}
    conditions = list(bench.CONDITIONS + bench.CONTROLS)
    sets = bench.lib.training_sets(clean, noisy, audit, 3, 12, conditions)
    assert {t.height for t in sets.values()} == {12}
    order = np.random.default_rng([3, 7]).permutation(40)  # the seed's own stream
    ids = clean["pair_id"].to_numpy()
    assert sets["clean"]["pair_id"].to_list() == ids[order[:12]].tolist()
    for name in ("noisy", "audit_relabel", "weighted", "robust", "ipo"):
        assert sets[name]["pair_id"].to_list() == sets["clean"]["pair_id"].to_list()
    assert sets["noisy"]["chosen"].to_list() == noisy["chosen"].to_numpy()[order[:12]].tolist()
    # drop: the first 12 unflagged pairs in the same order
    kept = [i for i in order if not flags[i]][:12]
    assert sets["audit_drop"]["pair_id"].to_list() == ids[kept].tolist()
    # the control: the same pairs, with their true labels
    assert sets["kept_clean"]["pair_id"].to_list() == ids[kept].tolist()
    assert sets["kept_clean"]["chosen"].to_list() == clean["chosen"].to_numpy()[kept].tolist()
    assert sets["kept_clean"]["chosen"].to_list() != sets["audit_drop"]["chosen"].to_list()
    # relabel: swapped back exactly where P(flipped) > 0.5
    relabelled = sets["audit_relabel"]
    rows = order[:12]
    flipped = flips["flipped"].to_numpy()
    right = [relabelled["chosen"][k] == clean["chosen"][int(i)] for k, i in enumerate(rows)]
    # a pair's label is right when it was not flipped and not relabelled, or both
    assert right == [bool(flipped[i] == (p[i] > 0.5)) for i in rows]
    assert (p[rows] > 0.5).any() and flipped[rows].any()  # the check has cases to check
    assert sets["weighted"]["confidence"].to_list() == pytest.approx((1 - p[rows]).tolist())


def test_take_cycles_when_the_pool_is_short(bench: ModuleType) -> None:
    pool = _pool(8)
    keep = np.array([True, False] * 4)
    order = np.arange(8)[::-1]
    taken = bench.lib.take(pool, order, keep, 6)
    expected = [i for i in order if keep[i]]  # 6, 4, 2, 0
    ids = pool["pair_id"].to_list()
    assert taken["pair_id"].to_list() == [ids[i] for i in (expected + expected)[:6]]


def test_a_partial_file_is_resumed_only_with_the_same_settings(
    bench: ModuleType, tmp_path: Path
) -> None:
    args = bench.main.__globals__["argparse"].Namespace(
        **{k: 1 for k in bench.RUN_KEYS}, flip_rate=0.4
    )
    path = tmp_path / "p.json"
    store = bench.load_store(path, args)
    store["runs"]["0"] = {"clean": {"reward": 0.5}}
    bench._write_json(store, path)
    assert bench.load_store(path, args)["runs"] == {"0": {"clean": {"reward": 0.5}}}
    args.lr = 2
    with pytest.raises(SystemExit, match="other settings"):
        bench.load_store(path, args)
    # another flip rate's file gives its clean runs (they do not depend on the rate)
    args.lr, args.flip_rate = 1, 0.2
    other = bench.load_store(tmp_path / "q.json", args)
    bench.reuse_clean(other, path, args)
    assert other["runs"] == {"0": {"clean": {"reward": 0.5}}}


@pytest.mark.slow
def test_tiny_run_prints_the_quick_json_last(bench: ModuleType, tmp_path: Path) -> None:
    """The whole loop at the smoke size (SmolLM2, 24 prompts, one DPO step per condition):
    a few minutes on a loaded CPU."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "curation_effect.py"),
            "--tiny",
            "--seed",
            "5",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(last) == {"clean", "noisy", "curated", "recovered", "gap_se"}
    for key in ("clean", "noisy", "curated"):
        assert -1.0 <= last[key] <= 1.0  # mean VADER compound of the samples
    written = json.loads(next(tmp_path.glob("curation_effect-tiny-*.json")).read_text())
    run = written["runs"]["5"]
    assert set(run) == {"clean", "noisy", bench.QUICK_CURATION}
    assert last["clean"] == pytest.approx(run["clean"]["reward"])
    assert np.mean(run["noisy"]["per_sample"]) == pytest.approx(last["noisy"])


def test_combine_merges_partial_files_by_seed(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs of one seed split over two files (a run continued with other conditions) count as
    one seed; a condition missing from a seed is left out of the table."""
    first = {"runs": {"0": {"clean": {"reward": 0.6}, "noisy": {"reward": 0.2}}}, "audit": {}}
    second = {"runs": {"0": {"audit_drop": {"reward": 0.4}}}, "audit": {}}
    third = {"runs": {"1": {"clean": {"reward": 0.5}, "noisy": {"reward": 0.3}}}, "audit": {}}
    files = []
    for i, doc in enumerate((first, second, third)):
        files.append(tmp_path / f"{i}.json")
        files[-1].write_text(json.dumps({**doc, "base": {"reward": 0.1}}))
    assert bench.main(["--combine", *map(str, files)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["seeds"] == [0, 1]
    assert set(summary["conditions"]) == {"clean", "noisy"}  # seed 1 has no audit_drop
    assert summary["gap"] == pytest.approx(((0.6 - 0.2) + (0.5 - 0.3)) / 2)


def _all_pairs_pool(prompts: int, answers: int) -> pl.DataFrame:
    """Every pair of `answers` answers per prompt, the higher-numbered answer chosen: labels
    that agree with one order per prompt, as a true reward gives them."""
    from prefdata.io.importers.common import pairs_table

    rows = [
        {
            "prompt": [{"role": "user", "content": f"prompt {p}"}],
            "chosen": f"answer {p}.{hi}",
            "rejected": f"answer {p}.{lo}",
        }
        for p in range(prompts)
        for hi in range(answers)
        for lo in range(hi)
    ]
    return pairs_table(rows, source="test")


def test_the_audit_of_an_all_pairs_pool_finds_the_flips_and_its_figures_add_up(
    bench: ModuleType, tmp_path: Path
) -> None:
    """The premise of pairing=all: with no content model at all, the consistency of the pairs
    that share an answer ranks flipped pairs above the others; and the figures the bench
    reports are those of the per-pair probabilities and flags it trains on."""
    from prefdata.label.programmatic import flip_labels

    clean = _all_pairs_pool(40, 7)  # 40 x 21 pairs
    noisy, flips = flip_labels(clean, rate=0.3, seed=2)
    flipped = flips["flipped"].to_numpy()
    audit, figures = bench.lib.audit_pool(noisy, flipped, 2, "none", tmp_path)
    p, flags = audit["p_flipped"], audit["flags"]
    assert p.shape == flags.shape == (clean.height,)
    # AUROC by its definition: P(a flipped pair scores above an unflipped one), ties half
    hi, lo = p[flipped][:, None], p[~flipped][None, :]
    auroc = float(((hi > lo) + 0.5 * (hi == lo)).mean())
    assert figures["auroc"] == pytest.approx(auroc)
    assert auroc > 0.65  # 0.71-0.72 on seeds 2 and 5: adjacent answers share every third party
    assert figures["flagged"] == int(flags.sum()) > 0
    assert figures["flag_precision"] == pytest.approx(flipped[flags].mean())
    assert figures["flag_recall"] == pytest.approx(flags[flipped].mean())
    assert figures["noise_after_drop"] == pytest.approx(flipped[~flags].mean())
    assert figures["flag_precision"] > flipped.mean()  # better than flagging at random
    relabel = p > 0.5
    assert figures["noise_after_relabel"] == pytest.approx(np.mean(flipped != relabel))
    assert 0.0 < figures["estimated_noise_rate"] < 0.5
