"""The local cluster behaves like a real one: Jobs, Deployments, Services, GPU scheduling, restarts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube import CLUSTER_SCRIPT_PATH, apply, get_json, kubectl, run_cluster_script, wait_for

IMAGE = "example.invalid/sim:1.0"


def job(
    name: str, annotations: dict[str, str] | None = None, backoff_limit: int = 0, **pod_spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": IMAGE}],
                    **pod_spec,
                },
            },
        },
    }


def job_condition(name: str, namespace: str) -> str | None:
    status = get_json("job", name, namespace=namespace).get("status", {})
    for condition in status.get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return None


def test_simulated_nodes_are_ready_in_two_pools(cluster: object) -> None:
    # The real node, when the machine runs one, is checked by tests/real.
    nodes = [
        n
        for n in get_json("nodes")["items"]
        if (n["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake"
    ]
    ready = [
        n
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    gpu = [n for n in ready if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    assert len(ready) == 4
    assert len(gpu) == 2
    for node in gpu:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]


def test_job_completes(namespace: str) -> None:
    apply(job("ok", annotations={"sim.dagflow.dev/duration": "1s"}), namespace=namespace)
    assert wait_for(lambda: job_condition("ok", namespace), timeout=60, what="job ok to finish") == "Complete"
    pods = get_json("pods", "-l", "job-name=ok", namespace=namespace)["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]


def test_job_told_to_fail_ends_failed_after_its_backoff_limit(namespace: str) -> None:
    apply(job("bad", annotations={"sim.dagflow.dev/exit-code": "3"}, backoff_limit=1), namespace=namespace)
    assert wait_for(lambda: job_condition("bad", namespace), timeout=120, what="job bad to fail") == "Failed"
    status = get_json("job", "bad", namespace=namespace)["status"]
    assert status["failed"] == 2
    pods = get_json("pods", "-l", "job-name=bad", namespace=namespace)["items"]
    exit_codes = {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods}
    assert exit_codes == {3}


def test_indexed_job_pod_told_to_fail_once_succeeds_on_its_retry(namespace: str) -> None:
    flaky = job(
        "flaky",
        annotations={"sim.dagflow.dev/exit-code": "4", "sim.dagflow.dev/fail-attempts": "1"},
        backoff_limit=2,
    )
    flaky["spec"].update(completions=1, completionMode="Indexed", backoffLimitPerIndex=2)
    apply(flaky, namespace=namespace)
    assert (
        wait_for(lambda: job_condition("flaky", namespace), timeout=120, what="flaky to finish") == "Complete"
    )
    pods = get_json("pods", "-l", "job-name=flaky", namespace=namespace)["items"]
    assert sorted(p["status"]["phase"] for p in pods) == ["Failed", "Succeeded"]


def test_deployment_becomes_available_and_its_service_gets_endpoints(namespace: str) -> None:
    labels = {"app": "web"}
    apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {"name": "web", "image": IMAGE, "ports": [{"containerPort": 8080}]}
                            ]
                        },
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web"},
                "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]},
            },
        ],
        namespace=namespace,
    )
    kubectl("wait", "--for=condition=Available", "deployment/web", "--timeout=60s", namespace=namespace)

    def ready_endpoints() -> int:
        slices = get_json("endpointslices", "-l", "kubernetes.io/service-name=web", namespace=namespace)
        return sum(
            1
            for s in slices["items"]
            for e in s.get("endpoints") or []
            if e.get("conditions", {}).get("ready")
        )

    assert wait_for(lambda: ready_endpoints() == 2, timeout=60, what="2 ready endpoints")


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_pod(name: str, tolerate: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": IMAGE, "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    }
    if tolerate:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_gpu_pod_lands_on_a_gpu_node_only_when_it_tolerates_the_taint(namespace: str) -> None:
    apply([gpu_pod("tolerates", True), gpu_pod("intolerant", False)], namespace=namespace)
    kubectl("wait", "--for=condition=Ready", "pod/tolerates", "--timeout=60s", namespace=namespace)
    node = get_json("pod", "tolerates", namespace=namespace)["spec"]["nodeName"]
    labels = get_json("node", node)["metadata"]["labels"]
    assert labels.get("nvidia.com/gpu.present") == "true"

    def unschedulable() -> bool:
        pod = get_json("pod", "intolerant", namespace=namespace)
        conditions = pod["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c["reason"] == "Unschedulable" for c in conditions)

    assert wait_for(unschedulable, timeout=30, what="the intolerant pod to be unschedulable")
    pod = get_json("pod", "intolerant", namespace=namespace)
    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]


@pytest.mark.disruptive
def test_stopping_and_starting_the_cluster_keeps_its_objects(namespace: str) -> None:
    kubectl("create", "configmap", "survivor", "--from-literal=answer=42", namespace=namespace)
    assert CLUSTER_SCRIPT_PATH.exists()
    run_cluster_script("stop")
    assert run_cluster_script("status", check=False).returncode != 0
    run_cluster_script("start")
    data = wait_for(
        lambda: get_json("configmap", "survivor", namespace=namespace)["data"],
        timeout=60,
        what="the configmap after restart",
    )
    assert data == {"answer": "42"}
    # The restarted kwok plays pods again: a new Job still completes.
    apply(job("after-restart"), namespace=namespace)
    assert wait_for(lambda: job_condition("after-restart", namespace), timeout=60, what="a job after restart")
