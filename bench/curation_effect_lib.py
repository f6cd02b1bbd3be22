"""The parts of bench/curation_effect.py: data, curation, training, evaluation and figures.

Kept apart from the command (curation_effect.py: sizes, the run loop, persistence, the table)
so that each file stays small; nothing here is used by anything else.
"""

from __future__ import annotations

import gc
import math
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from prefdata.label.programmatic import rule_label, vader_compound
from prefdata.train.recipe import builtin_recipe

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "prefdata" / "examples" / "sentiment_prompts.jsonl"
RECIPE = builtin_recipe("dpo")
CONDITIONS = ("clean", "noisy", "audit_drop", "audit_relabel", "weighted", "robust", "ipo")
CURATIONS = CONDITIONS[2:]
# A control, run on request (--conditions): the pairs audit_drop keeps with their true labels.
# audit_drop - kept_clean is what the flips the audit misses still cost; kept_clean - clean is
# what choosing the pairs the audit keeps does by itself (its flags are not random: it may
# prefer pairs with a wide reward gap).
CONTROLS = ("kept_clean",)
EVAL_SEED = 10_000  # the held-out samples' base seed: the same in every condition and seed
ROBUST_MAX_RATE = 0.45  # the robust loss divides by 1 - 2 rate: keep it away from 0.5


# --- data ----------------------------------------------------------------------------------


def load_prompts(topics: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training prompts, held-out prompts) from the first `topics` topics; every 4th topic
    (in file order) is held out whole."""
    table = pl.read_ndjson(PROMPTS)
    names = table["topic"].unique(maintain_order=True).to_list()[:topics]
    held = set(names[3::4]) if len(names) >= 4 else {names[-1]}
    table = table.filter(pl.col("topic").is_in(names))
    return (
        table.filter(~pl.col("topic").is_in(list(held))),
        table.filter(pl.col("topic").is_in(list(held))),
    )


def sample(
    prompts: pl.DataFrame, model: str, *, n: int, max_new_tokens: int, seed: int, cache: Any
) -> tuple[Any, Any]:
    """N answers per prompt from `model` (temperature 1, top_p 1; each sample seeded from
    `seed`, its prompt and its index): generate's result, and the client (its model stays
    loaded for reuse until `client.unload()`)."""
    from prefdata.llm.base import Params
    from prefdata.llm.generate import generate
    from prefdata.llm.local import LocalClient

    client = LocalClient(model, device="auto", batch_size=32)
    result = generate(
        prompts.select("prompt"),
        models=[client],
        n=n,
        params=Params(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed),
        cache=cache,
        chunk_size=16,
        progress=False,
    )
    return result, client


def every_sample(result: Any) -> pl.DataFrame:
    """All samples of a generate result, one row per (prompt_id, sample), sorted so that
    sample k of a prompt sits at the same place in every condition. generate sets aside
    empty answers and a prompt's repeated answers; a policy's samples count them all (a
    policy that repeats itself is judged on every answer it gives)."""
    kept = result.tables["candidates"].select(
        "prompt_id",
        "prompt",
        pl.col("params").str.json_path_match("$.sample").cast(pl.Int64).alias("sample"),
        "completion",
    )
    rejected = result.rejected
    if rejected is not None and rejected.height:
        if (rejected["reason"] == "error").any():
            raise RuntimeError(f"sampling failed: {rejected['error'].drop_nulls()[0]}")
        kept = pl.concat(
            [
                kept,
                rejected.select(
                    "prompt_id", "prompt", "sample", pl.col("completion").fill_null("")
                ),
            ],
            how="vertical_relaxed",
        )
    return kept.sort("prompt_id", "sample")


def candidates(prompts: pl.DataFrame, args: Any) -> pl.DataFrame:
    """The base model's answers to `prompts` (seed 0), through prefdata's default call cache:
    bench_mislabel's controlled kind generates the same requests, so either one fills it
    for the other and a re-run generates nothing."""
    from prefdata.llm.cache import CallCache, default_cache_path

    cache = CallCache(default_cache_path())
    try:
        result, client = sample(
            prompts,
            args.model,
            n=args.candidates,
            max_new_tokens=args.answer_tokens,
            seed=0,
            cache=cache,
        )
    finally:
        cache.close()
    client.unload()
    table: pl.DataFrame = result.tables["candidates"]
    return table


def pool_pairs(cands: pl.DataFrame, margin: float) -> pl.DataFrame:
    """Every pair of a prompt's answers whose true reward (VADER) differs by more than
    `margin`: several pairs per prompt, so responses recur across pairs and the audit's
    consistency signal has something to read."""
    return rule_label(cands, scorer="vader", pairing="all", min_margin=margin).tables["pairs"]


def heldout_pairs(cands: pl.DataFrame, n: int) -> pl.DataFrame:
    """Best-vs-worst held-out pairs by the true reward (clean), the first `n` prompts'."""
    return rule_label(cands, scorer="vader", pairing="best-vs-worst").tables["pairs"].head(n)


def swap(pairs: pl.DataFrame, mask: pl.Series) -> pl.DataFrame:
    return pairs.with_columns(
        chosen=pl.when(mask).then(pl.col("rejected")).otherwise(pl.col("chosen")),
        rejected=pl.when(mask).then(pl.col("chosen")).otherwise(pl.col("rejected")),
    )


def order_of(pairs: pl.DataFrame, seed: int) -> np.ndarray:
    """The seed's random order of the pool (a stream apart from the one that picks flips)."""
    return np.random.default_rng([seed, 7]).permutation(pairs.height)


def take(pool: pl.DataFrame, order: np.ndarray, keep: np.ndarray | None, n: int) -> pl.DataFrame:
    """The first `n` pairs of `pool` in `order` among the rows `keep` allows (all: None),
    cycling when fewer are left, so every condition sees the same number of pairs and
    conditions on the same rows see exactly the same pairs in the same order."""
    rows = order if keep is None else order[keep[order]]
    if rows.size == 0:
        raise ValueError("no pairs left to train on")
    picked = np.resize(rows, n)  # np.resize repeats the array to fill n
    return pool[picked.tolist()]


# --- curation -----------------------------------------------------------------------------


def audit_pool(
    noisy: pl.DataFrame, flipped: np.ndarray, seed: int, audit_model: str, cache_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The combined audit on the whole noisy pool: per pair P(flipped) (out of fold) and the
    flags, the estimated noise rate, and the audit's figures against the known flips."""
    from prefdata.quality.audit import audit
    from prefdata.quality.mislabel import ISSUE, label_noise_rate

    start, cpu = time.perf_counter(), time.process_time()
    audited = audit(noisy, model=audit_model, sample=0, seed=seed, cache_dir=str(cache_dir))
    issues, report = audited.tables["issues"], audited.report
    rows = issues.filter(pl.col("issue") == ISSUE)
    aligned = noisy.select("pair_id").join(
        rows.select("item_id", "p_flipped", "is_issue"),
        left_on="pair_id",
        right_on="item_id",
        how="left",
        maintain_order="left",
    )
    # a pair with no row has no reading at all: the noise rate is its best guess
    rate = label_noise_rate(report)
    p = aligned["p_flipped"].fill_null(rate).to_numpy()
    flags = aligned["is_issue"].fill_null(False).to_numpy()
    relabel = p > 0.5
    part = report["mislabel"]
    figures = {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "pairs": noisy.height,
        "estimated_noise_rate": rate,
        "noise_rate_se": part.get("noise_rate_se"),
        "identification": part.get("identification"),
        "blocks": part.get("blocks"),
        "true_noise_rate": float(flipped.mean()),
        "auroc": _auroc(p, flipped),
        "flagged": int(flags.sum()),
        "flag_precision": _ratio(flags & flipped, flags),
        "flag_recall": _ratio(flags & flipped, flipped),
        "noise_after_drop": _ratio(~flags & flipped, ~flags),
        "relabelled": int(relabel.sum()),
        "relabel_precision": _ratio(relabel & flipped, relabel),
        "noise_after_relabel": float((flipped ^ relabel).mean()),
    }
    return {"p_flipped": p, "flags": flags, "relabel": relabel, "rate": rate}, figures


def _ratio(hits: np.ndarray, of: np.ndarray) -> float | None:
    return float(hits.sum() / of.sum()) if of.sum() else None


def _auroc(score: np.ndarray, truth: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score)) if 0 < truth.sum() < truth.size else None


def training_sets(
    clean: pl.DataFrame,
    noisy: pl.DataFrame,
    audit: dict[str, Any] | None,
    seed: int,
    n: int,
    conditions: list[str],
) -> dict[str, pl.DataFrame]:
    """Each condition's `n` training pairs (see `take`): clean and noisy are the same pairs,
    with the seed's flips in noisy; relabel, weighted, robust and ipo see those same noisy
    pairs; audit_drop sees the first `n` of the pairs the audit does not flag, kept_clean the
    same pairs with their true labels."""
    order = order_of(clean, seed)
    sets = {"clean": take(clean, order, None, n), "noisy": take(noisy, order, None, n)}
    if audit is not None:
        sets["audit_drop"] = take(noisy, order, ~audit["flags"], n)
        sets["kept_clean"] = take(clean, order, ~audit["flags"], n)
        sets["audit_relabel"] = take(swap(noisy, pl.Series(audit["relabel"])), order, None, n)
        confidence = pl.Series("confidence", 1.0 - audit["p_flipped"], dtype=pl.Float64)
        sets["weighted"] = take(noisy.with_columns(confidence), order, None, n)
    sets["robust"] = sets["ipo"] = sets["noisy"]
    return {c: sets[c] for c in conditions}


# --- training -----------------------------------------------------------------------------


def overrides(name: str, args: Any, seed: int, noise_rate: float | None) -> list[str]:
    """The recipe overrides of one run: the same for every condition but the loss."""
    common = [
        f"max_steps={args.steps}",
        f"per_device_train_batch_size={args.batch}",
        "gradient_accumulation_steps=1",
        f"max_length={args.max_length}",
        f"learning_rate={args.lr}",
        f"beta={args.beta}",
        "warmup_steps=0",
        "lr_scheduler_type=constant",
        f"seed={seed}",
        f"logging_steps={max(1, args.steps // 4)}",
        "save_strategy=no",
        f"peft.r={args.lora_r}",
        f"peft.lora_alpha={2 * args.lora_r}",
        "peft.target_modules=all-linear",
        "prefdata.confidence_weighting=none",
    ]
    if name == "weighted":
        # weight max(0, 2c - 1) = max(0, 1 - 2 P(flipped)): a pair's expected gradient sign
        common.append("prefdata.confidence_weighting=centered")
    if name == "robust":
        rate = min(float(noise_rate or 0.0), ROBUST_MAX_RATE)
        common += ["loss_type=[robust]", f"prefdata.label_noise={rate}"]
    if name == "ipo":
        common.append("loss_type=[ipo]")
    return common


def train_run(
    name: str, table: pl.DataFrame, out: Path, args: Any, seed: int, rate: float | None
) -> dict[str, Any]:
    from prefdata.train import train
    from prefdata.train.outputs import remove_checkpoints

    start, cpu = time.perf_counter(), time.process_time()
    report = train(
        "dpo",
        recipe=RECIPE,
        data=table,
        model=args.model,
        out=out,
        overrides=overrides(name, args, seed, rate),
    )
    remove_checkpoints(out)
    gc.collect()
    return {
        "train_seconds": time.perf_counter() - start,
        "train_cpu_seconds": time.process_time() - cpu,
        "train_loss": report["train_loss"],
        "weight_zero_pairs": report.get("pairs_weight_zero"),
    }


# --- evaluation ---------------------------------------------------------------------------


class Evaluator:
    """Scores policies on the held-out prompts. The base model stays loaded for the KL, and
    its log-probabilities of the held-out pairs are computed once: they are the implicit
    reward's reference in every condition."""

    def __init__(self, held: pl.DataFrame, held_pairs: pl.DataFrame, args: Any) -> None:
        from prefdata.llm.local import LocalClient
        from prefdata.models import load

        self.held, self.pairs, self.args = held, held_pairs, args
        # where the policies will sample (a GPU when there is one)
        self.base = load(args.model, device=LocalClient(args.model, device="auto").device)
        self.pair_base = self._pair_logps(self.base) if held_pairs.height else None

    def _logps(self, model: Any, prompts: list[Any], texts: list[str]) -> np.ndarray:
        from prefdata.train.evaluation import sequence_logps

        logps, _ = sequence_logps(model[0], model[1], prompts, texts, batch_size=8)
        return np.asarray(logps)

    def _pair_logps(self, model: Any) -> np.ndarray:
        """(chosen - rejected) summed log-probability per held-out pair."""
        prompts = self.pairs["prompt"].to_list()
        chosen = self._logps(model, prompts, self.pairs["chosen"].to_list())
        rejected = self._logps(model, prompts, self.pairs["rejected"].to_list())
        return chosen - rejected

    def __call__(self, model_dir: Path | None) -> tuple[dict[str, Any], list[float]]:
        """Figures of the policy in `model_dir` (None: the base model) and its per-sample
        rewards (sample k of prompt j at the same place in every condition):
        reward (mean true reward of its samples), kl (mean over the first sample of each
        prompt of log pi(y) - log pi_base(y), summed over the answer: an unbiased estimate of
        the sequence KL), heldout_accuracy (DPO's implicit reward orders the clean held-out
        pair right: (log pi - log pi_base)(chosen) > (same)(rejected))."""
        from prefdata.llm.cache import CallCache

        args = self.args
        start, cpu = time.perf_counter(), time.process_time()
        # Not cached: every run writes its model to a folder of the same name.
        result, client = sample(
            self.held,
            str(model_dir) if model_dir is not None else args.model,
            n=args.samples,
            max_new_tokens=args.answer_tokens,
            seed=EVAL_SEED,
            cache=CallCache(enabled=False),
        )
        samples = every_sample(result)
        rewards = [vader_compound([], t) for t in samples["completion"].to_list()]
        out: dict[str, Any] = {
            "reward": float(np.mean(rewards)),
            "reward_se": float(np.std(rewards, ddof=1) / math.sqrt(len(rewards))),
            "samples": len(rewards),
            "answer_chars": float(samples["completion"].str.len_chars().mean()),
        }
        if model_dir is not None:
            policy = client.load()
            first = samples.unique("prompt_id", keep="first", maintain_order=True)
            prompts, texts = first["prompt"].to_list(), first["completion"].to_list()
            kl = self._logps(policy, prompts, texts) - self._logps(self.base, prompts, texts)
            out["kl"], out["kl_se"] = float(kl.mean()), float(kl.std(ddof=1) / math.sqrt(kl.size))
            if self.pair_base is not None:
                margin = self._pair_logps(policy) - self.pair_base
                out["heldout_accuracy"] = float((margin > 0).mean())
                out["heldout_pairs"] = int(margin.size)
            del policy
        client.unload()
        gc.collect()
        out["eval_seconds"] = time.perf_counter() - start
        out["eval_cpu_seconds"] = time.process_time() - cpu
        out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out, rewards


# --- figures ------------------------------------------------------------------------------


def mean_se(values: list[float]) -> tuple[float, float | None]:
    arr = np.asarray(values, dtype=float)
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else None
    return float(arr.mean()), se


def paired_se(run: dict[str, Any], a: str, b: str) -> float | None:
    """SE of mean reward(a) - reward(b) over the held-out samples, paired by sample."""
    left, right = run[a].get("per_sample"), run[b].get("per_sample")
    if left is None or right is None or len(left) != len(right) or len(left) < 2:
        return None
    d = np.asarray(left) - np.asarray(right)
    return float(d.std(ddof=1) / math.sqrt(d.size))


def summarize(runs: dict[int, dict[str, Any]], conditions: list[str]) -> dict[str, Any]:
    """Per condition: mean and SE over seeds of reward, KL and held-out accuracy; the gap
    clean - noisy and each curation's recovered share (curated - noisy) / (clean - noisy).

    With several seeds, the SEs come from the spread of the per-seed differences, and the
    recovered share's SE from the delta method with the covariance of the two differences
    over seeds (they share the noisy run, so they move together). With one seed, the SE of a
    difference comes from the held-out samples, paired by prompt and sample seed."""
    seeds = sorted(runs)
    table: dict[str, Any] = {}
    for c in conditions:
        row: dict[str, Any] = {}
        for key in ("reward", "kl", "heldout_accuracy"):
            values = [runs[s][c][key] for s in seeds if key in runs[s].get(c, {})]
            if values:
                row[key], row[f"{key}_se"] = mean_se(values)
        table[c] = row
    out: dict[str, Any] = {"seeds": seeds, "conditions": table}
    if "clean" not in table or "noisy" not in table:
        return out
    gaps = np.array([runs[s]["clean"]["reward"] - runs[s]["noisy"]["reward"] for s in seeds])
    gap, gap_se = mean_se(list(gaps))
    if gap_se is None:
        gap_se = paired_se(runs[seeds[0]], "clean", "noisy")
    out["gap"], out["gap_se"] = gap, gap_se
    recovered: dict[str, Any] = {}
    for c in conditions:
        if c in ("clean", "noisy"):
            continue
        wins = np.array([runs[s][c]["reward"] - runs[s]["noisy"]["reward"] for s in seeds])
        win, win_se = mean_se(list(wins))
        if win_se is None:
            win_se = paired_se(runs[seeds[0]], c, "noisy")
        share = win / gap if gap else None
        share_se = None
        if share is not None and win_se is not None and gap_se:
            cov = float(np.cov(wins, gaps)[0, 1]) / len(seeds) if len(seeds) > 1 else 0.0
            var = (win_se**2 + share**2 * gap_se**2 - 2 * share * cov) / gap**2
            share_se = math.sqrt(max(var, 0.0))
        recovered[c] = {"win": win, "win_se": win_se, "recovered": share, "recovered_se": share_se}
    out["recovered"] = recovered
    return out
