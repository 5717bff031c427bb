"""Dynamic storage on the real node: a claim without a class gets, from the cluster's default class
`dagflow-local`, a folder of this machine made by the local-path-provisioner that
tests/cluster/storage.sh runs beside the cluster (tests/integration/test_storage.py checks it on the
simulated nodes)."""

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
# The example image's user: the volume's folder must be writable by a user the provisioner never saw.
USER = 10001


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
    """The cluster's provisioner runs (cluster.sh starts it with the cluster); the folder of its volumes."""
    status = storage_script("status")
    assert status.returncode == 0, (
        f"No storage provisioner for cluster {local_cluster_name()}"
        f" (tests/cluster/storage.sh up starts it):\n"
        f"{status.stdout}{status.stderr}"
    )
    return Path(storage_script("volumes-dir").stdout.strip())


def claim(name: str) -> dict[str, Any]:
    """A shared claim that names no class, as the operator's workspace claims do by default."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "16Mi"}},
        },
    }


def busybox_pod(name: str, claim_name: str, script: str) -> dict[str, Any]:
    """A pod of the local busybox image that runs `script` with the claim at /data, as the example
    image's unprivileged user."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": USER, "runAsGroup": USER},
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


def succeeded_on_the_real_node(namespace: str, name: str) -> dict[str, Any]:
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


def test_a_shared_claim_without_a_class_gets_a_folder_that_two_pods_on_the_real_node_use_at_once(
    real_node_namespace: str, provisioner: Path
) -> None:
    namespace = real_node_namespace
    storage_class = get_json("storageclass", STORAGE_CLASS)
    assert storage_class["provisioner"] == PROVISIONER
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    assert storage_class["reclaimPolicy"] == "Delete"
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert not storage_class.get("allowedTopologies")

    claim_name = f"data-{uuid.uuid4().hex[:6]}"
    apply(claim(claim_name), namespace=namespace)
    # The default class is set on the claim; no pod uses it yet, so the volume waits for one.
    assert get_json("pvc", claim_name, namespace=namespace)["spec"]["storageClassName"] == STORAGE_CLASS
    wait_for(
        lambda: "WaitForFirstConsumer" in claim_events(namespace, claim_name),
        timeout=60,
        what=f"claim {claim_name} to wait for its first consumer",
    )
    pending = get_json("pvc", claim_name, namespace=namespace)
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("volumeName"), pending

    # Two pods at once, each writing its line into the same file and waiting for the other's: each
    # finds both lines only if both mount the one folder while the other runs.
    token = uuid.uuid4().hex
    lines = {name: f"{name} {token}" for name in ("first", "second")}
    for name, line in lines.items():
        script = (
            f"echo '{line}' >>/data/shared && "
            "for i in $(seq 1 600); do [ $(wc -l </data/shared) -ge 2 ] && break; sleep 0.1; done && "
            "cat /data/shared"
        )
        apply(busybox_pod(name, claim_name, script), namespace=namespace)
    for name in lines:
        succeeded_on_the_real_node(namespace, name)
        logged = kubectl("logs", name, namespace=namespace).stdout.splitlines()
        assert sorted(logged) == sorted(lines.values()), f"{name} read {logged}"

    bound = get_json("pvc", claim_name, namespace=namespace)
    assert bound["status"]["phase"] == "Bound", bound["status"]
    assert bound["status"]["accessModes"] == ["ReadWriteMany"]
    volume_name = bound["spec"]["volumeName"]
    volume = get_json("pv", volume_name)
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == PROVISIONER
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert volume["spec"]["storageClassName"] == STORAGE_CLASS
    # The folder is on the one filesystem that every node of the cluster shares: no node affinity.
    assert not volume["spec"].get("nodeAffinity"), volume["spec"]["nodeAffinity"]
    # A folder of this machine, the real node's, under the cluster's own folder of volumes, made by
    # the provisioner's helper pod on the real node for a user it does not know.
    folder = Path(volume["spec"]["hostPath"]["path"])
    assert folder.parent == provisioner, folder
    assert folder.name == f"{volume_name}_{namespace}_{claim_name}"
    assert folder.stat().st_mode & 0o777 == 0o777
    assert sorted((folder / "shared").read_text().splitlines()) == sorted(lines.values())
    assert (folder / "shared").stat().st_uid == USER

    # Deleting the claim (once its pods are gone) deletes the volume and, by a helper pod that really
    # runs on the real node, its folder.
    kubectl("delete", "pod", *lines, "--wait=true", "--timeout=60s", namespace=namespace)
    kubectl("delete", "pvc", claim_name, "--wait=true", "--timeout=60s", namespace=namespace)
    wait_for(
        lambda: kubectl("get", "pv", volume_name, check=False).returncode != 0,
        timeout=180,
        what=f"volume {volume_name} to be deleted",
    )
    assert not folder.exists(), f"{folder} stayed after its volume was deleted"
