"""Dynamic storage on the real node: claims of the StorageClass `dagflow-local` get a folder of this
machine from the local-path-provisioner that tests/cluster/storage.sh runs beside the cluster."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.kube import REPO_ROOT, apply, get_json, kubectl, local_cluster_name, wait_for
from tests.real.conftest import REAL_NODE

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

STORAGE_SCRIPT = REPO_ROOT / "tests" / "cluster" / "storage.sh"
STORAGE_CLASS = "dagflow-local"
PROVISIONER = "dagflow.dev/local-path"
BUSYBOX_IMAGE = "dagflow.local/busybox:1.35"


def storage_script(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STORAGE_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DAGFLOW_CLUSTER_NAME": local_cluster_name()},
        check=False,
    )


@pytest.fixture
def provisioner(real_node: dict[str, Any]) -> Path:
    """The cluster's provisioner runs (cluster.sh starts it with the real node); the folder of its volumes."""
    status = storage_script("status")
    assert status.returncode == 0, (
        f"No storage provisioner for cluster {local_cluster_name()}"
        f" (tests/cluster/storage.sh up starts it):\n"
        f"{status.stdout}{status.stderr}"
    )
    return Path(storage_script("volumes-dir").stdout.strip())


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "storageClassName": STORAGE_CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "16Mi"}},
        },
    }


def busybox_pod(name: str, claim_name: str, script: str) -> dict[str, Any]:
    """A pod of the local busybox image that runs `script` with the claim at /data, as an unprivileged
    user (the provisioner makes each volume's folder writable by all)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
        },
    }


def finished(namespace: str, pod: str) -> dict[str, Any] | None:
    found: dict[str, Any] = get_json("pod", pod, namespace=namespace)
    return found if found["status"].get("phase") in ("Succeeded", "Failed") else None


def run_to_completion(namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    apply(pod, namespace=namespace)
    name = pod["metadata"]["name"]
    done: dict[str, Any] = wait_for(lambda: finished(namespace, name), timeout=180, what=f"pod {name} to end")
    logs = kubectl("logs", name, namespace=namespace, check=False).stdout
    assert done["status"]["phase"] == "Succeeded", f"{name}: {done['status']}\n{logs}"
    assert done["spec"]["nodeName"] == REAL_NODE
    return done


def claim_events(namespace: str, name: str) -> list[str]:
    events = get_json(
        "events",
        "--field-selector",
        f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}",
        namespace=namespace,
    )
    return [event["reason"] for event in events["items"]]


def test_a_claim_of_the_local_class_is_provisioned_on_the_real_node_for_its_first_pod(
    real_node_namespace: str, provisioner: Path
) -> None:
    namespace = real_node_namespace
    storage_class = get_json("storageclass", STORAGE_CLASS)
    assert storage_class["provisioner"] == PROVISIONER
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    # Not the default class: claims without a class (bound in advance by the tests) are left alone.
    annotations = storage_class["metadata"].get("annotations") or {}
    assert annotations.get("storageclass.kubernetes.io/is-default-class") != "true"

    claim_name = f"data-{uuid.uuid4().hex[:6]}"
    apply(claim(claim_name), namespace=namespace)
    # No pod uses it yet: the volume waits for one.
    wait_for(
        lambda: "WaitForFirstConsumer" in claim_events(namespace, claim_name),
        timeout=60,
        what=f"claim {claim_name} to wait for its first consumer",
    )
    pending = get_json("pvc", claim_name, namespace=namespace)
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("volumeName"), pending

    message = f"written on {REAL_NODE} {uuid.uuid4().hex}"
    write = f"echo '{message}' >/data/greeting && id -u >/data/writer"
    run_to_completion(namespace, busybox_pod("writer", claim_name, write))

    bound = get_json("pvc", claim_name, namespace=namespace)
    assert bound["status"]["phase"] == "Bound", bound["status"]
    volume_name = bound["spec"]["volumeName"]
    volume = get_json("pv", volume_name)
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == PROVISIONER
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    terms = volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms == [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [REAL_NODE]}]}
    ]
    # A folder of this machine, the real node's, under the cluster's own folder of volumes.
    folder = Path(volume["spec"]["hostPath"]["path"])
    assert folder.parent == provisioner, folder
    assert folder.name == f"{volume_name}_{namespace}_{claim_name}"
    assert (folder / "greeting").read_text() == message + "\n"
    assert (folder / "writer").read_text() == "65534\n"

    # A second pod finds what the first one wrote.
    run_to_completion(namespace, busybox_pod("reader", claim_name, "cat /data/greeting"))
    assert kubectl("logs", "reader", namespace=namespace).stdout == message + "\n"

    # Deleting the claim (once its pods are gone) deletes the volume and its folder.
    kubectl("delete", "pod", "writer", "reader", "--wait=true", "--timeout=60s", namespace=namespace)
    kubectl("delete", "pvc", claim_name, "--wait=true", "--timeout=60s", namespace=namespace)
    wait_for(
        lambda: kubectl("get", "pv", volume_name, check=False).returncode != 0,
        timeout=180,
        what=f"volume {volume_name} to be deleted",
    )
    assert not folder.exists(), f"{folder} stayed after its volume was deleted"


def test_a_pod_bound_for_a_simulated_node_gets_no_local_volume(namespace: str, provisioner: Path) -> None:
    """The class's volumes exist on real-0 only: a pod that may only run on the simulated nodes stays
    unscheduled, and its claim gets no volume (no helper pod is sent where kwok would play it)."""
    claim_name = "data"
    apply(claim(claim_name), namespace=namespace)
    pod = busybox_pod("elsewhere", claim_name, "true")
    pod["spec"]["nodeSelector"] = {"dagflow.dev/pool": "cpu"}
    apply(pod, namespace=namespace)

    def unschedulable() -> bool:
        found = get_json("pod", "elsewhere", namespace=namespace)
        conditions = found["status"].get("conditions") or []
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

    wait_for(unschedulable, timeout=60, what="pod elsewhere to be found unschedulable")
    found = get_json("pod", "elsewhere", namespace=namespace)
    assert not found["spec"].get("nodeName")
    pending = get_json("pvc", claim_name, namespace=namespace)
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("volumeName"), pending
    assert "Provisioning" not in claim_events(namespace, claim_name)
