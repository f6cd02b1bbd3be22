"""`python -m prefdata.train METHOD --recipe R --data D --model M -o OUT [key=value ...]`
and `python -m prefdata.train eval --model OUT --data HELDOUT`.

The entry point `accelerate launch` starts in each process (see prefdata.train.launch); the
`prefdata train` command of the CLI calls the same functions. Prints the report as JSON (the
main process only, when distributed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from prefdata.errors import PrefdataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefdata.train")
    parser.add_argument("method", help="dpo, kto, reward, orpo, grpo, rloo, sft, rlhf, or eval")
    parser.add_argument("--recipe", help="recipe YAML (default: the built-in recipe)")
    parser.add_argument("--data", required=True, help="the method's data (prefdata.train.train)")
    parser.add_argument("--model", default="smollm2", help="'smollm2' or a model folder")
    parser.add_argument("-o", "--out", help="output folder")
    parser.add_argument("--eval-data", help="pairs for evaluation during training")
    parser.add_argument("--merge", action="store_true", help="also write OUT/merged")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides")
    # Overrides may follow the options (as in the docs): intermixed parsing allows that.
    args = parser.parse_intermixed_args(argv)
    try:
        if args.method == "eval":
            from prefdata.train.evaluation import evaluate

            report = evaluate(args.model, args.data).report
        else:
            if not args.out:
                parser.error("training needs -o/--out")
            from prefdata.train import train

            report = train(
                args.method,
                recipe=args.recipe,
                data=args.data,
                model=args.model,
                out=args.out,
                overrides=args.overrides,
                eval_data=args.eval_data,
                merge=args.merge,
            )
    except PrefdataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
