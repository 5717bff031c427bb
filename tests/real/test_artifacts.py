"""Artifacts and archived logs with real containers on the real node and the local cluster's real S3
store (tests/cluster/store.sh): a file and a directory uploaded after a work succeeded and downloaded
before the next one starts, their URI, size and SHA-256 in the status and in the store; a missing
file, a changed object and missing credentials each failing their work by name; and a pod's log read
back by `dagflow logs` once the pod is gone."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from typing import Any

import pytest

from tests.e2e.flows import flow, jobs, status, wait_for_phase, works_by_name
from tests.kube import VENV_BIN, apply, kubectl, wait_for
from tests.real.test_real_node import python_work
from tests.store import StoreInfo, use_store

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

MAKE = """
import json, os
os.makedirs("/out/bundle/sub", exist_ok=True)
open("/out/model.txt", "w").write("weights 0.25 0.75\\n")
open("/out/bundle/a.txt", "w").write("alpha\\n")
open("/out/bundle/sub/b.txt", "w").write("beta\\n")
print("made the model and the bundle")
json.dump({"score": 0.9}, open("/dev/termination-log", "w"))
"""
USE = """
import sys
model, bundle, uri = sys.argv[1:4]
print("model says", open(model).read().strip())
print("bundle has", open(bundle + "/a.txt").read().strip(), open(bundle + "/sub/b.txt").read().strip())
print("uri", uri)
"""
SCRATCH = {"volumes": [{"name": "out", "emptyDir": {}}]}
MOUNT = [{"name": "out", "mountPath": "/out"}]


def maker(
    name: str, code: str = MAKE, *depends_on: str, outputs: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    entry = python_work(name, code, *depends_on, **SCRATCH)
    entry["container"]["volumeMounts"] = MOUNT
    entry["outputs"] = outputs or [
        {"name": "model", "artifact": {"path": "/out/model.txt"}},
        {"name": "bundle", "artifact": {"path": "/out/bundle"}},
        {"name": "score"},
    ]
    return entry


def user(name: str, *depends_on: str, upstream: str = "make") -> dict[str, Any]:
    entry = python_work(name, USE, *depends_on)
    entry["container"]["command"] += [
        f"$(works.{upstream}.outputs.model.path)",
        f"$(works.{upstream}.outputs.bundle.path)",
        f"$(works.{upstream}.outputs.model)",
    ]
    return entry


def key_of(uri: str, bucket: str) -> str:
    prefix = f"s3://{bucket}/"
    assert uri.startswith(prefix), uri
    return uri[len(prefix) :]


def dagflow_logs(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "dagflow"), "logs", *args, "-n", namespace],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def store(real_namespace: str) -> StoreInfo:
    return use_store(real_namespace)


def test_artifacts_go_up_after_a_work_and_come_down_before_the_next_and_logs_outlive_the_pods(
    real_namespace: str, store: StoreInfo
) -> None:
    apply(flow("art", [maker("make"), user("use", "make")]), namespace=real_namespace)
    final = wait_for_phase(real_namespace, "art", timeout=300)
    assert final["phase"] == "Succeeded", final
    assert final["artifactStore"]["bucket"] == store.bucket
    assert "accessKeyId" not in str(final) and store.secret_access_key not in str(final)

    outputs = works_by_name(final)["make"]["outputs"]
    assert outputs["score"] == 0.9
    s3 = store.client()
    model = outputs["model"]
    body = s3.get_object(Bucket=store.bucket, Key=key_of(model["uri"], store.bucket))["Body"].read()
    assert body == b"weights 0.25 0.75\n"
    assert (model["size"], model["sha256"], model["kind"]) == (
        len(body),
        hashlib.sha256(body).hexdigest(),
        "file",
    )
    bundle = outputs["bundle"]
    archive = s3.get_object(Bucket=store.bucket, Key=key_of(bundle["uri"], store.bucket))["Body"].read()
    assert bundle["kind"] == "directory" and bundle["sha256"] == hashlib.sha256(archive).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert {"a.txt", "sub/b.txt"} <= {member.name.removeprefix("./") for member in tar.getmembers()}

    # The downstream work read both where the launcher put them, and got the URI as a value.
    printed = kubectl("logs", f"job/{works_by_name(final)['use']['job']}", namespace=real_namespace).stdout
    assert "model says weights 0.25 0.75" in printed
    assert "bundle has alpha beta" in printed
    assert f"uri {model['uri']}" in printed

    # Once the pods are gone, dagflow logs reads what the launcher archived, and says so.
    for job in jobs(real_namespace):
        kubectl(
            "delete",
            "job",
            job["metadata"]["name"],
            "--cascade=foreground",
            "--wait=true",
            namespace=real_namespace,
        )
    archived = dagflow_logs(real_namespace, "art")
    assert archived.returncode == 0, archived.stderr
    assert "are gone: their logs as archived in the artifact store" in archived.stderr
    assert "[make] made the model and the bundle" in archived.stdout
    assert "[use] model says weights 0.25 0.75" in archived.stdout


def test_a_missing_file_a_changed_object_and_missing_credentials_each_fail_their_work_by_name(
    real_namespace: str, store: StoreInfo
) -> None:
    missing = maker("lost", outputs=[{"name": "model", "artifact": {"path": "/out/nowhere.bin"}}])
    apply(flow("lost", [missing]), namespace=real_namespace)
    failed = wait_for_phase(real_namespace, "lost", timeout=300)
    assert failed["phase"] == "Failed"
    assert works_by_name(failed)["lost"]["message"] == "output model: /out/nowhere.bin does not exist"

    # The object changes between the upload and the download: the download refuses it.
    gate = python_work("hold", "import time; time.sleep(25)")
    apply(flow("tamper", [maker("make"), gate, user("use", "make", "hold")]), namespace=real_namespace)
    made = wait_for(
        lambda: (works_by_name(status(real_namespace, "tamper")).get("make") or {}).get("outputs"),
        timeout=240,
        what="make's artifacts",
    )
    store.client().put_object(
        Bucket=store.bucket, Key=key_of(made["model"]["uri"], store.bucket), Body=b"forged"
    )
    tampered = wait_for_phase(real_namespace, "tamper", timeout=300)
    assert tampered["phase"] == "Failed"
    message = works_by_name(tampered)["use"]["message"]
    assert message.startswith("download of works.make.outputs.model: checksum mismatch"), message

    # The store's Secret is gone: the work fails at once, naming it.
    kubectl("delete", "secret", store.secret_name, namespace=real_namespace)
    apply(flow("nokeys", [maker("make")]), namespace=real_namespace)
    denied = wait_for_phase(real_namespace, "nokeys", timeout=300)
    assert denied["phase"] == "Failed"
    message = works_by_name(denied)["make"]["message"]
    assert message.startswith(f"no credentials for the artifact store: Secret {store.secret_name} has no"), (
        message
    )
