"""Building DAGFlows for end-to-end tests and reading back what the cluster made of them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.kube import apply, get_json, wait_for

IMAGE = "example.invalid/ml:1.0"
FINAL_PHASES = ("Succeeded", "Failed", "Serving")


def work(name: str, *depends_on: str, duration: str | None = None, **fields: Any) -> dict[str, Any]:
    """A work whose simulated pod runs for `duration`; extra fields go into the work as given."""
    entry: dict[str, Any] = {"name": name, "container": {"image": IMAGE}}
    if depends_on:
        entry["dependsOn"] = list(depends_on)
    annotations = dict(fields.pop("annotations", {}))
    if duration:
        annotations["sim.dagflow.dev/duration"] = duration
    if annotations:
        entry["annotations"] = annotations
    entry.update(fields)
    return entry


def failing(exit_code: int = 1, attempts: int | None = None, in_run: int | None = None) -> dict[str, str]:
    """Annotations that make a work's pod fail (only its first `attempts` attempts, and only in run
    `in_run` of its flow, if given)."""
    annotations = {"sim.dagflow.dev/exit-code": str(exit_code)}
    if attempts is not None:
        annotations["sim.dagflow.dev/fail-attempts"] = str(attempts)
    if in_run is not None:
        annotations["sim.dagflow.dev/fail-in-run"] = str(in_run)
    return annotations


def flow(name: str, works: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": name},
        "spec": {**spec, "works": works},
    }


def create(manifest: dict[str, Any], namespace: str) -> None:
    apply(manifest, namespace=namespace)


def status(namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = get_json("dagflow", name, namespace=namespace).get("status") or {}
    return result


def wait_for_phase(namespace: str, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until the flow's phase is one of `phases` (default: any final phase); return the status."""
    wanted = phases or FINAL_PHASES

    def reached() -> dict[str, Any] | None:
        current = status(namespace, name)
        return current if current.get("phase") in wanted else None

    result: dict[str, Any] = wait_for(
        reached, timeout=timeout, interval=0.5, what=f"DAGFlow {name} to reach {'/'.join(wanted)}"
    )
    return result


def works_by_name(current_status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in current_status.get("works", [])}


def jobs(namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json("jobs", namespace=namespace)["items"]
    return items


def jobs_per_run_and_work(namespace: str) -> Counter[tuple[str, str]]:
    return Counter(
        (
            job["metadata"]["labels"]["dagflow.dev/run"],
            job["metadata"]["annotations"]["dagflow.dev/work-name"],
        )
        for job in jobs(namespace)
    )


def pods_of_work(namespace: str, work_name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(
        "pods", "-l", f"dagflow.dev/work={work_name}", namespace=namespace
    )["items"]
    return items
