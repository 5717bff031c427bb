"""The local cluster's object store (tests/cluster/store.sh) for tests: a namespace pointed at it, as
the artifacts contract reads it (ConfigMap dagflow-artifacts, its Secret), and S3 clients with
its keys."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from tests.kube import REPO_ROOT, get_json, run_script

STORE_SCRIPT_PATH = REPO_ROOT / "tests" / "cluster" / "store.sh"
CONFIGMAP = "dagflow-artifacts"
BUCKET = "dagflow"


@dataclass(frozen=True)
class StoreInfo:
    """Where a namespace's store is and the keys its pods get."""

    namespace: str
    # For clients on this machine (tests): the gateway's loopback address.
    endpoint_for_tests: str
    # The ConfigMap's endpoint, which pods use: the Service dagflow-store/store.
    endpoint_for_pods: str
    bucket: str
    region: str
    secret_name: str
    access_key_id: str
    secret_access_key: str

    def client(self, **overrides: str) -> Any:
        """An S3 client on this machine with the namespace's keys; `overrides` replace any of
        endpoint_url, aws_access_key_id, aws_secret_access_key, region_name."""
        arguments = {
            "endpoint_url": self.endpoint_for_tests,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": self.region,
            **overrides,
        }
        return s3_client(**arguments)


def s3_client(
    endpoint_url: str, aws_access_key_id: str, aws_secret_access_key: str, region_name: str = "us-east-1"
) -> Any:
    """A boto3 S3 client signing with Signature Version 4, path-style (`{endpoint}/{bucket}/{key}`),
    that fails at once rather than retrying."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        region_name=region_name,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def run_store_script(
    *args: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run tests/cluster/store.sh (up, namespace NAME, env, dir, status...) for the tests' cluster."""
    return run_script(STORE_SCRIPT_PATH, args, check, timeout)


def exports(text: str) -> dict[str, str]:
    """The variables of `export NAME=value` lines."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = value
    return found


def use_store(namespace: str) -> StoreInfo:
    """Point `namespace` at the local cluster's object store (`store.sh namespace`, idempotent) and
    say what its pods get: the ConfigMap's and the Secret's values as read from the cluster."""
    local = exports(run_store_script("namespace", namespace).stdout)
    config = get_json("configmap", CONFIGMAP, namespace=namespace)["data"]
    secret = get_json("secret", config["secretName"], namespace=namespace)["data"]
    return StoreInfo(
        namespace=namespace,
        endpoint_for_tests=local["AWS_ENDPOINT_URL"],
        endpoint_for_pods=config["endpoint"],
        bucket=config["bucket"],
        region=config.get("region", "us-east-1"),
        secret_name=config["secretName"],
        access_key_id=base64.b64decode(secret["accessKeyId"]).decode(),
        secret_access_key=base64.b64decode(secret["secretAccessKey"]).decode(),
    )


def root_client() -> Any:
    """An S3 client on this machine with the store's root keys: it sees every namespace's objects."""
    root = exports(run_store_script("env").stdout)
    return s3_client(
        root["AWS_ENDPOINT_URL"],
        root["AWS_ACCESS_KEY_ID"],
        root["AWS_SECRET_ACCESS_KEY"],
        root["AWS_DEFAULT_REGION"],
    )
