"""Pure builders of the Kubernetes objects a flow's works run as: a Job per batch work, a Deployment
plus a Service per serve work. They only compute manifests; `dagflow.controller.kube` sends them."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagflow.api.models import (
    API_VERSION,
    KIND,
    WORKSPACE_MOUNT_PATH,
    WORKSPACE_VOLUME,
    DAGFlowSpec,
    FailurePolicy,
    PodDefaults,
    Work,
)
from dagflow.controller.artifacts import LOG_BUFFER_DIRECTORY, StoreWiring
from dagflow.controller.queueing import (
    MIN_PARALLELISM_ANNOTATION,
    PRIORITY_CLASS_LABEL,
    QUEUE_LABEL,
    with_requests,
)
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming
from dagflow.rules.matrix import Combination, encode_values
from dagflow.rules.store import DOWNLOADS_DIRECTORY
from dagflow.rules.substitution import Values, launcher_env_names, substitute_container


@dataclass(frozen=True)
class FlowRef:
    """The identity of a DAGFlow that its children need: where it is and how to own them."""

    name: str
    namespace: str
    uid: str
    generation: int = 1

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> FlowRef:
        metadata = body["metadata"]
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata["uid"],
            generation=int(metadata.get("generation") or 1),
        )

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def endpoint_url(flow: FlowRef, work: Work) -> str | None:
    """The in-cluster URL of a serve work's Service."""
    if work.serve is None:
        return None
    service = naming.serve_name(flow.name, work.name)
    return f"http://{service}.{flow.namespace}.svc:{work.serve.port}"


def build_job(
    flow: FlowRef,
    spec: DAGFlowSpec,
    work: Work,
    run: int,
    settings: OperatorSettings,
    values: Values | None = None,
    instances: MatrixInstances | None = None,
    workspace_claim: str | None = None,
    store: StoreWiring | None = None,
) -> dict[str, Any]:
    """The Job that runs one attempt-series of a batch work in one run.

    It is an Indexed Job of one completion: `backoffLimitPerIndex` makes the Job controller count
    the failures of the work's pod on the pod itself, and both limits equal `retries`, so the work
    gets exactly `retries` retries. A pod that was disrupted (evicted, preempted, its node drained)
    did not fail: its pod failure policy replaces it without using up a retry.
    `values` resolve the `$(...)` references of the container (substitution.py); BadReference
    when one cannot be resolved. A matrix work's Job (`instances`) has one completion per instance,
    each with its own failure count; its pods start through the launcher (`_launched`). Its pods
    mount `workspace_claim`, the run's workspace, where the spec has one and the work uses it. With
    an artifact `store`, they start through the launcher too, which downloads the artifacts the work
    reads, uploads those it leaves and archives its log (`_wire_store`).
    """
    job_spec: dict[str, Any] = {
        "completions": 1,
        "parallelism": 1,
        "completionMode": "Indexed",
        "backoffLimit": work.retries,
        "backoffLimitPerIndex": work.retries,
        "podFailurePolicy": {
            "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
        },
        "template": _pod_template(
            flow, spec, work, run, settings, "Never", values, instances is not None, workspace_claim
        ),
    }
    if work.timeout_seconds is not None:
        job_spec["activeDeadlineSeconds"] = work.timeout_seconds
    if instances is not None:
        job_spec.update(completions=instances.count, parallelism=instances.parallelism)
        # Left out, the Job's total backoff limit is unlimited: each instance has its own.
        del job_spec["backoffLimit"]
        if spec.failure_policy == FailurePolicy.FAIL_FAST:
            # The first failed instance fails the work and stops its other instances.
            job_spec["maxFailedIndexes"] = 0
        values_name = naming.matrix_values_name(flow.name, run, work.name, instances.job_indexes)
        _launched(job_spec["template"], settings, values_name)
    elif store is not None:
        _launched(job_spec["template"], settings)
    if store is not None:
        _wire_store(job_spec["template"], store)
    if instances is not None or store is not None:
        # A launch that cannot happen (no values, a bad index, an artifact that cannot be fetched or
        # left) would fail the same way every time: the instance fails at once, its retries kept
        # for the program's own failures.
        job_spec["podFailurePolicy"]["rules"].append(
            {
                "action": "FailIndex",
                "onExitCodes": {
                    "containerName": work.container_name,
                    "operator": "In",
                    "values": [LAUNCHER_EXIT_CODE],
                },
            }
        )
    if instances is None and work.timeout_seconds is None:
        # Its pod's success settles the work before the Job controller counts it
        # (`observe.settled_by_pod`): the operator's pod watch selects these pods by this label.
        job_spec["template"]["metadata"]["labels"][naming.SETTLES_WORK_LABEL] = "true"
    metadata = _child_metadata(flow, naming.job_name(flow.name, run, work.name), work, run, stamped=True)
    if instances is not None:
        metadata["annotations"][naming.MATRIX_ANNOTATION] = "true"
        if instances.cached:
            metadata["annotations"][naming.CACHED_INSTANCES_ANNOTATION] = str(instances.cached)
            metadata["annotations"][naming.JOB_INDEXES_ANNOTATION] = instances.job_indexes
    if _queued(metadata, job_spec["template"], spec, work):
        # Created suspended, it never runs unadmitted, even while Kueue's webhook is down: Kueue
        # unsuspends it once its queue admits it, and nothing of the operator's suspends it again.
        job_spec["suspend"] = True
        if job_spec["parallelism"] > 1:
            # A matrix is one Workload: without partial admission it would wait until the quota
            # holds all of its instances at once. With it, Kueue admits as many as the quota has
            # room for (from one up to the Job's parallelism, maxParallel's cap) and lowers the
            # Job's parallelism to that; the Indexed Job runs every instance all the same.
            metadata["annotations"][MIN_PARALLELISM_ANNOTATION] = "1"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def _queued(metadata: dict[str, Any], template: dict[str, Any], spec: DAGFlowSpec, work: Work) -> bool:
    """Label a queued work's child for Kueue (its LocalQueue, the flow's priority class) and give its
    containers the requests Kueue admits on; False when the work is not queued."""
    queue = spec.queue_of(work)
    if queue is None:
        return False
    kueue_labels = {QUEUE_LABEL: queue}
    if spec.priority_class_name:
        kueue_labels[PRIORITY_CLASS_LABEL] = spec.priority_class_name
    metadata["labels"].update(kueue_labels)
    if work.serve is not None:
        # Kueue's integration of Deployments reads its pods' labels too.
        template["metadata"]["labels"].update(kueue_labels)
    for container in template["spec"]["containers"]:
        with_requests(container)
    return True


@dataclass(frozen=True)
class MatrixInstances:
    """How many instances a matrix work's Job runs, and how many at once."""

    count: int
    parallelism: int
    # The instances the cache had (not run), and those the Job runs, in its index order.
    cached: int = 0
    job_indexes: str = ""


LAUNCHER_DIRECTORY = "/dagflow"
# Where the init container copies the launcher to.
LAUNCHER_PATH = f"{LAUNCHER_DIRECTORY}/launcher"
# Where the launcher is when its image is mounted as a volume at LAUNCHER_DIRECTORY: its path in the
# image (images/launcher/Dockerfile) under the mount.
LAUNCHER_IMAGE_VOLUME_PATH = f"{LAUNCHER_DIRECTORY}/dagflow-launcher"
# Beside the launcher's directory, not in it: a mount inside a read-only mount cannot be made.
MATRIX_VALUES_DIRECTORY = "/dagflow-matrix"
MATRIX_VALUES_KEY = "values.json"
MATRIX_OUTPUTS_KEY = "outputs.json"
# Beside the values of a matrix work some of whose instances the cache had: their outputs.
MATRIX_CACHED_KEY = "cached.json"
# The launcher's exit code when it cannot start the instance (images/launcher/main.go), with the
# reason in the container's termination message.
LAUNCHER_EXIT_CODE = 242
# The env variables the launcher expands, as a JSON list of names: those whose author-written value
# holds a $(matrix.KEY). Values from Secrets, ConfigMaps or the image are never expanded.
LAUNCHER_ENV_NAMES = "DAGFLOW_MATRIX_ENV"
_LAUNCHER_VOLUME = "dagflow-launcher"
_VALUES_VOLUME = "dagflow-matrix"
# The init container is the operator's, so it is as locked down as a pod can be: it passes the
# restricted Pod Security Standard wherever the work's own container does.
_LAUNCHER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _launched(
    template: dict[str, Any], settings: OperatorSettings, values_config_map: str | None = None
) -> None:
    """Makes a work's pod template start through the launcher: the container's command becomes
    `launcher run -- COMMAND ARGS...`. For a matrix work (`values_config_map`) the launcher puts the
    instance's values (from the ConfigMap, by the pod's completion index) in place of $(matrix.KEY)
    in the arguments and in the env values that hold one, then runs the command.

    The launcher reaches the pod as `settings.launcher_delivery` says: its image mounted read-only as
    an `image` volume (nothing runs before the work's container), or copied by an init container into
    an emptyDir, where the runtime cannot mount images."""
    pod_spec = template["spec"]
    container = pod_spec["containers"][0]
    by_image_volume = settings.launcher_delivery == "imageVolume"
    launcher = LAUNCHER_IMAGE_VOLUME_PATH if by_image_volume else LAUNCHER_PATH
    argv = [*container.pop("command", []), *container.pop("args", [])]
    container["command"] = [launcher, "run", "--", *argv]
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": _LAUNCHER_VOLUME, "mountPath": LAUNCHER_DIRECTORY, "readOnly": True},
    ]
    if values_config_map is not None:
        expanded = json.dumps(launcher_env_names(container), separators=(",", ":"))
        container["env"] = [
            *(entry for entry in container.get("env", []) if entry.get("name") != LAUNCHER_ENV_NAMES),
            {"name": LAUNCHER_ENV_NAMES, "value": expanded.replace("$", "$$")},
        ]
        container["volumeMounts"].append(
            {"name": _VALUES_VOLUME, "mountPath": MATRIX_VALUES_DIRECTORY, "readOnly": True}
        )
    launcher_volume: dict[str, Any]
    if by_image_volume:
        launcher_volume = {
            "name": _LAUNCHER_VOLUME,
            "image": {"reference": settings.launcher_image, "pullPolicy": settings.launcher_pull_policy},
        }
    else:
        launcher_volume = {"name": _LAUNCHER_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}}
        pod_spec["initContainers"] = [
            *pod_spec.get("initContainers", []),
            {
                "name": _LAUNCHER_VOLUME,
                "image": settings.launcher_image,
                "imagePullPolicy": settings.launcher_pull_policy,
                "args": ["install", LAUNCHER_PATH],
                "volumeMounts": [{"name": _LAUNCHER_VOLUME, "mountPath": LAUNCHER_DIRECTORY}],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "100m", "memory": "32Mi"},
                },
                "securityContext": dict(_LAUNCHER_SECURITY_CONTEXT),
            },
        ]
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), launcher_volume]
    if values_config_map is not None:
        pod_spec["volumes"].append({"name": _VALUES_VOLUME, "configMap": {"name": values_config_map}})


_LOGS_VOLUME = "dagflow-logs"
_DOWNLOADS_VOLUME = "dagflow-artifacts"


def _wire_store(template: dict[str, Any], wiring: StoreWiring) -> None:
    """Tells a launched pod's container where the artifact store is, with which credentials (the pod
    reads them from the namespace's Secret, the operator never does), what to upload and download,
    and where its log goes (images/launcher)."""
    pod_spec = template["spec"]
    container = pod_spec["containers"][0]
    store = wiring.store

    def plain(name: str, value: str) -> dict[str, Any]:
        # Kubernetes expands $(VAR) in env values: a `$` of the operator's stays a `$`.
        return {"name": name, "value": value.replace("$", "$$")}

    def secret(name: str, key: str) -> dict[str, Any]:
        # Optional: a missing Secret or key reaches the launcher as an empty value, and the work
        # fails at once naming it, instead of its pod waiting for ever to be created.
        reference = {"name": store.secret_name, "key": key, "optional": True}
        return {"name": name, "valueFrom": {"secretKeyRef": reference}}

    env = [
        plain("DAGFLOW_STORE_ENDPOINT", store.endpoint.rstrip("/")),
        plain("DAGFLOW_STORE_BUCKET", store.bucket),
        plain("DAGFLOW_STORE_REGION", store.region),
        plain("DAGFLOW_STORE_SECRET", store.secret_name),
        secret("DAGFLOW_STORE_ACCESS_KEY_ID", "accessKeyId"),
        secret("DAGFLOW_STORE_SECRET_ACCESS_KEY", "secretAccessKey"),
    ]
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if wiring.log_key is not None:
        env += [
            {"name": "DAGFLOW_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            plain("DAGFLOW_LOG_KEY", wiring.log_key),
            plain("DAGFLOW_LOG_BUFFER", LOG_BUFFER_DIRECTORY),
        ]
        mounts.append({"name": _LOGS_VOLUME, "mountPath": LOG_BUFFER_DIRECTORY})
        volumes.append({"name": _LOGS_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}})
    if wiring.uploads:
        env.append(plain("DAGFLOW_UPLOADS", json.dumps(wiring.uploads, separators=(",", ":"))))
    if wiring.downloads:
        env.append(plain("DAGFLOW_DOWNLOADS", json.dumps(wiring.downloads, separators=(",", ":"))))
        mounts.append({"name": _DOWNLOADS_VOLUME, "mountPath": DOWNLOADS_DIRECTORY})
        volumes.append({"name": _DOWNLOADS_VOLUME, "emptyDir": {}})
    ours = {entry["name"] for entry in env}
    container["env"] = [*(entry for entry in container.get("env", []) if entry.get("name") not in ours), *env]
    container["volumeMounts"] = [*container.get("volumeMounts", []), *mounts]
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), *volumes]


def build_matrix_values(
    flow: FlowRef,
    work: Work,
    run: int,
    combinations: Sequence[Combination],
    cached_outputs: Mapping[str, Sequence[Any]] | None = None,
    job_indexes: str = "",
) -> dict[str, Any]:
    """The ConfigMap of a matrix work's values in one run: a JSON list, one object per index of its
    Job. When the cache had some of its instances (`cached_outputs`: by output name, the list over
    all instances, None where one runs), the Job runs only the others, the values are theirs, and
    the cached outputs are kept beside them until the Job's are gathered in; its name holds the
    instances the Job runs (`job_indexes`)."""
    data = {MATRIX_VALUES_KEY: encode_values(combinations)}
    if cached_outputs is not None:
        data[MATRIX_CACHED_KEY] = json.dumps(dict(cached_outputs), separators=(",", ":"), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _child_metadata(
            flow, naming.matrix_values_name(flow.name, run, work.name, job_indexes), work, run
        ),
        # Immutable: what a run's pods read cannot be changed under them.
        "immutable": True,
        "data": data,
    }


def build_matrix_outputs(flow: FlowRef, work: Work, run: int, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap of the outputs kept out of the flow's status: a matrix work's instances' (by
    output name, the list of the instances' values in index order), or a work's own past the
    status's budget (by output name, its value)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _child_metadata(flow, naming.matrix_outputs_name(flow.name, run, work.name), work, run),
        "immutable": True,
        "data": {MATRIX_OUTPUTS_KEY: json.dumps(dict(outputs), separators=(",", ":"), sort_keys=True)},
    }


def build_deployment(
    flow: FlowRef,
    spec: DAGFlowSpec,
    work: Work,
    run: int,
    settings: OperatorSettings,
    values: Values | None = None,
    rolled_from: int | None = None,
    workspace_claim: str | None = None,
    store: StoreWiring | None = None,
) -> dict[str, Any]:
    """The Deployment of a serve work. Its name holds no run, so a new run rolls it in place;
    `rolled_from` is the run whose model it serves until then."""
    assert work.serve is not None, "only serve works have a Deployment"
    template = _pod_template(
        flow, spec, work, run, settings, "Always", values, workspace_claim=workspace_claim
    )
    if store is not None and store.downloads:
        # Its pods fetch the artifacts it serves before the server starts.
        _launched(template, settings)
        _wire_store(template, store)
    container = template["spec"]["containers"][0]
    ports = container.setdefault("ports", [])
    if not any(port.get("containerPort") == work.serve.port for port in ports):
        port: dict[str, Any] = {"containerPort": work.serve.port, "protocol": "TCP"}
        if not any(existing.get("name") == "http" for existing in ports):
            port["name"] = "http"
        ports.append(port)
    if "readinessProbe" not in container:
        container["readinessProbe"] = {"tcpSocket": {"port": work.serve.port}, "periodSeconds": 5}
    # Always named, with its deprecated twin: the API server fills a missing serviceAccountName
    # from `serviceAccount`, so a rollout that merely left it out would keep the old account.
    account = template["spec"].get("serviceAccountName") or "default"
    template["spec"]["serviceAccountName"] = template["spec"]["serviceAccount"] = account
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _child_metadata(flow, naming.serve_name(flow.name, work.name), work, run, stamped=True),
        "spec": {
            "replicas": work.serve.replicas,
            "selector": {"matchLabels": _selector_labels(flow, work)},
            "template": template,
            **(
                {"progressDeadlineSeconds": work.serve.progress_deadline_seconds}
                if work.serve.progress_deadline_seconds
                else {}
            ),
        },
    }
    _queued(deployment["metadata"], template, spec, work)
    if rolled_from is not None:
        # The run whose pods serve while this one rolls out, for the Serving condition to name.
        deployment["metadata"]["annotations"][naming.ROLLED_FROM_ANNOTATION] = str(rolled_from)
    return deployment


def build_service(flow: FlowRef, work: Work, run: int) -> dict[str, Any]:
    """The Service in front of a serve work's pods, named like its Deployment; `run` is the last one
    that rolled it out."""
    assert work.serve is not None, "only serve works have a Service"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_metadata(flow, naming.serve_name(flow.name, work.name), work, run),
        "spec": {
            "selector": _selector_labels(flow, work),
            "ports": [
                {"name": "http", "port": work.serve.port, "targetPort": work.serve.port, "protocol": "TCP"}
            ],
        },
    }


def _selector_labels(flow: FlowRef, work: Work) -> dict[str, str]:
    labels = naming.child_labels(flow.name, work.name)
    return {key: labels[key] for key in (naming.FLOW_LABEL, naming.WORK_LABEL)}


def _child_metadata(flow: FlowRef, name: str, work: Work, run: int, stamped: bool = False) -> dict[str, Any]:
    """`stamped`: the child carries the generation of the spec it was built from."""
    annotations = naming.child_annotations(flow.name, work.name)
    if stamped:
        annotations[naming.GENERATION_ANNOTATION] = str(flow.generation)
    return {
        "name": name,
        "namespace": flow.namespace,
        "labels": naming.child_labels(flow.name, work.name, run),
        "annotations": annotations,
        "ownerReferences": [flow.owner_reference()],
    }


def _pod_template(
    flow: FlowRef,
    spec: DAGFlowSpec,
    work: Work,
    run: int,
    settings: OperatorSettings,
    restart_policy: str,
    values: Values | None,
    launched: bool = False,
    workspace_claim: str | None = None,
) -> dict[str, Any]:
    defaults = spec.pod_defaults or PodDefaults()
    # The operator's own labels come last: a user's label never hides a pod from its flow.
    labels = {**defaults.labels, **work.labels, **naming.child_labels(flow.name, work.name, run)}
    annotations = {
        **defaults.annotations,
        **work.annotations,
        **naming.child_annotations(flow.name, work.name),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "containers": [_container(work, defaults, settings, values, launched)],
    }
    service_account = work.service_account_name or defaults.service_account_name
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    node_selector = {**defaults.node_selector, **work.node_selector}
    tolerations = [*copy.deepcopy(defaults.tolerations), *copy.deepcopy(work.tolerations)]
    if work.gpu > 0:
        node_selector = {**node_selector, **settings.gpu_node_selector}
        tolerations += [t for t in copy.deepcopy(settings.gpu_tolerations) if t not in tolerations]
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if defaults.image_pull_secrets:
        pod_spec["imagePullSecrets"] = copy.deepcopy(defaults.image_pull_secrets)
    if work.volumes:
        pod_spec["volumes"] = copy.deepcopy(work.volumes)
    if workspace_claim is not None and spec.mounts_workspace(work):
        _mount_workspace(pod_spec, work, workspace_claim)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def _mount_workspace(pod_spec: dict[str, Any], work: Work, claim: str) -> None:
    """The run's workspace claim as a volume of the pod, mounted at /workspace in the work's container
    (a folder of it with subPath, which the kubelet makes when missing)."""
    mount: dict[str, Any] = {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_MOUNT_PATH}
    own = work.workspace
    if own is not None and own.sub_path:
        mount["subPath"] = own.sub_path
    if own is not None and own.read_only:
        mount["readOnly"] = True
    container = pod_spec["containers"][0]
    container["volumeMounts"] = [*container.get("volumeMounts", []), mount]
    pod_spec["volumes"] = [
        *pod_spec.get("volumes", []),
        {"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": claim}},
    ]


def build_workspace_claim(flow: FlowRef, spec: DAGFlowSpec, run: int, name: str) -> dict[str, Any]:
    """The PersistentVolumeClaim of a run's workspace, made by run `run` (a retry uses the retried
    run's), owned by the flow: deleting the flow deletes it."""
    assert spec.workspace is not None, "only a flow with spec.workspace has a workspace"
    claim_spec: dict[str, Any] = {
        "accessModes": list(spec.workspace.access_modes),
        "resources": {"requests": {"storage": spec.workspace.size}},
    }
    if spec.workspace.storage_class_name is not None:
        claim_spec["storageClassName"] = spec.workspace.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": flow.namespace,
            "labels": naming.workspace_labels(flow.name, run),
            "annotations": {naming.FLOW_ANNOTATION: flow.name},
            "ownerReferences": [flow.owner_reference()],
        },
        "spec": claim_spec,
    }


def _container(
    work: Work, defaults: PodDefaults, settings: OperatorSettings, values: Values | None, launched: bool
) -> dict[str, Any]:
    container = copy.deepcopy(work.container)
    container["name"] = work.container_name
    own_env = container.get("env") or []
    own_names = {entry.get("name") for entry in own_env}
    inherited = [copy.deepcopy(entry) for entry in defaults.env if entry.get("name") not in own_names]
    if inherited or own_env:
        container["env"] = [*inherited, *own_env]
    if values is not None:
        container = substitute_container(container, values, launched)
    if work.gpu > 0:
        container["resources"] = gpu_resources(container.get("resources"), work.gpu, settings.gpu_resource)
    return container


def gpu_resources(resources: Mapping[str, Any] | None, gpus: int, gpu_resource: str) -> dict[str, Any]:
    """A container's resources with a GPU work's count as its GPU limit, and as its GPU request where
    it asks for one."""
    result = copy.deepcopy(dict(resources or {}))
    if gpus > 0:
        result["limits"] = {**(result.get("limits") or {}), gpu_resource: str(gpus)}
        requests = result.get("requests")
        if requests is not None and gpu_resource in requests:
            result["requests"] = {**requests, gpu_resource: str(gpus)}
    return result
