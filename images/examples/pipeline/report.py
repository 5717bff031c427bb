"""The gated pipeline's finally step: write a report of the run, however it ended.

    python -m pipeline.report --data /data --run 3 --phase Serving --failed-works '[]' [--model forest]

--phase and --failed-works are how the run's works ended, as the flow tells a finally work
($(run.phase), $(run.failedWorks)); --model is the promoted model, empty when nothing was promoted
(the run failed or was stopped before, or the gate was rejected). It writes DATA/reports/run-N.json
and prints a one-line summary, which is also its termination message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from pipeline.evaluate import json_list
from pipeline.layout import (
    Layout,
    add_data_argument,
    add_termination_log_argument,
    write_json,
    write_termination_message,
)


def failed_works(text: str) -> list[str]:
    return [str(name) for name in json_list(text)]


def report(layout: Layout, run: int, phase: str, failed: list[str], model: str = "") -> dict[str, Any]:
    """Write the run's report; the report."""
    document: dict[str, Any] = {
        "run": run,
        "phase": phase,
        "failed_works": failed,
        "promoted": None,
        "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if model:
        promoted: dict[str, Any] = {"model": model}
        # The metrics of that model, when its training left them (a report never fails for lack of them).
        if model in layout.trained_models():
            with contextlib.suppress(OSError, ValueError):
                promoted["r2"] = json.loads(layout.metrics_file(model).read_text()).get("r2")
        document["promoted"] = promoted
    write_json(layout.report_file(run), document)
    return document


def summary(document: dict[str, Any]) -> str:
    failed = ", ".join(document["failed_works"])
    promoted = document["promoted"]
    if promoted is None:
        model = "nothing promoted"
    elif isinstance(promoted.get("r2"), int | float):
        model = f"promoted {promoted['model']} (r2={promoted['r2']:.4f})"
    else:
        model = f"promoted {promoted['model']}"
    return f"report: run {document['run']} {document['phase']}, failed works: {failed or 'none'}, {model}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.splitlines()[0])
    add_data_argument(parser)
    add_termination_log_argument(parser)
    parser.add_argument("--run", required=True, type=int, help="the run's number")
    parser.add_argument("--phase", required=True, help="how the run's works ended: Succeeded, Serving, ...")
    parser.add_argument(
        "--failed-works", required=True, type=failed_works, help="the works that failed, a JSON list"
    )
    parser.add_argument("--model", default="", help="the promoted model (empty: none)")
    args = parser.parse_args(argv)
    layout = Layout(args.data)
    document = report(layout, args.run, args.phase, args.failed_works, args.model)
    line = summary(document)
    print(f"{line} -> {layout.report_file(args.run)}", flush=True)
    write_termination_message(line, args.termination_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
