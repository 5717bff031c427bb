"""Real containers on the local cluster's real node: the operator installed by its chart runs there,
works' exit codes decide their outcome, and the example pipeline trains and serves a real model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.flows import flow, pods_of_work, wait_for_phase, works_by_name
from tests.e2e.recorder import recording
from tests.e2e.test_runs import request, wait_for_run
from tests.kube import REPO_ROOT, VENV_BIN, apply, get_json, kubectl, local_cluster_name, wait_for
from tests.operator_process import DeployedOperator
from tests.real.conftest import (
    EXAMPLES_IMAGE,
    OPERATOR_NAMESPACE,
    REAL_NODE,
    RELEASE,
    node_ready,
)

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

EXAMPLE = REPO_ROOT / "examples" / "ml-pipeline.yaml"
# The release's operator pods, not its dashboard's.
OPERATOR_SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component!=ui"
REAL_NODE_SCRIPT = REPO_ROOT / "tests" / "cluster" / "real-node.sh"
LOCAL_VOLUMES_ROOT = Path("/var/lib/dagflow/local-path")


def python_work(name: str, code: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    """A work that runs `code` with the examples image's Python, never pulled."""
    entry: dict[str, Any] = {
        "name": name,
        "container": {
            "image": EXAMPLES_IMAGE,
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


def post_json(url: str, document: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def get_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def operator_pods() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json("pods", "-l", OPERATOR_SELECTOR, namespace=OPERATOR_NAMESPACE)[
        "items"
    ]
    return items


def pod_ready(pod: dict[str, Any]) -> bool:
    statuses = pod["status"].get("containerStatuses") or []
    return bool(statuses) and all(status["ready"] for status in statuses)


def test_the_real_node_runs_beside_the_simulated_ones(real_node: dict[str, Any]) -> None:
    assert real_node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert real_node["metadata"]["labels"]["dagflow.dev/pool"] == "real"
    assert {"key": "dagflow.dev/pool", "value": "real", "effect": "NoSchedule"} in real_node["spec"]["taints"]
    # As a device plugin would advertise them: the GPU works of the examples can land here.
    assert int(real_node["status"]["allocatable"]["nvidia.com/gpu"]) > 0
    simulated = [
        node
        for node in get_json("nodes")["items"]
        if (node["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake"
    ]
    assert len(simulated) == 4 and all(node_ready(node) for node in simulated)


def test_a_containers_exit_code_decides_its_work(real_namespace: str) -> None:
    greeting = "hello from a real container"
    works = [
        python_work("greet", f"print({greeting!r})"),
        python_work("crash", "import sys; print('crashing'); sys.exit(1)", retries=1),
    ]
    apply(flow("exits", works, failurePolicy="Continue"), namespace=real_namespace)

    final = wait_for_phase(real_namespace, "exits", timeout=240)
    assert final["phase"] == "Failed", final
    by_name = works_by_name(final)
    assert by_name["greet"]["phase"] == "Succeeded"
    assert by_name["crash"]["phase"] == "Failed"
    assert by_name["crash"]["attempts"] == 2

    crash_pods = pods_of_work(real_namespace, "crash")
    assert len(crash_pods) == 2
    assert terminated_exit_codes(crash_pods) == [1, 1]
    assert {pod["spec"]["nodeName"] for pod in crash_pods} == {REAL_NODE}

    logs = kubectl("logs", f"job/{by_name['greet']['job']}", namespace=real_namespace)
    assert greeting in logs.stdout


def test_the_operator_runs_as_the_charts_deployment_under_restricted_pod_security(
    chart_operator: DeployedOperator, real_namespace: str
) -> None:
    labels = get_json("namespace", OPERATOR_NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = operator_pods()
    assert len(pods) == 1
    pod = pods[0]
    assert pod["spec"]["nodeName"] == REAL_NODE
    assert pod["spec"]["serviceAccountName"] == f"{RELEASE}-dagflow-operator"
    # Ready: the kubelet's startup, liveness and readiness probes of /healthz pass.
    assert pod_ready(pod)

    # The admission webhook, reached through its Service, refuses what the schema cannot.
    cycle = flow(
        "circle",
        [
            python_work("a", "pass", "b"),
            python_work("b", "pass", "a"),
        ],
    )
    refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(cycle), namespace=real_namespace, check=False)
    assert refused.returncode != 0
    assert "dependency cycle" in refused.stderr

    # Its metrics, through the metrics Service (kube-proxy routes the ClusterIP from this machine).
    service = get_json("service", f"{RELEASE}-dagflow-operator-metrics", namespace=OPERATOR_NAMESPACE)
    port = service["spec"]["ports"][0]["port"]
    metrics = get_url(f"http://{service['spec']['clusterIP']}:{port}/metrics").decode()
    assert "dagflow_reconcile_duration_seconds" in metrics


def workspace_folder(namespace: str, claim: str) -> Path:
    """The folder of this machine behind a workspace claim, as the cluster's provisioner made it."""
    bound = get_json("persistentvolumeclaim", claim, namespace=namespace)
    assert bound["status"]["phase"] == "Bound", bound["status"]
    volume = get_json("persistentvolume", bound["spec"]["volumeName"])
    source = volume["spec"].get("hostPath") or volume["spec"].get("local") or {}
    return Path(source["path"])


def test_the_example_pipeline_trains_in_its_workspace_and_serves_a_real_prediction_and_a_rerun_the_same(
    real_namespace: str, tmp_path: Path
) -> None:
    documents = [document for document in yaml.safe_load_all(EXAMPLE.read_text()) if document]
    # The example as it is, with caching on for the flow.
    pipeline = next(document for document in documents if document["kind"] == "DAGFlow")
    pipeline["spec"]["cache"] = {"enabled": True}
    manifest = tmp_path / "ml-pipeline.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    kubectl("apply", "-f", str(manifest), namespace=real_namespace)

    final = wait_for_phase(real_namespace, "ml-pipeline", timeout=600)
    assert final["phase"] == "Serving", final
    # The training matrix: three real pods of one Indexed Job, each started through the launcher with
    # its own model, each reporting that model and its score.
    pods = pods_of_work(real_namespace, "train")
    assert [pod["spec"]["nodeName"] for pod in pods] == [REAL_NODE] * 3
    assert terminated_exit_codes(pods) == [0, 0, 0]
    reported = sorted(
        json.loads(status["state"]["terminated"]["message"])["model"]
        for pod in pods
        for status in pod["status"]["containerStatuses"]
    )
    assert reported == ["forest", "gbr", "linear"]
    train = next(work for work in final["works"] if work["name"] == "train")
    kept = get_json("configmap", train["outputsConfigMap"], namespace=real_namespace)["data"]["outputs.json"]
    outputs = json.loads(kept)
    assert outputs["model"] == ["linear", "forest", "gbr"], "in the matrix's order, by completion index"
    best = outputs["model"][outputs["score"].index(max(outputs["score"]))]
    # What the real containers printed, through the dagflow command, each line with its instance.
    logs = subprocess.run(
        [str(VENV_BIN / "dagflow"), "logs", "ml-pipeline", "train", "-n", real_namespace],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert logs.returncode == 0, logs.stderr
    for index, model in enumerate(("linear", "forest", "gbr")):
        assert any(
            line.startswith(f"[train[{index}]] train {model}: r2=") for line in logs.stdout.splitlines()
        ), logs.stdout
    # What the steps really wrote in the run's workspace, a claim the cluster's default StorageClass
    # provisioned: the split data, each model and its metrics.
    assert final["workspaceClaim"] == "ml-pipeline-1-workspace"
    folder = workspace_folder(real_namespace, final["workspaceClaim"])
    written = {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
    models = {f"models/{name}.{kind}" for name in ("linear", "forest", "gbr") for kind in ("joblib", "json")}
    assert {"dataset/train.csv", "dataset/test.csv", *models} <= written, written

    service = get_json("service", "ml-pipeline-serve", namespace=real_namespace)
    base = f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    health = json.loads(wait_for(lambda: _answer(f"{base}/healthz"), timeout=60, what="/healthz to answer"))
    assert health["model"] == best, "serve picked the best score among the trainings' outputs"
    row = dict.fromkeys(health["features"], 0.01)
    answer = post_json(f"{base}/predict", {"rows": [row, row]})
    assert answer["model"] == health["model"]
    predictions = answer["predictions"]
    assert len(predictions) == 2 and all(isinstance(value, float) for value in predictions)
    assert predictions[0] == predictions[1] and predictions[0] > 0

    # A rerun with nothing changed, caching on: the data step and the trainings write the workspace,
    # whose files are the run's own, so they are never taken from the cache. Run 2 has a workspace
    # of its own, trains again in it (the steps are seeded), and its serve work serves the same model
    # with the same answer, read from run 2's files.
    request(real_namespace, "ml-pipeline", "rerun", "again")
    rerun = wait_for_run(real_namespace, "ml-pipeline", 2, "Serving", "Failed", timeout=600)
    assert rerun["phase"] == "Serving", rerun
    reran = works_by_name(rerun)
    assert [reran[name].get("cachedFrom") for name in ("process", "train")] == [None, None], reran
    assert rerun["workspaceClaim"] == "ml-pipeline-2-workspace"
    assert (
        sorted(pod["metadata"]["labels"]["dagflow.dev/run"] for pod in pods_of_work(real_namespace, "train"))
        == ["1"] * 3 + ["2"] * 3
    )
    rewritten = workspace_folder(real_namespace, rerun["workspaceClaim"])
    assert rewritten != folder
    assert {path.name for path in (rewritten / "models").iterdir()} >= {f"{best}.joblib"}
    served = json.loads(wait_for(lambda: _answer(f"{base}/healthz"), timeout=60, what="/healthz to answer"))
    assert served["model"] == best

    def predicted() -> Any:
        try:
            return post_json(f"{base}/predict", {"rows": [row, row]})
        except OSError:
            return None  # the pod of run 1 going while run 2's takes over

    again = wait_for(predicted, timeout=60, what="run 2's serve work to answer a prediction")
    assert (again["model"], again["predictions"]) == (best, predictions)


def _answer(url: str) -> bytes | None:
    try:
        return get_url(url)
    except OSError:
        return None


def test_deleting_the_operator_pod_mid_flow_loses_nothing(
    chart_operator: DeployedOperator, real_namespace: str
) -> None:
    sleep = "import time; time.sleep(6)"
    works = [
        python_work("first", sleep),
        python_work("left", sleep, "first"),
        python_work("right", sleep, "first"),
        python_work("last", "print('done')", "left", "right"),
    ]
    with recording(real_namespace) as recorder:
        apply(flow("steady", works), namespace=real_namespace)
        wait_for(
            lambda: works_by_name(_status(real_namespace)).get("first", {}).get("phase") == "Running",
            timeout=120,
            what="work first to run",
        )
        (old_pod,) = operator_pods()
        kubectl("delete", "pod", old_pod["metadata"]["name"], "--wait=false", namespace=OPERATOR_NAMESPACE)
        replacement = wait_for(
            lambda: [
                pod
                for pod in operator_pods()
                if pod["metadata"]["uid"] != old_pod["metadata"]["uid"] and pod_ready(pod)
            ],
            timeout=180,
            what="a new operator pod to be ready",
        )
        final = wait_for_phase(real_namespace, "steady", timeout=300)

    assert replacement[0]["spec"]["nodeName"] == REAL_NODE
    assert final["phase"] == "Succeeded", final
    assert final["progress"] == "4/4"
    assert all(entry["attempts"] == 1 for entry in final["works"]), final["works"]
    made = recorder.jobs_added()
    assert sorted(made) == sorted(set(made)) and len(made) == 4, made


def _status(namespace: str) -> dict[str, Any]:
    result: dict[str, Any] = get_json("dagflow", "steady", namespace=namespace).get("status") or {}
    return result


def leftovers_of_the_real_node() -> list[str]:
    """What a stopped real node could leave on this machine: processes, mounts, links, iptables chains,
    its /etc/hosts line, the folders of its dynamically provisioned volumes."""
    found: list[str] = []
    own_pid_namespace = os.readlink("/proc/self/ns/pid")
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            command = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            # The real node's processes run on this machine itself; a container's (a kind node's
            # kubelet) run in a PID namespace of their own.
            if os.readlink(pid_dir / "ns" / "pid") != own_pid_namespace:
                continue
        except OSError:
            continue
        if "/run/dagflow/containerd" in command or any(
            Path(part).name in ("kubelet", "kube-proxy") for part in command.split()[:1]
        ):
            found.append(f"process {pid_dir.name}: {command.strip()}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if mount_point.startswith(("/var/lib/dagflow/", "/run/dagflow/")):
            found.append(f"mount {mount_point}")
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if "dagflow0" in line]
    # A pod's veth, left without its bridge or still on dagflow0; not one that another bridge holds
    # (a Docker engine's containers, kind's nodes among them, have theirs on docker0 or br-<id>).
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in links.splitlines()
        if ": veth" in line and (" master " not in line or " master dagflow0 " in line)
    ]
    for save in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        found += [
            f"{save}: {line}"
            for line in rules.splitlines()
            if not line.startswith("#") and ("KUBE-" in line or "CNI-" in line)
        ]
    found += [
        f"/etc/hosts: {line}" for line in Path("/etc/hosts").read_text().splitlines() if REAL_NODE in line
    ]
    # The folders of the volumes of StorageClass dagflow-local (tests/cluster/storage.sh).
    if LOCAL_VOLUMES_ROOT.exists():
        found.append(f"folder {LOCAL_VOLUMES_ROOT}")
    return found


def real_node_ready() -> bool:
    found = kubectl("get", "node", REAL_NODE, "-o", "json", check=False)
    return found.returncode == 0 and node_ready(json.loads(found.stdout))


def run_real_node_script(command: str, cluster_name: str, check: bool = True) -> None:
    result = subprocess.run(
        ["bash", str(REAL_NODE_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DAGFLOW_CLUSTER_NAME": cluster_name},
        check=False,
    )
    assert result.returncode == 0 or not check, f"real-node.sh {command} for {cluster_name}:\n{result.stderr}"


# Last of the file: it stops the real node under everything else here, then starts it again.
def test_stopping_the_real_node_leaves_nothing_behind(real_node: dict[str, Any]) -> None:
    status = subprocess.run(
        ["bash", str(REAL_NODE_SCRIPT), "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "DAGFLOW_CLUSTER_NAME": local_cluster_name()},
        check=False,
    ).stdout
    moved_from = re.findall(r"moved from cluster\(s\) (\S+),", status)
    earlier_owners = moved_from[0].split(",") if moved_from else []

    run_real_node_script("down", local_cluster_name())
    try:
        assert leftovers_of_the_real_node() == []
        assert kubectl("get", "node", REAL_NODE, check=False).returncode != 0, "the Node object stayed"
    finally:
        # As it was: the clusters it had been moved from first (each takes it in turn; one that is
        # gone meanwhile is passed over), then this one.
        for owner in earlier_owners:
            run_real_node_script("up", owner, check=False)
        run_real_node_script("up", local_cluster_name())
    wait_for(real_node_ready, timeout=120, what=f"{REAL_NODE} to be Ready again")
