"""What the API server refuses: refusals that may pass later are retried and explained, only an
invalid object fails a work at once, and disrupted pods do not use up retries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.flows import create, flow, status, wait_for_phase, work, works_by_name
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess


def quota(namespace: str, name: str, hard: dict[str, str]) -> None:
    apply(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}},
        namespace,
    )

    def counted() -> bool:
        # Until the quota controller has counted, admission refuses with "status unknown".
        return set(
            (get_json("resourcequota", name, namespace=namespace).get("status") or {}).get("used", {})
        ) == set(hard)

    wait_for(counted, timeout=30, what=f"quota {name} to be counted")


def message_of(namespace: str, flow_name: str, work_name: str) -> str:
    return str(works_by_name(status(namespace, flow_name)).get(work_name, {}).get("message") or "")


@pytest.mark.local_cluster
def test_a_job_refused_by_a_quota_waits_and_runs_once_the_quota_allows_it(
    namespace: str, running_operator: OperatorProcess
) -> None:
    quota(namespace, "no-jobs", {"count/jobs.batch": "0"})
    create(flow("quota", [work("a"), work("b", "a")]), namespace)
    message = wait_for(
        lambda: "exceeded quota" in (text := message_of(namespace, "quota", "a")) and text,
        timeout=30,
        what="work a to say the quota refuses its Job",
    )
    assert message.startswith("waiting: the API server refused its child"), message
    assert message.endswith("retrying"), message
    current = status(namespace, "quota")
    assert current["phase"] == "Running"
    assert works_by_name(current)["a"]["phase"] == "Pending"
    kubectl("delete", "resourcequota", "no-jobs", namespace=namespace)
    final = wait_for_phase(namespace, "quota", timeout=60)
    assert final["phase"] == "Succeeded", final


def test_refused_pods_are_explained_and_the_work_ends_at_its_timeout(
    namespace: str, running_operator: OperatorProcess
) -> None:
    quota(namespace, "no-pods", {"pods": "0"})
    create(flow("podless", [work("a", timeoutSeconds=12)]), namespace)
    message = wait_for(
        lambda: "exceeded quota" in (text := message_of(namespace, "podless", "a")) and text,
        timeout=20,
        what="work a to say why its pods are refused",
    )
    assert message.startswith("its pods are refused: "), message
    assert works_by_name(status(namespace, "podless"))["a"]["phase"] == "Running"
    final = wait_for_phase(namespace, "podless", timeout=60)
    assert final["phase"] == "Failed", final
    assert works_by_name(final)["a"]["message"] == "timed out after 12s (DeadlineExceeded)"


def test_an_invalid_child_fails_its_work_at_once(namespace: str, running_operator: OperatorProcess) -> None:
    bad = work("a")
    # A mount of a volume the pod does not have: only the API server's own validation sees it (422).
    bad["container"]["volumeMounts"] = [{"name": "missing", "mountPath": "/data"}]
    create(flow("invalid", [bad, work("b", "a")]), namespace)
    final = wait_for_phase(namespace, "invalid", timeout=30)
    assert final["phase"] == "Failed", final
    entries = works_by_name(final)
    assert entries["a"]["message"].startswith("rejected by the API server: "), entries["a"]
    assert "volumeMounts[0].name" in entries["a"]["message"], entries["a"]["message"]
    assert entries["b"]["phase"] == "Skipped"


def running_pod(namespace: str, work_name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        pods = get_json("pods", "-l", f"dagflow.dev/work={work_name}", namespace=namespace)["items"]
        running = [
            pod
            for pod in pods
            if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        ]
        return running[0] if running else None

    pod: dict[str, Any] = wait_for(found, timeout=30, what=f"a running pod of {work_name}")
    return pod


@pytest.mark.local_cluster
def test_evicted_or_deleted_pods_do_not_use_up_retries(
    namespace: str, running_operator: OperatorProcess
) -> None:
    # Long enough that no pod finishes before it is disrupted.
    create(flow("disrupted", [work("a", duration="15s", retries=0)]), namespace)

    def replaced(before: dict[str, Any]) -> dict[str, Any]:
        pod: dict[str, Any] = wait_for(
            lambda: (
                (pod := running_pod(namespace, "a"))["metadata"]["uid"] != before["metadata"]["uid"] and pod
            ),
            timeout=45,
            what=f"a pod in place of {before['metadata']['name']}",
        )
        return pod

    # Evicted through the API (as by a drain).
    first = running_pod(namespace, "a")
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": first["metadata"]["name"], "namespace": namespace},
    }
    kubectl(
        "create",
        "--raw",
        f"/api/v1/namespaces/{namespace}/pods/{first['metadata']['name']}/eviction",
        "-f",
        "-",
        input=json.dumps(eviction),
    )
    # Ended by its node, as a kubelet does under node pressure: failed, marked as a disruption.
    second = replaced(first)
    ended = {
        "status": {
            "phase": "Failed",
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": "memory pressure",
                }
            ],
        }
    }
    kubectl(
        "patch",
        "pod",
        second["metadata"]["name"],
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(ended),
        namespace=namespace,
    )
    # Deleted by hand.
    third = replaced(second)
    kubectl("delete", "pod", third["metadata"]["name"], "--wait=false", namespace=namespace)
    final = wait_for_phase(namespace, "disrupted", timeout=60)
    assert final["phase"] == "Succeeded", final
    job = get_json("job", works_by_name(final)["a"]["job"], namespace=namespace)
    assert job["status"].get("failed", 0) == 0, job["status"]


def test_a_privileged_work_in_a_restricted_namespace_says_the_api_servers_refusal(
    namespace: str, running_operator: OperatorProcess
) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    risky = work("a", timeoutSeconds=15)
    risky["container"]["securityContext"] = {"privileged": True}
    create(flow("risky", [risky]), namespace)
    message = wait_for(
        lambda: "PodSecurity" in (text := message_of(namespace, "risky", "a")) and text,
        timeout=30,
        what="work a to say why its pods are refused",
    )
    assert message.startswith("its pods are refused: "), message
    assert 'violates PodSecurity "restricted:latest"' in message and "privileged" in message, message
    assert not get_json("pods", namespace=namespace)["items"], "no pod of it was made"
