"""`prefdata judge / judge-eval / critique`: LLM labellers. Parse, call, write. No logic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefdata.cli.common import console, friendly_errors, pick, print_report

Judges = Annotated[
    list[str],
    typer.Option("--judge", help="backend:model, e.g. anthropic:claude-sonnet-4-6 (repeat)"),
]


def register(app: typer.Typer) -> None:
    """Add the labelling commands to the main app."""

    @app.command("judge")
    @friendly_errors
    def judge_cmd(
        data: Annotated[Path, typer.Argument(help="pairs, or candidates (pairs are selected)")],
        out: Annotated[Path, typer.Option("-o", "--out", help="annotations (one row per vote)")],
        judge: Judges,
        orders: Annotated[str, typer.Option(help="both | ab | ba")] = "both",
        rubric: Annotated[str, typer.Option(help="rubric name or template file")] = "helpfulness",
        selection: Annotated[
            str,
            typer.Option(
                help="candidates: all | best-vs-worst (by `score`; without one the judge "
                "rates each candidate first) | tournament (budgeted knockout)"
            ),
        ] = "all",
        max_pairs_per_prompt: Annotated[
            int | None,
            typer.Option(help="all: a seeded random K pairs per prompt; tournament: the budget"),
        ] = None,
        pointwise_rubric: Annotated[
            str | None,
            typer.Option(help="template for rating candidates alone (default: from --rubric)"),
        ] = None,
        seed: Annotated[int, typer.Option(help="pair subsets and tournament draws")] = 0,
        gold: Annotated[Path | None, typer.Option(help="human labels for calibration")] = None,
        min_human_agreement: Annotated[
            float | None, typer.Option(help="stop a judge below this accuracy on --gold")
        ] = None,
        batch: Annotated[bool, typer.Option(help="anthropic: Message Batches API")] = False,
        estimate: Annotated[bool, typer.Option(help="print calls and cost, spend nothing")] = False,
        base_url: Annotated[str | None, typer.Option()] = None,
        max_concurrency: Annotated[int | None, typer.Option()] = None,
        device: Annotated[str | None, typer.Option(help="local judge device")] = None,
        batch_size: Annotated[int | None, typer.Option(help="local judge batch size")] = None,
        cache: Annotated[Path | None, typer.Option(help="call cache file")] = None,
        no_cache: Annotated[bool, typer.Option("--no-cache")] = False,
    ) -> None:
        """Pairwise LLM judge in both orders (position-debiased); votes in the annotations
        table, one verdict per pair and judge beside it (OUT-stem.verdicts). From candidates:
        the judged pairs (OUT-stem.pairs); best-vs-worst without a score column writes the
        judge's scores (OUT-stem.scores); tournament writes each prompt's best and worst
        (OUT-stem.standings).

        Example: prefdata judge pairs.parquet -o votes.parquet --judge local:smollm2
        --judge anthropic:claude-sonnet-4-6 --rubric helpfulness --estimate

        Example: prefdata judge candidates.parquet -o votes.parquet --judge local:smollm2
        --selection tournament --max-pairs-per-prompt 6
        """
        from prefdata.io.tables import read_table, sibling, write_table
        from prefdata.label.judge import estimate as estimate_cost
        from prefdata.label.judge import judge as run_judge
        from prefdata.label.runner import ORDER_CHOICES, JudgeOptions
        from prefdata.label.selection import SELECTIONS
        from prefdata.llm.cache import CallCache

        table = read_table(data)
        options = JudgeOptions(
            rubric=rubric,
            orders=pick("orders", orders, tuple(ORDER_CHOICES)),
            base_url=base_url,
            max_concurrency=max_concurrency,
            device=device,
            batch_size=batch_size,
            batch_state=sibling(out, "batches").with_suffix(".json") if batch else None,
        )
        chosen_selection = pick("selection", selection, SELECTIONS)
        common: dict[str, Any] = {
            "judges": judge,
            "options": options,
            "selection": chosen_selection,
            "max_pairs_per_prompt": max_pairs_per_prompt,
            "pointwise_rubric": pointwise_rubric,
            "seed": seed,
        }
        if estimate:
            print_report(estimate_cost(table, **common))
            return
        call_cache = CallCache(cache, enabled=not no_cache)
        try:
            result = run_judge(
                table,
                cache=call_cache,
                gold=read_table(gold) if gold else None,
                min_human_agreement=min_human_agreement,
                progress=True,
                **common,
            )
        finally:
            call_cache.close()
        written = {"votes": str(write_table(result.tables["annotations"], out))}
        for name, frame in result.tables.items():
            if name != "annotations":
                written[name] = str(write_table(frame, sibling(out, name)))
        print_report({**result.report, "written": written})
        console.print(call_cache.stats.line(), highlight=False)

    @app.command("judge-eval")
    @friendly_errors
    def judge_eval_cmd(
        votes: Annotated[Path, typer.Argument(help="judge votes (annotations)")],
        gold: Annotated[Path, typer.Option(help="human labels: annotations or pairs")],
        min_human_agreement: Annotated[float | None, typer.Option()] = None,
        item_column: Annotated[str, typer.Option()] = "item_id",
    ) -> None:
        """Each judge's accuracy (with and without ties) and kappa against the humans, and the
        kappa between judges.

        Example: prefdata judge-eval votes.parquet --gold humans.parquet
        """
        from prefdata.io.tables import read_table
        from prefdata.quality.judge_eval import calibration
        from prefdata.quality.pooling import panel

        table = read_table(votes)
        report = calibration(
            table,
            read_table(gold),
            min_human_agreement=min_human_agreement,
            item_column=item_column,
        )
        report["panel"] = panel(table)[1]
        print_report(report)

    @app.command("critique")
    @friendly_errors
    def critique_cmd(
        data: Annotated[Path, typer.Argument(help="candidates (prompt, completion)")],
        out: Annotated[Path, typer.Option("-o", "--out", help="pairs (revision preferred)")],
        model: Annotated[
            str, typer.Option(help="backend:model that critiques and revises")
        ] = "local:smollm2",
        judge: Annotated[str | None, typer.Option(help="backend:model that compares")] = None,
        constitution: Annotated[Path | None, typer.Option(help="TOML of principles")] = None,
        principles_per_prompt: Annotated[int, typer.Option()] = 2,
        min_confidence: Annotated[float, typer.Option()] = 0.6,
        max_new_tokens: Annotated[int, typer.Option()] = 256,
        seed: Annotated[int, typer.Option()] = 0,
        cache: Annotated[Path | None, typer.Option(help="call cache file")] = None,
    ) -> None:
        """Constitutional critique and revision; a pair is kept only when the comparison in
        both orders prefers the revision with enough confidence.

        Example: prefdata critique candidates.parquet -o revised.parquet --principles-per-prompt 2
        """
        from prefdata.io.tables import read_table, sibling, write_table
        from prefdata.label.constitution import critique
        from prefdata.llm.cache import CallCache

        call_cache = CallCache(cache)
        try:
            pairs, votes, report = critique(
                read_table(data),
                model=model,
                judge=judge,
                cache=call_cache,
                constitution=constitution,
                principles_per_prompt=principles_per_prompt,
                min_confidence=min_confidence,
                max_new_tokens=max_new_tokens,
                seed=seed,
            )
        finally:
            call_cache.close()
        write_table(pairs, out)
        write_table(votes, sibling(out, "votes"))
        print_report({**report, "written": str(out)})
