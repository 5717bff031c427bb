"""`make bench`'s queueing scenario: flows that share a Kueue ClusterQueue of 4 GPUs, submitted a few
seconds apart, with each flow keeping its place (DAGFLOW_QUEUE_ORDER=flow, the default) and with
Kueue ordering every Job on its own (DAGFLOW_QUEUE_ORDER=job).

Two shapes: a pipeline with three GPU stages, where a flow's later stages would queue behind the first
stages of every flow submitted after it, and a single GPU stage, where the order cannot help (and
must cost nothing).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.harness import Bench

KUEUE_SCRIPT = Path(__file__).resolve().parent.parent / "tests" / "cluster" / "kueue.sh"
# The ClusterQueue `dagflow` of tests/cluster/kueue-queues.yaml: 4 GPUs.
CLUSTER_QUEUE = "dagflow"
IMAGE = "example.invalid/bench:1.0"
ORDERS = ("job", "flow")


def kueue(cluster_name: str, *args: str) -> None:
    """tests/cluster/kueue.sh on the bench's cluster."""
    subprocess.run(
        ["bash", str(KUEUE_SCRIPT), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DAGFLOW_CLUSTER_NAME": cluster_name},
    )


def gpu_work(name: str, seconds: float, *depends_on: str, gpu: int = 1) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "container": {"image": IMAGE},
        "annotations": {"sim.dagflow.dev/duration": f"{seconds:g}s"},
    }
    if gpu:
        entry["gpu"] = gpu
    if depends_on:
        entry["dependsOn"] = list(depends_on)
    return entry


def pipeline(scale: float) -> list[dict[str, Any]]:
    """prep -> 4 x train (1 GPU, 60 s) -> eval (1 GPU, 20 s) -> 2 x finetune (1 GPU, 40 s)."""
    trains = [gpu_work(f"train-{i}", 60 * scale, "prep") for i in range(4)]
    finetunes = [gpu_work(f"finetune-{i}", 40 * scale, "eval") for i in range(2)]
    evaluate = gpu_work("eval", 20 * scale, *[entry["name"] for entry in trains])
    return [gpu_work("prep", 2 * scale, gpu=0), *trains, evaluate, *finetunes]


def single_stage(scale: float) -> list[dict[str, Any]]:
    """prep -> 4 x train (1 GPU, 60 s): one GPU stage, where no order helps."""
    return [
        gpu_work("prep", 2 * scale, gpu=0),
        *[gpu_work(f"train-{i}", 60 * scale, "prep") for i in range(4)],
    ]


def run_flows(
    bench: Bench, label: str, works: list[dict[str, Any]], count: int, gap: float, timeout: float
) -> dict[str, Any]:
    """Submit `count` flows `gap` seconds apart into the LocalQueue; each flow's makespan from its
    submission to the harness seeing it Succeeded."""
    submitted: dict[str, float] = {}
    started = time.monotonic()
    for index in range(count):
        name = f"{label}-{index:02d}"
        manifest = {
            "apiVersion": "dagflow.dev/v1alpha1",
            "kind": "DAGFlow",
            "metadata": {"name": name},
            "spec": {"queueName": "default", "works": works},
        }
        submitted[name] = time.monotonic()
        bench.create_flows([manifest])
        if index < count - 1:
            time.sleep(max(0.0, started + gap * (index + 1) - time.monotonic()))
    bench.wait_flows(list(submitted), timeout)
    finished = {name: bench.flow_watcher.finished[(bench.namespace, name)][0] for name in submitted}
    makespans = [finished[name] - submitted[name] for name in submitted]
    return {
        "flows": count,
        "mean_makespan_s": round(statistics.mean(makespans), 1),
        "worst_makespan_s": round(max(makespans), 1),
        "last_done_s": round(max(finished.values()) - started, 1),
        "makespans_s": [round(value, 1) for value in makespans],
    }


def with_queue_order(bench: Bench, order: str) -> None:
    """The bench's operator, started again with this DAGFLOW_QUEUE_ORDER."""
    bench.operator.stop()
    bench.operator.extra_env["DAGFLOW_QUEUE_ORDER"] = order
    bench.operator.start()


def scenario_queueing(bench: Bench, cluster_name: str, count: int, scale: float) -> None:
    """Both shapes, each under both orders: the mean and worst flow makespan and when the last flow
    was done, and the ratios of keeping flows in order to plain per-Job queueing."""
    from bench.harness import kubectl

    kueue(cluster_name, "up")
    kubectl(
        "apply",
        "-n",
        bench.namespace,
        "-f",
        "-",
        stdin=(
            "apiVersion: kueue.x-k8s.io/v1beta2\nkind: LocalQueue\nmetadata: {name: default}\n"
            f"spec: {{clusterQueue: {CLUSTER_QUEUE}}}\n"
        ),
    )
    previous = bench.operator.extra_env.get("DAGFLOW_QUEUE_ORDER")
    results: dict[str, Any] = {"flows": count, "gap_s": 5.0, "duration_scale": scale, "gpus": 4}
    try:
        for shape, works in (("pipeline", pipeline(scale)), ("single_stage", single_stage(scale))):
            for order in ORDERS:
                with_queue_order(bench, order)
                label = f"q{shape[0]}{order[0]}"
                results[f"{shape}_{order}"] = run_flows(bench, label, works, count, 5.0, timeout=3600)
            plain, ordered = results[f"{shape}_job"], results[f"{shape}_flow"]
            results[f"{shape}_mean_ratio"] = round(ordered["mean_makespan_s"] / plain["mean_makespan_s"], 3)
            results[f"{shape}_last_done_ratio"] = round(ordered["last_done_s"] / plain["last_done_s"], 3)
    finally:
        if previous is None:
            bench.operator.extra_env.pop("DAGFLOW_QUEUE_ORDER", None)
        else:
            bench.operator.extra_env["DAGFLOW_QUEUE_ORDER"] = previous
        bench.operator.stop()
        bench.operator.start()
        # Kueue's webhooks see every Job created while it runs: the other scenarios go without it.
        kueue(cluster_name, "down")
    bench.results["queueing"] = results


def queueing_table(results: dict[str, Any]) -> str:
    """The queueing scenario as a markdown table."""
    queueing = results.get("queueing")
    if not queueing:
        return ""
    lines = [
        "| shape | order | mean flow makespan (s) | worst (s) | last flow done (s) |",
        "|---|---|---:|---:|---:|",
    ]
    for shape in ("pipeline", "single_stage"):
        for order in ORDERS:
            row = queueing.get(f"{shape}_{order}")
            if row:
                lines.append(
                    f"| {shape} | {order} | {row['mean_makespan_s']} | {row['worst_makespan_s']} |"
                    f" {row['last_done_s']} |"
                )
        if f"{shape}_mean_ratio" in queueing:
            lines.append(
                f"| {shape} | flow / job | {queueing[f'{shape}_mean_ratio']}x | |"
                f" {queueing[f'{shape}_last_done_ratio']}x |"
            )
    return "\n".join(lines)
