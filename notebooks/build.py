"""Write the walkthrough notebooks (nbformat 4, no outputs) from the cell texts below.

    python notebooks/build.py          # (re)write notebooks/*.ipynb
    python notebooks/build.py --check  # exit 1 when a notebook differs from what this writes

The .ipynb files are generated: edit the cells here, run this, commit both. Cell ids are
fixed (notebook stem + index) so a rebuild of unchanged cells is byte-identical.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(text: str) -> Cell:
    return ("code", textwrap.dedent(text).strip("\n"))


# ---- 01: cleaning a real data set --------------------------------------------------------

CLEAN: list[Cell] = [
    md(
        """
        # Cleaning a real preference data set

        [PandaLM](https://github.com/WeOpenML/PandaLM)'s human test set (Apache-2.0): 999
        records, each an instruction, two model responses and the votes of **three human
        annotators** (0 = tie, 1 = first response better, 2 = second), plus the verdicts of two
        LLM judges (GPT-3.5 and PandaLM-7B) in companion files.

        The cleaning flow, one library function per step (the CLI commands `prefdata import`,
        `agree`, `consensus`, `audit`, `filter` and `report` call the same functions):

        1. **import**: votes -> an annotations table (one row per vote) and a pairs table;
        2. **agreement**: how much the annotators agree (Krippendorff's alpha, Fleiss' and
           Cohen's kappa, with bootstrap intervals);
        3. **consensus**: Dawid-Skene, which weighs each annotator by their estimated reliability;
        4. **audit**: rule checks, duplicates, low consensus, dissenting votes, judge vs humans;
        5. **filter**: keep the pairs we trust, with a reason for every dropped row;
        6. **report**: a self-contained HTML QA report, a JSON summary and a dataset card.

        Data come from `$PREFDATA_SHARED_DATA` (the repository's shared data folder), else they
        are downloaded once from the pinned public source (`_data.py`). Outputs go to
        `$NOTEBOOK_OUT`, else to a temporary folder.
        """
    ),
    code(
        """
        import json
        import re

        import polars as pl
        from _data import data_file, output_dir
        from IPython.display import HTML, display

        OUT = output_dir("01-clean")
        TESTSET = data_file("pandalm_testset/testset-v1.json")
        JUDGE_FILES = [
            data_file("pandalm_testset/gpt-3.5-turbo-testset-v1.json"),
            data_file("pandalm_testset/pandalm-7b-testset-v1.json"),
        ]
        pl.Config.set_fmt_str_lengths(50)
        pl.Config.set_tbl_rows(12)
        print("outputs in", OUT)
        """
    ),
    md(
        """
        ## 1. Import

        `import_pandalm` turns every vote into a row of the **annotations** table. Labels are
        `a` / `b` / `tie` on *canonical* sides (a fixed, content-hashed order of the two
        responses), never "first shown": the `order` column records what the annotator saw.
        Records that show the same prompt and the same two responses are one item (PandaLM has
        136 such repeats); their votes are pooled.

        A **pair** is made where the pooled human votes have a strict plurality for one side;
        its `confidence` is P(a majority of annotators prefers chosen) under a uniform prior
        (3-0: 0.94, 2-1: 0.69). Tie majorities make no pair. Nothing is dropped silently: rows
        that could not become data are in `rejected` with a reason.
        """
    ),
    code(
        """
        from prefdata.io.importers.pandalm import import_pandalm

        imported = import_pandalm(TESTSET, judges=JUDGE_FILES)
        pairs = imported.tables["pairs"]
        annotations = imported.tables["annotations"]
        humans = annotations.filter(pl.col("annotator_kind") == "human")
        shown = {k: v for k, v in imported.report.items() if k != "source_file"}
        print(json.dumps(shown, indent=1))
        imported.rejected.group_by("reason").len().sort("len", descending=True)
        """
    ),
    code(
        """
        # Who voted, and how often a judge's reply could not be read (an `error` row, never a
        # guessed label).
        annotations.group_by("annotator", "annotator_kind").agg(
            pl.len().alias("votes"),
            pl.col("error").is_not_null().sum().alias("unreadable"),
            (pl.col("label") == "tie").sum().alias("ties"),
        ).sort("annotator")
        """
    ),
    md(
        """
        ## 2. Agreement

        Agreement is measured per source record (`item_column="record_id"`: three votes each),
        as PandaLM reports it (its README: pairwise Cohen's kappa 0.85-0.88). Percent agreement
        counts agreement that chance alone would give; kappa and alpha correct for it. The
        intervals are bootstrap 95% intervals over records.

        PandaLM was filtered to high-agreement items (2.5K -> 1K), so expect high values: raw
        crowd data is usually far lower.
        """
    ),
    code(
        """
        from prefdata.quality.agreement import agreement

        result = agreement(humans, item_column="record_id", bootstrap=1000, seed=0)
        per_record, agree = result.tables["per_item"], result.report


        def stat_row(name, stat):
            low, high = stat["ci"] if stat["ci"] else (None, None)
            return {"statistic": name, "value": stat["value"], "ci_low": low, "ci_high": high}


        pl.DataFrame(
            [
                stat_row("percent agreement", agree["percent_agreement"]),
                stat_row("Fleiss' kappa", agree["fleiss_kappa"]),
                stat_row("Krippendorff's alpha (nominal)", agree["krippendorff_alpha"]["nominal"]),
                *(
                    stat_row("Cohen's kappa " + " / ".join(c["annotators"]), c)
                    for c in agree["cohen_kappa"]
                ),
            ]
        )
        """
    ),
    code(
        """
        unanimous = per_record.filter(pl.col("agreement") == 1.0).height
        print(f"{unanimous} of {per_record.height} records are unanimous")
        per_record.group_by("agreement").len().sort("agreement")
        """
    ),
    md(
        """
        ## 3. Consensus

        A majority vote treats every annotator alike. Dawid-Skene (EM over one confusion
        matrix per annotator) estimates how reliable each annotator is and weighs their votes
        accordingly; its posterior is the probability that each label is the true one.
        `pairs_from_consensus` orients every pair by that posterior (swapping chosen and
        rejected where the consensus disagrees with the import) and sets aside ties.
        """
    ),
    code(
        """
        from prefdata.quality.consensus import consensus, pairs_from_consensus

        DS = "dawid-skene"
        posteriors, ds = consensus(humans, method=DS)
        consensus_pairs, set_aside, oriented = pairs_from_consensus(pairs, posteriors, method=DS)
        print("iterations:", ds["iterations"], "converged:", ds["converged"])
        print("class priors:", {k: round(v, 3) for k, v in ds["class_priors"].items()})
        print("orientation:", oriented)
        pl.DataFrame(
            [
                {"annotator": name, "votes": a["votes"], "estimated accuracy": a["accuracy"]}
                for name, a in ds["annotators"].items()
            ]
        )
        """
    ),
    code(
        """
        # The vote-count confidence of the import beside the Dawid-Skene posterior: with three
        # reliable annotators a 2-1 split still leaves the consensus fairly sure.
        votes_pattern = pl.col("provenance").str.json_path_match("$.votes").alias("votes")
        pairs.select("pair_id", votes_pattern, pl.col("confidence").alias("vote_confidence")).join(
            consensus_pairs.select("pair_id", pl.col("confidence").alias("ds_posterior")),
            on="pair_id",
        ).group_by("votes").agg(
            pl.len().alias("pairs"),
            pl.col("vote_confidence").mean(),
            pl.col("ds_posterior").mean(),
        ).sort("pairs", descending=True)
        """
    ),
    md(
        """
        ## 4. Audit

        Every signal that applies to what we have: rule checks (truncation, length ratio,
        refusals), exact and near duplicates (MinHash), and, because there are votes, low
        consensus, annotator disagreement (a vote the reliability-weighted panel says is
        probably wrong) and judge vs human. Scores follow one convention: 0-1, lower is worse.
        The audit also draws a reproducible random sample for a human to review.

        The embedding-based mislabel model (`model="embeddings"`) is left out here: it embeds
        every text, which takes minutes on a laptop CPU.
        """
    ),
    code(
        """
        from prefdata.quality.audit import audit

        audited = audit(consensus_pairs, annotations=annotations, sample=30, seed=0)
        issues, review_sample, audit_report = (
            audited.tables["issues"], audited.tables["sample"], audited.report
        )
        print("pairs flagged by at least one signal:", audit_report["pairs_flagged"])
        pl.DataFrame(
            {
                "issue": list(audit_report["issue_counts"]),
                "flagged": list(audit_report["issue_counts"].values()),
            }
        ).sort("flagged", descending=True)
        """
    ),
    code(
        """
        # The worst rows of a few signals, with the reason the audit gives.
        (
            issues.filter(pl.col("is_issue"))
            .filter(pl.col("issue").is_in(["conflicting_duplicate", "truncated_response"]))
            .sort("score")
            .group_by("issue", maintain_order=True)
            .head(3)
            .select("issue", "item_id", "score", "reason")
        )
        """
    ),
    md(
        """
        ## 5. Filter

        A policy, not a truth: here we keep pairs whose consensus posterior is at least 0.99
        and drop exact duplicates, duplicates whose label conflicts with their twin, and pairs
        with a truncated response. Near-duplicates are kept on purpose: PandaLM asks the same
        long instruction of several model pairs, so those rows are different comparisons, not
        copies. Every input row ends in exactly one of `kept` and `rejected`; `rejected` says
        why (`reason`: the first rule it fails; `reasons`: all of them).
        """
    ),
    code(
        """
        from prefdata.io.tables import write_table
        from prefdata.quality.filter import filter_pairs

        FILTER = {
            "min_confidence": 0.99,
            "drop_issues": ["duplicate_pair", "conflicting_duplicate", "truncated_response"],
        }
        filtered = filter_pairs(consensus_pairs, issues=issues, **FILTER)
        kept, rejected = filtered.tables["pairs"], filtered.rejected
        write_table(kept, OUT / "pairs.clean.parquet")
        write_table(rejected, OUT / "pairs.rejected.parquet")
        write_table(issues, OUT / "issues.parquet")
        print(f"kept {filtered.report['kept']} of {filtered.report['rows_in']} pairs")
        rejected.group_by("reason").len().sort("len", descending=True)
        """
    ),
    md(
        """
        ## 6. Report

        `build_report` writes `report.html` (one self-contained page: inline SVG plots, a
        searchable table of every flagged pair, no network), `report.json` (every figure on
        the page), `README.md` (a Hugging Face dataset card) and the data beside it
        (`data/<split>.parquet`). With `before=` it shows the data before and after filtering
        side by side. Token lengths use the embedded SmolLM2 tokenizer.
        """
    ),
    code(
        """
        from prefdata.report import build_report

        REPORT = OUT / "report"
        settings = OUT / "filter.json"  # the settings file `prefdata filter` writes
        settings.write_text(json.dumps(filtered.documents["filter"]))
        build_report(
            kept,
            out=REPORT,
            before=consensus_pairs,
            annotations=annotations,
            issues=issues,
            rejected=rejected,
            sample=review_sample,
            title="PandaLM human test set: before and after cleaning",
            filter_settings=settings,
            bootstrap=500,
        )
        report = json.loads((REPORT / "report.json").read_text())
        print("written:", sorted(p.name for p in REPORT.iterdir()))
        pl.DataFrame(report["comparison"]).select("metric", "before", "after", "delta")
        """
    ),
    code(
        """
        # A few of the report's figures, taken from the page itself (each plot is an inline
        # SVG labelled with its title; the page draws a figure for the data before filtering
        # and again for the data after). Open report.html in a browser for all of them.
        page = (REPORT / "report.html").read_text(encoding="utf-8")
        svgs: dict[str, list[str]] = {}
        for m in re.finditer(r'<svg\\b[^>]*aria-label="([^"]*)"[^>]*>.*?</svg>', page, re.S):
            svgs.setdefault(m.group(1), []).append(m.group(0))
        for title in (
            "Cohen&#x27;s kappa, every pair",
            "flagged rows by issue",
            "dropped rows by first reason",
        ):
            sides = ["before", "after"] if len(svgs[title]) == 2 else ["after"]
            display(
                HTML(
                    '<div style="display:flex;gap:2em;align-items:flex-start">'
                    + "".join(
                        f"<figure>{svg}<figcaption>{side}</figcaption></figure>"
                        for side, svg in zip(sides, svgs[title], strict=True)
                    )
                    + "</div>"
                )
            )
        """
    ),
    md(
        """
        ## Summary

        The figures below are what the test suite checks against its own computation on the
        same file (`tests/test_notebooks.py`).
        """
    ),
    code(
        """
        summary = {
            "records": imported.report["records"],
            "records_unanimous": unanimous,
            "pairs": pairs.height,
            "fleiss_kappa": agree["fleiss_kappa"]["value"],
            "krippendorff_alpha_nominal": agree["krippendorff_alpha"]["nominal"]["value"],
            "consensus_pairs": consensus_pairs.height,
            "kept": kept.height,
            "rejected": rejected.height,
            "report_rows_after": report["compare"]["overview"]["rows"],
        }
        print("NOTEBOOK_SUMMARY " + json.dumps(summary))
        """
    ),
]

# ---- 02: judging -------------------------------------------------------------------------

JUDGE: list[Cell] = [
    md(
        """
        # Judging pairs with an LLM: a local model and Claude

        The pairwise judge shows every pair **in both orders** (A/B, then B/A): LLM judges
        prefer a position, and one order would write that bias into the labels. Two orders
        expose it (*position consistency*) and, averaged, cancel it.

        Pairs: a few items of the HHH alignment set (Askell et al. 2021, via prometheus-eval,
        Apache-2.0): a prompt, a better and a worse response, labelled by the authors (gold).

        Judges:
        - **local** `smollm2`: the embedded SmolLM2-135M-Instruct, no generation at all: one
          forward pass reads the next-token probabilities of "A" and "B";
        - **Claude** `anthropic:claude-sonnet-4-6`, with forced tool use for a structured
          verdict. Those cells need `ANTHROPIC_API_KEY`; without it they say so and skip.

        Every call goes through an on-disk cache: re-running the notebook never pays twice.
        """
    ),
    code(
        """
        import json
        import os

        import polars as pl
        from _data import data_file, output_dir

        from prefdata.io.tables import write_table
        from prefdata.llm.cache import CallCache

        OUT = output_dir("02-judge")
        HHH = data_file("hhh_alignment/hhh_alignment_eval.json")
        CACHE = CallCache(OUT / "calls.sqlite")
        pl.Config.set_fmt_str_lengths(60)
        print("outputs in", OUT)
        """
    ),
    md(
        """
        ## The pairs

        221 pairs in four categories (harmless, helpful, honest, other). The 135M model takes
        about a second per call on a CPU, so we take the two shortest pairs of each category:
        8 pairs, 16 calls per judge.
        """
    ),
    code(
        """
        from prefdata.io.importers.hhh import import_hhh

        hhh = import_hhh(HHH).tables["pairs"]
        prompt_chars = hhh["prompt"].list.eval(pl.element().struct.field("content").str.len_chars())
        hhh = hhh.with_columns(
            pl.col("provenance").str.json_path_match("$.category").alias("category"),
            (
                prompt_chars.list.sum()
                + pl.col("chosen").str.len_chars()
                + pl.col("rejected").str.len_chars()
            ).alias("chars"),
        )
        PER_CATEGORY = 2
        sample = (
            hhh.sort("chars", "pair_id")
            .group_by("category", maintain_order=True)
            .head(PER_CATEGORY)
            .sort("category", "chars")
        )
        write_table(sample, OUT / "pairs.parquet")
        sample.select(
            "category",
            pl.col("prompt").list.last().struct.field("content").alias("prompt"),
            "chosen",
            "rejected",
        )
        """
    ),
    md(
        """
        ## The local judge, both orders

        Each vote's `p_a` is the probability that canonical side `a` is better, read from
        P("A") and P("B") after the prompt (renormalised over the two letters). The report
        gives, per judge: `position_consistency` (share of pairs whose two orders name the same
        winner), `p_first_wins` (share of decided votes won by the response shown first) and
        `p_longer_wins`.
        """
    ),
    code(
        """
        from prefdata.label.judge import judge
        from prefdata.label.runner import JudgeOptions
        from prefdata.quality.pooling import pool_orders

        LOCAL = "local:smollm2"
        OPTIONS = JudgeOptions(rubric="helpfulness")
        judged = judge(sample, judges=[LOCAL], cache=CACHE, options=OPTIONS)
        votes, judge_report = judged.tables["annotations"], judged.report
        write_table(votes, OUT / "votes.local.parquet")
        local = judge_report["judges"][LOCAL]
        print(judge_report["cache"])
        SHOWN = ("votes", "errors", "position_consistency", "p_first_wins", "p_longer_wins")
        {k: local[k] for k in SHOWN}
        """
    ),
    code(
        """
        # P(first shown) per vote: the order, not the content, decides for this small model.
        votes.select(
            "item_id",
            "order",
            "label",
            pl.when(pl.col("order") == "ab")
            .then(pl.col("p_a"))
            .otherwise(1 - pl.col("p_a"))
            .round(3)
            .alias("P(first shown better)"),
        )
        """
    ),
    md(
        """
        ## Pooling the orders, and accuracy against the gold labels

        `pool_orders` gives one verdict per pair and judge. A judge whose two orders name
        different winners followed the position, not the content: its pooled verdict is
        `tie`, so it scores nothing on accuracy. The order-averaged probability `p_a` can
        still carry a little signal, so we also score its sign against the gold label.
        """
    ),
    code(
        """
        from prefdata.quality.judge_eval import calibration, gold_from_pairs

        verdicts = pool_orders(votes)
        gold = gold_from_pairs(sample).select("item_id", pl.col("label").alias("gold"))
        scored = verdicts.join(gold, on="item_id").with_columns(
            (pl.col("p_a") > 0.5).alias("says_a"),
            (pl.col("gold") == "a").alias("gold_a"),
        )
        decided = scored.filter(pl.col("p_a") != 0.5)
        order_averaged_accuracy = (decided["says_a"] == decided["gold_a"]).mean()
        cal = calibration(verdicts, sample)["judges"][LOCAL]
        print("pooled verdicts:", dict(verdicts["label"].value_counts().iter_rows()))
        print("accuracy of the pooled verdicts (ties count as wrong):", cal["accuracy_with_ties"])
        print(
            f"accuracy of the order-averaged probability: {order_averaged_accuracy:.3f} "
            f"on {decided.height} pairs"
        )
        scored.select("item_id", pl.col("p_a").round(4), "consistent", "label", "gold")
        """
    ),
    md(
        """
        ## Claude: the cost first

        `estimate` (what `prefdata judge ... --estimate` prints) counts calls and tokens
        (about 4 characters per token) and prices them online, with the Message Batches
        discount, and with prompt caching of the rubric where it is long enough to be cached.
        No client is created and nothing is spent.
        """
    ),
    code(
        """
        from prefdata.label.estimate import estimate

        CLAUDE = "anthropic:claude-sonnet-4-6"
        plan = estimate(sample, judges=[CLAUDE, LOCAL], options=OPTIONS)
        plan_all = estimate(hhh, judges=[CLAUDE], options=OPTIONS)
        print(json.dumps(plan, indent=1))
        print(
            f"all {plan_all['pairs']} pairs: {plan_all['calls_per_judge']} calls, "
            f"${plan_all['judges'][CLAUDE]['usd_online']:.2f} online, "
            f"${plan_all['judges'][CLAUDE]['usd_batch']:.2f} with the batch API"
        )
        """
    ),
    md(
        """
        ## Claude as the judge

        Runs only when `ANTHROPIC_API_KEY` is set (the key is read from the environment and
        never written to the cache or the outputs). `JudgeOptions(batch=True)` uses the Message
        Batches API: half the price, resumable.
        """
    ),
    code(
        """
        HAS_KEY = bool(os.environ.get("ANTHROPIC_API_KEY"))
        claude = None
        if not HAS_KEY:
            print(
                "ANTHROPIC_API_KEY is not set: skipping the Claude judge "
                "(set it and re-run these cells to compare the two judges)."
            )
        else:
            claude_run = judge(sample, judges=[CLAUDE], cache=CACHE, options=OPTIONS)
            claude_votes, claude_report = claude_run.tables["annotations"], claude_run.report
            write_table(claude_votes, OUT / "votes.claude.parquet")
            claude = claude_report["judges"][CLAUDE]
            print(claude_report["cache"])
            COSTS = ("input_tokens", "output_tokens", "cost_usd")
            print({k: claude[k] for k in (*SHOWN, *COSTS)})
        """
    ),
    code(
        """
        if HAS_KEY:
            both = pl.concat([verdicts, pool_orders(claude_votes)], how="diagonal_relaxed")
            compared = calibration(both, sample)["judges"]
            print(pl.DataFrame([{"judge": name, **figures} for name, figures in compared.items()]))
        else:
            print("skipped (no ANTHROPIC_API_KEY)")
        """
    ),
    md("## Summary (checked by `tests/test_notebooks.py`)"),
    code(
        """
        CACHE.close()
        summary = {
            "pairs": sample.height,
            "local_votes": local["votes"],
            "local_errors": local["errors"],
            "local_position_consistency": local["position_consistency"],
            "local_p_first_wins": local["p_first_wins"],
            "local_accuracy_order_averaged": order_averaged_accuracy,
            "local_pairs_decided": decided.height,
            "estimate_calls": plan["calls_per_judge"],
            "estimate_input_tokens": plan["approx_input_tokens_per_judge"],
            "estimate_output_tokens": plan["approx_output_tokens_per_judge"],
            "estimate_usd_online_no_cache": plan["judges"][CLAUDE]["usd_online_no_cache"],
            "estimate_usd_batch": plan["judges"][CLAUDE]["usd_batch"],
            "claude_ran": claude is not None,
            "claude_votes": claude["votes"] if claude else None,
            "claude_errors": claude["errors"] if claude else None,
        }
        print("NOTEBOOK_SUMMARY " + json.dumps(summary))
        """
    ),
]

# ---- 03: training ------------------------------------------------------------------------

TRAIN: list[Cell] = [
    md(
        """
        # Training on preference data: DPO, KTO, GRPO

        `prefdata.train.train(method, recipe=..., data=..., model=..., out=...)` wraps TRL 1.x
        and PEFT: recipes are TRL's own config fields (`train/*.yaml`), precision and gradient
        checkpointing are picked from the hardware, LoRA is the default, and the reference model
        is the base with the adapter switched off. `prefdata.train.evaluate` then measures
        held-out preference accuracy.

        By default this notebook trains a **tiny randomly initialised model** with SmolLM2's
        architecture and tokenizer for a few steps: it runs the real code paths in seconds on a
        CPU, but it learns nothing (held-out accuracy stays near chance). Set
        `NOTEBOOK_MODEL=smollm2` to train LoRA adapters on the embedded SmolLM2-135M-Instruct
        instead (minutes per method on a CPU; set `NOTEBOOK_STEPS` for more steps).
        """
    ),
    code(
        """
        import json
        import math
        import os
        from pathlib import Path

        import polars as pl
        from _data import data_file, output_dir

        from prefdata.io.tables import write_table
        from prefdata.train import evaluate, train
        from prefdata.train.recipe import builtin_recipe
        from prefdata.models.tiny import tiny_model

        OUT = output_dir("03-train")
        RECIPES = builtin_recipe("dpo").parent  # the recipes inside the package
        MODEL_CHOICE = os.environ.get("NOTEBOOK_MODEL", "tiny")
        if MODEL_CHOICE == "smollm2":
            MODEL = "smollm2"
            STEPS = int(os.environ.get("NOTEBOOK_STEPS", "20"))
            LR, MAX_LENGTH, LORA = "5.0e-5", 512, ["peft.r=16", "peft.lora_alpha=32"]
            COMPLETION_TOKENS = 128  # GRPO: room for a short worked answer
        else:
            MODEL = tiny_model(layers=2, hidden=32, heads=4)
            STEPS = int(os.environ.get("NOTEBOOK_STEPS", "3"))
            # A high learning rate so a few steps visibly move the tiny model.
            LR, MAX_LENGTH, LORA = "1.0e-3", 128, ["peft.r=4", "peft.lora_alpha=8"]
            COMPLETION_TOKENS = 16
        # Recipe overrides for short runs: no warm-up (the recipes warm up over the first 10%
        # of the steps, which would make step 1 of 3 a step at learning rate 0), a log line
        # every step, no checkpoints.
        SHORT = [
            f"learning_rate={LR}",
            *LORA,
            "warmup_steps=0",
            "gradient_accumulation_steps=1",
            "logging_steps=1",
            "save_strategy='no'",
        ]
        # DPO and KTO: one batch of 4 pairs / rows per step.
        COMMON = [
            f"max_steps={STEPS}",
            "per_device_train_batch_size=4",
            f"max_length={MAX_LENGTH}",
            *SHORT,
        ]
        print("model:", MODEL, "| steps:", STEPS, "| outputs in", OUT)


        def chars(table, *columns):
            \"\"\"Prompt + given columns, in characters: short rows keep CPU steps cheap.\"\"\"
            total = (
                table["prompt"].list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()
            )
            for column in columns:
                total = total + table[column].str.len_chars()
            return total


        def split_by_prompt(table, held_out_digits="01234"):
            \"\"\"A `split` column from the prompt id (a content hash): every pair of one
            prompt lands on the same side, so held-out prompts were never trained on.\"\"\"
            return table.with_columns(
                pl.when(pl.col("prompt_id").str.slice(0, 1).is_in(list(held_out_digits)))
                .then(pl.lit("test"))
                .otherwise(pl.lit("train"))
                .alias("split")
            )
        """
    ),
    md(
        """
        ## DPO on PandaLM pairs, weighted by confidence

        Pairs from the PandaLM human test set; each pair's `confidence` (from the three
        annotators' votes) weights its loss, so a 2-1 split counts less than a unanimous
        vote. The data carry a `split` column: `train` reads the `train` rows (recipe key
        `prefdata.split: auto`), and the `test` rows are kept for evaluation.
        """
    ),
    code(
        """
        from prefdata.io.importers.pandalm import import_pandalm

        pandalm = import_pandalm(data_file("pandalm_testset/testset-v1.json")).tables["pairs"]
        pandalm = split_by_prompt(
            pandalm.filter(chars(pandalm, "chosen", "rejected") < 400).sort("pair_id")
        )
        dpo_data = pl.concat(
            [
                pandalm.filter(pl.col("split") == "train").head(24),
                pandalm.filter(pl.col("split") == "test").head(16),
            ]
        )
        write_table(dpo_data, OUT / "dpo-data.parquet")
        dpo_data.group_by("split").agg(pl.len().alias("pairs"), pl.col("confidence").mean())
        """
    ),
    code(
        """
        dpo = train(
            "dpo",
            recipe=RECIPES / "dpo.yaml",
            overrides=COMMON,
            data=dpo_data,
            model=MODEL,
            out=OUT / "dpo",
        )
        shown = ("steps", "pairs", "finetune", "reference", "precision", "weight_min", "weight_max")
        print({k: dpo[k] for k in shown})
        print("losses:", [round(x, 4) for x in dpo["losses"]])
        # Step 1: the policy equals the reference, so the sigmoid DPO loss is exactly log 2.
        print("log 2 =", round(math.log(2), 4))
        """
    ),
    md(
        """
        ## KTO on GSM8K solutions marked correct / incorrect

        KTO needs only a thumbs-up or thumbs-down per completion. OpenAI's GSM8K release
        includes four model solutions per question with a programmatic `is_correct`: each
        becomes a KTO row. prefdata balances the weights of the two sides to TRL's advice
        (desirable_weight * n_desirable / (undesirable_weight * n_undesirable) in [1, 4/3]).
        """
    ),
    code(
        """
        from prefdata.io.importers.math import import_gsm8k_solutions

        solutions = import_gsm8k_solutions(data_file("gsm8k/example_model_solutions.jsonl"))
        kto_rows = solutions.tables["kto"]
        kto_rows = split_by_prompt(kto_rows.filter(chars(kto_rows, "completion") < 300))
        kto_data = kto_rows.filter(pl.col("split") == "train").head(32)
        write_table(kto_data, OUT / "kto-data.parquet")
        kto = train(
            "kto",
            recipe=RECIPES / "kto.yaml",
            overrides=COMMON,
            data=kto_data,
            model=MODEL,
            out=OUT / "kto",
        )
        shown = ("steps", "rows", "desirable", "undesirable")
        shown += ("desirable_weight", "undesirable_weight", "within_trl_advice")
        print({k: kto[k] for k in shown})
        print("losses:", [round(x, 4) for x in kto["losses"]])
        """
    ),
    md(
        """
        ## Held-out accuracy

        `evaluate` scores each held-out pair by the trained model's implicit reward,
        beta * (log pi(y|x) - log pi_ref(y|x)), and counts how often chosen scores above
        rejected. DPO is evaluated on the held-out PandaLM prompts; KTO on correct-vs-incorrect
        GSM8K pairs of questions it never saw.
        """
    ),
    code(
        """
        dpo_heldout = dpo_data.filter(pl.col("split") == "test")
        dpo_evaluated = evaluate(OUT / "dpo", dpo_heldout)
        dpo_eval = dpo_evaluated.report
        write_table(dpo_evaluated.tables["per_pair"], OUT / "dpo-heldout-scores.parquet")

        # Correct-vs-incorrect pairs of held-out questions (the same prompt ids as the KTO
        # rows, so the split is the same one).
        gsm_pairs = split_by_prompt(solutions.tables["pairs"])
        gsm_pairs = gsm_pairs.filter(pl.col("split") == "test")
        kto_heldout = (
            gsm_pairs.filter(chars(gsm_pairs, "chosen", "rejected") < 600).sort("pair_id").head(16)
        )
        write_table(kto_heldout, OUT / "kto-heldout.parquet")
        kto_evaluated = evaluate(OUT / "kto", kto_heldout)
        kto_eval = kto_evaluated.report
        write_table(kto_evaluated.tables["per_pair"], OUT / "kto-heldout-scores.parquet")
        EVAL_SHOWN = ("pairs", "accuracy", "ties", "margin_mean")
        pl.DataFrame(
            [
                {"method": "dpo", **{k: dpo_eval[k] for k in EVAL_SHOWN}},
                {"method": "kto", **{k: kto_eval[k] for k in EVAL_SHOWN}},
            ]
        )
        """
    ),
    md(
        """
        ## GRPO on GSM8K prompts, rewarded by checking the answer

        GRPO needs no preference labels at all: for each prompt the policy samples a group of
        completions (`num_generations`), a reward function scores each one (here: is the final
        number the GSM8K answer?), and each completion is pushed up or down by how it compares
        with its group's mean. The prompts table from `import_gsm8k` carries the checkable
        `answer` column the accuracy reward reads.

        The recipe is the built-in `grpo` recipe (`prefdata recipes show grpo`) (accuracy reward, a reward-hacking monitor) with the
        run shortened to two steps of one group each: 8 completions per prompt, 16 new tokens
        each (128 with SmolLM2). A tiny random model gets every answer wrong, so every group
        has equal rewards and no completion carries a learning signal (`frac_reward_zero_std`
        = 1, loss 0): the cells show the mechanics. A real run wants a capable model, room to
        reason (the recipe's `max_completion_length: 256`) and many more steps.
        """
    ),
    code(
        """
        from prefdata.io.importers.math import import_gsm8k

        gsm_prompts = import_gsm8k(data_file("gsm8k/test.jsonl")).tables["prompts"]
        grpo_data = gsm_prompts.filter(chars(gsm_prompts) < 200).sort("prompt_id").head(8)
        write_table(grpo_data, OUT / "grpo-data.parquet")
        grpo = train(
            "grpo",
            recipe=RECIPES / "grpo.yaml",
            overrides=[
                "max_steps=2",
                "num_generations=8",
                "per_device_train_batch_size=8",  # completions per step: one group
                f"max_completion_length={COMPLETION_TOKENS}",
                *SHORT,
            ],
            data=grpo_data,
            model=MODEL,
            out=OUT / "grpo",
        )
        print({k: grpo[k] for k in ("steps", "prompts", "rewards")})
        print("losses:", grpo["losses"])
        pl.DataFrame(
            [
                {"metric": k, **v}
                for k, v in grpo["reward_stats"].items()
                if k.startswith(("reward", "frac_", "advantages/frac", "completions/"))
            ]
        )
        """
    ),
    md("## Summary (checked by `tests/test_notebooks.py`)"),
    code(
        """
        summary = {
            "model": str(MODEL),
            "steps": STEPS,
            "dpo_steps": dpo["steps"],
            "dpo_pairs": dpo["pairs"],
            "dpo_losses": dpo["losses"],
            "dpo_eval_pairs": dpo_eval["pairs"],
            "dpo_eval_accuracy": dpo_eval["accuracy"],
            "kto_steps": kto["steps"],
            "kto_losses": kto["losses"],
            "kto_rows": kto["rows"],
            "kto_desirable": kto["desirable"],
            "kto_undesirable": kto["undesirable"],
            "kto_rows_after_tokenization": kto["rows_after_tokenization"],
            "kto_eval_pairs": kto_eval["pairs"],
            "kto_eval_accuracy": kto_eval["accuracy"],
            "grpo_steps": grpo["steps"],
            "grpo_prompts": grpo["prompts"],
            "grpo_losses": grpo["losses"],
            "grpo_reward_mean": grpo["reward_stats"]["reward"]["mean"],
            "grpo_frac_reward_zero_std": grpo["reward_stats"]["frac_reward_zero_std"]["mean"],
        }
        print("NOTEBOOK_SUMMARY " + json.dumps(summary))
        """
    ),
]

# ---- 04: from pandas and from datasets ----------------------------------------------------

FRAMES: list[Cell] = [
    md(
        """
        # The same flow from pandas and from Hugging Face `datasets`

        Every prefdata function takes the tables you already hold: a pandas DataFrame, a
        `datasets.Dataset`, a polars DataFrame or LazyFrame, a pyarrow Table, or a path. Chat
        columns (lists of `{role, content}`) come through intact, and the results are polars
        tables, which `.to_pandas()` and `datasets.Dataset.from_polars` take back.

        This notebook runs one cleaning flow twice on PandaLM's human test set (999 records,
        three annotators each), once with pandas frames and once with `datasets.Dataset`s:
        load the votes, measure agreement, take the Dawid-Skene consensus, audit, filter,
        export for TRL and train a few LoRA DPO steps. The two runs give the same numbers and
        the same files.

        Data come from `$PREFDATA_SHARED_DATA`, else the pinned public source (`_data.py`);
        outputs go to `$NOTEBOOK_OUT`, else a temporary folder.
        """
    ),
    code(
        """
        import json
        import math

        import pandas as pd
        import polars as pl
        from _data import data_file, output_dir
        from datasets import Dataset

        OUT = output_dir("04-frames")
        TESTSET = data_file("pandalm_testset/testset-v1.json")
        JUDGE_FILES = [
            data_file("pandalm_testset/gpt-3.5-turbo-testset-v1.json"),
            data_file("pandalm_testset/pandalm-7b-testset-v1.json"),
        ]
        FLOWS = ("pandas", "datasets")
        print("outputs in", OUT)
        """
    ),
    md(
        """
        ## 1. Load the votes

        `pd.read_json` reads the test set as pandas does. Six responses in it are JSON `true`
        rather than text; pandas keeps them as Python objects beside the strings, prefdata
        keeps each value as it is, and the importer sets those items aside with the reason
        (their votes stay in the annotations).
        """
    ),
    code(
        """
        from prefdata.io.importers.pandalm import import_pandalm

        records = pd.read_json(TESTSET)
        print(records.dtypes.to_dict())
        imported = import_pandalm(records, judges=JUDGE_FILES)
        counts = ("records", "rows", "items")
        print({k: v for k, v in imported.report.items() if k.startswith(counts)})
        imported.rejected.select("row", "reason").head(3)
        """
    ),
    code(
        """
        # The votes and pairs as a pandas user holds them, and as datasets holds them: the
        # chat prompts are numpy arrays of dicts in pandas and a List({role, content})
        # feature in datasets.
        held = {
            "pandas": {
                "votes": imported.tables["annotations"].to_pandas(),
                "pairs": imported.tables["pairs"].to_pandas(),
            }
        }
        held["datasets"] = {
            name: Dataset.from_pandas(frame, preserve_index=False)
            for name, frame in held["pandas"].items()
        }
        print("pandas prompt:", held["pandas"]["pairs"]["prompt"][0])
        print("datasets prompt feature:", held["datasets"]["pairs"].features["prompt"])
        human = {
            "pandas": held["pandas"]["votes"].query("annotator_kind == 'human'"),
            "datasets": held["datasets"]["votes"].filter(lambda r: r["annotator_kind"] == "human"),
        }
        {flow: len(votes) for flow, votes in human.items()}
        """
    ),
    md(
        """
        ## 2. Agreement

        Per source record, three votes each (`item_column="record_id"`), with bootstrap
        intervals.
        """
    ),
    code(
        """
        from prefdata.quality.agreement import agreement

        agree = {
            flow: agreement(human[flow], item_column="record_id", bootstrap=200, seed=0).report
            for flow in FLOWS
        }
        pd.DataFrame(
            {
                flow: {
                    "percent agreement": a["percent_agreement"]["value"],
                    "Fleiss' kappa": a["fleiss_kappa"]["value"],
                    "Krippendorff's alpha": a["krippendorff_alpha"]["nominal"]["value"],
                }
                for flow, a in agree.items()
            }
        )
        """
    ),
    md(
        """
        ## 3. Consensus

        Dawid-Skene weighs each annotator by their estimated reliability; its posterior
        becomes each pair's `confidence`. The result is polars; `.to_pandas()` hands it back.
        """
    ),
    code(
        """
        from prefdata.quality.consensus import consensus_pairs

        consensus = {
            flow: consensus_pairs(human[flow], pairs=held[flow]["pairs"]).tables["pairs"]
            for flow in FLOWS
        }
        print({flow: pairs.height for flow, pairs in consensus.items()})
        consensus["pandas"].to_pandas()[["pair_id", "confidence", "n_votes"]].head()
        """
    ),
    md(
        """
        ## 4. Audit and 5. filter

        The audit runs the rule checks, duplicates and the vote-based signals; the filter
        keeps pairs whose consensus posterior is at least 0.99 and drops exact duplicates and
        truncated responses, each dropped pair with its reason. The consensus pairs go back
        in as pandas and as `datasets`, as a user would pass them on.
        """
    ),
    code(
        """
        from prefdata.quality.audit import audit
        from prefdata.quality.filter import filter_pairs

        as_held = {"pandas": lambda t: t.to_pandas(), "datasets": Dataset.from_polars}
        issues, kept, rejected = {}, {}, {}
        for flow in FLOWS:
            again = as_held[flow](consensus[flow])
            audited = audit(again, annotations=held[flow]["votes"], sample=0)
            issues[flow], audit_report = audited.tables["issues"], audited.report
            filtered = filter_pairs(
                again,
                issues=as_held[flow](issues[flow]),
                min_confidence=0.99,
                drop_issues=["duplicate_pair", "truncated_response"],
            )
            kept[flow], rejected[flow] = filtered.tables["pairs"], filtered.rejected
            print(flow, "flagged:", audit_report["pairs_flagged"], "kept:", kept[flow].height)
        rejected["pandas"].group_by("reason").len().sort("len", descending=True)
        """
    ),
    md(
        """
        ## 6. Export

        A TRL conversational file per flow (`export_files` takes the table as it is held), and
        the same rows as a `datasets.Dataset` for TRL directly.
        """
    ),
    code(
        """
        from prefdata.io.exporting import export_files
        from prefdata.io.tables import write_table

        for flow in FLOWS:
            folder = OUT / flow
            write_table(kept[flow], folder / "pairs.clean.parquet")
            write_table(issues[flow], folder / "issues.parquet")
            export_files(
                as_held[flow](kept[flow]), folder / "trl.jsonl", formats=["trl-conversational"]
            )
        for_trl = Dataset.from_polars(kept["pandas"])
        print(for_trl)
        files = [(OUT / flow / "trl.jsonl").read_bytes() for flow in FLOWS]
        print("the same file from both flows:", files[0] == files[1])
        """
    ),
    md(
        """
        ## 7. Train briefly

        A few LoRA DPO steps on the short kept pairs, once from the pandas frame and once from
        the `datasets.Dataset` (`train(..., data=...)` takes either). As in notebook 03 the
        model is a tiny random one with SmolLM2's architecture and tokenizer: it runs the real
        code paths in seconds and learns nothing. The first step's policy equals its
        reference, so its loss is log 2.
        """
    ),
    code(
        """
        from prefdata.models.tiny import tiny_model
        from prefdata.train import train

        MODEL = tiny_model(layers=2, hidden=32, heads=4)
        content = pl.element().struct.field("content").str.len_chars()
        chars = (
            pl.col("prompt").list.eval(content).list.sum()
            + pl.col("chosen").str.len_chars()
            + pl.col("rejected").str.len_chars()
        )
        short = kept["pandas"].filter(chars < 400).sort("pair_id").head(12)
        SHORT_DPO = [
            "max_steps=3",
            "per_device_train_batch_size=4",
            "gradient_accumulation_steps=1",
            "max_length=128",
            "learning_rate=1.0e-3",
            "warmup_steps=0",
            "logging_steps=1",
            "save_strategy='no'",
            "peft.r=4",
            "peft.lora_alpha=8",
        ]
        dpo = {
            flow: train(
                "dpo",
                data=as_held[flow](short),
                model=MODEL,
                out=OUT / flow / "dpo",
                overrides=SHORT_DPO,
            )
            for flow in FLOWS
        }
        losses = {flow: [round(x, 4) for x in run["losses"]] for flow, run in dpo.items()}
        losses | {"log 2": round(math.log(2), 4)}
        """
    ),
    md("## Summary (checked by `tests/test_notebooks.py`)"),
    code(
        """
        summary = {
            "records": len(records),
            "human_votes": {flow: len(votes) for flow, votes in human.items()},
            "fleiss_kappa": {flow: a["fleiss_kappa"]["value"] for flow, a in agree.items()},
            "consensus_pairs": {flow: t.height for flow, t in consensus.items()},
            "kept": {flow: t.height for flow, t in kept.items()},
            "rejected": {flow: t.height for flow, t in rejected.items()},
            "dpo_pairs": {flow: run["pairs"] for flow, run in dpo.items()},
            "dpo_losses": {flow: run["losses"] for flow, run in dpo.items()},
        }
        print("NOTEBOOK_SUMMARY " + json.dumps(summary))
        """
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01-clean-a-dataset": CLEAN,
    "02-judge": JUDGE,
    "03-train": TRAIN,
    "04-pandas-and-datasets": FRAMES,
}


def notebook(stem: str, cells: list[Cell]) -> NotebookNode:
    """One notebook, with ids fixed so a rebuild of the same cells writes the same bytes."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(cells):
        cell = (
            nbformat.v4.new_markdown_cell(source)
            if kind == "markdown"
            else nbformat.v4.new_code_cell(source)
        )
        cell.id = f"{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def render(stem: str) -> str:
    return nbformat.writes(notebook(stem, NOTEBOOKS[stem])) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for stem in NOTEBOOKS:
        path = HERE / f"{stem}.ipynb"
        text = render(stem)
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print("wrote", path)
    if stale:
        print("out of date (run python notebooks/build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
