"""`prefdata judge / judge-eval / critique`: LLM labellers. Parse, call, write. No logic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prefdata.cli_common import console, friendly_errors, pick, print_report

Judges = Annotated[
    list[str],
    typer.Option("--judge", help="backend:model, e.g. anthropic:claude-sonnet-4-6 (repeat)"),
]


def _client_options(
    judges: list[str],
    base_url: str | None,
    max_concurrency: int | None,
    device: str | None,
    batch_size: int | None,
) -> dict[str, dict[str, Any]]:
    local = {k: v for k, v in {"device": device, "batch_size": batch_size}.items() if v}
    remote = {k: v for k, v in {"max_concurrency": max_concurrency}.items() if v}
    out: dict[str, dict[str, Any]] = {"local": local, "anthropic": dict(remote)}
    out["openai"] = {**remote, **({"base_url": base_url} if base_url else {})}
    if base_url:
        out["anthropic"]["base_url"] = base_url
    return out


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
        selection: Annotated[str, typer.Option(help="all | best-vs-worst")] = "all",
        max_pairs_per_prompt: Annotated[int | None, typer.Option()] = None,
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
        table, one verdict per pair and judge beside it (OUT-stem.verdicts).

        Example: prefdata judge pairs.parquet -o votes.parquet --judge local:smollm2
        --judge anthropic:claude-sonnet-4-6 --rubric helpfulness --estimate
        """
        from prefdata.io.tables import read_table, sibling, write_table
        from prefdata.label import judge as jm
        from prefdata.llm.cache import CallCache

        table = read_table(data)
        order_list = {"both": ("ab", "ba"), "ab": ("ab",), "ba": ("ba",)}[
            pick("orders", orders, ("both", "ab", "ba"))
        ]
        common: dict[str, Any] = {
            "rubric": rubric,
            "orders": order_list,
            "selection": pick("selection", selection, ("all", "best-vs-worst")),
            "max_pairs_per_prompt": max_pairs_per_prompt,
        }
        if estimate:
            print_report(jm.estimate(table, judges=judge, **common))
            return
        call_cache = CallCache(cache, enabled=not no_cache)
        try:
            votes, report = jm.judge(
                table,
                judges=judge,
                cache=call_cache,
                client_options=_client_options(
                    judge, base_url, max_concurrency, device, batch_size
                ),
                batch_state=sibling(out, "batches").with_suffix(".json") if batch else None,
                gold=read_table(gold) if gold else None,
                min_human_agreement=min_human_agreement,
                progress=True,
                **common,
            )
        finally:
            call_cache.close()
        write_table(votes, out)
        verdicts = write_table(jm.pool_orders(votes), sibling(out, "verdicts"))
        print_report({**report, "written": {"votes": str(out), "verdicts": str(verdicts)}})
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
        from prefdata.label.panel import calibration, panel

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
                judge_model=judge,
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
