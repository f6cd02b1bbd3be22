"""`prefdata train METHOD ...` and `prefdata train eval ...`. Parse, call, print. No logic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefdata.cli.common import friendly_errors, pick, print_report
from prefdata.errors import PrefdataError

METHODS = ("dpo", "kto", "reward", "orpo", "grpo", "rloo", "sft", "rlhf")


def register(app: typer.Typer) -> None:
    """Add the training command to the main app."""

    @app.command("train")
    @friendly_errors
    def train_cmd(
        method: Annotated[
            str,
            typer.Argument(
                help="dpo | kto | reward | orpo (experimental) | grpo | rloo | sft | rlhf | eval"
            ),
        ],
        overrides: Annotated[
            list[str] | None, typer.Argument(help="TRL / recipe overrides, key=value")
        ] = None,
        recipe: Annotated[Path | None, typer.Option(help="train/METHOD.yaml")] = None,
        data: Annotated[
            Path | None,
            typer.Option(
                help="pairs (kto: or a kto table); sft: demonstrations; grpo / rloo: prompts "
                "(or pairs); rlhf: pairs or OpenAssistant trees; eval: held-out pairs"
            ),
        ] = None,
        model: Annotated[
            str, typer.Option(help="smollm2, a local folder; eval: the trained OUT")
        ] = "smollm2",
        out: Annotated[Path | None, typer.Option("-o", "--out", help="output folder")] = None,
        eval_data: Annotated[
            Path | None,
            typer.Option(
                help="held-out data during training (grpo / rloo: the monitor's prompts; "
                "rlhf: the reward model's held-out pairs)"
            ),
        ] = None,
        launcher: Annotated[str, typer.Option(help="local | accelerate")] = "local",
        accelerate_config: Annotated[
            Path | None, typer.Option(help="train/accelerate/*.yaml")
        ] = None,
        reference: Annotated[Path | None, typer.Option(help="eval: reference model")] = None,
        batch_size: Annotated[int, typer.Option(help="eval: pairs per batch")] = 4,
        allow_small_groups: Annotated[
            bool,
            typer.Option(
                "--allow-small-groups",
                help="grpo / rloo / rlhf's RL stage: accept num_generations below 8 (grpo) "
                "or 4 (rloo) (noisy advantages)",
            ),
        ] = False,
    ) -> None:
        """Train on TRL + PEFT (LoRA by default; precision from the hardware), or evaluate
        held-out preference accuracy with METHOD=eval.

        Example: prefdata train dpo --recipe train/dpo.yaml --data clean.parquet -o runs/dpo
        beta=0.2   (evaluate: prefdata train eval --model runs/dpo --data heldout.parquet).
        rlhf runs SFT, a reward model and RLOO / GRPO in turn (stage overrides: sft.KEY=V,
        reward.KEY=V, rl.KEY=V), skipping the stages that are up to date.
        """
        if method == "eval":
            from prefdata.train import evaluate

            if data is None:
                raise PrefdataError("train eval needs --data (held-out pairs) and --model OUT")
            print_report(evaluate(model, data, reference=reference, batch_size=batch_size, out=out))
            return
        pick("method", method, METHODS)
        if recipe is None or data is None or out is None:
            raise PrefdataError(f"train {method} needs --recipe, --data and -o/--out")
        overrides = list(overrides or ())
        if allow_small_groups:
            prefix = "rl." if method == "rlhf" else ""
            overrides.append(f"{prefix}prefdata.allow_small_groups=true")
        if pick("launcher", launcher, ("local", "accelerate")) == "accelerate":
            from prefdata.train import launch

            command = launch.accelerate_command(
                method,
                recipe=recipe,
                data=data,
                out=out,
                model=model,
                overrides=overrides,
                accelerate_config=accelerate_config,
                eval_data=eval_data,
            )
            raise typer.Exit(launch.launch(command))
        from prefdata.train import train

        report = train(
            method,
            recipe=recipe,
            data=data,
            model=model,
            out=out,
            overrides=overrides,
            eval_data=eval_data,
        )
        print_report({k: v for k, v in report.items() if k not in ("trl_config", "recipe")})
