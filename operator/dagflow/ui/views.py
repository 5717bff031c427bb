"""What the dashboard's pages show, from the objects the cluster returns. Pure: no I/O here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dagflow.client.flowview import cached_note
from dagflow.rules import naming
from dagflow.rules.matrix import MatrixError, parse_matrix, static_size

NOT_RUN = "NotRun"  # a work with no Job in the run shown (an earlier run that never reached it)
# The reasons of a Pending work whose Job waits for Kueue (docs/api.md, "Queueing with Kueue"): the
# page shows them apart from works that wait for their dependencies, since only quota frees them.
QUEUE_REASONS = frozenset({"Queued", "Preempted"})


def queue_reason(entry: Mapping[str, Any]) -> str | None:
    """Queued or Preempted while the work's Job waits for Kueue, else None."""
    reason = entry.get("reason")
    if (entry.get("phase") or "Pending") == "Pending" and reason in QUEUE_REASONS:
        return str(reason)
    return None


def work_kind(work: Mapping[str, Any]) -> str:
    if work.get("serve") is not None:
        return "serve"
    return "matrix" if work.get("matrix") is not None else "job"


def planned_instances(work: Mapping[str, Any]) -> int | None:
    """How many instances a matrix work runs, as far as its spec tells (None: decided at run time)."""
    try:
        return static_size(parse_matrix(work["matrix"]))
    except (MatrixError, KeyError, TypeError, ValueError):
        return None


def spec_works(flow: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The spec's works, then its finally works (each marked `finally`)."""
    spec = flow.get("spec") or {}
    return [*(spec.get("works") or []), *({**work, "finally": True} for work in spec.get("finally") or [])]


def work_states(flow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each work's phase (and a matrix work's instance counts) in the flow's current run, and
    whether the cache had it (`cached`: all, or some of a matrix work's instances)."""
    states = {}
    for entry in (flow.get("status") or {}).get("works") or []:
        state: dict[str, Any] = {"phase": entry.get("phase") or "Pending"}
        if (queued := queue_reason(entry)) is not None:
            state["queued"] = queued
        if entry.get("instances") is not None:
            state["instances"] = entry["instances"]
        if entry.get("instanceCounts"):
            state["counts"] = entry["instanceCounts"]
        if entry.get("cachedFrom"):
            # Taken from the cache whole: its graph node is marked so.
            state["cached"] = "all"
        elif entry.get("cachedInstances"):
            # A matrix work some of whose instances the cache had; its Job runs the others.
            state["cached"] = "some"
            state["cachedInstances"] = entry["cachedInstances"]
        states[entry["name"]] = state
    return states


def flow_row(flow: Mapping[str, Any]) -> dict[str, Any]:
    """A flow as a row of the namespace's page: phase, progress, schedule, last run, endpoint, age."""
    metadata = flow["metadata"]
    status = flow.get("status") or {}
    runs = status.get("runs") or []
    done, _, total = str(status.get("progress") or "").partition("/")
    works_total = len(spec_works(flow))
    last = runs[-1] if runs else None
    return {
        "name": metadata["name"],
        # A flow deleted and made again under its name is another flow: the page draws it anew.
        "uid": metadata.get("uid"),
        "namespace": metadata.get("namespace"),
        "phase": status.get("phase") or "Pending",
        "queued": status.get("queued") or 0,
        # Gates of the current run that wait for someone's approval.
        "waiting": sum(1 for work in status.get("works") or [] if work.get("phase") == "Waiting"),
        "progress": status.get("progress") or f"0/{works_total}",
        "done": int(done) if done.isdigit() else 0,
        "total": int(total) if total.isdigit() else works_total,
        "run": status.get("run"),
        "schedule": (flow.get("spec") or {}).get("schedule"),
        "suspended": bool((flow.get("spec") or {}).get("suspend")),
        "lastRun": (
            {
                "number": last.get("number"),
                "phase": last.get("phase"),
                "trigger": last.get("trigger"),
                "startedAt": last.get("startedAt"),
                "finishedAt": last.get("finishedAt"),
            }
            if last
            else None
        ),
        "endpoint": status.get("endpoint"),
        "createdAt": metadata.get("creationTimestamp"),
        "generation": metadata.get("generation"),
        "message": status.get("message"),
    }


def flow_update(flow: Mapping[str, Any]) -> dict[str, Any]:
    """What a browser needs to recolour a flow's page: its row and every work's state."""
    return {**flow_row(flow), "works": work_states(flow)}


def flow_graph(flow: Mapping[str, Any]) -> dict[str, Any]:
    """The flow's DAG: one node per work (a matrix work is one node with its instance count), one
    edge per `dependsOn` entry, from the dependency to the dependent, and the current run's states."""
    states = work_states(flow)
    nodes = []
    edges: list[list[str]] = []
    for work in spec_works(flow):
        name = work["name"]
        kind = work_kind(work)
        node: dict[str, Any] = {"id": name, "kind": kind, "gpu": work.get("gpu") or 0}
        if work.get("finally"):
            node["kind"], node["finally"] = "finally", True
        if kind == "matrix":
            node["instances"] = planned_instances(work)
        node.update(states.get(name) or {"phase": "Pending"})
        nodes.append(node)
        edges.extend([before, name] for before in work.get("dependsOn") or [])
    # The finally works run after every work has ended: drawn after the works that end the DAG.
    works = (flow.get("spec") or {}).get("works") or []
    needed = {dependency for work in works for dependency in work.get("dependsOn") or []}
    last = [work["name"] for work in works if work["name"] not in needed]
    first_finally = [
        work["name"] for work in (flow.get("spec") or {}).get("finally") or [] if not work.get("dependsOn")
    ]
    edges.extend([before, name] for name in first_finally for before in last)
    status = flow.get("status") or {}
    return {
        **flow_row(flow),
        "nodes": nodes,
        "edges": edges,
        "runs": [
            {key: run.get(key) for key in ("number", "trigger", "phase", "startedAt", "finishedAt")}
            for run in status.get("runs") or []
        ],
    }


def job_phase(job: Mapping[str, Any]) -> str:
    """A Job's outcome as a work phase: Succeeded, Failed or Running."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "Succeeded"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "Failed"
    return "Running"


def run_states(flow: Mapping[str, Any], run: int | None, jobs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Each work's phase in a run, from that run's Jobs: the status keeps only the current run, the
    Jobs of earlier runs (the flow's history) tell how their works ended."""
    if run == (flow.get("status") or {}).get("run"):
        return work_states(flow)
    by_work = {naming.work_of(job.get("metadata") or {}): job for job in jobs}
    states: dict[str, Any] = {}
    for work in spec_works(flow):
        job = by_work.get(work["name"])
        states[work["name"]] = {"phase": job_phase(job) if job else NOT_RUN}
    return states


def work_details(
    flow: Mapping[str, Any],
    work_name: str,
    run: int | None,
    jobs: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A work's side panel: its Job, pods and nodes, attempts, times, message, outputs and Events.

    `jobs` and `pods` are the work's in the run shown; `events` those of the namespace (only those
    of the work's Job, pods and Deployment, and the flow's Events that name the work, are kept).
    """
    status = flow.get("status") or {}
    current = run == status.get("run")
    entry: Mapping[str, Any] = next(
        (work for work in status.get("works") or [] if work["name"] == work_name), {}
    )
    spec_work: Mapping[str, Any] = next((work for work in spec_works(flow) if work["name"] == work_name), {})
    job = jobs[0] if jobs else None
    job_name = entry.get("job") if current else None
    job_name = job_name or (job["metadata"]["name"] if job else None)
    pod_rows = [_pod_row(pod) for pod in pods]
    names = {name for name in [job_name, *(row["name"] for row in pod_rows)] if name}
    details: dict[str, Any] = {
        "name": work_name,
        "kind": work_kind(spec_work) if spec_work else None,
        "run": run,
        "current": current,
        "dependsOn": spec_work.get("dependsOn") or [],
        "job": job_name,
        "pods": pod_rows,
        "events": work_events(flow["metadata"]["name"], work_name, names, events),
    }
    if current:
        details.update(
            {
                "phase": entry.get("phase") or "Pending",
                "queued": queue_reason(entry),
                "attempts": entry.get("attempts", 0),
                "startedAt": entry.get("startedAt"),
                "finishedAt": entry.get("finishedAt"),
                "message": entry.get("message") or cached_note(entry),
                "outputs": entry.get("outputs"),
                "outputsConfigMap": entry.get("outputsConfigMap"),
                "endpoint": entry.get("endpoint"),
                "instances": entry.get("instances"),
                "counts": entry.get("instanceCounts"),
            }
        )
        gate = spec_work.get("approval")
        if isinstance(gate, Mapping):
            decided = entry.get("approval") or {}
            details["approval"] = {
                "waiting": entry.get("phase") == "Waiting",
                "question": gate.get("message") or "",
                "params": list(gate.get("params") or []),
                "decision": decided.get("decision"),
                "by": decided.get("by"),
                "decidedAt": decided.get("decidedAt"),
                "values": decided.get("params"),
                "words": decided.get("message"),
            }
    elif job is not None:
        job_status = job.get("status") or {}
        details.update(
            {
                "phase": job_phase(job),
                "attempts": len(pods),
                "startedAt": job_status.get("startTime"),
                "finishedAt": job_status.get("completionTime"),
                "message": next(
                    (
                        condition.get("message")
                        for condition in job_status.get("conditions") or []
                        if condition.get("status") == "True" and condition.get("message")
                    ),
                    None,
                ),
            }
        )
    else:
        details.update({"phase": NOT_RUN, "attempts": 0})
    return details


def work_events(
    flow_name: str, work_name: str, object_names: set[str], events: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The Events of a work's objects, and the flow's Events that name the work, oldest first."""
    mentions = re.compile(rf"(?<![\w-]){re.escape(work_name)}(?![\w-])")
    kept = []
    for event in events:
        involved = event.get("involvedObject") or {}
        own = involved.get("name") in object_names and involved.get("kind") in ("Job", "Pod", "Deployment")
        flows = (
            involved.get("kind") == "DAGFlow"
            and involved.get("name") == flow_name
            and bool(mentions.search(event.get("message") or ""))
        )
        if own or flows:
            kept.append(
                {
                    "time": event.get("lastTimestamp")
                    or event.get("eventTime")
                    or (event.get("metadata") or {}).get("creationTimestamp"),
                    "type": event.get("type"),
                    "reason": event.get("reason"),
                    "object": f"{involved.get('kind')}/{involved.get('name')}",
                    "message": event.get("message"),
                    "count": event.get("count") or 1,
                }
            )
    return sorted(kept, key=lambda event: event["time"] or "")


def _pod_row(pod: Mapping[str, Any]) -> dict[str, Any]:
    metadata = pod["metadata"]
    status = pod.get("status") or {}
    annotations = metadata.get("annotations") or {}
    return {
        "name": metadata["name"],
        "node": (pod.get("spec") or {}).get("nodeName"),
        "phase": status.get("phase"),
        "index": annotations.get("batch.kubernetes.io/job-completion-index"),
        "startedAt": status.get("startTime"),
        "container": ((pod.get("spec") or {}).get("containers") or [{}])[0].get("name"),
    }
