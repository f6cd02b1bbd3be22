"""`prefdata train METHOD ...`, `prefdata train eval ...`, `prefdata recipes list|show|copy` and
`prefdata export-model`. Parse, call, print. No logic.

One `prefdata train` command per method of prefdata.train.METHODS; its `--help` lists the
method's own recipe keys (read when the help is shown, so startup stays fast).
"""

# No `from __future__ import annotations`: the train commands are built in a loop, and their
# annotations (help texts per method) must be evaluated where the method is in scope.
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from prefdata.cli.common import console, friendly_errors, pick, print_report
from prefdata.errors import PrefdataError

# Per-method one-liners for `prefdata train --help` (the method's module docstring says more).
_SUMMARIES = {
    "dpo": "DPO and its loss variants on pairs, per-pair confidence weights",
    "kto": "KTO on thumbs up / down rows, or on pairs",
    "reward": "a reward model on pairs (margin from confidence)",
    "orpo": "ORPO on pairs (experimental in TRL)",
    "grpo": "GRPO: on-policy RL from prompts with verifiable / judged / custom rewards",
    "rloo": "RLOO: on-policy RL, leave-one-out baseline, the same rewards as GRPO",
    "sft": "supervised fine-tuning on demonstrations",
    "rlhf": "classic RLHF: SFT -> reward model -> RLOO / GRPO, resumable stage by stage",
}
_DATA_HELP = {
    "kto": "a kto table or pairs",
    "sft": "demonstrations: pairs, OpenAssistant trees, messages, prompt + completion, text",
    "grpo": "prompts (or pairs: their prompts)",
    "rloo": "prompts (or pairs: their prompts)",
    "rlhf": "pairs or OpenAssistant trees",
}


class _MethodCommand(TyperCommand):
    """A method's train command whose help ends with the method's recipe keys."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from rich.markup import escape

        from prefdata.train import recipe_keys

        lines = []
        for key, value, comment in recipe_keys(str(self.name)):
            shown = json.dumps(value) if value is None or isinstance(value, bool) else value
            # Escaped: rich would read `[sigmoid, sft]` as markup and drop it.
            lines.append(escape(f"  {key}={shown}" + (f"  ({comment})" if comment else "")))
        self.epilog = (
            "Recipe keys (the built-in recipe's values; override with key=value, or edit a copy "
            f"from `prefdata recipes copy {self.name} my.yaml`):\n\n" + "\n".join(lines)
        )
        super().format_help(ctx, formatter)


class _TrainGroup(TyperGroup):
    """`prefdata train`: an unknown method is one line listing the methods (exit code 2)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        from prefdata.train import METHODS

        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            console.print(
                f"[bold red]error:[/] unknown training method '{args[0]}'; choose one of "
                f"{', '.join(METHODS)} (or eval)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)


def _train_command(method: str) -> Any:
    def command(
        overrides: Annotated[
            list[str] | None, typer.Argument(help="recipe overrides, key=value (see below)")
        ] = None,
        data: Annotated[Path | None, typer.Option(help=_DATA_HELP.get(method, "pairs"))] = None,
        out: Annotated[Path | None, typer.Option("-o", "--out", help="output folder")] = None,
        recipe: Annotated[
            Path | None,
            typer.Option(help=f"a recipe file (default: the built-in {method} recipe)"),
        ] = None,
        model: Annotated[
            str,
            typer.Option(
                help="smollm2, a local model folder, or a prefdata training output to continue"
            ),
        ] = "smollm2",
        eval_data: Annotated[
            Path | None,
            typer.Option(
                help="held-out data during training (grpo / rloo: the monitor's prompts; "
                "rlhf: the reward model's held-out pairs)"
            ),
        ] = None,
        merge: Annotated[
            bool, typer.Option("--merge", help="also write OUT/merged: a full model (e.g. vLLM)")
        ] = False,
        launcher: Annotated[str, typer.Option(help="local | accelerate")] = "local",
        accelerate_config: Annotated[
            Path | None, typer.Option(help="train/accelerate/*.yaml (with --launcher accelerate)")
        ] = None,
        allow_small_groups: Annotated[
            bool,
            typer.Option(
                "--allow-small-groups",
                help="grpo / rloo / rlhf's RL stage: accept num_generations below 8 (grpo) "
                "or 4 (rloo) (noisy advantages)",
            ),
        ] = False,
        allow_degenerate: Annotated[
            bool,
            typer.Option(
                "--allow-degenerate",
                help="dpo / kto / reward: train even when more than prefdata."
                "max_degenerate_share of the pairs are identical, empty or cut at the token "
                "level (they are still left out)",
            ),
        ] = False,
    ) -> None:
        if data is None or out is None:
            raise PrefdataError(f"train {method} needs --data and -o/--out")
        from prefdata.io.tables import check_outputs

        model_folder = Path(model) if Path(model).exists() else None
        check_outputs([], inputs=[data, eval_data, recipe, model_folder], whole_folders=[out])
        extra = list(overrides or ())
        if allow_small_groups:
            prefix = "rl." if method == "rlhf" else ""
            extra.append(f"{prefix}prefdata.allow_small_groups=true")
        if allow_degenerate:
            extra.append("prefdata.max_degenerate_share=1")
        if pick("launcher", launcher, ("local", "accelerate")) == "accelerate":
            from prefdata.train import launch

            command_line = launch.accelerate_command(
                method,
                recipe=recipe,
                data=data,
                out=out,
                model=model,
                overrides=extra,
                accelerate_config=accelerate_config,
                eval_data=eval_data,
                merge=merge,
            )
            raise typer.Exit(launch.launch(command_line))
        from prefdata.train import train

        report = train(
            method,
            recipe=recipe,
            data=data,
            model=model,
            out=out,
            overrides=extra,
            eval_data=eval_data,
            merge=merge,
        )
        print_report({k: v for k, v in report.items() if k not in ("trl_config", "recipe")})

    command.__doc__ = (
        f"Train {_SUMMARIES.get(method, method)} (TRL + PEFT; LoRA by default, precision from "
        f"the hardware).\n\nExample: prefdata train {method} --data DATA -o runs/{method} "
        "learning_rate=1e-5"
    )
    return friendly_errors(command)


def register(app: typer.Typer) -> None:
    """Add `train` (one command per method, and eval), `recipes` and `export-model`."""
    from prefdata.train import METHODS

    train_app = typer.Typer(
        cls=_TrainGroup,
        help="Train on TRL + PEFT (`prefdata train METHOD --help` lists the method's recipe "
        "keys), or evaluate with `prefdata train eval`.",
        no_args_is_help=True,
    )
    for method in METHODS:
        train_app.command(method, cls=_MethodCommand)(_train_command(method))
    from prefdata.cli.derive import add_stage_command
    from prefdata.pipeline.catalog import stage_spec

    add_stage_command(train_app, stage_spec("eval"), name="eval")
    app.add_typer(train_app, name="train")

    recipes_app = typer.Typer(
        help="The built-in training recipes: list, show, copy one to edit.", no_args_is_help=True
    )

    @recipes_app.command("list")
    def recipes_list() -> None:
        """The built-in recipes, one per training method.

        Example: prefdata recipes list
        """
        from prefdata.train.recipe import builtin_recipe

        for method in METHODS:
            print(f"{method:8s} {_SUMMARIES.get(method, '')}  [{builtin_recipe(method)}]")

    @recipes_app.command("show")
    @friendly_errors
    def recipes_show(method: Annotated[str, typer.Argument(help="a training method")]) -> None:
        """Print the built-in recipe of METHOD.

        Example: prefdata recipes show grpo
        """
        from prefdata.train.recipe import builtin_recipe

        print(builtin_recipe(pick("method", method, tuple(METHODS))).read_text(), end="")

    @recipes_app.command("copy")
    @friendly_errors
    def recipes_copy(
        method: Annotated[str, typer.Argument(help="a training method")],
        dest: Annotated[Path, typer.Argument(help="a file, or a folder for METHOD.yaml")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace existing")] = False,
    ) -> None:
        """Copy the built-in recipe of METHOD to DEST to start your own (rlhf: with the stage
        recipes it names), then train with --recipe DEST.

        Example: prefdata recipes copy dpo my-dpo.yaml
        """
        from prefdata.train.recipe import copy_recipe

        for path in copy_recipe(pick("method", method, tuple(METHODS)), dest, overwrite=overwrite):
            console.print(f"wrote {path}", highlight=False)

    app.add_typer(recipes_app, name="recipes")

    @app.command("export-model")
    @friendly_errors
    def export_model_cmd(
        model: Annotated[str, typer.Argument(help="a model folder or training output")],
        out: Annotated[Path, typer.Option("-o", "--out", help="the merged model folder")],
        overwrite: Annotated[bool, typer.Option("--overwrite", help="replace OUT")] = False,
    ) -> None:
        """Write MODEL as a full model folder (a LoRA adapter merged into its base; a reward
        model keeps its value head), for vLLM or any transformers loader.

        Example: prefdata export-model runs/dpo -o runs/dpo-merged
        """
        from prefdata.models.export import export_model

        folder, found = export_model(model, out, overwrite=overwrite)
        print_report({"model": found.describe(), "kind": found.kind, "written": str(folder)})
