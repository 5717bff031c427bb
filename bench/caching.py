"""`make bench`'s caching scenarios.

- cache: the 1 -> width -> 1 matrix flow with caching on, run once, then its spec changed in one
  instance's value: the rerun's makespan, and the Jobs and pods it made (one Job of one completion
  for the matrix, and the join, whose upstream changed).
- cachelookup: what lookups cost with many entries in the namespace. A cached flow (a chain of works
  and a matrix work) is rerun with nothing changed, before and after `entries` entries were created
  directly through the API: the rerun's latency, the operator's CPU, and its lists of entries per
  lookup (one per work, by the key's label, whatever the namespace holds).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from dagflow.api.models import API_VERSION, CACHE_ENTRY_KIND
from dagflow.rules import naming
from dagflow.rules.cachekey import KEY_LABEL

if TYPE_CHECKING:
    from bench.harness import Bench

GROUP, VERSION = API_VERSION.split("/")
ENTRIES = "dagflowcacheentries"
# Works of the lookup scenario's flow: a chain, then a matrix work of this many instances.
LOOKUP_CHAIN = 10
LOOKUP_MATRIX = 100
CREATE_THREADS = 16


def cached(flow: dict[str, Any]) -> dict[str, Any]:
    flow["spec"]["cache"] = {"enabled": True}
    return flow


def wait_for_run(bench: Bench, name: str, run: int, timeout: float) -> float:
    """Wait until run `run` of the flow succeeded; when it was seen to (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = cast(
            dict[str, Any],
            bench.custom.get_namespaced_custom_object(GROUP, VERSION, bench.namespace, "dagflows", name),
        )
        status = body.get("status") or {}
        if status.get("run") == run and status.get("phase") in ("Succeeded", "Failed"):
            if status["phase"] != "Succeeded":
                raise RuntimeError(f"run {run} of flow {name} failed: {status.get('message')}")
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"run {run} of flow {name} did not end in {timeout:.0f}s")


def run_children(bench: Bench, name: str, run: int) -> tuple[int, int]:
    """The Jobs a run of the flow made, and the pods they ran."""
    selector = f"{naming.FLOW_LABEL}={naming.label_value(name)},dagflow.dev/run={run}"
    jobs = bench.batch.list_namespaced_job(bench.namespace, label_selector=selector).items
    pods = sum(int((job.status.succeeded or 0) + (job.status.failed or 0)) for job in jobs if job.status)
    return len(jobs), pods


def rerun(bench: Bench, name: str, token: str) -> None:
    body = {"metadata": {"annotations": {"dagflow.dev/rerun": token}}}
    bench.custom.patch_namespaced_custom_object(GROUP, VERSION, bench.namespace, "dagflows", name, body)


def entry_lists(record: dict[str, Any]) -> int:
    return int(record["api_requests"].get(f"list {ENTRIES}", 0))


def scenario_cache_matrix(
    bench: Bench, width: int, matrix_fan: Callable[[int], list[dict[str, Any]]]
) -> None:
    from bench.harness import manifest

    name = f"cached-{width}"
    flow = cached(manifest(name, matrix_fan(width)))
    first = bench.measure("cache_first_run", width + 2, lambda: bench.run_flows([flow], 1800))
    middle = next(work for work in flow["spec"]["works"] if work.get("matrix"))
    shards = list(middle["matrix"]["shard"])
    shards[width // 2] = f"changed-{width // 2}"

    def change_one_instance() -> None:
        middle["matrix"] = {"shard": shards}
        patch = {"spec": {"works": flow["spec"]["works"]}}
        bench.custom.patch_namespaced_custom_object(GROUP, VERSION, bench.namespace, "dagflows", name, patch)
        wait_for_run(bench, name, 2, 1800)

    record = bench.measure("cache", width + 2, change_one_instance)
    jobs, pods = run_children(bench, name, 2)
    first_jobs, first_pods = run_children(bench, name, 1)
    matrix_job = bench.batch.read_namespaced_job(naming.job_name(name, 2, middle["name"]), bench.namespace)
    record.update(
        instances=width,
        changed_instances=1,
        jobs_created=jobs,
        pods_created=pods,
        matrix_job_completions=matrix_job.spec.completions if matrix_job.spec else None,
        first_run_makespan_s=first["makespan_s"],
        first_run_jobs=first_jobs,
        first_run_pods=first_pods,
        entry_lists=entry_lists(record),
    )
    bench.results.pop("cache_first_run", None)


def entry_manifest(namespace: str, number: int, now: str) -> dict[str, Any]:
    key = hashlib.sha256(f"bench-{number}".encode()).hexdigest()[:32]
    return {
        "apiVersion": API_VERSION,
        "kind": CACHE_ENTRY_KIND,
        "metadata": {
            "name": f"bench-{number}",
            "namespace": namespace,
            "labels": {KEY_LABEL: key, naming.FLOW_LABEL: "other", naming.WORK_LABEL: f"w{number % 1000}"},
        },
        "spec": {
            "key": key,
            "work": f"w{number % 1000}",
            "flow": "other",
            "run": 1 + number // 1000,
            "createdAt": now,
            "image": "example.invalid/other:1.0",
            "parts": {"image": key[:16], "args[0]": key[16:]},
            "outputs": {"score": number},
        },
    }


def create_entries(bench: Bench, count: int) -> float:
    """`count` entries of another flow in the bench's namespace, made straight through the API; how
    long that took."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.monotonic()

    def create(number: int) -> None:
        body = entry_manifest(bench.namespace, number, now)
        for attempt in range(5):
            try:
                bench.custom.create_namespaced_custom_object(
                    GROUP, VERSION, bench.namespace, ENTRIES, body, _preload_content=False
                )
                return
            except Exception as error:  # a 409 of a retried create, or a timeout under load
                if getattr(error, "status", None) == 409:
                    return
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(create, range(count)))
    return time.monotonic() - started


def lookup_flow(name: str) -> dict[str, Any]:
    from bench.harness import chain, manifest

    works = chain(LOOKUP_CHAIN)
    grid = {
        "name": "grid",
        "container": {
            "image": "example.invalid/bench:1.0",
            "command": ["train", "--shard", "$(matrix.shard)"],
        },
        "dependsOn": [works[-1]["name"]],
        "matrix": {"shard": list(range(LOOKUP_MATRIX))},
    }
    return cached(manifest(name, [*works, grid]))


def scenario_cache_lookups(bench: Bench, entries: int) -> None:
    name = "lookups"
    flow = lookup_flow(name)
    lookups = LOOKUP_CHAIN + 1
    bench.run_flows([flow], 1800)

    def rerun_as(run: int) -> Callable[[], None]:
        def body() -> None:
            rerun(bench, name, f"run-{run}")
            wait_for_run(bench, name, run, 600)

        return body

    before = bench.measure("cachelookup_empty", lookups, rerun_as(2))
    created_s = create_entries(bench, entries)
    time.sleep(2.0)  # the webhook's last answers, before measuring
    after = bench.measure("cachelookup", lookups, rerun_as(3))
    jobs, _ = run_children(bench, name, 3)
    after.update(
        entries=entries,
        entries_created_s=round(created_s, 1),
        lookups=lookups,
        jobs_created=jobs,
        rerun_s=after["makespan_s"],
        rerun_without_entries_s=before["makespan_s"],
        operator_cpu_without_entries_s=before["operator_cpu_s"],
        entry_lists=entry_lists(after),
        entry_lists_per_lookup=round(entry_lists(after) / lookups, 2),
        entry_lists_without_entries=entry_lists(before),
    )
    bench.results.pop("cachelookup_empty", None)


def caching_table(results: dict[str, Any]) -> str:
    """The caching scenarios as a markdown table."""
    rows = ["| measure | value |", "| --- | --- |"]
    if "cache" in results:
        record = results["cache"]
        width = record["instances"]
        rows += [
            f"| 1 -> {width} -> 1 matrix flow, first run: makespan, Jobs, pods | "
            f"{record['first_run_makespan_s']} s, {record['first_run_jobs']}, {record['first_run_pods']} |",
            f"| rerun with 1 of {width} instances changed: makespan | {record['makespan_s']} s |",
            f"| that rerun: Jobs made, pods made, the matrix Job's completions | "
            f"{record['jobs_created']}, {record['pods_created']}, {record['matrix_job_completions']} |",
            f"| that rerun: operator CPU, lists of entries | "
            f"{record['operator_cpu_s']} s, {record['entry_lists']} |",
        ]
    if "cachelookup" in results:
        record = results["cachelookup"]
        rows += [
            f"| cached rerun ({record['lookups']} lookups, one a {LOOKUP_MATRIX}-instance matrix), no other "
            f"entries: latency, operator CPU | {record['rerun_without_entries_s']} s, "
            f"{record['operator_cpu_without_entries_s']} s |",
            f"| the same rerun with {record['entries']:,} entries in the namespace: latency, operator CPU | "
            f"{record['rerun_s']} s, {record['operator_cpu_s']} s |",
            f"| lists of entries per lookup (with {record['entries']:,} entries), Jobs made | "
            f"{record['entry_lists_per_lookup']}, {record['jobs_created']} |",
            f"| creating the {record['entries']:,} entries through the API | "
            f"{record['entries_created_s']} s |",
        ]
    return "\n".join(rows)
