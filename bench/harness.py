"""`make bench`: the operator's speed, cost and scale, measured on the local cluster.

The harness runs its own cluster (`bench`, with an audit log), its own operator process, and its own
watch on Jobs, so every number comes from outside the operator. It prints one markdown table and
writes the same numbers as JSON. `--quick` runs small sizes only, to prove the harness works.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypedDict, cast

import yaml
from kubernetes import client, config, watch
from tests.kube import apply_crds
from tests.operator_process import OperatorProcess

from dagflow.api.models import DAGFlowSpec
from dagflow.controller.builders import FlowRef, build_job
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPT = REPO_ROOT / "tests" / "cluster" / "cluster.sh"
KUBECTL = REPO_ROOT / ".venv" / "bin" / "kubectl"
IMAGE = "example.invalid/bench:1.0"
OPERATOR_AGENTS = ("dagflow-operator", "kopf")
SCENARIOS = ("chain", "concurrent", "fanout", "matrix", "bigmatrix", "sweep", "memory")


# -- the cluster and the objects' life, seen from outside ------------------------------------------


def cluster_env() -> dict[str, str]:
    env = {
        **os.environ,
        # A cluster of its own, made with an audit log: never the one the tests or the demo use.
        "DAGFLOW_CLUSTER_NAME": os.environ.get("DAGFLOW_BENCH_CLUSTER_NAME", "bench"),
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
        while not self._stop.is_set():
            try:
                listing = raw_json(self.list_function(_preload_content=False))
                # Objects that changed while no watch was open are seen here, or they would be missed.
                for item in listing["items"]:
                    self.record(item, time.monotonic())
                self._ready.set()
                stream = cast(Any, watch).Watch()  # the watch module has no type hints
                for event in stream.stream(
                    self.list_function,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=60,
                    _preload_content=False,
                ):
                    self.record(event["raw_object"], time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception:  # a dropped watch is resumed from a fresh list
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

    def wait_complete(self, keys: Iterable[tuple[str, str]], timeout: float) -> None:
        self.wait(self.completed, keys, timeout)


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


# -- the operator's own cost ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok")


def control_plane_cpu(cluster_dir: str) -> dict[str, float]:
    """CPU seconds used so far by each process of the bench cluster (found by its folder)."""
    used: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            name = (proc / "comm").read_text().strip()
            if cluster_dir in command and name.startswith(CONTROL_PLANE):
                used[name] = used.get(name, 0.0) + cpu_seconds(int(proc.name))
        except (OSError, ValueError):  # the process ended meanwhile
            continue
    return used


def cpu_since(before: dict[str, float], cluster_dir: str) -> dict[str, float]:
    after = control_plane_cpu(cluster_dir)
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in sorted(after)}


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


class Sizes(TypedDict):
    """How big each scenario is: `--quick` or full."""

    chain: int
    flows: int
    flow_length: int
    fan: int
    big_matrix: int
    sweep: list[int]
    jobs: int


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
    results: dict[str, Any] = field(default_factory=dict)

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

    def dependency_latencies(self, flows: list[dict[str, Any]]) -> list[float]:
        latencies = []
        for flow in flows:
            name = flow["metadata"]["name"]
            for entry in flow["spec"]["works"]:
                if not entry.get("dependsOn"):
                    continue
                job = (self.namespace, naming.job_name(name, 1, entry["name"]))
                done = [
                    self.watcher.completed.get((self.namespace, naming.job_name(name, 1, dep)))
                    for dep in entry["dependsOn"]
                ]
                if job in self.watcher.created and all(d is not None for d in done):
                    latencies.append(self.watcher.created[job] - max(d for d in done if d is not None))
        return latencies

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
        events = sum(n for key, n in requests.items() if key.endswith(" events"))
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


def scenario_chain(bench: Bench, length: int) -> None:
    flows = [manifest(f"chain-{length}", chain(length))]
    bench.measure("chain", length, partial(bench.run_flows, flows, 1800))
    bench.results["chain"]["dependency_latency"] = percentiles(bench.dependency_latencies(flows))


def scenario_concurrent(bench: Bench, count: int, length: int) -> None:
    flows = [manifest(f"conc-{i:03d}", chain(length)) for i in range(count)]
    bench.measure("concurrent", count * length, partial(bench.run_flows, flows, 1800))
    bench.results["concurrent"]["flows"] = count
    bench.results["concurrent"]["dependency_latency"] = percentiles(bench.dependency_latencies(flows))


def scenario_fan(bench: Bench, width: int) -> None:
    name = f"fan-{width}"
    flow = manifest(name, fan(width))
    started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    bench.measure("fanout", width + 2, partial(bench.run_flows, [flow], 1800))
    record = bench.results["fanout"]
    record["control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["timeline"] = fan_timeline(bench, name, width, started)
    baseline_started, cpu_before = time.monotonic(), control_plane_cpu(bench.cluster_dir)
    record["baseline_makespan_s"] = round(baseline_fan(bench, width), 2)
    record["baseline_control_plane_cpu_s"] = cpu_since(cpu_before, bench.cluster_dir)
    record["baseline_timeline"] = fan_timeline(bench, f"base-{width}", width, baseline_started)
    record["ratio"] = round(record["makespan_s"] / record["baseline_makespan_s"], 3)


def fan_timeline(bench: Bench, flow_name: str, width: int, started: float) -> dict[str, float]:
    """When each stage of a fan-out was seen, in seconds from its start: where the time goes."""

    def key(work_name: str) -> tuple[str, str]:
        return (bench.namespace, naming.job_name(flow_name, 1, work_name))

    middle = [key(f"w{i:04d}") for i in range(width)]
    seen = {
        "root_complete": bench.watcher.completed[key("root")],
        "first_middle_created": min(bench.watcher.created[job] for job in middle),
        "last_middle_created": max(bench.watcher.created[job] for job in middle),
        "last_middle_complete": max(bench.watcher.completed[job] for job in middle),
        "join_created": bench.watcher.created[key("join")],
        "join_complete": bench.watcher.completed[key("join")],
    }
    return {stage: round(moment - started, 2) for stage, moment in seen.items()}


def baseline_fan(bench: Bench, width: int) -> float:
    """The same Jobs created by a bare script that respects the dependencies: the floor."""
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

    started = time.monotonic()
    bench.watcher.wait_complete(create(["root"]), 600)
    bench.watcher.wait_complete(create([f"w{i:04d}" for i in range(width)]), 1800)
    bench.watcher.wait_complete(create(["join"]), 600)
    return time.monotonic() - started


def scenario_matrix(bench: Bench, width: int) -> None:
    """The fan-out's 1 -> width -> 1 with the middle as one matrix work, next to the fan-out of
    separate works measured just before, on the same cluster."""
    name = f"matrix-{width}"
    started = time.monotonic()
    record = bench.measure(
        "matrix", width + 2, partial(bench.run_flows, [manifest(name, matrix_fan(width))], 1800)
    )
    record["largest_object_kib"] = round(bench.flow_watcher.largest[(bench.namespace, name)] / 1024, 1)

    def key(work_name: str) -> tuple[str, str]:
        return (bench.namespace, naming.job_name(name, 1, work_name))

    seen = {
        "root_created": bench.watcher.created[key("root")],
        "root_complete": bench.watcher.completed[key("root")],
        "matrix_created": bench.watcher.created[key("train")],
        "matrix_complete": bench.watcher.completed[key("train")],
        "join_created": bench.watcher.created[key("join")],
        "join_complete": bench.watcher.completed[key("join")],
        "flow_succeeded": bench.flow_watcher.finished[(bench.namespace, name)][0],
    }
    record["timeline"] = {stage: round(moment - started, 2) for stage, moment in seen.items()}
    if "fanout" in bench.results:
        record["ratio_to_separate_works"] = round(
            record["makespan_s"] / bench.results["fanout"]["makespan_s"], 3
        )


def scenario_big_matrix(bench: Bench, width: int) -> None:
    """A 1 -> width -> 1 matrix flow, applied as a user does (`kubectl apply -f`): makespan, the
    flow object's largest size at any moment, operator CPU per instance and peak memory."""
    name = f"bigmatrix-{width}"
    path = Path(bench.cluster_dir) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest(name, matrix_fan(width))))

    def run() -> None:
        kubectl("apply", "-n", bench.namespace, "-f", str(path))
        bench.wait_flows([name], 3600)

    record = bench.measure("bigmatrix", width + 2, run)
    record["largest_object_kib"] = round(bench.flow_watcher.largest[(bench.namespace, name)] / 1024, 1)
    record["manifest_kib"] = round(path.stat().st_size / 1024, 1)
    record["peak_rss_mib"] = round(memory_kib(operator_pid(bench.operator), "VmHWM") / 1024, 1)


def scenario_sweep(bench: Bench, sizes: list[int]) -> None:
    """Makespan and cost against flow size (1 -> n-2 -> 1); the fan-out above is one more point."""
    sweep = []
    for size in sizes:
        name = f"sweep-{size}"
        record = bench.measure(name, size, partial(bench.run_flows, [manifest(name, fan(size - 2))], 1800))
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


def table(results: dict[str, Any]) -> str:
    rows = ["| measure | value | target |", "| --- | --- | --- |"]
    chain_latency = results["chain"]["dependency_latency"]
    conc = results["concurrent"]
    conc_latency = conc["dependency_latency"]
    fanout = results["fanout"]

    def spread(latency: dict[str, Any]) -> str:
        return f"{latency.get('p50_s')} / {latency.get('p90_s')} / {latency.get('p99_s')} s"

    rows += [
        f"| dependency latency, {results['chain']['works']}-step chain (p50 / p90 / p99) | "
        f"{spread(chain_latency)} | p50 <= 0.1 s, p99 <= 0.5 s |",
        f"| dependency latency, {conc['flows']} concurrent {conc['works'] // conc['flows']}-work flows "
        f"(p50 / p90 / p99) | {spread(conc_latency)} | p50 <= 0.1 s, p99 <= 0.5 s |",
        f"| fan-out 1 -> {results['fanout']['works'] - 2} -> 1 makespan: operator / bare script | "
        f"{results['fanout']['makespan_s']} s / {results['fanout']['baseline_makespan_s']} s "
        f"(ratio {results['fanout']['ratio']}) | ratio <= 1.2 |",
        "| API writes per work, Events aside (chain / concurrent / fan-out) | "
        f"{results['chain']['api_writes_per_work']} / {conc['api_writes_per_work']} / "
        f"{fanout['api_writes_per_work']} | <= 3 |",
        "| Events posted per work (chain / concurrent / fan-out) | "
        f"{results['chain']['events_per_work']} / {conc['events_per_work']} / "
        f"{fanout['events_per_work']} | |",
        f"| operator CPU per 1,000 works (fan-out) | {round(results['fanout']['cpu_ms_per_work'], 1)} s | |",
        f"| status / whole object of a {results['object_size']['works']}-work flow | "
        f"{results['object_size']['status_kib']} KiB / {results['object_size']['object_kib']} KiB | "
        "status < 512 KiB |",
        f"| operator RSS with {results['memory']['jobs_tracked']} Jobs tracked (now / peak) | "
        f"{results['memory']['rss_mib']} / {results['memory']['peak_rss_mib']} MiB | <= 250 MiB at 10,000 |",
    ]
    for point in results["sweep"]:
        rows.append(
            f"| sweep {point['works']} works: makespan, CPU per work, writes per work | "
            f"{point['makespan_s']} s, {point['cpu_ms_per_work']} ms, {point['api_writes_per_work']} | |"
        )
    if "matrix" in results:
        matrix = results["matrix"]
        rows.append(
            f"| fan-out 1 -> {matrix['works'] - 2} -> 1 as one matrix work: makespan, ratio to "
            "separate works | "
            f"{matrix['makespan_s']} s, {matrix.get('ratio_to_separate_works')} | <= 0.6 (one Indexed Job) |"
        )
    if "bigmatrix" in results:
        big = results["bigmatrix"]
        rows.append(
            f"| {big['works'] - 2}-instance matrix flow (kubectl apply): makespan, largest object, "
            f"CPU per instance, peak RSS | {big['makespan_s']} s, {big['largest_object_kib']} KiB, "
            f"{big['cpu_ms_per_work']} ms, {big['peak_rss_mib']} MiB | object < 1 MiB, RSS <= 250 MiB |"
        )
    requests = ", ".join(f"{key}: {count}" for key, count in results["fanout"]["api_requests"].items())
    rows.append(f"| operator requests during the fan-out, by verb and resource | {requests} | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the harness, not the speed")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench" / "results" / "bench.json")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the bench cluster running")
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
            "chain": 10,
            "flows": 5,
            "flow_length": 5,
            "fan": 20,
            "big_matrix": 50,
            "sweep": [10, 50],
            "jobs": 300,
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
        }
    )
    was_running = cluster("status") == "running"
    kubeconfig = cluster("up").splitlines()[-1].removeprefix("export KUBECONFIG=")
    os.environ["KUBECONFIG"] = kubeconfig
    audit = AuditLog(Path(cluster("dir")) / "logs" / "audit.log")
    apply_crds(REPO_ROOT / "crds")
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    cast(Any, config).load_kube_config(config_file=kubeconfig)  # the config module has no type hints
    batch, custom = client.BatchV1Api(), client.CustomObjectsApi()
    watcher, flow_watcher = JobWatcher(batch), FlowWatcher(custom)
    watcher.start()
    flow_watcher.start()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    operator = OperatorProcess(args.output.parent, env=dict(item.split("=", 1) for item in args.setting))
    operator.start()
    bench = Bench(namespace, operator, watcher, flow_watcher, audit, cluster("dir"), custom, batch)
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
                lambda: scenario_big_matrix(bench, sizes["big_matrix"]),
            ),
            "sweep": ("size sweep", lambda: scenario_sweep(bench, sizes["sweep"])),
            "memory": ("memory", lambda: scenario_memory(bench, sizes["jobs"])),
        }
        for key, (title, scenario) in scenarios.items():
            if args.only and key not in args.only:
                continue
            started = time.monotonic()
            print(f"Running: {title}", file=sys.stderr, flush=True)
            if args.profile:
                with profiled(operator_pid(operator), args.output.parent / f"profile-{key}.txt"):
                    scenario()
            else:
                scenario()
            print(f"Finished: {title} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            args.output.write_text(json.dumps(bench.results, indent=2))
    finally:
        watcher.stop()
        flow_watcher.stop()
        operator.stop()
        kubectl("delete", "namespace", namespace, "--wait=false")
        if not was_running and not args.keep_cluster:
            cluster("down")
    bench.results["mode"] = "quick" if args.quick else "full"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(bench.results, indent=2))
    if not args.only:
        print(table(bench.results))
    print(f"\nJSON: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
