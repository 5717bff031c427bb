"""The operator on kind, with real containers: its nodes run the node image built here, the chart's
operator runs under restricted Pod Security, works' exit codes decide their outcome, pods find Services
by name, a claim without a class gets a volume that every node mounts, and the example pipeline trains
on the GPU worker and serves a real prediction."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.flows import flow, pods_of_work, wait_for_phase, works_by_name
from tests.kind.conftest import IMAGES, KindCluster
from tests.kube import REPO_ROOT, apply, get_json, kubectl, kubectl_binary, wait_for

pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]

EXAMPLE = REPO_ROOT / "examples" / "ml-pipeline.yaml"
GPU_RESOURCE = "nvidia.com/gpu"
# The storage provisioner's helper image (tests/cluster/storage.sh), which kind.sh up loads into every node.
BUSYBOX_IMAGE = "dagflow.local/busybox:1.35"


def node_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


def python_work(name: str, code: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    """A work that runs `code` with the examples image's Python (loaded into the nodes, never pulled)."""
    entry: dict[str, Any] = {
        "name": name,
        "container": {
            "image": IMAGES["examples"],
            "imagePullPolicy": "Never",
            "command": ["python", "-c", code],
        },
        **fields,
    }
    if depends_on:
        entry["dependsOn"] = list(depends_on)
    return entry


def terminated_exit_codes(pods: list[dict[str, Any]]) -> list[int]:
    return [
        status["state"]["terminated"]["exitCode"]
        for pod in pods
        for status in pod["status"].get("containerStatuses", [])
        if "terminated" in status["state"]
    ]


def gpu_nodes() -> set[str]:
    return {
        node["metadata"]["name"]
        for node in get_json("nodes")["items"]
        if int((node["status"].get("allocatable") or {}).get(GPU_RESOURCE, 0)) > 0
    }


@contextmanager
def port_forward(namespace: str, target: str, port: int) -> Iterator[str]:
    """`kubectl port-forward` to a local port, as a user reaches a Service of a kind cluster; its URL."""
    process = subprocess.Popen(
        [kubectl_binary(), "port-forward", "--namespace", namespace, target, f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert found, (
            f"kubectl port-forward said: {line}{process.stderr.read() if process.poll() is not None else ''}"
        )
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def get_url(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body
    except OSError:
        return None


def post_json(url: str, document: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_the_nodes_run_the_node_image_built_here(kind_cluster: KindCluster) -> None:
    nodes = get_json("nodes")["items"]
    assert len(nodes) == 3 and all(node_ready(node) for node in nodes)
    for node in nodes:
        info = node["status"]["nodeInfo"]
        assert info["kubeletVersion"] == "v1.36.3"
        assert info["containerRuntimeVersion"] == "containerd://2.3.7"
    # The GPU worker advertises fake GPUs and keeps other pods off with its taint.
    (gpu,) = [node for node in nodes if node["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    assert gpu["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"]["taints"]
    # kubeadm's add-ons run from the images the node brought: CoreDNS and kube-proxy.
    pods = get_json("pods", namespace="kube-system")["items"]
    for app in ("kube-dns", "kube-proxy"):
        running = [pod for pod in pods if pod["metadata"]["labels"].get("k8s-app") == app]
        assert running and all(pod["status"]["phase"] == "Running" for pod in running), app


def test_the_operator_runs_as_the_charts_deployment_under_restricted_pod_security(
    kind_cluster: KindCluster, kind_namespace: str
) -> None:
    selector = f"app.kubernetes.io/instance={kind_cluster.release},app.kubernetes.io/component!=ui"
    pods = get_json("pods", "-l", selector, namespace=kind_cluster.operator_namespace)["items"]
    assert len(pods) == 1
    statuses = pods[0]["status"].get("containerStatuses") or []
    assert statuses and all(status["ready"] for status in statuses)

    # The admission webhook, reached by the API server through its Service on the pod network,
    # refuses what the schema cannot.
    cycle = flow("circle", [python_work("a", "pass", "b"), python_work("b", "pass", "a")])
    refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(cycle), namespace=kind_namespace, check=False)
    assert refused.returncode != 0
    assert "dependency cycle" in refused.stderr


def test_a_containers_exit_code_decides_its_work_and_pods_find_services_by_name(kind_namespace: str) -> None:
    greeting = "hello from a kind node"
    lookup = (
        "import socket; "
        "address = socket.getaddrinfo('kubernetes.default.svc.cluster.local', 443)[0][4][0]; "
        f"print({greeting!r}, address)"
    )
    works = [
        python_work("greet", lookup),
        python_work("crash", "import sys; print('crashing'); sys.exit(3)", retries=1),
    ]
    apply(flow("exits", works, failurePolicy="Continue"), namespace=kind_namespace)

    final = wait_for_phase(kind_namespace, "exits", timeout=300)
    assert final["phase"] == "Failed", final
    by_name = works_by_name(final)
    assert by_name["greet"]["phase"] == "Succeeded"
    assert by_name["crash"]["phase"] == "Failed"
    assert by_name["crash"]["attempts"] == 2
    assert terminated_exit_codes(pods_of_work(kind_namespace, "crash")) == [3, 3]

    # CoreDNS answered with the API server's Service address.
    service_ip = get_json("service", "kubernetes", namespace="default")["spec"]["clusterIP"]
    logs = kubectl("logs", f"job/{by_name['greet']['job']}", namespace=kind_namespace)
    assert f"{greeting} {service_ip}" in logs.stdout


def busybox_pod(name: str, pool: str, claim: str, script: str) -> dict[str, Any]:
    """A pod on the worker of `pool` that runs `script` with the claim at /data, as the example image's
    user (10001)."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "nodeSelector": {"dagflow.dev/pool": pool},
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
        "containers": [
            {
                "name": "main",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
    }
    if pool == "gpu":
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def succeeded(namespace: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        pod: dict[str, Any] = get_json("pod", name, namespace=namespace)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    pod: dict[str, Any] = wait_for(done, timeout=180, what=f"pod {name} to end")
    logs = kubectl("logs", name, namespace=namespace, check=False).stdout
    assert pod["status"]["phase"] == "Succeeded", f"{name}: {pod['status']}\n{logs}"
    return pod


def test_a_claim_without_a_class_gets_a_folder_that_the_cpu_and_gpu_workers_share(
    kind_cluster: KindCluster, kind_namespace: str
) -> None:
    """The default StorageClass dagflow-local (tests/cluster/storage.sh, started by kind.sh up): the
    provisioner's helper pod makes a folder of the host folder that every node mounts, for a claim that
    names no class; a pod on the CPU worker writes, one on the GPU worker reads; the claim deleted, its
    volume and folder go."""
    storage_class = get_json("storageclass", "dagflow-local")
    assert storage_class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "16Mi"}}},
        },
        namespace=kind_namespace,
    )
    message = f"written on the CPU worker in {kind_namespace}"
    apply(busybox_pod("writer", "cpu", "data", f"echo '{message}' >/data/greeting"), namespace=kind_namespace)
    succeeded(kind_namespace, "writer")
    apply(busybox_pod("reader", "gpu", "data", "cat /data/greeting"), namespace=kind_namespace)
    reader = succeeded(kind_namespace, "reader")
    assert reader["spec"]["nodeName"] in gpu_nodes()
    assert kubectl("logs", "reader", namespace=kind_namespace).stdout == message + "\n"

    claim = get_json("pvc", "data", namespace=kind_namespace)
    assert claim["spec"]["storageClassName"] == "dagflow-local"
    volume_name = claim["spec"]["volumeName"]
    volume = get_json("pv", volume_name)
    assert not volume["spec"].get("nodeAffinity")
    path = Path(volume["spec"]["hostPath"]["path"])
    assert path.parent == Path("/var/local/dagflow-shared/volumes"), path
    # The nodes' /var/local/dagflow-shared is the host's shared folder.
    folder = kind_cluster.shared / "volumes" / path.name
    assert (folder / "greeting").read_text() == message + "\n"

    kubectl("delete", "pod", "writer", "reader", "--wait=true", "--timeout=60s", namespace=kind_namespace)
    kubectl("delete", "pvc", "data", "--wait=true", "--timeout=60s", namespace=kind_namespace)
    wait_for(
        lambda: kubectl("get", "pv", volume_name, check=False).returncode != 0,
        timeout=180,
        what=f"volume {volume_name} to be deleted",
    )
    assert not folder.exists(), f"{folder} stayed after its volume was deleted"


def test_the_example_pipeline_trains_on_the_gpu_worker_and_serves_a_real_prediction(
    kind_cluster: KindCluster, kind_namespace: str
) -> None:
    # The workspace of the flow's first run is the claim `ml-pipeline-1-workspace` (its name follows
    # from the flow's and the run's). This cluster has no provisioner: shared storage for that claim is
    # a folder of this machine that every node mounts, writable by the image's user, as a hostPath
    # volume bound to the claim in advance.
    claim = "ml-pipeline-1-workspace"
    folder: Path = kind_cluster.shared / kind_namespace
    folder.mkdir(parents=True)
    folder.chmod(0o1777)
    volume = f"{kind_namespace}-{claim}"
    apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "claimRef": {"namespace": kind_namespace, "name": claim},
                "hostPath": {"path": f"/var/local/dagflow-shared/{kind_namespace}"},
            },
        }
    )
    try:
        kubectl("apply", "-f", str(EXAMPLE), namespace=kind_namespace)
        final = wait_for_phase(kind_namespace, "ml-pipeline", timeout=900)
        assert final["phase"] == "Serving", final
        assert final["workspaceClaim"] == claim

        # The training matrix: three real pods of one Indexed Job on the GPU worker, each started
        # through the launcher with its own model, each reporting that model and its score.
        pods = pods_of_work(kind_namespace, "train")
        assert {pod["spec"]["nodeName"] for pod in pods} <= gpu_nodes() and len(pods) == 3
        assert terminated_exit_codes(pods) == [0, 0, 0]
        reported = sorted(
            json.loads(status["state"]["terminated"]["message"])["model"]
            for pod in pods
            for status in pod["status"]["containerStatuses"]
        )
        assert reported == ["forest", "gbr", "linear"]
        train = next(work for work in final["works"] if work["name"] == "train")
        kept = get_json("configmap", train["outputsConfigMap"], namespace=kind_namespace)["data"][
            "outputs.json"
        ]
        outputs = json.loads(kept)
        best = outputs["model"][outputs["score"].index(max(outputs["score"]))]
        # What the steps wrote to the shared volume, across nodes: the split data, each model and its
        # metrics.
        written = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
        models = {
            f"models/{name}.{kind}" for name in ("linear", "forest", "gbr") for kind in ("joblib", "json")
        }
        assert {"dataset/train.csv", "dataset/test.csv", *models} <= written, written

        # A real HTTP request to the serving pod, through its Service.
        with port_forward(kind_namespace, "service/ml-pipeline-serve", 8080) as base:
            health = json.loads(wait_for(lambda: get_url(f"{base}/healthz"), timeout=60, what="/healthz"))
            assert health["model"] == best, "serve picked the best score among the trainings' outputs"
            row = dict.fromkeys(health["features"], 0.01)
            answer = post_json(f"{base}/predict", {"rows": [row, row]})
        assert answer["model"] == health["model"]
        predictions = answer["predictions"]
        assert len(predictions) == 2 and all(isinstance(value, float) for value in predictions)
        assert predictions[0] == predictions[1] and predictions[0] > 0
    finally:
        kubectl(
            "delete",
            "dagflow",
            "ml-pipeline",
            "--ignore-not-found",
            "--wait=true",
            namespace=kind_namespace,
            check=False,
        )
        kubectl("delete", "persistentvolume", volume, "--ignore-not-found", "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)
