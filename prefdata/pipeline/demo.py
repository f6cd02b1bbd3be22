"""The offline demo: the bundled pipeline `examples/pipelines/demo.yaml`, run by the pipeline
runner (the demo is an ordinary pipeline run; `prefdata run` on that file does the same).

40 prompts written for prefdata (`examples/demo_prompts.jsonl`) -> 4 sampled answers each from
the embedded SmolLM2-135M -> its log-probability judge on pairs, in both orders -> agreement
and consensus -> audit -> filter -> held-out split -> TRL and KTO exports -> HTML QA report ->
a short LoRA DPO run -> held-out preference accuracy. No network, no GPU. `quick` (the file's
`quick` profile) does every stage on 6 prompts for CI.

    result, figures = run_demo("demo-out")
    print("\\n".join(summary_lines(figures)))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from prefdata.pipeline import RunResult, load_pipeline, run_pipeline

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_PIPELINE = EXAMPLES / "pipelines" / "demo.yaml"


def demo_sets(judges: Sequence[str] = (), base_url: str | None = None) -> list[str]:
    """The `--set` changes that swap the demo's judge (e.g. anthropic:claude-sonnet-4-6, or
    openai:MODEL with the server's `base_url`)."""
    sets = []
    if judges:
        sets.append(f"judge.judges={json.dumps(list(judges))}")
    if base_url:
        sets.append(f"judge.base_url={json.dumps(base_url)}")
    return sets


def run_demo(
    out_dir: str | Path,
    *,
    quick: bool = False,
    judges: Sequence[str] = (),
    base_url: str | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """Run the demo pipeline into `out_dir`; returns the run and its headline figures
    (`demo_figures`). A second call with the same arguments skips every stage."""
    pipeline = load_pipeline(
        DEMO_PIPELINE, sets=demo_sets(judges, base_url), profile="quick" if quick else None
    )
    result = run_pipeline(pipeline, out_dir, progress=progress, console=console)
    return result, demo_figures(result)


def demo_figures(result: RunResult) -> dict[str, Any]:
    """The figures worth printing, from the stages' reports: prompts, answers, pairs judged,
    each judge's position consistency and P(first shown wins), agreement between the votes,
    pairs after consensus / filter, train and held-out pairs, export rows, held-out accuracy
    after training next to the base model's, the report's path and the run's seconds."""
    r = {s.name: s.report for s in result.stages}
    judges = {
        name: {
            "position_consistency": stats.get("position_consistency"),
            "p_first_wins": stats.get("p_first_wins"),
        }
        for name, stats in (r["judge"].get("judges") or {}).items()
    }
    heldout = r["eval"]
    return {
        "prompts": r["generate"].get("prompts"),
        "answers": r["generate"].get("candidates"),
        "pairs_judged": r["judge"].get("pairs"),
        "judges": judges,
        "percent_agreement": (r["agree"].get("percent_agreement") or {}).get("value"),
        "pairs_after_consensus": r["consensus"]["pairs"]["pairs_out"],
        "pairs_after_filter": r["filter"].get("kept"),
        "train_pairs": r["split"]["train_pairs"],
        "heldout_pairs": r["split"]["heldout_pairs"],
        "exports": {k: v.get("rows") for k, v in r["export"].items()},
        "heldout_accuracy": heldout.get("accuracy"),
        "heldout_policy_logp_accuracy": heldout.get("policy_logp_accuracy"),
        "heldout_base_logp_accuracy": heldout.get("reference_logp_accuracy"),
        "report": str(Path(result.stage("report").outputs["report"]) / "report.html"),
        "seconds": round(sum(s.seconds for s in result.stages), 1),
        "stages_run": len(result.ran),
    }


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """What `prefdata demo` prints: the figures, where the report is, how to swap the judge."""
    lines = [
        f"prefdata demo: {figures['prompts']} prompts -> {figures['answers']} answers -> "
        f"{figures['pairs_judged']} pairs judged in both orders",
    ]
    for name, j in figures["judges"].items():
        lines.append(
            f"  {name}: position consistency {_num(j['position_consistency'])}, "
            f"P(first shown wins) {_num(j['p_first_wins'])}"
        )
    lines += [
        f"  agreement between the votes on a pair: {_num(figures['percent_agreement'])}",
        f"  pairs: {figures['pairs_after_consensus']} after consensus, "
        f"{figures['pairs_after_filter']} after filtering; {figures['train_pairs']} train, "
        f"{figures['heldout_pairs']} held out",
        f"  held-out preference accuracy after LoRA DPO: {_num(figures['heldout_accuracy'])} "
        f"(log-prob ordering: base model {_num(figures['heldout_base_logp_accuracy'])}, "
        f"trained {_num(figures['heldout_policy_logp_accuracy'])})",
        f"The QA report is in {figures['report']}",
        "",
        "A position consistency near 0 means the judge picks whichever answer it sees first: "
        "its labels are noise, and the run says so. Swap in a real judge (answers are reused):",
        "  Claude:  export ANTHROPIC_API_KEY=...; "
        "prefdata demo -o demo-out --judge anthropic:claude-sonnet-4-6",
        "  vLLM or any OpenAI-compatible server:  "
        "prefdata demo -o demo-out --judge openai:MODEL --base-url http://HOST:8000/v1",
        f"  or edit the pipeline itself: {DEMO_PIPELINE} (prefdata run FILE -o DIR)",
    ]
    return lines
