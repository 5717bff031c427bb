"""Shows a DAGFlow's progress and outcome on the terminal, for `make demo`.

    python hack/demo_status.py watch NAMESPACE FLOW [--timeout SECONDS]
    python hack/demo_status.py report NAMESPACE FLOW

`watch` prints one line whenever the flow's phase, progress or a work's phase changes, and exits
with 0 once the flow is Serving or Succeeded (1 when it Failed or the time ran out). `report`
prints a table of the flow's works with the node each one ran on. Both call the `kubectl` on PATH
against $KUBECONFIG.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

DONE = ("Serving", "Succeeded")
WORK_ABBREVIATIONS = {
    "Pending": "pending",
    "Running": "RUNNING",
    "Succeeded": "done",
    "Serving": "SERVING",
    "Failed": "FAILED",
    "Skipped": "skipped",
}


def kubectl_json(*args: str) -> dict[str, Any]:
    result = subprocess.run(["kubectl", *args, "-o", "json"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"kubectl {' '.join(args)} failed")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def flow_status(namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl_json("-n", namespace, "get", "dagflow", name).get("status") or {}
    return status


def instances_done(work: dict[str, Any]) -> str:
    """`[2/3]` for a matrix work with 2 of its 3 instances succeeded; empty for any other work."""
    counts = work.get("instanceCounts")
    return f"[{counts.get('Succeeded', 0)}/{work.get('instances', '?')}]" if counts else ""


def progress_line(status: dict[str, Any]) -> str:
    works = "  ".join(
        f"{work['name']}={WORK_ABBREVIATIONS.get(work.get('phase', ''), work.get('phase', '?'))}"
        f"{instances_done(work)}"
        for work in status.get("works") or []
    )
    return f"{status.get('phase', '-'):<9} {status.get('progress', '-'):>5}   {works}"


def watch(namespace: str, name: str, timeout: float) -> int:
    started = time.monotonic()
    last = ""
    status: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        try:
            status = flow_status(namespace, name)
        except RuntimeError as error:  # not created yet, or the API server is busy
            status, line = {}, f"waiting: {error}"
        else:
            line = progress_line(status) if status else "waiting for the operator to pick the flow up"
        if line != last:
            print(f"  {time.monotonic() - started:5.1f}s  {line}", flush=True)
            last = line
        if status.get("phase") in DONE:
            return 0
        if status.get("phase") == "Failed":
            print(f"The flow failed: {status.get('message', '(no message)')}", file=sys.stderr)
            return 1
        time.sleep(0.5)
    phase = status.get("phase")
    print(f"The flow did not finish within {timeout:.0f}s; its phase is {phase}.", file=sys.stderr)
    return 1


def report(namespace: str, name: str) -> int:
    status = flow_status(namespace, name)
    run = str(status.get("run", ""))
    pods = kubectl_json("-n", namespace, "get", "pods", "-l", "app.kubernetes.io/managed-by=dagflow-operator")
    nodes = {node["metadata"]["name"]: node for node in kubectl_json("get", "nodes")["items"]}
    nodes_of_work: dict[str, list[str]] = {}
    for pod in pods["items"]:
        metadata = pod["metadata"]
        annotations, labels = metadata.get("annotations") or {}, metadata.get("labels") or {}
        if annotations.get("dagflow.dev/flow-name") != name or labels.get("dagflow.dev/run") != run:
            continue
        node = pod["spec"].get("nodeName")
        if node:
            pool = (nodes.get(node, {}).get("metadata", {}).get("labels") or {}).get("dagflow.dev/pool")
            entry = f"{node} ({pool})" if pool else node
            work_nodes = nodes_of_work.setdefault(annotations.get("dagflow.dev/work-name", ""), [])
            if entry not in work_nodes:
                work_nodes.append(entry)
    rows = [("WORK", "PHASE", "JOB / DEPLOYMENT", "INSTANCES", "ATTEMPTS", "NODE")]
    for work in status.get("works") or []:
        rows.append(
            (
                work["name"],
                work.get("phase", ""),
                work.get("job", "-"),
                instances_done(work).strip("[]") or "-",
                str(work.get("attempts", "-")),
                ", ".join(nodes_of_work.get(work["name"], [])) or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("watch", "report"))
    parser.add_argument("namespace")
    parser.add_argument("flow")
    parser.add_argument("--timeout", type=float, default=300, help="seconds `watch` waits at most")
    args = parser.parse_args(argv)
    if args.command == "watch":
        return watch(args.namespace, args.flow, args.timeout)
    return report(args.namespace, args.flow)


if __name__ == "__main__":
    sys.exit(main())
