"""Step 3 of the gated pipeline: pick the best of the trained models from the trainings' outputs.

    python -m pipeline.evaluate --models '["linear","forest","gbr"]' --scores '[0.45,0.44,0.45]'

--models and --scores are the trainings' outputs as the flow passes a matrix work's outputs: two JSON
lists in the matrix's order. The best is the highest score (a tie goes to the name that sorts last).
On success its termination message is its outputs, a JSON object: {"model": "gbr", "score": 0.45}.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pipeline.layout import add_termination_log_argument, write_termination_message


def best_of(models: list[Any], scores: list[Any]) -> tuple[str, float]:
    """The model with the highest score and its score, from the trainings' outputs (two lists, in the
    same order); a model whose score is not a number (its training reported none) is passed over."""
    if not models or len(models) != len(scores):
        raise ValueError(f"--models and --scores must be lists of the same length, got {models} and {scores}")
    ranked = [
        (float(score), str(model))
        for model, score in zip(models, scores, strict=True)
        if isinstance(score, int | float) and not isinstance(score, bool)
    ]
    if not ranked:
        raise ValueError(f"no numeric score among {scores}")
    score, model = max(ranked)
    return model, score


def chosen_model(models: list[Any], scores: list[Any]) -> str:
    """The name of the model with the highest score (see best_of)."""
    return best_of(models, scores)[0]


def json_list(text: str) -> list[Any]:
    """An argument that is a JSON list, as the flow passes a matrix work's outputs."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"not a JSON list: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=json_list, help="the trained models, a JSON list")
    parser.add_argument("--scores", required=True, type=json_list, help="their scores, a JSON list")
    add_termination_log_argument(parser)
    args = parser.parse_args(argv)
    try:
        model, score = best_of(args.models, args.scores)
    except ValueError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        write_termination_message(f"evaluate: {error}", args.termination_log)
        return 1
    ranking = ", ".join(f"{name}={value}" for name, value in zip(args.models, args.scores, strict=True))
    print(f"evaluate: best model {model} (score {score:.4f}) of {ranking}", flush=True)
    outputs = {"model": model, "score": score}
    write_termination_message(json.dumps(outputs, separators=(",", ":")), args.termination_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
