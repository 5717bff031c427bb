"""The logs of a flow's pods once the pods are gone: read back from the artifact store, where the
launcher archived each pod's log when it ended (docs/api.md#logs-that-outlive-their-pods).

The reader's own rights are used throughout: the flow's status says where the store is
(`status.artifactStore`, no credentials), the reader's identity reads the store's Secret, and the
store answers with those credentials. Nothing of the operator's is borrowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError

from dagflow.api.models import ArtifactStore
from dagflow.client.flowclient import ClusterError, FlowClient
from dagflow.rules.store import FlowIdentity, log_prefix

# The most bytes of one archived log read back: a log bigger than this shows its end.
MAX_ARCHIVED_BYTES = 8 * 1024 * 1024


class ArchiveUnavailable(Exception):
    """Why no archived log can be read; the message is for the user."""


@dataclass(frozen=True)
class ArchivedLog:
    """One pod's log as the launcher archived it."""

    work: str
    pod: str
    lines: list[str]


def archived_logs(
    client: FlowClient, flow: Mapping[str, Any], work: str | None, run: int
) -> list[ArchivedLog]:
    """The archived logs of the flow's pods in `run` (of one work's), oldest pod name first;
    ArchiveUnavailable says why there are none to read."""
    metadata = flow["metadata"]
    raw_store = (flow.get("status") or {}).get("artifactStore")
    if not raw_store:
        raise ArchiveUnavailable(
            f"no artifact store was configured for DAGFlow {metadata['name']}, so its pods' logs went "
            "with them (a ConfigMap dagflow-artifacts in the namespace archives them: see "
            "docs/api.md#artifacts)"
        )
    store = ArtifactStore.model_validate(raw_store)
    try:
        keys = client.secret_data(store.secret_name)
    except ClusterError as error:
        raise ArchiveUnavailable(
            f"the logs are archived in the artifact store, whose credentials (Secret {store.secret_name}) "
            f"you may not read: {error}"
        ) from None
    identity = FlowIdentity(metadata["namespace"], metadata["name"], metadata["uid"])
    prefix = log_prefix(store, identity, run, work)
    s3 = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.region,
        aws_access_key_id=keys.get("accessKeyId", ""),
        aws_secret_access_key=keys.get("secretAccessKey", ""),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    found = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix):
            for entry in page.get("Contents") or []:
                key = str(entry["Key"])
                size = int(entry.get("Size") or 0)
                start = max(0, size - MAX_ARCHIVED_BYTES)
                options = {"Range": f"bytes={start}-"} if start else {}
                body = s3.get_object(Bucket=store.bucket, Key=key, **options)["Body"].read()
                work_name, _, pod = key[len(log_prefix(store, identity, run)) :].partition("/")
                lines = body.decode(errors="replace").splitlines()
                if start:
                    lines = [f"(the first {start} bytes of this log are left out)", *lines[1:]]
                found.append(ArchivedLog(work_name, pod.removesuffix(".log"), lines))
    except (BotoCoreError, ClientError) as error:
        raise ArchiveUnavailable(
            f"the artifact store at {store.endpoint} could not be read: {error}"
        ) from None
    return sorted(found, key=lambda log: (log.work, log.pod))
