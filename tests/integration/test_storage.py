"""The local cluster's default StorageClass serves the simulated nodes: a claim that names no class is
provisioned for its first pod, and one ReadWriteMany volume is mounted on CPU and GPU nodes alike
(tests/cluster/storage.sh; kwok plays the provisioner's helper pods there, tests/cluster/stages.yaml).
tests/real/test_local_storage.py checks the folders on the real node."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube import apply, get_json, kubectl, wait_for

pytestmark = pytest.mark.local_cluster

IMAGE = "example.invalid/sim:1.0"
STORAGE_CLASS = "dagflow-local"
PROVISIONER = "dagflow.dev/local-path"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def claim(name: str, access_mode: str = "ReadWriteMany") -> dict[str, Any]:
    """A claim that names no class, as the operator's workspace claims do by default."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": [access_mode], "resources": {"requests": {"storage": "1Gi"}}},
    }


def pod_of_pool(name: str, pool: str, claim: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"dagflow.dev/pool": pool},
            "containers": [
                {"name": "main", "image": IMAGE, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            **spec,
        },
    }


def running_node(namespace: str, name: str) -> str | None:
    pod = get_json("pod", name, namespace=namespace)
    return pod["spec"].get("nodeName") if pod["status"].get("phase") == "Running" else None


def claim_events(namespace: str, name: str) -> list[str]:
    events = get_json(
        "events",
        "--field-selector",
        f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}",
        namespace=namespace,
    )
    return [event["reason"] for event in events["items"]]


def test_a_claim_without_a_class_is_provisioned_for_a_cpu_pod_shared_with_a_gpu_pod_and_deleted(
    namespace: str,
) -> None:
    storage_class = get_json("storageclass", STORAGE_CLASS)
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert storage_class["provisioner"] == PROVISIONER

    apply(claim("data"), namespace=namespace)
    assert get_json("pvc", "data", namespace=namespace)["spec"]["storageClassName"] == STORAGE_CLASS
    wait_for(
        lambda: "WaitForFirstConsumer" in claim_events(namespace, "data"),
        timeout=60,
        what="the claim to wait for its first consumer",
    )

    # Its first pod, on a simulated CPU node: the provisioner's helper pod for that node is played by
    # kwok, the volume is made and bound, and the pod runs.
    apply(pod_of_pool("cpu", "cpu", "data"), namespace=namespace)
    cpu_node = wait_for(lambda: running_node(namespace, "cpu"), timeout=90, what="pod cpu to run")
    assert get_json("node", cpu_node)["metadata"]["labels"]["dagflow.dev/pool"] == "cpu"
    bound = get_json("pvc", "data", namespace=namespace)
    assert bound["status"]["phase"] == "Bound", bound["status"]
    volume_name = bound["spec"]["volumeName"]
    volume = get_json("pv", volume_name)
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == PROVISIONER
    assert volume["metadata"]["annotations"]["local.path.provisioner/selected-node"] == cpu_node
    assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not volume["spec"].get("nodeAffinity"), "a shared folder ties the volume to no node"

    # A second pod on a simulated GPU node mounts the same volume.
    apply(pod_of_pool("gpu", "gpu", "data", tolerations=[GPU_TOLERATION]), namespace=namespace)
    gpu_node = wait_for(lambda: running_node(namespace, "gpu"), timeout=60, what="pod gpu to run")
    assert get_json("node", gpu_node)["metadata"]["labels"]["dagflow.dev/pool"] == "gpu"

    # Deleting the claim, once its pods are gone, deletes the volume (the teardown helper pod ends too).
    kubectl("delete", "pod", "cpu", "gpu", "--wait=true", "--timeout=60s", namespace=namespace)
    deleted_with_its_claim(namespace, "data", volume_name)


def test_a_read_write_once_claim_without_a_class_is_provisioned_too(namespace: str) -> None:
    apply([claim("data", "ReadWriteOnce"), pod_of_pool("cpu", "cpu", "data")], namespace=namespace)
    wait_for(lambda: running_node(namespace, "cpu"), timeout=90, what="pod cpu to run")
    bound = get_json("pvc", "data", namespace=namespace)
    assert bound["spec"]["storageClassName"] == STORAGE_CLASS
    assert bound["status"]["phase"] == "Bound", bound["status"]
    volume = get_json("pv", bound["spec"]["volumeName"])
    assert volume["spec"]["accessModes"] == ["ReadWriteOnce"]
    kubectl("delete", "pod", "cpu", "--wait=true", "--timeout=60s", namespace=namespace)
    deleted_with_its_claim(namespace, "data", bound["spec"]["volumeName"])


def deleted_with_its_claim(namespace: str, claim_name: str, volume_name: str) -> None:
    """Delete the claim; its volume goes, and so do the provisioner's helper pods for it."""
    kubectl("delete", "pvc", claim_name, "--wait=true", "--timeout=60s", namespace=namespace)
    wait_for(
        lambda: kubectl("get", "pv", volume_name, check=False).returncode != 0,
        timeout=150,
        what=f"volume {volume_name} to be deleted",
    )

    def helpers_left() -> list[str]:
        helpers = get_json("pods", "-l", "dagflow.dev/local-path-helper", namespace="local-path-storage")
        return [pod["metadata"]["name"] for pod in helpers["items"] if volume_name in pod["metadata"]["name"]]

    wait_for(lambda: not helpers_left(), timeout=60, what=f"the helper pods of {volume_name} to go")
