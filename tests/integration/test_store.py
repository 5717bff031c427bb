"""The local cluster's object store (tests/cluster/store.sh): a real S3 server answering a real client
(boto3) with a namespace's keys, and a namespace pointed at it as the artifacts contract says."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.kube import get_json, kubectl
from tests.store import BUCKET, CONFIGMAP, StoreInfo, root_client, run_store_script, use_store

# The store runs beside the local cluster (cluster.sh); a cluster of `make e2e-kind` has none.
pytestmark = pytest.mark.local_cluster


def error_of(call: ClientError) -> tuple[str, int]:
    return call.response["Error"]["Code"], call.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def store(namespace: str) -> StoreInfo:
    return use_store(namespace)


@pytest.fixture
def other_namespace(cluster: object) -> Iterator[str]:
    """A second namespace, made by `store.sh namespace` itself."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


def test_a_namespace_gets_the_configmap_and_secret_of_the_contract(store: StoreInfo) -> None:
    config = get_json("configmap", CONFIGMAP, namespace=store.namespace)["data"]
    assert set(config) == {"endpoint", "bucket", "secretName", "region"}
    assert config["bucket"] == BUCKET
    assert config["region"] == "us-east-1"
    assert re.fullmatch(r"http://[^/:]+:\d+", config["endpoint"]), config["endpoint"]
    secret = get_json("secret", config["secretName"], namespace=store.namespace)
    assert set(secret["data"]) == {"accessKeyId", "secretAccessKey"}
    # The endpoint is the Service that pods reach the store by.
    service = get_json("service", "store", namespace="dagflow-store")
    assert "selector" not in service["spec"]
    port = service["spec"]["ports"][0]["port"]
    assert config["endpoint"] == f"http://{service['spec']['clusterIP']}:{port}"


def test_the_service_leads_to_the_store_at_this_machines_address(store: StoreInfo) -> None:
    slices = get_json("endpointslices", "-l", "kubernetes.io/service-name=store", namespace="dagflow-store")[
        "items"
    ]
    assert len(slices) == 1
    address = slices[0]["endpoints"][0]["addresses"][0]
    port = slices[0]["ports"][0]["port"]
    assert not ipaddress.ip_address(address).is_loopback
    # Where kube-proxy sends a pod's connection to the Service: the store answers there.
    client = store.client(endpoint_url=f"http://{address}:{port}")
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=f"artifacts/{store.namespace}/")["KeyCount"] == 0


def test_a_namespace_puts_gets_lists_and_deletes_an_object(store: StoreInfo) -> None:
    client = store.client()
    key = f"artifacts/{store.namespace}/ml/1/train/model"
    body = b"weights " * 1000
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"artifacts/{store.namespace}/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [(key, len(body))]
    # The object is a file of the store's folder, inside the cluster's.
    on_disk = Path(run_store_script("dir").stdout.strip()) / "data" / BUCKET / key
    assert on_disk.read_bytes() == body
    client.delete_object(Bucket=BUCKET, Key=key)
    assert client.list_objects_v2(Bucket=BUCKET, Prefix=f"artifacts/{store.namespace}/")["KeyCount"] == 0
    with pytest.raises(ClientError) as missing:
        client.get_object(Bucket=BUCKET, Key=key)
    assert error_of(missing.value) == ("NoSuchKey", 404)
    assert not on_disk.exists()


def test_a_wrong_secret_key_or_an_unknown_access_key_is_refused(store: StoreInfo) -> None:
    key = f"artifacts/{store.namespace}/refused"
    with pytest.raises(ClientError) as wrong_secret:
        store.client(aws_secret_access_key=store.secret_access_key[::-1]).put_object(
            Bucket=BUCKET, Key=key, Body=b"x"
        )
    assert error_of(wrong_secret.value) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as unknown:
        store.client(aws_access_key_id="ns-nobody-here").get_object(Bucket=BUCKET, Key=key)
    assert error_of(unknown.value) == ("InvalidAccessKeyId", 403)
    assert root_client().list_objects_v2(Bucket=BUCKET, Prefix=key)["KeyCount"] == 0


def test_each_namespace_has_its_own_user_kept_across_calls(store: StoreInfo, other_namespace: str) -> None:
    again = use_store(store.namespace)
    assert again == store
    # A lost Secret is made again with the same keys.
    kubectl("delete", "secret", store.secret_name, namespace=store.namespace)
    assert use_store(store.namespace) == store
    # `store.sh namespace` makes a namespace that is not there yet.
    other = use_store(other_namespace)
    assert other.access_key_id != store.access_key_id
    assert other.secret_access_key != store.secret_access_key
    root = run_store_script("env").stdout
    assert store.secret_access_key not in root and other.secret_access_key not in root
    # Both use the one bucket.
    for info in (store, other):
        key = f"artifacts/{info.namespace}/a"
        info.client().put_object(Bucket=BUCKET, Key=key, Body=info.namespace.encode())
        assert info.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == info.namespace.encode()
        info.client().delete_object(Bucket=BUCKET, Key=key)


def test_a_namespace_user_cannot_change_the_bucket(store: StoreInfo) -> None:
    client = store.client()
    with pytest.raises(ClientError) as policy:
        client.put_bucket_policy(Bucket=BUCKET, Policy='{"Version": "2012-10-17", "Statement": []}')
    assert error_of(policy.value)[0] == "AccessDenied"
    with pytest.raises(ClientError) as delete:
        client.delete_bucket(Bucket=BUCKET)
    assert error_of(delete.value)[0] == "AccessDenied"
    with pytest.raises(ClientError) as create:
        client.create_bucket(Bucket=f"other-{store.namespace}")
    assert error_of(create.value)[0] == "AccessDenied"


def test_objects_and_keys_outlive_a_restart_of_the_store(store: StoreInfo) -> None:
    key = f"logs/{store.namespace}/ml/1/train/train-abc.log"
    store.client().put_object(Bucket=BUCKET, Key=key, Body=b"epoch 1\n")
    run_store_script("stop")
    assert run_store_script("status", check=False).returncode == 1
    run_store_script("start")
    assert run_store_script("status").stdout.strip() == "running"
    after = use_store(store.namespace)
    # The same addresses: the Service's, and the port on this machine while it is free.
    assert (after.endpoint_for_pods, after.endpoint_for_tests) == (
        store.endpoint_for_pods,
        store.endpoint_for_tests,
    )
    client = after.client()
    assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"epoch 1\n"
    client.delete_object(Bucket=BUCKET, Key=key)
