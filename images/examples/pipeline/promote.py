"""Step 4 of the gated pipeline: promote a trained model, the one an approver chose or else the best.

    python -m pipeline.promote --data /data --best gbr [--chosen forest]

--best is the model evaluate found best; --chosen the one the approver asked for (empty, or left
out: the best). The model must have been trained under --data. It writes DATA/promoted.json (which
model, whether the approver chose it, its metrics) and, on success, the termination message
{"model": "forest"}, the output the serve step reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from pipeline.layout import (
    Layout,
    add_data_argument,
    add_termination_log_argument,
    write_json,
    write_termination_message,
)


def promote(layout: Layout, best: str, chosen: str = "") -> dict[str, Any]:
    """Record the promoted model in the data directory; the record. ValueError for a model that was
    not trained there."""
    model = chosen or best
    # Compared with what is on disk, never joined into a path: the name is whatever the approver typed.
    trained = layout.trained_models()
    if model not in trained:
        listed = ", ".join(trained) or "none"
        raise ValueError(f"no trained model {model!r} under {layout.models} (trained: {listed})")
    metrics = json.loads(layout.metrics_file(model).read_text())
    record: dict[str, Any] = {
        "model": model,
        "chosen_by_approver": bool(chosen),
        "best": best,
        "metrics": metrics,
        "promoted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_json(layout.promoted, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.promote", description=__doc__.splitlines()[0])
    add_data_argument(parser)
    add_termination_log_argument(parser)
    parser.add_argument("--best", required=True, help="the model evaluate found best")
    parser.add_argument("--chosen", default="", help="the model the approver chose (empty: the best)")
    args = parser.parse_args(argv)
    try:
        record = promote(Layout(args.data), args.best, args.chosen)
    except ValueError as error:
        print(f"promote: {error}", file=sys.stderr)
        write_termination_message(f"promote: {error}", args.termination_log)
        return 1
    model = record["model"]
    why = "chosen by the approver" if record["chosen_by_approver"] else "the best"
    if record["chosen_by_approver"] and model != args.best:
        why += f", over the best, {args.best}"
    print(
        f"promote: {model} ({why}, r2={record['metrics']['r2']:.4f}) -> {Layout(args.data).promoted}",
        flush=True,
    )
    write_termination_message(json.dumps({"model": model}, separators=(",", ":")), args.termination_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
