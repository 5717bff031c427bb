"""Serve works' Deployments and Services: never someone else's, rolled to exactly the new spec,
brought back when deleted, removed when the work no longer serves, and watched for availability."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.flows import create, flow, status, wait_for_phase, work, works_by_name
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster


def children(namespace: str, kinds: str = "deployments,services") -> list[str]:
    listing = kubectl("get", kinds, "-o", "name", namespace=namespace).stdout
    return sorted(line for line in listing.split() if line)


def test_a_deployment_of_the_serve_name_owned_by_no_flow_is_left_alone(
    namespace: str, running_operator: OperatorProcess
) -> None:
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop-web", "labels": {"app": "shop"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/shop:1"}]},
            },
        },
    }
    apply(foreign, namespace=namespace)
    before = get_json("deployment", "shop-web", namespace=namespace)
    create(flow("shop", [work("train"), work("web", "train", serve={"port": 8080})]), namespace)
    final = wait_for_phase(namespace, "shop", timeout=60)
    assert final["phase"] == "Failed", final
    message = works_by_name(final)["web"]["message"]
    assert "Deployment shop-web already exists and belongs to something else" in message, message
    after = get_json("deployment", "shop-web", namespace=namespace)
    # Not the resourceVersion: the Deployment controller writes the status as the pod comes up.
    # Nothing but that status may have been written: same generation, labels and writers.
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert spec_writers(after) == spec_writers(before)
    assert "ownerReferences" not in after["metadata"]


def spec_writers(deployment: dict[str, Any]) -> set[tuple[str, str]]:
    """Who wrote the object's fields other than its status (server-side apply's managed fields)."""
    return {
        (entry["manager"], entry["operation"])
        for entry in deployment["metadata"].get("managedFields", [])
        if entry.get("subresource") != "status"
    }


def test_rolling_a_serve_work_removes_what_the_new_spec_removed(
    namespace: str, running_operator: OperatorProcess
) -> None:
    kubectl("create", "serviceaccount", "web-sa", namespace=namespace)
    served: dict[str, Any] = work(
        "web",
        gpu=1,
        serve={"port": 8080},
        labels={"team": "recsys"},
        nodeSelector={"kubernetes.io/arch": "amd64"},
        serviceAccountName="web-sa",
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    served["container"]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    manifest = flow("roll", [served])
    create(manifest, namespace)
    assert wait_for_phase(namespace, "roll", timeout=60)["phase"] == "Serving"
    uid = get_json("deployment", "roll-web", namespace=namespace)["metadata"]["uid"]

    plain = work("web", serve={"port": 8080})
    manifest["spec"]["works"] = [plain]
    apply(manifest, namespace=namespace)
    wait_for(lambda: status(namespace, "roll").get("run") == 2, timeout=30, what="run 2")
    assert wait_for_phase(namespace, "roll", "Serving", timeout=60)["run"] == 2

    deployment = get_json("deployment", "roll-web", namespace=namespace)
    assert deployment["metadata"]["uid"] == uid, "the Deployment was replaced, not rolled"
    template = deployment["spec"]["template"]
    pod_spec = template["spec"]
    container = pod_spec["containers"][0]
    assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("limits", {})
    assert "nodeSelector" not in pod_spec, pod_spec.get("nodeSelector")
    assert not any(t.get("key") == "nvidia.com/gpu" for t in pod_spec.get("tolerations") or [])
    assert "volumes" not in pod_spec and "volumeMounts" not in container
    assert pod_spec.get("serviceAccountName") in (None, "default")
    assert "team" not in template["metadata"]["labels"]


def test_a_deleted_service_or_deployment_of_a_serving_flow_comes_back(
    namespace: str, running_operator: OperatorProcess
) -> None:
    create(flow("steady", [work("web", serve={"port": 8080})]), namespace)
    assert wait_for_phase(namespace, "steady", timeout=60)["phase"] == "Serving"
    for kind in ("service", "deployment"):
        old_uid = get_json(kind, "steady-web", namespace=namespace)["metadata"]["uid"]
        kubectl("delete", kind, "steady-web", namespace=namespace)

        def back(kind: str = kind, old_uid: str = old_uid) -> bool:
            found = kubectl(
                "get", kind, "steady-web", "-o", "jsonpath={.metadata.uid}", namespace=namespace, check=False
            )
            return found.returncode == 0 and found.stdout not in ("", old_uid)

        wait_for(back, timeout=20, what=f"the {kind} to come back")
    assert wait_for_phase(namespace, "steady", "Serving", timeout=60)["phase"] == "Serving"
    service = get_json("service", "steady-web", namespace=namespace)
    assert service["metadata"]["ownerReferences"][0]["name"] == "steady"
    assert service["spec"]["ports"][0]["port"] == 8080


def test_a_serve_work_removed_or_turned_into_a_batch_work_loses_its_deployment_and_service(
    namespace: str, running_operator: OperatorProcess
) -> None:
    manifest = flow("shrink", [work("web", serve={"port": 8080}), work("api", serve={"port": 9090})])
    create(manifest, namespace)
    assert wait_for_phase(namespace, "shrink", timeout=60)["phase"] == "Serving"
    assert children(namespace) == [
        "deployment.apps/shrink-api",
        "deployment.apps/shrink-web",
        "service/shrink-api",
        "service/shrink-web",
    ]
    manifest["spec"]["works"] = [work("web", serve={"port": 8080}), work("api")]  # api now a batch work
    apply(manifest, namespace=namespace)
    wait_for(
        lambda: children(namespace) == ["deployment.apps/shrink-web", "service/shrink-web"],
        timeout=30,
        what="api's Deployment and Service to go",
    )
    manifest["spec"]["works"] = [work("api")]  # web removed
    apply(manifest, namespace=namespace)
    wait_for(lambda: children(namespace) == [], timeout=30, what="web's Deployment and Service to go")
    final = wait_for(
        lambda: (s := status(namespace, "shrink")).get("run") == 3 and s.get("phase") == "Succeeded" and s,
        timeout=60,
        what="run 3 to succeed",
    )
    assert [entry["name"] for entry in final["works"]] == ["api"]


def test_a_serving_work_that_loses_availability_warns(
    namespace: str, running_operator: OperatorProcess
) -> None:
    pinned = work("web", serve={"port": 8080}, nodeSelector={"kubernetes.io/hostname": "cpu-1"})
    create(flow("fragile", [pinned]), namespace)
    assert wait_for_phase(namespace, "fragile", timeout=60)["phase"] == "Serving"
    kubectl("cordon", "cpu-1")
    try:
        kubectl("delete", "pods", "-l", "dagflow.dev/work=web", namespace=namespace)

        def warned() -> list[dict[str, Any]]:
            uid = get_json("dagflow", "fragile", namespace=namespace)["metadata"]["uid"]
            events = get_json("events", "--field-selector", f"involvedObject.uid={uid}", namespace=namespace)
            return [event for event in events["items"] if event["reason"] == "WorkUnavailable"]

        (event,) = wait_for(warned, timeout=30, what="a WorkUnavailable Event")
        assert event["type"] == "Warning"
        assert event["message"].startswith(
            "Work web is unavailable: Deployment fragile-web lost availability"
        )
        current = status(namespace, "fragile")
        assert current["phase"] == "Running"
        assert works_by_name(current)["web"]["phase"] == "Running"
    finally:
        kubectl("uncordon", "cpu-1")
    assert wait_for_phase(namespace, "fragile", "Serving", timeout=60)["phase"] == "Serving"
