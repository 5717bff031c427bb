"""The artifact store: where a namespace's works leave their artifact outputs and their pods' logs.

A namespace names its S3-compatible store in the ConfigMap `dagflow-artifacts` (endpoint, bucket,
the Secret with the credentials, region, key prefix); the operator's own setting (the chart's
`artifactStore`) applies where a namespace has none. The operator reads that ConfigMap, never the
Secret: the pods read the credentials through their environment, and the launcher that starts each
work's command downloads its inputs, uploads its artifacts and archives its log (images/launcher).

Everything here is pure: from the store and a work, what its pods are told (`StoreWiring`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from dagflow.api.models import ArtifactStore, DAGFlowSpec, Work
from dagflow.rules.store import (
    STORE_CONFIG_MAP_NAME,
    FlowIdentity,
    artifact_key,
    artifact_outputs,
    artifact_paths,
    log_prefix,
)
from dagflow.rules.substitution import container_references

__all__ = [
    "STORE_CONFIG_MAP_NAME",
    "ArtifactStore",
    "FlowIdentity",
    "artifact_key",
    "artifact_paths",
    "log_prefix",
]

# Where the launcher buffers a work's log (an emptyDir).
LOG_BUFFER_DIRECTORY = "/dagflow-logs"
# Stands for the pod's name in a log's key: the launcher puts it in.
POD_PLACEHOLDER = "{pod}"


class StoreConfigError(ValueError):
    """A store configuration that cannot be used; the message names the field."""


def parse_store(data: Mapping[str, Any], where: str) -> ArtifactStore:
    """The store a ConfigMap's data (or the operator's setting) names; StoreConfigError says what
    is wrong, naming `where` it was read from."""
    try:
        return ArtifactStore.model_validate(dict(data))
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'data'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise StoreConfigError(f"{where} is not a usable artifact store: {details}") from None


def downloaded(work: Work) -> set[tuple[str, str]]:
    """The artifacts a work's container references by path, (work, output): those it downloads."""
    return {
        (reference.work, reference.name)
        for _, reference in container_references(work.container)
        if reference.kind == "works" and reference.field == "path"
    }


def needs_store(work: Work) -> bool:
    """Whether the work cannot run without an artifact store: it uploads or downloads artifacts."""
    return bool(artifact_outputs(work)) or bool(downloaded(work))


def store_missing_message(namespace: str, work: Work, store: StoreConfigError | None) -> str:
    """Why a work that uploads or downloads artifacts cannot start."""
    what = "uploads artifacts" if artifact_outputs(work) else "downloads artifacts"
    if store is not None:
        return f"it {what}, and {store}"
    return (
        f"it {what}, and namespace {namespace} has no artifact store: create the ConfigMap "
        f"{STORE_CONFIG_MAP_NAME} there (endpoint, bucket, secretName), or set the operator's artifactStore"
    )


@dataclass(frozen=True)
class StoreWiring:
    """What one work's pods are told of the store: where it is, what to upload and download, where
    their logs go (the env of the launcher, images/launcher)."""

    store: ArtifactStore
    log_key: str | None = None
    uploads: list[dict[str, str]] = field(default_factory=list)
    downloads: list[dict[str, str]] = field(default_factory=list)


def wiring(
    store: ArtifactStore,
    flow: FlowIdentity,
    spec: DAGFlowSpec,
    work: Work,
    run: int,
    outputs: Mapping[str, Mapping[str, Any]],
) -> StoreWiring:
    """The store's wiring of a batch work's pods in run `run`: its artifact outputs' uploads, the
    downloads of the artifacts its command references by path (from its ancestors' `outputs`, a
    finally work's of those that reported any), and its log's key. A serve work's pods run until
    the flow goes: they download, but leave no log to archive."""
    uploads = [
        {"name": name, "path": path, "key": artifact_key(store, flow, run, work.name, name)}
        for name, path in sorted(artifact_outputs(work).items())
    ]
    paths = artifact_paths(spec, outputs)
    downloads = []
    for upstream, name in sorted(downloaded(work)):
        reported = (outputs.get(upstream) or {}).get(name)
        if not isinstance(reported, Mapping) or not reported.get("uri"):
            continue  # a finally work's reference to a work that left none: it reads ""
        downloads.append(
            {
                "work": upstream,
                "name": name,
                "uri": str(reported["uri"]),
                "sha256": str(reported.get("sha256", "")),
                "kind": str(reported.get("kind", "file")),
                "path": paths[upstream][name],
            }
        )
    log_key = (
        None if work.serve is not None else log_prefix(store, flow, run, work.name) + POD_PLACEHOLDER + ".log"
    )
    return StoreWiring(store=store, log_key=log_key, uploads=uploads, downloads=downloads)
