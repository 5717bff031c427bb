"""Where a flow's objects are in its artifact store: the keys of its artifacts and of its pods' logs.

A key holds the flow's uid, so a flow deleted and made again under its name never meets the old
one's objects. The operator writes these keys into the pods' environment; `dagflow logs` and the
dashboard read the logs back from them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagflow.api.models import ArtifactStore, DAGFlowSpec, Work

# The ConfigMap of a namespace that names its artifact store.
STORE_CONFIG_MAP_NAME = "dagflow-artifacts"
# Where the launcher puts the artifacts a work downloads (an emptyDir).
DOWNLOADS_DIRECTORY = "/dagflow-artifacts"


@dataclass(frozen=True)
class FlowIdentity:
    """What makes an object key the flow's own: a flow made again under its name gets other keys."""

    namespace: str
    name: str
    uid: str


def object_key(store: ArtifactStore, *parts: str) -> str:
    return "/".join([*([store.prefix] if store.prefix else []), *parts])


def artifact_key(store: ArtifactStore, flow: FlowIdentity, run: int, work: str, output: str) -> str:
    return object_key(store, "artifacts", flow.namespace, flow.name, flow.uid, str(run), work, output)


def log_prefix(store: ArtifactStore, flow: FlowIdentity, run: int, work: str | None = None) -> str:
    """The folder of the logs of a work's pods in one run (of every work's, without `work`); each
    pod's is `{work}/{pod}.log` in the run's."""
    parts = [str(run), *([work] if work else [])]
    return object_key(store, "logs", flow.namespace, flow.name, flow.uid, *parts) + "/"


def download_path(work: str, output: str, kind: str, upstream_path: str) -> str:
    """Where a downstream pod finds an artifact: a file under its own name, a directory as itself."""
    folder = f"{DOWNLOADS_DIRECTORY}/{work}/{output}"
    return folder if kind == "directory" else f"{folder}/{posixpath.basename(upstream_path)}"


def artifact_outputs(work: Work) -> dict[str, str]:
    """The work's artifact outputs: their paths in its container, by output name."""
    return {output.name: output.artifact.path for output in work.outputs if output.artifact is not None}


def artifact_paths(spec: DAGFlowSpec, outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Where each artifact reported so far would be downloaded, by work and output: what
    `$(works.W.outputs.O.path)` stands for."""
    paths: dict[str, dict[str, str]] = {}
    for work, artifacts in spec.artifact_outputs.items():
        for name, path in artifacts.items():
            reported = (outputs.get(work) or {}).get(name)
            kind = reported.get("kind", "file") if isinstance(reported, Mapping) else "file"
            paths.setdefault(work, {})[name] = download_path(work, name, str(kind), path)
    return paths
