"""Iterative rounds: generate from the current policy -> label -> train, again and again.

A pipeline file may say

    rounds: 3                # run the loop three times
    rounds_from: generate    # the loop's first stage (default: the first generate stage)

The stages before `rounds_from` run once; the stages from it to the end run once per round,
round k into `RUN_DIR/round-k/<stage>/`. In round k > 1 every `generate` stage of the loop
samples from round k-1's trained policy (the loop's last `train` stage's model) and every
`train` stage continues from it, so labels always describe the policy being trained (online
iterative DPO, as in Llama 3's post-training or self-rewarding LMs). The judge or labeller
stays what the file says. A round is skipped when nothing it reads changed, like any stage;
the previous policy's weights count as one of its inputs.

After the run, `RUN_DIR/rounds.json` compares the rounds: pairs and label balance, mean
confidence, judge agreement, held-out accuracy, and the mean of a programmatic labeller's
score (the true reward of the policy's own samples, when the labeller is the true reward).
A `report` stage in the loop shows the same table for the rounds so far (its "Rounds"
section), beside its QA report of that round's data.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from prefdata.errors import InputError

POLICY_INPUT = "policy"
"""The input name under which a round's stages record the previous round's policy."""

FILE = "rounds.json"
"""RUN_DIR/rounds.json: every round's figures; RUN_DIR/round-k/rounds.json: rounds 1..k,
written for a report stage in round k (its `rounds` input)."""


def round_name(k: int, name: str) -> str:
    """The stage name (and folder) of loop stage `name` in round k."""
    return f"round-{k}/{name}"


def expand(stages: tuple[Any, ...], rounds: int, start: str | None) -> tuple[Any, ...]:
    """The stages with the loop repeated `rounds` times (StageSpec copies with `round` set,
    names round-k/<name>, references to loop stages pointed at the same round's copy)."""
    if rounds == 1:
        return stages
    names = [s.name for s in stages]
    if start is None:
        start = next((s.name for s in stages if s.kind == "generate"), None)
        if start is None:
            raise InputError("`rounds:` needs a generate stage to start each round from")
    if start not in names:
        raise InputError(f"`rounds_from: {start}` names no stage; stages: {', '.join(names)}")
    first = names.index(start)
    if not any(s.kind == "train" for s in stages[first:]):
        raise InputError("`rounds:` needs a train stage in the loop: each round trains the policy")
    loop = set(names[first:])
    out = list(stages[:first])
    for k in range(1, rounds + 1):
        for spec in stages[first:]:
            inputs = {
                # A reference to an earlier stage (a StageRef; a file is a Path) that names a
                # loop stage points at the same round's copy of it.
                slot: (
                    replace(ref, stage=round_name(k, ref.stage))
                    if getattr(ref, "stage", None) in loop
                    else ref
                )
                for slot, ref in spec.inputs.items()
            }
            out.append(
                replace(
                    spec,
                    index=len(out) + 1,
                    name=round_name(k, spec.name),
                    inputs=inputs,
                    round=k,
                    loop_name=spec.name,
                )
            )
    return tuple(out)


def with_policy(spec: Any, policy: Path | None) -> Any:
    """A loop stage of round k > 1 set to use the previous round's policy: generate samples
    from it (local backend), train continues from it."""
    if policy is None or spec.round < 2:
        return spec
    if spec.kind == "generate":
        return replace(spec, options={**spec.options, "models": [str(policy)], "backend": "local"})
    if spec.kind == "train":
        return replace(spec, options={**spec.options, "model": str(policy)})
    return spec


def with_rounds_table(spec: Any, run_dir: Path, done: list[Any]) -> Any:
    """A report stage in round k, set to compare rounds 1..k: their figures so far are
    written to round-k/rounds.json and given as its `rounds` input (unless the file names
    one). Re-run unchanged, the file is the same, so the report is skipped like any stage."""
    if spec.round < 1 or spec.kind != "report" or "rounds" in spec.inputs:
        return spec
    path = run_dir / round_name(spec.round, FILE)
    write_figures(path, done)
    return replace(spec, inputs={**spec.inputs, "rounds": path})


def write_figures(path: Path, outcomes: list[Any]) -> None:
    """figures(outcomes) as JSON at `path`, written atomically."""
    import json

    from prefdata.io.tables import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(figures(outcomes), indent=1, default=str) + "\n")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def figures(outcomes: list[Any]) -> list[dict[str, Any]]:
    """Per round: what its stages reported that says how the round went."""
    by_round: dict[int, dict[str, Any]] = {}
    for outcome in outcomes:
        head, _, stage = outcome.name.partition("/")
        if not head.startswith("round-") or not stage:
            continue
        k = int(head.removeprefix("round-"))
        row = by_round.setdefault(k, {"round": k})
        report = outcome.report or {}
        if outcome.kind == "rule-label":
            row["true_reward_mean"] = report.get("score_mean")
            row["pairs_labelled"] = report.get("pairs")
        elif outcome.kind == "judge":
            stats = [v for v in report.values() if isinstance(v, dict) and "votes" in v]
            consistency = [
                float(s["position_consistency"])
                for s in stats
                if s.get("position_consistency") is not None
            ]
            row["judge_position_consistency"] = _mean(consistency)
        elif outcome.kind == "agree":
            percent = report.get("percent_agreement") or {}
            row["agreement"] = percent.get("value") if isinstance(percent, dict) else None
        elif outcome.kind == "consensus":
            pairs = report.get("pairs") or {}
            row["pairs_after_consensus"] = pairs.get("pairs_out")
        elif outcome.kind == "filter":
            row["pairs_kept"] = report.get("kept")
        elif outcome.kind == "eval":
            row["heldout_accuracy"] = report.get("accuracy")
        elif outcome.kind == "generate":
            row["candidates"] = report.get("candidates")
            row["generator"] = ", ".join(report.get("models") or [])
        if "pairs" in outcome.outputs and outcome.kind in ("rule-label", "consensus", "filter"):
            row.update(_balance(outcome.outputs["pairs"]))
    return [by_round[k] for k in sorted(by_round)]


def _balance(path: Path) -> dict[str, Any]:
    """Label balance of a pairs table: the share whose chosen side is the longer one, and the
    mean confidence where known."""
    from prefdata.io.tables import read_table

    pairs = read_table(path)
    if not pairs.height or not {"chosen", "rejected"} <= set(pairs.columns):
        return {}
    longer = (pairs["chosen"].str.len_chars() > pairs["rejected"].str.len_chars()).mean()
    out: dict[str, Any] = {"pairs": pairs.height, "chosen_longer_share": longer}
    if "confidence" in pairs.columns and pairs["confidence"].drop_nulls().len():
        out["mean_confidence"] = pairs["confidence"].drop_nulls().mean()
    return out
