"""`make bench`: the operator's speed, cost and scale, measured on the local cluster.

The harness runs its own cluster (`bench`, with an audit log), its own operator process, and its own
watch on Jobs, so every number comes from outside the operator. It prints one markdown table and
writes the same numbers as JSON. `--quick` runs small sizes only, to prove the harness works.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypedDict, cast

import yaml
from kubernetes import client, config, watch
from tests.kube import apply_crds
from tests.operator_process import OperatorProcess

from bench.caching import caching_table, scenario_cache_lookups, scenario_cache_matrix
from bench.queueing import queueing_table, scenario_queueing
from dagflow.api.models import DAGFlowSpec
from dagflow.controller.builders import FlowRef, build_job
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO_ROOT / "tests" / "cluster" / "cluster.sh"
KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"
IMAGE = "example.invalid/bench:1.0"
OPERATOR_AGENTS = ("dagflow-operator", "kopf")
SCENARIOS = (
    "chain",
    "concurrent",
    "fanout",
    "matrix",
    "bigmatrix",
    "sweep",
    "memory",
    "queueing",
    "cache",
    "cachelookup",
)


# -- the cluster and the objects' life, seen from outside ------------------------------------------


def bench_cluster_name() -> str:
    """A cluster of its own, made with an audit log: never the one the tests or the demo use, which
    would be made anew without their own settings. Named after DAGFLOW_CLUSTER_NAME when that is set,
    so that benchmarks of different checkouts on one machine do not share one."""
    named = os.environ.get("DAGFLOW_BENCH_CLUSTER_NAME")
    if named:
        return named
    base = os.environ.get("DAGFLOW_CLUSTER_NAME")
    return f"{base}-bench" if base else "bench"


def cluster_env() -> dict[str, str]:
    env = {
        **os.environ,
        "DAGFLOW_CLUSTER_NAME": bench_cluster_name(),
        "DAGFLOW_AUDIT": "1",
        # Pods here are simulated: the machine's one real node stays with the cluster it serves.
        "DAGFLOW_REAL_NODE": "0",
    }
    return env


def cluster(*args: str) -> str:
    result = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), *args], capture_output=True, text=True, env=cluster_env(), check=False
    )
    if result.returncode != 0 and args[0] != "status":
        raise RuntimeError(f"cluster.sh {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout.strip()


def raw_json(response: Any) -> Any:
    """The parsed body of a response fetched with `_preload_content=False`.

    The client's type hints promise a model for every call, but with `_preload_content=False` it
    returns the raw HTTP response, whose `.data` holds the JSON.
    """
    return json.loads(response.data)


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run([str(KUBECTL), *args], input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


class Watcher:
    """A list-then-watch of one kind of object, cluster-wide, recording what each event shows."""

    def __init__(self, list_function: Callable[..., Any]) -> None:
        self.list_function = list_function
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def stop(self) -> None:
        self._stop.set()

    def record(self, obj: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    listing = raw_json(self.list_function(_preload_content=False))
                    # Objects that changed while no watch was open are seen here, or they would be missed.
                    for item in listing["items"]:
                        self.record(item, time.monotonic())
                    resource_version = listing["metadata"]["resourceVersion"]
                    self._ready.set()
                stream = cast(Any, watch).Watch()  # the watch module has no type hints
                # Each watch resumes where the last one ended, not from a new list: listing 20,000 pods
                # every minute would load the API server and this process during the scenarios. The
                # events stay plain JSON (`deserialize=False`): the client's models cost CPU for nothing.
                for event in stream.stream(
                    self.list_function,
                    resource_version=resource_version,
                    timeout_seconds=60,
                    deserialize=False,
                ):
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    self.record(obj, time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:  # an expired resourceVersion (410) or a dropped watch: list again
                resource_version = None
                time.sleep(0.1)

    def wait(self, seen: dict[tuple[str, str], Any], keys: Iterable[tuple[str, str]], timeout: float) -> None:
        wanted = list(keys)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(key in seen for key in wanted):
                return
            time.sleep(0.02)
        missing = [key for key in wanted if key not in seen]
        raise TimeoutError(f"{len(missing)} of {len(wanted)} did not finish, e.g. {missing[:3]}")


class JobWatcher(Watcher):
    """Records when each Job is first seen created and first seen complete."""

    def __init__(self, batch: client.BatchV1Api) -> None:
        super().__init__(batch.list_job_for_all_namespaces)
        self.created: dict[tuple[str, str], float] = {}
        self.completed: dict[tuple[str, str], float] = {}

    def record(self, obj: dict[str, Any], now: float) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        self.created.setdefault(key, now)
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Complete" and condition.get("status") == "True":
                self.completed.setdefault(key, now)


class FlowWatcher(Watcher):
    """Records when each DAGFlow is first seen in a final phase, and which."""

    def __init__(self, custom: client.CustomObjectsApi) -> None:
        super().__init__(partial(custom.list_cluster_custom_object, "dagflow.dev", "v1alpha1", "dagflows"))
        self.finished: dict[tuple[str, str], tuple[float, str, str]] = {}
        # The biggest each flow's whole object was seen, as compact JSON.
        self.largest: dict[tuple[str, str], int] = {}

    def record(self, obj: dict[str, Any], now: float) -> None:
        status = obj.get("status") or {}
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        size = len(json.dumps(obj, separators=(",", ":")))
        self.largest[key] = max(self.largest.get(key, 0), size)
        if status.get("phase") in ("Succeeded", "Failed"):
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            self.finished.setdefault(key, (now, status["phase"], str(status.get("message", ""))))


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@dataclass
class PodSeen:
    """When the harness's watch first saw one Job pod created, bound to a node, running and
    succeeded (monotonic seconds; None until seen)."""

    created: float
    scheduled: float | None = None
    running: float | None = None
    succeeded: float | None = None


class PodWatcher(Watcher):
    """Records each Job pod's life, and wakes whoever waits for a Job's pods to succeed: the floor's
    script creates the next Job the moment it sees the previous one's pods succeed, as the operator
    does from its own pod watch."""

    def __init__(self, core: client.CoreV1Api) -> None:
        super().__init__(core.list_pod_for_all_namespaces)
        self.pods: dict[tuple[str, str], PodSeen] = {}
        self.by_job: dict[tuple[str, str], list[PodSeen]] = {}
        self.succeeded: Counter[tuple[str, str]] = Counter()
        self._changed = threading.Condition()

    def record(self, obj: dict[str, Any], now: float) -> None:
        metadata = obj["metadata"]
        job = (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
        if job is None:
            return
        key, job_key = (metadata["namespace"], metadata["name"]), (metadata["namespace"], job)
        seen = self.pods.get(key)
        if seen is None:
            seen = self.pods[key] = PodSeen(created=now)
            self.by_job.setdefault(job_key, []).append(seen)
        phase = (obj.get("status") or {}).get("phase")
        if seen.scheduled is None and (obj.get("spec") or {}).get("nodeName"):
            seen.scheduled = now
        if seen.running is None and phase in ("Running", "Succeeded"):
            seen.running = now
        if seen.succeeded is None and phase == "Succeeded":
            seen.succeeded = now
            with self._changed:
                self.succeeded[job_key] += 1
                self._changed.notify_all()

    def wait_succeeded(self, job: tuple[str, str], count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.succeeded[job] < count:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{job[1]}: {self.succeeded[job]} of {count} pods succeeded")
                # Short waits: a long one is not interrupted by Ctrl-C, which must still stop the bench.
                self._changed.wait(0.5)

    def last_succeeded(self, job: tuple[str, str]) -> float | None:
        """When the last of the Job's pods was seen succeeded: when the Job's work was done."""
        moments = [pod.succeeded for pod in self.by_job.get(job, [])]
        if not moments or any(moment is None for moment in moments):
            return None
        return max(moment for moment in moments if moment is not None)


# -- the operator's own cost ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok-controller")


def control_plane_cpu(cluster_dir: str) -> dict[str, float]:
    """CPU seconds used so far by each process of the bench cluster, found by the pid files that
    kwokctl keeps in the cluster's folder."""
    used: dict[str, float] = {}
    for component in CONTROL_PLANE:
        with contextlib.suppress(OSError, ValueError):  # a component that is not running has no number
            pid = int((Path(cluster_dir) / "pids" / f"{component}.pid").read_text().strip())
            used[component] = cpu_seconds(pid)
    return used


def cpu_since(before: dict[str, float], cluster_dir: str) -> dict[str, float]:
    after = control_plane_cpu(cluster_dir)
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in CONTROL_PLANE if name in after}


def operator_pid(operator: OperatorProcess) -> int:
    assert operator.process is not None, "the operator is not running"
    return operator.process.pid


def memory_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


class AuditLog:
    """Counts the operator's requests in the API server's audit log, by verb and resource."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def operator_requests(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        if not self.path.exists():
            return counts
        with self.path.open("rb") as log:
            log.seek(self.offset)
            for line in log:
                entry = json.loads(line)
                if entry.get("stage") != "ResponseComplete":
                    continue
                if not str(entry.get("userAgent", "")).startswith(OPERATOR_AGENTS):
                    continue
                ref = entry.get("objectRef") or {}
                resource = ref.get("resource", "?") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                counts[f"{entry.get('verb')} {resource}"] += 1
        return counts


# -- flows --------------------------------------------------------------------------------------------


def work(name: str, *depends_on: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "container": {"image": IMAGE}}
    if depends_on:
        entry["dependsOn"] = list(depends_on)
    return entry


def chain(length: int) -> list[dict[str, Any]]:
    return [work("s000"), *[work(f"s{i:03d}", f"s{i - 1:03d}") for i in range(1, length)]]


def fan(width: int) -> list[dict[str, Any]]:
    middle = [work(f"w{i:04d}", "root") for i in range(width)]
    return [work("root"), *middle, work("join", *[entry["name"] for entry in middle])]


def matrix_fan(width: int) -> list[dict[str, Any]]:
    """1 -> width -> 1, the middle as one matrix work of `width` instances."""
    middle = work("train", "root")
    middle["container"]["command"] = ["train", "--shard", "$(matrix.shard)"]
    middle["matrix"] = {"shard": list(range(width))}
    return [work("root"), middle, work("join", "train")]


def manifest(name: str, works: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": name},
        "spec": {"works": works},
    }


Dependencies = dict[str, list[str]]


def depends_of(flow: dict[str, Any]) -> Dependencies:
    return {entry["name"]: list(entry.get("dependsOn", [])) for entry in flow["spec"]["works"]}


# Status timestamps are wall-clock; the harness's moments are monotonic.
WALL_MINUS_MONOTONIC = time.time() - time.monotonic()
FLOOR_LABEL = "bench.dagflow.dev/floor"
# The widest matrix whose floor is measured a second time with the operator's pods.
OPERATOR_SHAPED_FLOOR_MOST = 1000


def floor_job(name: str, completions: int) -> dict[str, Any]:
    """The plainest Job Kubernetes runs: no init container, no volume, no failure policy, all of its
    completions at once (Indexed when it has several, as a matrix's Job is). Not the operator's:
    without its labels, the operator never sees it."""
    spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE}]}},
    }
    if completions > 1:
        spec["completionMode"] = "Indexed"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {FLOOR_LABEL: "true"}},
        "spec": spec,
    }


def operator_shape(job: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of one of the operator's Jobs as a floor Job's: its pods exactly as big (launcher,
    volumes, env, failure policy, labels and annotations), but labelled so that nothing takes them
    for the operator's, and without what the Job controller fills in itself."""

    def renamed(labels: Mapping[str, str]) -> dict[str, str]:
        return {
            (
                f"bench.{key}" if key.startswith("dagflow.dev/") or key == naming.MANAGED_BY_LABEL else key
            ): value
            for key, value in labels.items()
            if not key.startswith("batch.kubernetes.io/") and key not in ("controller-uid", "job-name")
        }

    spec = copy.deepcopy(dict(job["spec"]))
    for filled in ("selector", "manualSelector", "suspend", "podReplacementPolicy"):
        spec.pop(filled, None)
    metadata = spec["template"].setdefault("metadata", {})
    metadata["labels"] = {**renamed(metadata.get("labels") or {}), FLOOR_LABEL: "true"}
    return spec


class Sizes(TypedDict):
    """How big each scenario is: `--quick` or full."""

    chain: int
    flows: int
    flow_length: int
    fan: int
    big_matrix: int
    sweep: list[int]
    jobs: int
    queued_flows: int
    # Pod durations of the queueing scenario, as a share of the (train 60 s, eval 20 s, ...).
    queued_scale: float
    # The cached matrix flow's width, and the entries present while cached flows are looked up.
    cache_width: int
    cache_entries: int


@dataclass
class Bench:
    namespace: str
    operator: OperatorProcess
    watcher: JobWatcher
    flow_watcher: FlowWatcher
    audit: AuditLog
    cluster_dir: str
    custom: client.CustomObjectsApi
    batch: client.BatchV1Api
    pod_watcher: PodWatcher
    # The floor's plain Jobs live apart, so that nothing counts them as the operator's.
    floor_namespace: str
    results: dict[str, Any] = field(default_factory=dict)
    # Per scenario: each work's or step's moments, written to results/timeline-<scenario>.json.
    timelines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def create_flows(self, flows: list[dict[str, Any]]) -> None:
        for flow in flows:
            self.custom.create_namespaced_custom_object(
                "dagflow.dev", "v1alpha1", self.namespace, "dagflows", flow, _preload_content=False
            )

    def run_flows(self, flows: list[dict[str, Any]], timeout: float) -> None:
        self.create_flows(flows)
        self.wait_flows([flow["metadata"]["name"] for flow in flows], timeout)

    def wait_flows(self, names: list[str], timeout: float) -> None:
        keys = [(self.namespace, name) for name in names]
        self.flow_watcher.wait(self.flow_watcher.finished, keys, timeout)
        failed = [key for key in keys if self.flow_watcher.finished[key][1] == "Failed"]
        if failed:
            raise RuntimeError(f"flow {failed[0][1]} failed: {self.flow_watcher.finished[failed[0]][2]}")

    def flow_jobs(self, flow: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """Each work's Job in run 1 of the flow."""
        name = flow["metadata"]["name"]
        return {
            entry["name"]: (self.namespace, naming.job_name(name, 1, entry["name"]))
            for entry in flow["spec"]["works"]
        }

    def job_complete_latencies(self, jobs: dict[str, tuple[str, str]], depends: Dependencies) -> list[float]:
        """From the last dependency's Job seen Complete to the dependent's Job seen created. The
        operator acts on a single pod's success, about a second before the Job controller marks its
        Job Complete, so this is negative for most chain steps now; kept to compare with older runs."""
        latencies = []
        for work_name, needs in depends.items():
            created = self.watcher.created.get(jobs[work_name])
            done = [self.watcher.completed.get(jobs[need]) for need in needs]
            if needs and created is not None and all(moment is not None for moment in done):
                latencies.append(created - max(moment for moment in done if moment is not None))
        return latencies

    def chain_steps(self, jobs: dict[str, tuple[str, str]], depends: Dependencies) -> list[float]:
        """From the last pod of the last dependency seen succeeded (the harness's pod watch) to the
        dependent's Job seen created: what a step costs beyond the pods' own work."""
        steps = []
        for work_name, needs in depends.items():
            created = self.watcher.created.get(jobs[work_name])
            done = [self.pod_watcher.last_succeeded(jobs[need]) for need in needs]
            if needs and created is not None and all(moment is not None for moment in done):
                steps.append(created - max(moment for moment in done if moment is not None))
        return steps

    def clear_flow(self, name: str, timeout: float) -> float:
        """Delete a flow and wait until its pods are gone, so that the floor measured next does not
        share the control plane with their collection. Returns the seconds it took."""
        started = time.monotonic()
        self.custom.delete_namespaced_custom_object(
            "dagflow.dev", "v1alpha1", self.namespace, "dagflows", name, _preload_content=False
        )
        core = client.CoreV1Api()
        selector = f"{naming.FLOW_LABEL}={naming.label_value(name)}"
        while core.list_namespaced_pod(self.namespace, label_selector=selector, limit=1).items:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the pods of flow {name} were not gone after {timeout:g}s")
            time.sleep(1)
        return time.monotonic() - started

    def run_floor(
        self,
        stages: list[tuple[str, int]],
        timeout: float,
        shapes: Mapping[str, dict[str, Any]] | None = None,
    ) -> float:
        """The floor: plain Jobs (`stages`: name and completions, in order), each created by this
        script the moment its pod watch sees every pod of the one before succeeded; `shapes`: by
        stage name, a Job spec to use instead of the plainest (`operator_shape`). Returns the seconds
        from the first create to the last pod seen succeeded."""
        started = time.monotonic()
        for name, completions in stages:
            job = floor_job(name, completions)
            if shapes and name in shapes:
                job["spec"] = shapes[name]
            # The client takes a plain manifest as well as the V1Job its hints ask for.
            self.batch.create_namespaced_job(self.floor_namespace, cast(Any, job), _preload_content=False)
            self.pod_watcher.wait_succeeded((self.floor_namespace, name), completions, timeout)
        return time.monotonic() - started

    def works_finished_at(self, flow_name: str) -> dict[str, str]:
        """Each work's finishedAt in the flow's status: when the operator recorded it done (to the
        second: the pod's own finishedAt for a single pod, the moment it saw the Job's end otherwise)."""
        stored = raw_json(
            self.custom.get_namespaced_custom_object(
                "dagflow.dev", "v1alpha1", self.namespace, "dagflows", flow_name, _preload_content=False
            )
        )
        works = (stored.get("status") or {}).get("works") or []
        return {entry["name"]: entry["finishedAt"] for entry in works if entry.get("finishedAt")}

    def timeline(
        self,
        jobs: dict[str, tuple[str, str]],
        depends: Dependencies,
        started: float,
        finished_at: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Each work's or step's moments, in seconds from `started`, as the harness's watches saw
        them: its Job created, its pods created, bound, running and succeeded (first and last when
        it has several), the Job Complete, and its first dependent's Job created."""

        def since(moment: float | None) -> float | None:
            return None if moment is None else round(moment - started, 3)

        dependents: dict[str, list[str]] = {}
        for work_name, needs in depends.items():
            for need in needs:
                dependents.setdefault(need, []).append(work_name)
        entries = []
        for work_name, job in jobs.items():
            pods = self.pod_watcher.by_job.get(job, [])
            entry: dict[str, Any] = {
                "work": work_name,
                "job": job[1],
                "job_created": since(self.watcher.created.get(job)),
                "pods": len(pods),
            }
            for stage in ("created", "scheduled", "running", "succeeded"):
                moments = sorted(m for m in (getattr(pod, stage) for pod in pods) if m is not None)
                if len(pods) == 1:
                    entry[f"pod_{stage}"] = since(moments[0]) if moments else None
                else:
                    entry[f"first_pod_{stage}"] = since(moments[0]) if moments else None
                    entry[f"last_pod_{stage}"] = since(moments[-1]) if moments else None
            entry["job_complete"] = since(self.watcher.completed.get(job))
            if finished_at is not None and work_name in finished_at:
                moment = datetime.fromisoformat(finished_at[work_name].replace("Z", "+00:00")).timestamp()
                entry["status_finished_at"] = finished_at[work_name]
                entry["status_finished_at_s"] = since(moment - WALL_MINUS_MONOTONIC)
            created = [
                self.watcher.created[jobs[n]]
                for n in dependents.get(work_name, [])
                if jobs[n] in self.watcher.created
            ]
            entry["first_dependent_created"] = since(min(created)) if created else None
            entries.append(entry)
        return entries

    def measure(self, label: str, works_count: int, body: Callable[[], None]) -> dict[str, Any]:
        """Run a scenario; record makespan, operator CPU, API requests per work."""
        pid = operator_pid(self.operator)
        self.audit.mark()
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        body()
        elapsed, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
        time.sleep(1.0)  # let the audit log catch up with the last status patch
        requests = self.audit.operator_requests()
        writes = sum(
            n
            for key, n in requests.items()
            if key.split()[0] in ("create", "patch", "update", "delete") and not key.endswith(" events")
        )
        # Events posted (created or patched); the operator's reads of Events are not among them.
        events = sum(
            n
            for key, n in requests.items()
            if key.endswith(" events") and key.split()[0] in ("create", "patch")
        )
        record = {
            "works": works_count,
            "makespan_s": round(elapsed, 2),
            "operator_cpu_s": round(cpu, 2),
            "cpu_ms_per_work": round(1000 * cpu / works_count, 2),
            "api_requests": dict(sorted(requests.items())),
            "api_writes_per_work": round(writes / works_count, 2),
            "events_per_work": round(events / works_count, 2),
            "rss_mib": round(memory_kib(pid, "VmRSS") / 1024, 1),
        }
        self.results[label] = record
        return record


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(values),
        "p50_s": round(pick(0.5), 4),
        "p90_s": round(pick(0.9), 4),
        "p99_s": round(pick(0.99), 4),
        "max_s": round(ordered[-1], 4),
        "mean_s": round(statistics.fmean(values), 4),
    }


# -- scenarios ----------------------------------------------------------------------------------------


def chain_summary(bench: Bench, jobs: list[tuple[str, str]]) -> dict[str, Any]:
    """A chain's pods' own time beside its makespan, and where each step's time goes on average:
    the Job controller making the pod, the scheduler binding it, kwok running and ending it, and
    whoever creates the next Job (the operator, or the floor's script)."""
    pods = [pod for job in jobs for pod in bench.pod_watcher.by_job.get(job, [])]
    stages: dict[str, list[float]] = {
        "job_created_to_pod_created": [],
        "pod_created_to_scheduled": [],
        "scheduled_to_running": [],
        "running_to_succeeded": [],
        "succeeded_to_next_job_created": [],
    }
    for index, job in enumerate(jobs):
        job_pods, created = bench.pod_watcher.by_job.get(job, []), bench.watcher.created.get(job)
        if len(job_pods) != 1 or created is None:
            continue
        pod = job_pods[0]
        if pod.scheduled is None or pod.running is None or pod.succeeded is None:
            continue
        stages["job_created_to_pod_created"].append(pod.created - created)
        stages["pod_created_to_scheduled"].append(pod.scheduled - pod.created)
        stages["scheduled_to_running"].append(pod.running - pod.scheduled)
        stages["running_to_succeeded"].append(pod.succeeded - pod.running)
        following = bench.watcher.created.get(jobs[index + 1]) if index + 1 < len(jobs) else None
        if following is not None:
            stages["succeeded_to_next_job_created"].append(following - pod.succeeded)
    return {
        # Pod start (seen Running) to pod end (seen Succeeded), summed: the work the pods did.
        "pods_running_s": round(sum(p.succeeded - p.running for p in pods if p.succeeded and p.running), 2),
        # Pod created to pod end, summed: the pods' whole lives.
        "pods_lifetime_s": round(sum(p.succeeded - p.created for p in pods if p.succeeded), 2),
        "mean_step_s": {stage: round(statistics.fmean(v), 4) if v else None for stage, v in stages.items()},
    }


def floor_chain(namespace: str, length: int) -> tuple[dict[str, tuple[str, str]], Dependencies]:
    """The floor's chain: its Jobs by step name, and each step's dependency (the one before)."""
    names = [f"floor-chain-{length}-{i:03d}" for i in range(length)]
    jobs = {name: (namespace, name) for name in names}
    return jobs, {name: names[i - 1 : i] for i, name in enumerate(names)}


def scenario_chain(bench: Bench, length: int) -> None:
    """A chain of `length` works, then its floor: `length` plain Jobs, each created by a script the
    moment the previous one's pod succeeded."""
    flow = manifest(f"chain-{length}", chain(length))
    jobs, depends = bench.flow_jobs(flow), depends_of(flow)
    started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    record = bench.measure("chain", length, partial(bench.run_flows, [flow], 1800))
    record["control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["chain_step"] = percentiles(bench.chain_steps(jobs, depends))
    record["job_complete_to_dependent_created"] = percentiles(bench.job_complete_latencies(jobs, depends))
    record.update(chain_summary(bench, list(jobs.values())))
    operator_timeline = bench.timeline(
        jobs, depends, started, bench.works_finished_at(flow["metadata"]["name"])
    )

    floor_jobs, floor_depends = floor_chain(bench.floor_namespace, length)
    floor_started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    floor_makespan = bench.run_floor([(job[1], 1) for job in floor_jobs.values()], 600)
    record["floor"] = {
        "makespan_s": round(floor_makespan, 2),
        "control_plane_cpu_s": cpu_since(cpu_before, bench.cluster_dir),
        "chain_step": percentiles(bench.chain_steps(floor_jobs, floor_depends)),
        **chain_summary(bench, list(floor_jobs.values())),
    }
    record["ratio_to_floor"] = round(record["makespan_s"] / floor_makespan, 3)
    bench.timelines["chain"] = {
        "operator": operator_timeline,
        "floor": bench.timeline(floor_jobs, floor_depends, floor_started),
    }


def scenario_concurrent(bench: Bench, count: int, length: int) -> None:
    flows = [manifest(f"conc-{i:03d}", chain(length)) for i in range(count)]
    started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    record = bench.measure("concurrent", count * length, partial(bench.run_flows, flows, 1800))
    record["control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["flows"] = count
    steps, after_complete, timelines = [], [], {}
    for flow in flows:
        jobs, depends = bench.flow_jobs(flow), depends_of(flow)
        steps += bench.chain_steps(jobs, depends)
        after_complete += bench.job_complete_latencies(jobs, depends)
        name = flow["metadata"]["name"]
        timelines[name] = bench.timeline(jobs, depends, started, bench.works_finished_at(name))
    record["chain_step"] = percentiles(steps)
    record["job_complete_to_dependent_created"] = percentiles(after_complete)
    bench.timelines["concurrent"] = {"operator": timelines}


def scenario_fan(bench: Bench, width: int) -> None:
    name = f"fan-{width}"
    flow = manifest(name, fan(width))
    started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    bench.measure("fanout", width + 2, partial(bench.run_flows, [flow], 1800))
    record = bench.results["fanout"]
    record["control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["timeline"] = fan_timeline(bench, name, width, started)
    jobs, depends = bench.flow_jobs(flow), depends_of(flow)
    record["dependency_step"] = percentiles(bench.chain_steps(jobs, depends))
    operator_timeline = bench.timeline(jobs, depends, started, bench.works_finished_at(name))
    baseline_started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    record["baseline_makespan_s"] = round(baseline_fan(bench, width), 2)
    record["baseline_control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["baseline_timeline"] = fan_timeline(bench, f"base-{width}", width, baseline_started)
    record["ratio"] = round(record["makespan_s"] / record["baseline_makespan_s"], 3)
    baseline_jobs = bench.flow_jobs(manifest(f"base-{width}", fan(width)))
    bench.timelines["fanout"] = {
        "operator": operator_timeline,
        "bare_script": bench.timeline(baseline_jobs, depends, baseline_started),
    }


def fan_timeline(bench: Bench, flow_name: str, width: int, started: float) -> dict[str, float]:
    """When each stage of a fan-out was seen, in seconds from its start: where the time goes."""

    def key(work_name: str) -> tuple[str, str]:
        return (bench.namespace, naming.job_name(flow_name, 1, work_name))

    middle = [key(f"w{i:04d}") for i in range(width)]

    def succeeded(job: tuple[str, str]) -> float:
        moment = bench.pod_watcher.last_succeeded(job)
        assert moment is not None, f"no pod of {job[1]} was seen succeeded"
        return moment

    seen = {
        "root_pod_succeeded": succeeded(key("root")),
        "first_middle_created": min(bench.watcher.created[job] for job in middle),
        "last_middle_created": max(bench.watcher.created[job] for job in middle),
        "last_middle_pod_succeeded": max(succeeded(job) for job in middle),
        "join_created": bench.watcher.created[key("join")],
        "join_pod_succeeded": succeeded(key("join")),
    }
    return {stage: round(moment - started, 2) for stage, moment in seen.items()}


def baseline_fan(bench: Bench, width: int) -> float:
    """The same Jobs created by a bare script that respects the dependencies, each stage created
    the moment the pods of the one before succeeded."""
    flow_name = f"base-{width}"
    spec = DAGFlowSpec.model_validate({"works": fan(width)})
    settings = OperatorSettings()
    ref = FlowRef(name=flow_name, namespace=bench.namespace, uid="")
    manifests = {}
    for entry in spec.works:
        job = build_job(ref, spec, entry, 1, settings)
        job["metadata"].pop("ownerReferences")
        manifests[entry.name] = job

    def create(names: list[str]) -> list[tuple[str, str]]:
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    # The client takes a plain manifest as well as the V1Job its hints ask for.
                    lambda n: bench.batch.create_namespaced_job(
                        bench.namespace, cast(Any, manifests[n]), _preload_content=False
                    ),
                    names,
                )
            )
        return [(bench.namespace, manifests[n]["metadata"]["name"]) for n in names]

    def wait_pods(jobs: list[tuple[str, str]], timeout: float) -> None:
        # As the operator does, a stage is done when its pods have succeeded, not when the Job
        # controller marks the Jobs Complete about a second later.
        deadline = time.monotonic() + timeout
        for job in jobs:
            bench.pod_watcher.wait_succeeded(job, 1, max(deadline - time.monotonic(), 0.0))

    started = time.monotonic()
    wait_pods(create(["root"]), 600)
    wait_pods(create([f"w{i:04d}" for i in range(width)]), 1800)
    wait_pods(create(["join"]), 600)
    return time.monotonic() - started


def matrix_floor(bench: Bench, label: str, width: int, record: dict[str, Any]) -> None:
    """The floor of a 1 -> width -> 1 matrix flow, measured right after it, once its pods are gone:
    a root Job, one Indexed Job of `width` completions with no init container, a join Job, each
    created by a script the moment the one before's pods all succeeded. Up to a width of
    OPERATOR_SHAPED_FLOOR_MOST, the same again with the middle Job's pods shaped exactly as the
    operator's: how much of the gap is the pods themselves, how much the operator's reactions."""
    flow_name = f"{label}-{width}"
    matrix_job = raw_json(
        bench.batch.read_namespaced_job(
            naming.job_name(flow_name, 1, "train"), bench.namespace, _preload_content=False
        )
    )
    record["flow_cleared_s"] = round(bench.clear_flow(flow_name, 1800), 1)
    record["floor"] = run_matrix_floor(bench, f"floor-{label}-{width}", width, label)
    record["ratio_to_floor"] = round(record["makespan_s"] / record["floor"]["makespan_s"], 3)
    if width <= OPERATOR_SHAPED_FLOOR_MOST:
        shaped = run_matrix_floor(bench, f"shaped-{label}-{width}", width, None, operator_shape(matrix_job))
        record["floor_with_operator_pods"] = shaped
        record["ratio_to_floor_with_operator_pods"] = round(record["makespan_s"] / shaped["makespan_s"], 3)


def run_matrix_floor(
    bench: Bench, prefix: str, width: int, label: str | None, middle: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One floor of 1 -> width -> 1 (`middle`: the middle Job's spec instead of the plainest); its
    timeline goes to the scenario `label`'s timelines when given."""
    names = {stage: f"{prefix}-{stage}" for stage in ("root", "train", "join")}
    jobs = {stage: (bench.floor_namespace, name) for stage, name in names.items()}
    depends: Dependencies = {"root": [], "train": ["root"], "join": ["train"]}
    started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    stages = [(names["root"], 1), (names["train"], width), (names["join"], 1)]
    makespan = bench.run_floor(stages, 3600, {names["train"]: middle} if middle else None)
    timeline = bench.timeline(jobs, depends, started)
    if label is not None:
        bench.timelines[label]["floor"] = timeline
    return {
        "makespan_s": round(makespan, 2),
        "control_plane_cpu_s": cpu_since(cpu_before, bench.cluster_dir),
        "dependency_step": percentiles(bench.chain_steps(jobs, depends)),
        "timeline": matrix_stages(timeline),
    }


def matrix_stages(timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """The moments of a 1 -> n -> 1 timeline (root, middle, join) that say where its time goes."""
    root, middle, join = timeline
    return {
        "root_created": root["job_created"],
        "root_pod_succeeded": root["pod_succeeded"],
        "matrix_created": middle["job_created"],
        "matrix_first_pod_created": middle["first_pod_created"],
        "matrix_last_pod_created": middle["last_pod_created"],
        "matrix_last_pod_running": middle["last_pod_running"],
        "matrix_last_pod_succeeded": middle["last_pod_succeeded"],
        "matrix_complete": middle["job_complete"],
        "join_created": join["job_created"],
        "join_pod_succeeded": join["pod_succeeded"],
    }


def run_matrix(bench: Bench, label: str, width: int, run: Callable[[], None]) -> dict[str, Any]:
    """A 1 -> width -> 1 matrix flow run by `run`, with its timeline and control-plane CPU."""
    name = f"{label}-{width}"
    flow = manifest(name, matrix_fan(width))
    started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    record = bench.measure(label, width + 2, run)
    record["control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["largest_object_kib"] = round(bench.flow_watcher.largest[(bench.namespace, name)] / 1024, 1)
    jobs, depends = bench.flow_jobs(flow), depends_of(flow)
    record["dependency_step"] = percentiles(bench.chain_steps(jobs, depends))
    timeline = bench.timeline(jobs, depends, started, bench.works_finished_at(name))
    record["timeline"] = {
        **matrix_stages(timeline),
        "flow_succeeded": round(bench.flow_watcher.finished[(bench.namespace, name)][0] - started, 3),
    }
    bench.timelines[label] = {"operator": timeline}
    return record


def scenario_matrix(bench: Bench, width: int) -> None:
    """The fan-out's 1 -> width -> 1 with the middle as one matrix work, next to the fan-out of
    separate works measured just before, on the same cluster, and to its floor measured right after."""
    flow = manifest(f"matrix-{width}", matrix_fan(width))
    record = run_matrix(bench, "matrix", width, partial(bench.run_flows, [flow], 1800))
    if "fanout" in bench.results:
        record["ratio_to_separate_works"] = round(
            record["makespan_s"] / bench.results["fanout"]["makespan_s"], 3
        )
    matrix_floor(bench, "matrix", width, record)


def scenario_big_matrix(bench: Bench, width: int, with_floor: bool) -> None:
    """A 1 -> width -> 1 matrix flow, applied as a user does (`kubectl apply -f`): makespan, the
    flow object's largest size at any moment, operator CPU per instance and peak memory; and its
    floor when asked."""
    name = f"bigmatrix-{width}"
    path = Path(bench.cluster_dir) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest(name, matrix_fan(width))))

    def run() -> None:
        kubectl("apply", "-n", bench.namespace, "-f", str(path))
        bench.wait_flows([name], 3600)

    record = run_matrix(bench, "bigmatrix", width, run)
    record["manifest_kib"] = round(path.stat().st_size / 1024, 1)
    record["peak_rss_mib"] = round(memory_kib(operator_pid(bench.operator), "VmHWM") / 1024, 1)
    if with_floor:
        matrix_floor(bench, "bigmatrix", width, record)


def scenario_sweep(bench: Bench, sizes: list[int]) -> None:
    """Makespan and cost against flow size (1 -> n-2 -> 1); the fan-out above is one more point."""
    sweep, timelines = [], {}
    for size in sizes:
        name = f"sweep-{size}"
        flow = manifest(name, fan(size - 2))
        started = time.monotonic()
        record = bench.measure(name, size, partial(bench.run_flows, [flow], 1800))
        timelines[name] = bench.timeline(bench.flow_jobs(flow), depends_of(flow), started)
        sweep.append(
            {key: record[key] for key in ("works", "makespan_s", "cpu_ms_per_work", "api_writes_per_work")}
        )
        bench.results.pop(name)
    if "fanout" in bench.results:
        fanout = bench.results["fanout"]
        sweep.append(
            {key: fanout[key] for key in ("works", "makespan_s", "cpu_ms_per_work", "api_writes_per_work")}
        )
    bench.results["sweep"] = sorted(sweep, key=lambda point: point["works"])
    bench.timelines["sweep"] = {"operator": timelines}
    largest = f"sweep-{max(sizes)}"
    stored = raw_json(
        bench.custom.get_namespaced_custom_object(
            "dagflow.dev", "v1alpha1", bench.namespace, "dagflows", largest, _preload_content=False
        )
    )

    def compact(obj: Any) -> int:
        return len(json.dumps(obj, separators=(",", ":")))

    bench.results["object_size"] = {
        "works": max(sizes),
        "status_kib": round(compact(stored["status"]) / 1024, 1),
        "object_kib": round(compact(stored) / 1024, 1),
    }


def scenario_memory(bench: Bench, jobs_wanted: int) -> None:
    """Operator memory while it tracks `jobs_wanted` Jobs of its flows.

    The Jobs beyond those the scenarios above left are created suspended (no pods), owned by one
    flow and labelled as its children: the operator indexes them like any other.
    """
    flow_name = "memory"
    bench.create_flows([manifest(flow_name, [work("only")])])
    bench.wait_flows([flow_name], 600)
    owner = raw_json(
        bench.custom.get_namespaced_custom_object(
            "dagflow.dev", "v1alpha1", bench.namespace, "dagflows", flow_name, _preload_content=False
        )
    )
    ref = FlowRef(name=flow_name, namespace=bench.namespace, uid=owner["metadata"]["uid"])
    spec = DAGFlowSpec.model_validate({"works": [work("idle")]})
    template = build_job(ref, spec, spec.works[0], 1, OperatorSettings())
    template["spec"]["suspend"] = True
    existing = len(
        raw_json(bench.batch.list_namespaced_job(bench.namespace, _preload_content=False))["items"]
    )

    def create(index: int) -> None:
        job = json.loads(json.dumps(template))
        job["metadata"]["name"] = f"memory-idle-{index:05d}"
        job["metadata"]["labels"][naming.WORK_LABEL] = f"idle-{index:05d}"
        job["metadata"]["annotations"][naming.WORK_ANNOTATION] = f"idle-{index:05d}"
        bench.batch.create_namespaced_job(bench.namespace, job, _preload_content=False)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(max(jobs_wanted - existing, 0))))
    time.sleep(10)  # let the watch deliver them all
    tracked = len(raw_json(bench.batch.list_namespaced_job(bench.namespace, _preload_content=False))["items"])
    pid = operator_pid(bench.operator)
    bench.results["memory"] = {
        "jobs_tracked": tracked,
        "rss_mib": round(memory_kib(pid, "VmRSS") / 1024, 1),
        "peak_rss_mib": round(memory_kib(pid, "VmHWM") / 1024, 1),
    }


@contextlib.contextmanager
def profiled(pid: int, output: Path) -> Iterator[None]:
    """py-spy samples `pid` meanwhile; its collapsed stacks (frames, then a count) land in `output`."""
    command = [str(REPO_ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid), "--rate", "100"]
    sampler = subprocess.Popen(
        [*command, "--format", "raw", "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(timeout=60)


# -- report ------------------------------------------------------------------------------------------


# Tuned Argo Workflows 4.0.5 (requeue 1 s, 200 QPS) on 1 -> 1,000 -> 1 with zero-length pods, as
# measured on this kind of local cluster outside this project: 29.8 to 39.0 s over three runs.
ARGO_TUNED_1000_S = (29.8, 39.0)


def spread(latency: dict[str, Any]) -> str:
    return f"{latency.get('p50_s')} / {latency.get('p90_s')} / {latency.get('p99_s')} s"


def table(results: dict[str, Any]) -> str:
    """The results as one markdown table; the scenarios not run (`--only`) are left out."""
    rows = ["| measure | value | target |", "| --- | --- | --- |"]
    if "chain" in results:
        chain_record, floor = results["chain"], results["chain"]["floor"]
        length = chain_record["works"]
        rows += [
            f"| chain step, {length}-work chain: a pod seen succeeded -> its dependent's Job created "
            f"(p50 / p90 / p99) | {spread(chain_record['chain_step'])} | p50 <= 0.3 s |",
            f"| the same step in the floor (a script creating the next plain Job) | "
            f"{spread(floor['chain_step'])} | |",
            f"| chain of {length}: makespan / floor (ratio) | {chain_record['makespan_s']} s / "
            f"{floor['makespan_s']} s ({chain_record['ratio_to_floor']}) | ratio <= 1.2 |",
            f"| chain of {length}: its pods' own time summed, running -> succeeded (pod created -> "
            f"succeeded) | {chain_record['pods_running_s']} s ({chain_record['pods_lifetime_s']} s) | |",
            f"| chain of {length}, Job Complete -> dependent's Job created (p50 / p90 / p99; negative: "
            "the operator acts on the pod) | "
            f"{spread(chain_record['job_complete_to_dependent_created'])} | |",
        ]
    if "concurrent" in results:
        conc = results["concurrent"]
        rows += [
            f"| chain step, {conc['flows']} concurrent {conc['works'] // conc['flows']}-work flows "
            f"(p50 / p90 / p99) | {spread(conc['chain_step'])} | p50 <= 0.1 s, p99 <= 0.5 s |",
            f"| the same, Job Complete -> dependent's Job created | "
            f"{spread(conc['job_complete_to_dependent_created'])} | |",
        ]
    if "fanout" in results:
        fanout = results["fanout"]
        rows += [
            f"| fan-out 1 -> {fanout['works'] - 2} -> 1 of separate works, makespan: operator / bare "
            f"script of the same Jobs | {fanout['makespan_s']} s / {fanout['baseline_makespan_s']} s "
            f"(ratio {fanout['ratio']}) | ratio <= 1.2 |",
            f"| operator CPU per 1,000 works (fan-out) | {round(fanout['cpu_ms_per_work'], 1)} s | |",
        ]
    if "matrix" in results:
        matrix = results["matrix"]
        width = matrix["works"] - 2
        rows.append(
            f"| 1 -> {width} -> 1 as one matrix work: makespan / floor (ratio) | {matrix['makespan_s']} s / "
            f"{matrix['floor']['makespan_s']} s ({matrix['ratio_to_floor']}) | ratio <= 1.15 |"
        )
        if "floor_with_operator_pods" in matrix:
            shaped = matrix["floor_with_operator_pods"]
            rows.append(
                "| the same against a floor whose middle Job's pods are the operator's (ratio) | "
                f"{matrix['makespan_s']} s / {shaped['makespan_s']} s "
                f"({matrix['ratio_to_floor_with_operator_pods']}) | |"
            )
        if width == 1000:
            low, high = ARGO_TUNED_1000_S
            rows.append(
                f"| the same against tuned Argo Workflows ({low}-{high} s, measured elsewhere) | "
                f"{round(matrix['makespan_s'] / high, 2)}-{round(matrix['makespan_s'] / low, 2)}x | <= 0.6x |"
            )
        if "ratio_to_separate_works" in matrix:
            rows.append(
                f"| the same against the fan-out of separate works | {matrix['ratio_to_separate_works']} | |"
            )
    if "bigmatrix" in results:
        big = results["bigmatrix"]
        floor_text = (
            f"{big['floor']['makespan_s']} s ({big['ratio_to_floor']})" if "floor" in big else "not measured"
        )
        rows += [
            f"| 1 -> {big['works'] - 2} -> 1 matrix flow (kubectl apply): makespan / floor (ratio) | "
            f"{big['makespan_s']} s / {floor_text} | ratio <= 1.15 |",
            f"| the same: largest object, CPU per instance, peak RSS | {big['largest_object_kib']} KiB, "
            f"{big['cpu_ms_per_work']} ms, {big['peak_rss_mib']} MiB | object < 1 MiB, RSS <= 250 MiB |",
        ]
    if {"chain", "concurrent", "fanout"} <= results.keys():
        chain_record, conc, fanout = results["chain"], results["concurrent"], results["fanout"]
        rows += [
            "| API writes per work, Events aside (chain / concurrent / fan-out) | "
            f"{chain_record['api_writes_per_work']} / {conc['api_writes_per_work']} / "
            f"{fanout['api_writes_per_work']} | <= 3 |",
            "| Events posted per work (chain / concurrent / fan-out) | "
            f"{chain_record['events_per_work']} / {conc['events_per_work']} / "
            f"{fanout['events_per_work']} | |",
        ]
    if "object_size" in results:
        size = results["object_size"]
        rows.append(
            f"| status / whole object of a {size['works']}-work flow | {size['status_kib']} KiB / "
            f"{size['object_kib']} KiB | status < 512 KiB |"
        )
    if "memory" in results:
        memory = results["memory"]
        rows.append(
            f"| operator RSS with {memory['jobs_tracked']} Jobs tracked (now / peak) | "
            f"{memory['rss_mib']} / {memory['peak_rss_mib']} MiB | <= 250 MiB at 10,000 |"
        )
    for point in results.get("sweep", []):
        rows.append(
            f"| sweep {point['works']} works: makespan, CPU per work, writes per work | "
            f"{point['makespan_s']} s, {point['cpu_ms_per_work']} ms, {point['api_writes_per_work']} | |"
        )
    if "fanout" in results:
        requests = ", ".join(f"{key}: {count}" for key, count in results["fanout"]["api_requests"].items())
        rows.append(f"| operator requests during the fan-out, by verb and resource | {requests} | |")
    return "\n".join(rows)


def stages_table(results: dict[str, Any]) -> str:
    """Where the time goes, the operator beside its floor: the chain's mean step, and the matrices'
    moments in seconds from their start."""
    rows = ["| stage | operator | floor |", "| --- | --- | --- |"]
    if "chain" in results:
        chain_record = results["chain"]
        for stage, seconds in chain_record["mean_step_s"].items():
            floor_seconds = chain_record["floor"]["mean_step_s"][stage]
            rows.append(f"| chain, mean step: {stage.replace('_', ' ')} | {seconds} | {floor_seconds} |")
    for key in ("matrix", "bigmatrix"):
        record = results.get(key) or {}
        if "floor" not in record:
            continue
        width = record["works"] - 2
        for stage, moment in record["timeline"].items():
            floor_moment = record["floor"]["timeline"].get(stage, "")
            rows.append(f"| {key} of {width}: {stage.replace('_', ' ')} | {moment} | {floor_moment} |")
    return "\n".join(rows)


def cpu_table(results: dict[str, Any]) -> str:
    """The control plane's CPU seconds per scenario: where the rest of the time goes."""
    used = results.get("control_plane_cpu_s", {})
    header = "| scenario | " + " | ".join(CONTROL_PLANE) + " | operator |"
    rows = [header, "|" + " --- |" * (len(CONTROL_PLANE) + 2)]
    for key, components in used.items():
        operator_cpu = (
            (results.get(key) or {}).get("operator_cpu_s", "") if isinstance(results.get(key), dict) else ""
        )
        cells = " | ".join(str(components.get(name, "")) for name in CONTROL_PLANE)
        rows.append(f"| {key} | {cells} | {operator_cpu} |")
    return "\n".join(rows)


# The launcher's delivery the chart's `launcher.delivery: auto` picks on nodes whose runtime mounts
# images as volumes (containerd 2, as on the real node): a matrix's pods need no init container.
# `--setting DAGFLOW_LAUNCHER_DELIVERY=initContainer` measures the other path.
DEFAULT_SETTINGS = {"DAGFLOW_LAUNCHER_DELIVERY": "imageVolume"}


def operator_settings(given: list[str]) -> dict[str, str]:
    """The operator's environment for a run: the bench's defaults, then each `NAME=VALUE` given."""
    return {**DEFAULT_SETTINGS, **dict(item.split("=", 1) for item in given)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the harness, not the speed")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results" / "bench.json")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the bench cluster running")
    parser.add_argument(
        "--big-floor",
        action="store_true",
        help="also measure the 10,000-instance matrix's floor (several more minutes; --quick always does)",
    )
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the operator with py-spy during each scenario (results/profile-<scenario>.txt)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="DAGFLOW_NAME=VALUE",
        help="run the operator with this setting (repeatable), to compare settings",
    )
    args = parser.parse_args(argv)
    sizes: Sizes = (
        {
            "chain": 20,
            "flows": 5,
            "flow_length": 5,
            "fan": 100,
            "big_matrix": 200,
            "sweep": [10, 50],
            "jobs": 300,
            "queued_flows": 4,
            "queued_scale": 0.1,
            "cache_width": 50,
            "cache_entries": 500,
        }
        if args.quick
        else {
            "chain": 100,
            "flows": 100,
            "flow_length": 10,
            "fan": 1000,
            "big_matrix": 10000,
            "sweep": [10, 100, 2000],
            "jobs": 10000,
            "queued_flows": 10,
            "queued_scale": 1.0,
            "cache_width": 1000,
            "cache_entries": 100_000,
        }
    )
    was_running = cluster("status") == "running"
    kubeconfig = cluster("up").splitlines()[-1].removeprefix("export KUBECONFIG=")
    os.environ["KUBECONFIG"] = kubeconfig
    audit = AuditLog(Path(cluster("dir")) / "logs" / "audit.log")
    apply_crds(REPO_ROOT / "crds")
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    floor_namespace = f"{namespace}-floor"
    kubectl("create", "namespace", namespace)
    kubectl("create", "namespace", floor_namespace)
    cast(Any, config).load_kube_config(config_file=kubeconfig)  # the config module has no type hints
    batch, custom = client.BatchV1Api(), client.CustomObjectsApi()
    watcher, flow_watcher, pod_watcher = (
        JobWatcher(batch),
        FlowWatcher(custom),
        PodWatcher(client.CoreV1Api()),
    )
    watcher.start()
    flow_watcher.start()
    pod_watcher.start()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(args.output.parent, env=operator_settings(args.setting))
    operator.start()
    bench = Bench(
        namespace,
        operator,
        watcher,
        flow_watcher,
        audit,
        cluster("dir"),
        custom,
        batch,
        pod_watcher,
        floor_namespace,
    )
    try:
        scenarios: dict[str, tuple[str, Callable[[], None]]] = {
            "chain": ("dependency latency, chain", lambda: scenario_chain(bench, sizes["chain"])),
            "concurrent": (
                "dependency latency, concurrent flows",
                lambda: scenario_concurrent(bench, sizes["flows"], sizes["flow_length"]),
            ),
            "fanout": ("fan-out and bare-script baseline", lambda: scenario_fan(bench, sizes["fan"])),
            "matrix": ("fan-out as one matrix work", lambda: scenario_matrix(bench, sizes["fan"])),
            "bigmatrix": (
                "a 10,000-instance matrix flow",
                lambda: scenario_big_matrix(bench, sizes["big_matrix"], args.quick or args.big_floor),
            ),
            "sweep": ("size sweep", lambda: scenario_sweep(bench, sizes["sweep"])),
            "memory": ("memory", lambda: scenario_memory(bench, sizes["jobs"])),
            "queueing": (
                "flows queued in Kueue, in order and per Job",
                lambda: scenario_queueing(
                    bench, bench_cluster_name(), sizes["queued_flows"], sizes["queued_scale"]
                ),
            ),
            "cache": (
                "a cached matrix flow rerun with one instance changed",
                lambda: scenario_cache_matrix(bench, sizes["cache_width"], matrix_fan),
            ),
            "cachelookup": (
                "cached reruns with many cache entries present",
                lambda: scenario_cache_lookups(bench, sizes["cache_entries"]),
            ),
        }
        for key, (title, scenario) in scenarios.items():
            if args.only and key not in args.only:
                continue
            started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
            print(f"Running: {title}", file=sys.stderr, flush=True)
            if args.profile:
                with profiled(operator_pid(operator), args.output.parent / f"profile-{key}.txt"):
                    scenario()
            else:
                scenario()
            # The whole scenario's, the operator's part and the floor's together.
            control_plane = cpu_since(cpu_before, bench.cluster_dir)
            bench.results.setdefault("control_plane_cpu_s", {})[key] = control_plane
            if key in bench.timelines:
                timeline = {"scenario": key, "control_plane_cpu_s": control_plane, **bench.timelines.pop(key)}
                (args.output.parent / f"timeline-{key}.json").write_text(json.dumps(timeline, indent=1))
            print(f"Finished: {title} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            args.output.write_text(json.dumps(bench.results, indent=2))
    finally:
        watcher.stop()
        flow_watcher.stop()
        pod_watcher.stop()
        operator.stop()
        kubectl("delete", "namespace", namespace, floor_namespace, "--wait=false")
        if not was_running and not args.keep_cluster:
            cluster("down")
    bench.results["mode"] = "quick" if args.quick else "full"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(bench.results, indent=2))
    print(table(bench.results))
    print("\nWhere the time goes, in seconds:\n")
    print(stages_table(bench.results))
    print("\nControl plane CPU seconds per scenario (the operator's part and the floor's together):\n")
    print(cpu_table(bench.results))
    if "queueing" in bench.results:
        print("\nFlows queued in Kueue (4 GPUs), each keeping its place (flow) or not (job):\n")
        print(queueing_table(bench.results))
    if "cache" in bench.results or "cachelookup" in bench.results:
        print("\nCaching:\n")
        print(caching_table(bench.results))
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
