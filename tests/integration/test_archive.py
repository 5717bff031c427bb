"""Archived logs read back (dagflow.client.archive) from the local cluster's real S3 store with the
reader's own rights: what `dagflow logs` and the dashboard show once a flow's pods are gone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dagflow.client.archive import ArchiveUnavailable, archived_logs
from dagflow.client.flowclient import FlowClient, Target
from tests.kube import grant, kubectl, service_account_kubeconfig
from tests.store import StoreInfo, use_store

pytestmark = pytest.mark.local_cluster

UID = "5f0c1d2e-0000-4000-8000-00000000abcd"


def flow_body(namespace: str, store: StoreInfo | None) -> dict[str, Any]:
    status: dict[str, Any] = {"run": 2}
    if store is not None:
        # As the operator writes it, but with the address this machine reaches the store at.
        status["artifactStore"] = {
            "endpoint": store.endpoint_for_tests,
            "bucket": store.bucket,
            "region": store.region,
            "secretName": store.secret_name,
        }
    return {"metadata": {"name": "ml", "namespace": namespace, "uid": UID}, "status": status}


def client_as(kubeconfig: Path, namespace: str) -> FlowClient:
    return FlowClient(Target(namespace=namespace, kubeconfig=str(kubeconfig)))


@pytest.fixture
def store(namespace: str) -> StoreInfo:
    return use_store(namespace)


def test_the_archived_logs_of_a_run_are_read_with_the_readers_rights(
    namespace: str, store: StoreInfo, tmp_path: Path
) -> None:
    s3 = store.client()
    base = f"logs/{namespace}/ml/{UID}"
    s3.put_object(
        Bucket=store.bucket, Key=f"{base}/2/train/ml-2-train-0-abcde.log", Body=b"epoch 1\nepoch 2\n"
    )
    s3.put_object(Bucket=store.bucket, Key=f"{base}/2/train/ml-2-train-1-fghij.log", Body=b"epoch 1\n")
    s3.put_object(
        Bucket=store.bucket, Key=f"{base}/2/serve-prep/ml-2-serve-prep-0-klmno.log", Body=b"ready\n"
    )
    s3.put_object(Bucket=store.bucket, Key=f"{base}/1/train/ml-1-train-0-older.log", Body=b"old run\n")
    # A flow made again under the name has another uid: its logs are not these.
    s3.put_object(Bucket=store.bucket, Key=f"logs/{namespace}/ml/other-uid/2/train/x.log", Body=b"not ours\n")

    kubectl("create", "serviceaccount", "reader", namespace=namespace)
    reader_kubeconfig = service_account_kubeconfig("reader", namespace, tmp_path / "reader.yaml")
    reader = client_as(reader_kubeconfig, namespace)
    flow = flow_body(namespace, store)
    with pytest.raises(ArchiveUnavailable) as refused:
        archived_logs(reader, flow, None, 2)
    assert f"whose credentials (Secret {store.secret_name}) you may not read" in str(refused.value)

    subject = {"kind": "ServiceAccount", "name": "reader", "namespace": namespace}
    rules = [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [store.secret_name], "verbs": ["get"]}
    ]
    grant(namespace, "store-reader", rules, subject)
    logs = archived_logs(reader, flow, None, 2)
    assert [(log.work, log.pod, log.lines) for log in logs] == [
        ("serve-prep", "ml-2-serve-prep-0-klmno", ["ready"]),
        ("train", "ml-2-train-0-abcde", ["epoch 1", "epoch 2"]),
        ("train", "ml-2-train-1-fghij", ["epoch 1"]),
    ]
    assert [log.pod for log in archived_logs(reader, flow, "train", 1)] == ["ml-1-train-0-older"]
    assert archived_logs(reader, flow, "nothing-here", 2) == []


def test_without_a_store_the_logs_went_with_the_pods(namespace: str) -> None:
    admin = FlowClient(Target(namespace=namespace, kubeconfig=os.environ.get("KUBECONFIG")))
    with pytest.raises(ArchiveUnavailable) as unavailable:
        archived_logs(admin, flow_body(namespace, None), None, 2)
    assert "no artifact store was configured for DAGFlow ml, so its pods' logs went with them" in str(
        unavailable.value
    )
