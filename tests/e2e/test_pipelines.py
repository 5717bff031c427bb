"""DAGFlows run end to end on the local cluster by the operator's own process."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.flows import (
    create,
    failing,
    flow,
    jobs,
    jobs_per_run_and_work,
    pods_of_work,
    wait_for_phase,
    work,
    works_by_name,
)
from tests.kube import get_json, kubectl, table_row, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

TRAININGS = ("train-linear", "train-forest", "train-gbr")


def classic(name: str, fail: str | None = None, **spec: object) -> dict[str, object]:
    """process -> three GPU trainings in parallel -> serve."""
    works = [work("process", duration="1s")]
    for training in TRAININGS:
        annotations = failing(exit_code=2) if training == fail else {}
        works.append(work(training, "process", duration="2s", gpu=1, annotations=annotations))
    works.append(work("serve", *TRAININGS, serve={"port": 8080}))
    return flow(name, works, **spec)


def node_pool(node_name: str) -> str:
    labels = get_json("node", node_name)["metadata"]["labels"]
    return "gpu" if labels.get("nvidia.com/gpu.present") == "true" else "cpu"


def test_classic_pipeline_ends_serving_with_trainings_on_gpu_nodes(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(classic("ml"), namespace)
    final = wait_for_phase(namespace, "ml")
    assert final["phase"] == "Serving", final
    assert final["progress"] == "5/5"
    assert final["endpoint"] == f"http://ml-serve.{namespace}.svc:8080"
    works = works_by_name(final)
    assert {name: works[name]["phase"] for name in TRAININGS} == dict.fromkeys(TRAININGS, "Succeeded")
    assert works["serve"]["phase"] == "Serving"

    for training in TRAININGS:
        pods = pods_of_work(namespace, training)
        assert pods and all(node_pool(pod["spec"]["nodeName"]) == "gpu" for pod in pods)
        limits = pods[0]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    for other in ("process", "serve"):
        pods = pods_of_work(namespace, other)
        assert pods and all(node_pool(pod["spec"]["nodeName"]) == "cpu" for pod in pods)
        assert "nvidia.com/gpu" not in (pods[0]["spec"]["containers"][0].get("resources") or {}).get(
            "limits", {}
        )

    deployment = get_json("deployment", "ml-serve", namespace=namespace)
    last_training_done = max(works[name]["finishedAt"] for name in TRAININGS)
    assert deployment["metadata"]["creationTimestamp"] >= last_training_done
    trainings_started = sorted(works[name]["startedAt"] for name in TRAININGS)
    assert trainings_started[-1] < min(works[name]["finishedAt"] for name in TRAININGS), "trainings overlap"

    table = kubectl("get", "dagflows", namespace=namespace).stdout
    assert table.split("\n")[0].split() == [
        "NAME",
        "PHASE",
        "PROGRESS",
        "RUN",
        "STARTED",
        "SCHEDULE",
        "ENDPOINT",
        "AGE",
    ]
    row = table_row(table, "ml")
    assert [row["PHASE"], row["PROGRESS"], row["RUN"]] == ["Serving", "5/5", "1"]
    assert row["SCHEDULE"] == ""  # no schedule: the flow runs when created or changed
    assert row["ENDPOINT"] == f"http://ml-serve.{namespace}.svc:8080"
    ready = next(c for c in final["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"


def test_fail_fast_fails_the_flow_and_skips_serve(namespace: str, running_operator: OperatorProcess) -> None:
    create(classic("ml", fail="train-forest"), namespace)
    final = wait_for_phase(namespace, "ml", "Failed", "Serving")
    assert final["phase"] == "Failed"
    assert "train-forest" in final["message"]
    works = works_by_name(wait_for_phase(namespace, "ml", "Failed"))
    assert works["train-forest"]["phase"] == "Failed"
    assert works["serve"]["phase"] == "Skipped"
    assert "train-forest" in works["serve"]["message"]
    assert not kubectl("get", "deployments", "-o", "name", namespace=namespace).stdout.strip()
    ready = next(c for c in final["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_continue_lets_the_other_branches_finish(namespace: str, running_operator: OperatorProcess) -> None:
    works = [
        work("process"),
        work("train-a", "process", duration="1s", annotations=failing()),
        work("train-b", "process", duration="3s"),
        work("report-b", "train-b"),
        work("cleanup", "train-a", "train-b", when="AllDone"),
        work("serve", "train-a", "train-b", serve={"port": 8080}),
    ]
    create(flow("cont", works, failurePolicy="Continue"), namespace)

    # The flow is Failed as soon as train-a fails, but the other branches still run to their end.
    def settled() -> dict[str, str] | None:
        current = works_by_name(wait_for_phase(namespace, "cont", "Failed"))
        phases = {name: entry["phase"] for name, entry in current.items()}
        return phases if all(phase not in ("Pending", "Running") for phase in phases.values()) else None

    phases = wait_for(settled, timeout=120, what="every work of the flow to finish")
    assert phases == {
        "process": "Succeeded",
        "train-a": "Failed",
        "train-b": "Succeeded",
        "report-b": "Succeeded",
        "cleanup": "Succeeded",
        "serve": "Skipped",
    }


def test_work_that_fails_once_succeeds_on_its_retry(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("retry", [work("flaky", retries=2, annotations=failing(exit_code=3, attempts=1))]), namespace)
    final = wait_for_phase(namespace, "retry", timeout=120)
    assert final["phase"] == "Succeeded", final
    assert works_by_name(final)["flaky"]["attempts"] == 2


def test_work_out_of_retries_fails_with_the_reason(namespace: str, running_operator: OperatorProcess) -> None:
    create(flow("doomed", [work("bad", retries=1, annotations=failing())]), namespace)
    final = wait_for_phase(namespace, "doomed", timeout=120)
    assert final["phase"] == "Failed"
    bad = works_by_name(final)["bad"]
    assert bad["attempts"] == 2
    assert "BackoffLimitExceeded" in bad["message"]


def test_work_that_times_out_fails_with_the_reason(namespace: str, running_operator: OperatorProcess) -> None:
    create(flow("slow", [work("sleepy", duration="60s", timeoutSeconds=2)]), namespace)
    final = wait_for_phase(namespace, "slow", timeout=60)
    assert final["phase"] == "Failed"
    assert "DeadlineExceeded" in works_by_name(final)["sleepy"]["message"]


def test_diamond_runs_each_work_after_its_dependencies(
    namespace: str, running_operator: OperatorProcess
) -> None:
    works = [work("a", duration="1s"), work("b", "a", duration="1s"), work("c", "a"), work("d", "b", "c")]
    create(flow("diamond", works), namespace)
    final = wait_for_phase(namespace, "diamond")
    assert final["phase"] == "Succeeded"
    assert final["progress"] == "4/4"
    entries = works_by_name(final)
    assert entries["b"]["startedAt"] >= entries["a"]["finishedAt"]
    assert entries["d"]["startedAt"] >= max(entries["b"]["finishedAt"], entries["c"]["finishedAt"])
    events = kubectl(
        "get", "events", "--field-selector", "involvedObject.name=diamond", "-o", "json", namespace=namespace
    ).stdout
    reasons = [(event["reason"], event["message"]) for event in json.loads(events)["items"]]
    assert sum(1 for reason, _ in reasons if reason == "WorkSucceeded") == 4
    assert ("WorkStarted", "Work d started") in reasons


def test_parallelism_caps_running_batch_works(namespace: str, running_operator: OperatorProcess) -> None:
    works = [work(f"w{i}", duration="2s") for i in range(5)]
    create(flow("capped", works, parallelism=2), namespace)
    final = wait_for_phase(namespace, "capped", timeout=120)
    assert final["phase"] == "Succeeded"
    intervals = [(entry["startedAt"], entry["finishedAt"]) for entry in final["works"]]
    for start, _ in intervals:
        running = sum(1 for other_start, other_end in intervals if other_start <= start < other_end)
        assert running <= 2, intervals


def test_wide_flow_of_200_works_completes(namespace: str, running_operator: OperatorProcess) -> None:
    works = [work("start"), *[work(f"w{i:03d}", "start") for i in range(198)]]
    works.append(work("end", *[f"w{i:03d}" for i in range(198)]))
    create(flow("wide", works), namespace)
    final = wait_for_phase(namespace, "wide", timeout=300)
    assert final["phase"] == "Succeeded"
    assert final["progress"] == "200/200"
    assert len(jobs(namespace)) == 200


def test_flow_of_2000_works_completes(namespace: str, running_operator: OperatorProcess) -> None:
    layers, width = 20, 100
    works = []
    for layer in range(layers):
        for index in range(width):
            name = f"l{layer:02d}-w{index:02d}"
            works.append(work(name, f"l{layer - 1:02d}-w{index:02d}") if layer else work(name))
    create(flow("big", works), namespace)
    final = wait_for_phase(namespace, "big", timeout=900)
    assert final["phase"] == "Succeeded"
    assert final["progress"] == "2000/2000"
    counts = jobs_per_run_and_work(namespace)
    assert len(counts) == 2000 and set(counts.values()) == {1}
    stored = json.loads(kubectl("get", "dagflow", "big", "-o", "json", namespace=namespace).stdout)
    status_size = len(json.dumps(stored["status"], separators=(",", ":")))
    object_size = len(json.dumps(stored, separators=(",", ":")))
    assert status_size < 512 * 1024, f"the status of the 2,000-work flow is {status_size} bytes"
    assert object_size < 1536 * 1024, f"the 2,000-work flow object is {object_size} bytes (etcd's limit)"


def test_metrics_and_liveness_endpoints_answer(namespace: str, running_operator: OperatorProcess) -> None:
    create(flow("observed", [work("only")]), namespace)
    wait_for_phase(namespace, "observed")
    with urllib.request.urlopen(running_operator.health_url, timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(running_operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    assert 'dagflow_flows{phase="Succeeded"}' in text
    assert "dagflow_reconcile_duration_seconds_count" in text
    assert 'dagflow_work_duration_seconds_count{outcome="Succeeded"}' in text
