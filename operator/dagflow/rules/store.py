"""Where a flow's objects are in its artifact store: the keys of its artifacts and of its pods' logs.

A key holds the flow's uid, so a flow deleted and made again under its name never meets the old
one's objects. The operator writes these keys into the pods' environment; `dagflow logs` and the
dashboard read the logs back from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagflow.api.models import ArtifactStore

# The ConfigMap of a namespace that names its artifact store.
STORE_CONFIG_MAP_NAME = "dagflow-artifacts"


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
