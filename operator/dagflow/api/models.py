"""The `dagflow.dev/v1alpha1` API: the DAGFlow spec and status as pydantic models.

These models are the single source of the API. The CRD in `crds/` is generated from them
(`python -m dagflow.api.crd`), so every description here is what `kubectl explain` shows, and every
bound here is enforced twice: by pydantic in the operator and by the API server at apply time.

Embedded Kubernetes objects (a Container, Volumes, Tolerations, ...) stay plain dictionaries in
Python: the operator passes them through to the Kubernetes API untouched. They carry a
`KubernetesShape` marker instead, which the CRD generator replaces with the upstream Kubernetes
schema of that type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "dagflow.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DAGFlow"
PLURAL = "dagflows"
SINGULAR = "dagflow"
SHORT_NAMES = ("dagf", "dag")

# Bounds the CEL cost estimator multiplies together; large enough for a 2,000-work flow whose last
# work waits for all the others.
MAX_WORKS = 2000
MAX_FINALLY_WORKS = 50
MAX_NOTIFICATIONS = 10
MAX_DEPENDENCIES = MAX_WORKS
DNS_LABEL_MAX_LENGTH = 63
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE_MAX_LENGTH = 63
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
INT32_MAX = 2**31 - 1
# Most runs a flow keeps a summary of in its status (and the Jobs of), whatever it asks for.
MAX_HISTORY_RUNS = 100

# The operator's record of a cached work's outcome, one object per entry in the flow's namespace.
CACHE_ENTRY_KIND = "DAGFlowCacheEntry"
CACHE_ENTRY_PLURAL = "dagflowcacheentries"
CACHE_ENTRY_SINGULAR = "dagflowcacheentry"
# A rerun request with this annotation set to "true" runs every work, cached or not.
NO_CACHE_ANNOTATION = f"{GROUP}/no-cache"
DEFAULT_CACHE_MAX_AGE = "168h"
# Durations as `maxAge` takes them: whole numbers of days, hours, minutes and seconds, e.g. 168h, 1d12h.
DURATION_PATTERN = r"^([0-9]+(d|h|m|s))+$"
_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def duration_seconds(text: str) -> int:
    """Seconds of a duration such as `168h`, `1d12h` or `90s`; ValueError for anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 168h, 30m or 1d12h")
    return sum(int(amount) * _DURATION_UNITS[unit] for amount, unit in re.findall(r"([0-9]+)([dhms])", text))


# Marks a JSON schema node that the CRD generator replaces with an upstream Kubernetes schema.
KUBERNETES_SHAPE_KEY = "x-dagflow-kubernetes-shape"


class RunRequest(StrEnum):
    """A one-shot request about a flow's runs, made by setting an annotation on the flow.

    The annotation's value is a token: a request is new when its token differs from the last one
    the operator acted on (`status.handledRequests`), so applying the same request twice acts once.
    Annotations leave `metadata.generation` alone: a request is no change of the spec.
    """

    RERUN = "rerun"
    RETRY = "retry"
    STOP = "stop"

    @property
    def annotation(self) -> str:
        return REQUEST_ANNOTATIONS[self]


RERUN_ANNOTATION = f"{GROUP}/rerun"
RETRY_ANNOTATION = f"{GROUP}/retry"
STOP_ANNOTATION = f"{GROUP}/stop"
# Parameter values (a JSON object) for the runs that rerun and retry requests start.
PARAMS_ANNOTATION = f"{GROUP}/params"
# An approval or rejection of a gate (a work with `approval`) is an annotation per work, a JSON object
# {"run", "decision", "token", "params", "message"}; who made it is stamped by the API server's
# admission (the chart's MutatingAdmissionPolicy) into the second annotation, never typed.
APPROVAL_ANNOTATION_PREFIX = "approval.dagflow.dev/"
APPROVER_ANNOTATION_PREFIX = "approved-by.dagflow.dev/"
# The RBAC verb on dagflows that approving and rejecting needs, beside patch.
APPROVE_VERB = "approve"
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 86400
MAX_APPROVAL_TIMEOUT_SECONDS = 30 * 86400
REQUEST_ANNOTATIONS = {
    RunRequest.RERUN: RERUN_ANNOTATION,
    RunRequest.RETRY: RETRY_ANNOTATION,
    RunRequest.STOP: STOP_ANNOTATION,
}


@dataclass(frozen=True)
class KubernetesShape:
    """Annotation that types a plain dict as a Kubernetes object in the generated CRD.

    `required` replaces the upstream list of required fields when the flow needs other ones (a
    work's container needs an image but no name).
    """

    definition: str
    required: tuple[str, ...] | None = None

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        marker: dict[str, Any] = {"definition": self.definition}
        if self.required is not None:
            marker["required"] = list(self.required)
        return {KUBERNETES_SHAPE_KEY: marker}


def _require_string_key(key: str, what: str) -> Any:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        field = value.get(key)
        if not isinstance(field, str) or not field:
            raise ValueError(f"{what} needs a non-empty string `{key}`")
        return value

    return AfterValidator(check)


def kubernetes_shape_fields(model: type[BaseModel]) -> dict[str, tuple[KubernetesShape, bool]]:
    """Fields of `model` that hold Kubernetes objects, by wire name: (shape, whether it is a list)."""
    found: dict[str, tuple[KubernetesShape, bool]] = {}
    for name, info in model.model_fields.items():
        wire_name = info.alias or name
        shapes = [item for item in info.metadata if isinstance(item, KubernetesShape)]
        if shapes:
            found[wire_name] = (shapes[0], False)
        elif get_origin(info.annotation) is list:
            (item_type,) = get_args(info.annotation)
            if get_origin(item_type) is Annotated:
                shapes = [item for item in get_args(item_type)[1:] if isinstance(item, KubernetesShape)]
                if shapes:
                    found[wire_name] = (shapes[0], True)
    return found


Container = Annotated[
    dict[str, Any],
    _require_string_key("image", "a work's container"),
    KubernetesShape("io.k8s.api.core.v1.Container", required=("image",)),
]
Volume = Annotated[
    dict[str, Any], _require_string_key("name", "a volume"), KubernetesShape("io.k8s.api.core.v1.Volume")
]
Toleration = Annotated[dict[str, Any], KubernetesShape("io.k8s.api.core.v1.Toleration")]
EnvVar = Annotated[
    dict[str, Any], _require_string_key("name", "an env entry"), KubernetesShape("io.k8s.api.core.v1.EnvVar")
]
LocalObjectReference = Annotated[
    dict[str, Any],
    _require_string_key("name", "an image pull secret reference"),
    KubernetesShape("io.k8s.api.core.v1.LocalObjectReference"),
]

LabelValue = Annotated[str, Field(max_length=LABEL_VALUE_MAX_LENGTH, pattern=LABEL_VALUE_PATTERN)]
WorkName = Annotated[str, Field(min_length=1, max_length=DNS_LABEL_MAX_LENGTH, pattern=DNS_LABEL_PATTERN)]
# Names of parameters and outputs, as they appear in `$(params.NAME)` and `$(works.W.outputs.NAME)`.
VALUE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
VALUE_NAME_MAX_LENGTH = 63
ValueName = Annotated[str, Field(min_length=1, max_length=VALUE_NAME_MAX_LENGTH, pattern=VALUE_NAME_PATTERN)]
MAX_PARAMS = 64
MAX_OUTPUTS = 32
PARAM_VALUE_MAX_LENGTH = 4096
# A LocalQueue's and a WorkloadPriorityClass's names go into label values of the Jobs (Kueue reads
# them there), so they are what both a Kubernetes name and a label value allow.
KUEUE_NAME_MAX_LENGTH = 63
KUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
QueueName = Annotated[str, Field(max_length=KUEUE_NAME_MAX_LENGTH, pattern=KUEUE_NAME_PATTERN)]
# A work's own queueName may also be empty: that work stays out of the flow's queue.
WorkQueueName = Annotated[
    str, Field(max_length=KUEUE_NAME_MAX_LENGTH, pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$")
]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes wants it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class FailurePolicy(StrEnum):
    """What the flow does after a work fails."""

    FAIL_FAST = "FailFast"
    CONTINUE = "Continue"


class TriggerRule(StrEnum):
    """When a work may start, judged from the works it depends on."""

    ALL_SUCCEEDED = "AllSucceeded"
    ALL_DONE = "AllDone"
    ANY_SUCCEEDED = "AnySucceeded"


class ConcurrencyPolicy(StrEnum):
    """What a schedule tick does while a run is still active."""

    FORBID = "Forbid"
    REPLACE = "Replace"


class RunTrigger(StrEnum):
    """Why a run started."""

    CREATED = "Created"
    SPEC_CHANGE = "SpecChange"
    SCHEDULE = "Schedule"
    RERUN = "Rerun"
    RETRY = "Retry"


class FlowPhase(StrEnum):
    """Where the whole flow stands."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SERVING = "Serving"
    STOPPED = "Stopped"


# Phases in which a run is over: the flow changes no more until its spec does or a run is asked for.
FINAL_PHASES = frozenset({FlowPhase.SUCCEEDED, FlowPhase.FAILED, FlowPhase.SERVING, FlowPhase.STOPPED})
# Phases in which the flow did what it is for: its Ready condition is True.
READY_PHASES = frozenset({FlowPhase.SUCCEEDED, FlowPhase.SERVING})


class WorkPhase(StrEnum):
    """Where one work stands."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    SERVING = "Serving"
    STOPPED = "Stopped"
    # A gate (a work with `approval`) whose dependencies allow it, until someone decides.
    WAITING = "Waiting"


class ConditionStatus(StrEnum):
    """Status of a condition, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Serve(ApiModel):
    """Runs the work as a long-lived Deployment plus a Service instead of a Job."""

    port: int = Field(
        ge=1,
        le=65535,
        description="Port the container listens on. The Service exposes the same port, and without a "
        "readinessProbe in the container the pods are probed with a TCP check on it.",
    )
    replicas: int = Field(
        default=1, ge=1, le=INT32_MAX, description="Number of serving pods of the Deployment. Defaults to 1."
    )
    progress_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Seconds a rollout of a new run's model may take before it counts as failed: the "
        "Deployment's progressDeadlineSeconds (Kubernetes' default, 600, when unset). The serve work then "
        "fails with the Deployment's reason, while the pods of the run before keep serving.",
    )


class PodDefaults(ApiModel):
    """Settings merged into the pod of every work. A work's own settings win over these."""

    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        description="ServiceAccount the pods run as, unless a work names its own.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels every pod must match. Merged with a work's nodeSelector; the work's "
        "value wins for a key set in both.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Tolerations added to every pod, before a work's own tolerations.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        description="Secrets used to pull the images of every work.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Environment variables set in every work's container. A variable the container "
        "sets itself wins.",
    )
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Labels put on every pod. The operator's own labels (dagflow.dev/*, "
        "app.kubernetes.io/managed-by) cannot be set here.",
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations put on every pod.")


_SELF_DEPENDENCY_RULE: JsonDict = {
    "rule": "!has(self.dependsOn) || !(self.name in self.dependsOn)",
    "messageExpression": "'work \"' + self.name + '\" depends on itself'",
    "fieldPath": ".dependsOn",
    "reason": "FieldValueInvalid",
}
_SERVE_NOT_CACHED_RULE: JsonDict = {
    "rule": "!has(self.serve) || !has(self.cache) || !has(self.cache.enabled) || !self.cache.enabled",
    "messageExpression": "'work \"' + self.name + '\" is a serve work, which is never cached: "
    "cache.enabled applies to batch works only'",
    "fieldPath": ".cache.enabled",
    "reason": "FieldValueForbidden",
}
_BATCH_ONLY_FIELDS_RULE: JsonDict = {
    "rule": "!has(self.serve) || ((!has(self.retries) || self.retries == 0) && !has(self.timeoutSeconds)"
    " && (!has(self.outputs) || size(self.outputs) == 0) && !has(self.matrix))",
    "messageExpression": "'work \"' + self.name + '\" is a serve work: retries, timeoutSeconds, "
    "outputs and matrix apply to batch works only'",
    "reason": "FieldValueForbidden",
}


class Param(ApiModel):
    """A parameter of the flow, referenced as `$(params.NAME)` in works' command, args and env."""

    name: ValueName = Field(
        description="Name of the parameter: a letter or '_', then letters, digits, '_' or '-'."
    )
    default: str = Field(
        max_length=PARAM_VALUE_MAX_LENGTH,
        description="Value of the parameter in every run, unless the request that starts a run "
        "(annotation dagflow.dev/params) gives another.",
    )
    description: str | None = Field(default=None, max_length=1024, description="What the parameter is for.")


# One part of a path: not empty, `.` or `..`.
_SUB_PATH_PART = r"(?:[^/.][^/]*|\.[^/.][^/]*|\.\.[^/]+)"
# An absolute path in the container, without `.` or `..` parts.
_ARTIFACT_PATH_PATTERN = rf"^/{_SUB_PATH_PART}(/{_SUB_PATH_PART})*$"


class ArtifactStore(ApiModel):
    """Where a namespace's artifacts and logs go: the data of its ConfigMap `dagflow-artifacts`."""

    endpoint: str = Field(
        pattern=r"^https?://[^/\s]+/?$", description="The store's URL: scheme, host and port, no path."
    )
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    secret_name: str = Field(
        min_length=1,
        max_length=253,
        description="The Secret in the flow's namespace with the keys accessKeyId and secretAccessKey.",
    )
    region: str = Field(default="us-east-1", min_length=1, max_length=64)
    prefix: str = Field(default="", max_length=512, description="Put in front of every key, with a '/'.")

    @field_validator("prefix")
    @classmethod
    def _no_edge_slashes(cls, value: str) -> str:
        return value.strip("/")


class ArtifactSpec(ApiModel):
    """A file or directory a work leaves in the artifact store."""

    path: str = Field(
        pattern=_ARTIFACT_PATH_PATTERN,
        max_length=1024,
        description="The file or directory the work writes, an absolute path in its container "
        "(/workspace/model.pkl); uploaded after the work succeeded (a directory as a tar archive).",
    )


class OutputSpec(ApiModel):
    """An output a work reports, referenced downstream as `$(works.WORK.outputs.NAME)`."""

    name: ValueName = Field(
        description="Key of the output in the JSON object the work writes to its termination message."
    )
    description: str | None = Field(default=None, max_length=1024, description="What the output is.")
    artifact: ArtifactSpec | None = Field(
        default=None,
        description="Present: the output is a file or directory, uploaded to the namespace's artifact "
        "store after the work succeeded (its URI, size and sha256 are the output's value); later works "
        "get it downloaded at $(works.WORK.outputs.NAME.path), its URI at $(works.WORK.outputs.NAME).",
    )


class NotifyFormat(StrEnum):
    """How a notification's message is written."""

    SLACK = "slack"
    JSON = "json"


class NotifyPhase(StrEnum):
    """The phases of a run a notification may be sent for: how it ended, or that its model serves."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SERVING = "Serving"
    STOPPED = "Stopped"


class SecretKeySelector(ApiModel):
    """A key of a Secret in the flow's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key of the value in the Secret.")


class UrlSource(ApiModel):
    """Where a webhook's URL is read from: only the notification's pod reads it, never the operator."""

    secret_key_ref: SecretKeySelector = Field(description="The Secret key that holds the URL.")


class Webhook(ApiModel):
    """An HTTP(S) endpoint that takes a POST of the message (Slack's incoming webhooks, or any other)."""

    url_from: UrlSource = Field(description="Where the URL is: a key of a Secret in the flow's namespace.")


class Notification(ApiModel):
    """A message posted when a run reaches one of the phases in `on`."""

    on: list[NotifyPhase] = Field(
        min_length=1,
        max_length=4,
        description="Phases of the run that send it: Failed, Succeeded, Serving, Stopped.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    webhook: Webhook = Field(description="Where the message goes.")
    format: NotifyFormat = Field(
        default=NotifyFormat.JSON,
        description="json (default): the run's event as a JSON object. slack: a Slack message with a "
        "summary line and the failed works.",
    )


class Approval(ApiModel):
    """Makes a work a gate: once its dependencies allow it to start, it waits (phase Waiting, reason
    ApprovalRequired) until someone allowed to approve approves it (it then runs) or rejects it (it
    fails, reason Rejected)."""

    message: str = Field(
        default="",
        max_length=1024,
        description="What the approver is asked, shown with the waiting work (CLI, dashboard, status).",
    )
    timeout_seconds: int = Field(
        default=DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        ge=1,
        le=MAX_APPROVAL_TIMEOUT_SECONDS,
        description="How long the gate waits for a decision; then it fails (reason ApprovalTimedOut). "
        "Default 86400 (a day), at most 30 days.",
    )
    params: list[ValueName] = Field(
        default_factory=list,
        max_length=MAX_PARAMS,
        description="Names of spec.params the approver may set when approving: the gate and the works "
        "after it (and the finally works) get the approver's values as $(params.NAME). A parameter "
        "is set by one gate at most.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


# Where every work of a run finds the run's workspace, unless it says otherwise.
WORKSPACE_MOUNT_PATH = "/workspace"
# The name of its volume in the pods.
WORKSPACE_VOLUME = "dagflow-workspace"
# A quantity of bytes as the API server writes one (a size of 0 or a negative one is refused too).
_STORAGE_SIZE_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[kMGTPE]|([eE](\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A path inside the workspace: relative, with no empty, `.` or `..` part.
_SUB_PATH_PATTERN = rf"^{_SUB_PATH_PART}(/{_SUB_PATH_PART})*$"

AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]


def _one_node_access() -> list[AccessMode]:
    return ["ReadWriteOnce"]


class WorkspaceSpec(ApiModel):
    """A volume per run that every work of the run mounts: a PersistentVolumeClaim the operator makes
    when the run's first work starts, owned by the flow."""

    size: str = Field(
        pattern=_STORAGE_SIZE_PATTERN,
        max_length=64,
        description="How much storage the claim asks for: a quantity of bytes (10Gi, 500Mi).",
    )
    storage_class_name: str | None = Field(
        default=None,
        max_length=253,
        description="The StorageClass of the claim; unset: the cluster's default class.",
    )
    access_modes: list[AccessMode] = Field(
        default_factory=_one_node_access,
        min_length=1,
        max_length=4,
        description="Access modes of the claim (default ReadWriteOnce). Works that run at the same time "
        "on different nodes (a matrix, parallel works) need ReadWriteMany and a class that offers it.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class WorkWorkspace(ApiModel):
    """How one work mounts the run's workspace."""

    mount: bool = Field(
        default=True,
        description="False: the work's pods do not mount the workspace.",
    )
    sub_path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=_SUB_PATH_PATTERN,
        description="A folder of the workspace to mount at /workspace instead of its root: a relative "
        "path (models/linear), made if missing.",
    )
    read_only: bool = Field(
        default=False,
        description="True: the work reads the workspace but cannot write to it (and may be cached).",
    )


class CacheSpec(ApiModel):
    """Whether a batch work's outcome is taken from an earlier run whose inputs were the same.

    On a work, each field set here wins over spec.cache; a field set on neither takes its default.
    """

    enabled: bool | None = Field(
        default=None,
        description="True: before the work's Job is made, the operator looks for an entry of an earlier "
        "run with the same cache key (image, command, args and env after substitution, volumes and mounts, "
        "declared outputs, matrix values, version and the keys of the works it depends on); on a hit the "
        "work succeeds at once with that run's outputs and runs no Job. Off unless set here or in "
        "spec.cache. Serve works are never cached.",
    )
    version: str | None = Field(
        default=None,
        max_length=63,
        description="Part of the key: change it to miss on purpose (new data behind the same inputs). "
        "Defaults to empty.",
    )
    max_age: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="Entries older than this are not used: a duration such as 168h (the default), 30m "
        "or 1d12h. Entries older than the longest maxAge of their namespace are deleted.",
    )
    require_digest: bool | None = Field(
        default=None,
        description="True: the work's image must be written by digest (image@sha256:...): a tag may "
        "move to another image, which the key would not see.",
    )


@dataclass(frozen=True)
class CacheSettings:
    """A work's caching, with spec.cache and the defaults filled in."""

    enabled: bool
    version: str
    max_age_seconds: int
    require_digest: bool


class Work(ApiModel):
    """One step of the flow: a batch Job, or with `serve` a Deployment plus a Service."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _SELF_DEPENDENCY_RULE,
                _BATCH_ONLY_FIELDS_RULE,
                _SERVE_NOT_CACHED_RULE,
            ]
        }
    )

    name: WorkName = Field(
        description="Name of the work, unique in the flow: a DNS-1123 label (lower case letters, "
        "digits and '-', at most 63 characters). Other works refer to it in dependsOn, and it is part "
        "of the names of the Job, Deployment and Service made for it.",
    )
    container: Container = Field(
        description="The container to run: a core/v1 Container. `image` is required; `name` may be "
        "left out and defaults to the work's name.",
    )
    depends_on: list[WorkName] = Field(
        default_factory=list,
        max_length=MAX_DEPENDENCIES,
        description="Names of the works that must finish before this one starts (see `when`). A "
        "dependency on a serve work is met once that work is Serving.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    when: TriggerRule = Field(
        default=TriggerRule.ALL_SUCCEEDED,
        description="Trigger rule over the works in dependsOn. AllSucceeded (default): every one "
        "succeeded. AllDone: every one finished, successfully or not. AnySucceeded: at least one "
        "succeeded. A work whose rule can no longer be met is Skipped.",
    )
    gpu: int = Field(
        default=0,
        ge=0,
        le=INT32_MAX,
        description="GPUs per pod. When above 0 the container gets that GPU resource limit and the pod "
        "gets the operator's GPU node selector and tolerations.",
    )
    retries: int = Field(
        default=0,
        ge=0,
        le=INT32_MAX,
        description="How many times a failed batch work is retried (the Job's backoffLimit). Defaults "
        "to 0. Not allowed on serve works.",
    )
    timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Deadline in seconds for the batch work, retries included (the Job's "
        "activeDeadlineSeconds); at least 1. Unset means no deadline. Not allowed on serve works.",
    )
    serve: Serve | None = Field(
        default=None,
        description="Present: the work is a serving work, run as a Deployment plus a Service of the "
        "same name, and is Serving once the Deployment is available. Absent: a batch Job.",
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        description="Volumes of the work's pod (core/v1 Volume), for the container's volumeMounts.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node labels the pod must match; merged over podDefaults.nodeSelector.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Tolerations of the pod, added to podDefaults.tolerations.",
    )
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description="Labels put on the work's pods, merged over podDefaults.labels. The operator's own "
        "labels (dagflow.dev/*, app.kubernetes.io/managed-by) cannot be set here.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations put on the work's pods, merged over podDefaults.annotations.",
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        description="ServiceAccount of the work's pods; overrides podDefaults.serviceAccountName.",
    )
    matrix: dict[str, Any] | None = Field(
        default=None,
        description="Runs the batch work once per combination of values, as one Indexed Job: axes "
        "of values by key (e.g. model: [linear, forest]), or an axis from an ancestor's list output "
        "(shard: $(works.split.outputs.shards)), with optional `exclude` and `include` lists as in "
        "GitHub Actions. $(matrix.KEY) in command, args and env is the instance's value; the work "
        "needs an explicit container.command. Dependents wait for every instance.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    max_parallel: int = Field(
        default=0,
        ge=0,
        le=INT32_MAX,
        description="Most instances of a matrix work running at once; 0 (default) means no limit of "
        "its own (the flow's parallelism still applies).",
    )
    queue_name: WorkQueueName | None = Field(
        default=None,
        description="The Kueue LocalQueue (in the flow's namespace) this work's Job waits in for "
        "admission, over spec.queueName; empty: the work is not queued even when the flow is. A serve "
        "work is queued only when it names a queue itself: its Deployment then carries the queue's label "
        "for Kueue's Deployment integration.",
    )
    cache: CacheSpec | None = Field(
        default=None,
        description="Caching of this batch work, over spec.cache (see there). A serve work may not "
        "enable it.",
    )
    outputs: list[OutputSpec] = Field(
        default_factory=list,
        max_length=MAX_OUTPUTS,
        description="Outputs the batch work reports: on success its container's termination message "
        "(/dev/termination-log) holds a JSON object with these keys, which the operator keeps in the "
        "work's status (at most 1 KiB) for later works to reference as $(works.NAME.outputs.KEY). "
        "A missing key or a message that is not a JSON object fails the work.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    approval: Approval | None = Field(
        default=None,
        description="Makes the work a gate that waits for someone's approval before it runs (see "
        "Approval). Approving needs the `approve` verb on dagflows; who decided, when and with which "
        "parameter values is kept in the work's status.",
    )
    workspace: WorkWorkspace | None = Field(
        default=None,
        description="How the work mounts the run's workspace (spec.workspace): at /workspace, read-write, "
        "unless it opts out (mount: false), picks a folder of it (subPath) or only reads it (readOnly).",
    )

    @property
    def is_serve(self) -> bool:
        return self.serve is not None

    @property
    def container_name(self) -> str:
        """The container's name: its own, else the work's."""
        return str(self.container.get("name") or self.name)

    @model_validator(mode="after")
    def _batch_only_fields(self) -> Work:
        if self.serve is not None and (
            self.retries or self.timeout_seconds is not None or self.outputs or self.matrix is not None
        ):
            raise ValueError(
                "a serve work runs until the flow is deleted: "
                "retries, timeoutSeconds, outputs and matrix apply to batch works only"
            )
        if self.serve is not None and self.cache is not None and self.cache.enabled:
            raise ValueError("a serve work is never cached: cache.enabled applies to batch works only")
        return self


_PRIORITY_NEEDS_QUEUE_RULE: JsonDict = {
    "rule": "!has(self.priorityClassName) || has(self.queueName)"
    " || self.works.exists(w, has(w.queueName) && w.queueName != '')",
    "message": "priorityClassName orders queued Jobs only: set spec.queueName (or a work's queueName) too",
    "fieldPath": ".priorityClassName",
    "reason": "FieldValueInvalid",
}


class DAGFlowSpec(ApiModel):
    """The works of the flow and how to run them."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [_PRIORITY_NEEDS_QUEUE_RULE]})

    failure_policy: FailurePolicy = Field(
        default=FailurePolicy.FAIL_FAST,
        description="FailFast (default): after a work fails, start no new works. Continue: keep "
        "running every work whose trigger rule can still be met.",
    )
    parallelism: int = Field(
        default=0,
        ge=0,
        le=INT32_MAX,
        description="Most batch works running at once; 0 (default) means no limit. Serve works do not count.",
    )
    pod_defaults: PodDefaults | None = Field(
        default=None,
        description="Pod settings shared by every work; a work's own settings win.",
    )
    params: list[Param] = Field(
        default_factory=list,
        max_length=MAX_PARAMS,
        description="Parameters of the flow, referenced as $(params.NAME) in works' command, args and "
        "env values. A rerun or retry request may give other values (annotation dagflow.dev/params).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    works: list[Work] = Field(
        min_length=1,
        max_length=MAX_WORKS,
        description="The works of the flow, at least one. Names are unique. Dependencies must name "
        "works of this flow and must not form a cycle.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    finally_works: list[Work] = Field(
        default_factory=list,
        alias="finally",
        max_length=MAX_FINALLY_WORKS,
        description="Batch works that run when the run's works have ended, whatever the outcome "
        "(Succeeded, Failed, Serving, or Stopped: a stop runs them too, as cleanup), in a DAG of "
        "their own (dependsOn names finally works only). They may reference $(run.phase), $(run), "
        "$(run.failedWorks) (a JSON list of names) and the outputs of works that succeeded. The "
        "run's phase is its works' outcome: a finally work that fails is shown (status, Event "
        "FinallyFailed) but does not fail a run that succeeded. No serve, matrix, outputs or cache. "
        "Names are unique among works and finally works.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    notify: list[Notification] = Field(
        default_factory=list,
        max_length=MAX_NOTIFICATIONS,
        description="Messages posted when a run reaches a phase: each is a short pod of the flow's own "
        "ServiceAccount (podDefaults.serviceAccountName) that reads the webhook's URL from the Secret "
        "and posts, retrying with backoff; the operator reads no Secret and connects to no URL. "
        "The outcome is in status.notifications and an Event.",
    )
    queue_name: QueueName | None = Field(
        default=None,
        description="The Kueue LocalQueue, in the flow's namespace, that the batch works' Jobs wait in "
        "for admission: each is created suspended with the label kueue.x-k8s.io/queue-name, with resource "
        "requests (its limits where it gives only those), and runs once Kueue admits it. Serve works "
        "stay out of it unless they name a queue themselves. The LocalQueue must exist when the flow "
        "is applied.",
    )
    priority_class_name: QueueName | None = Field(
        default=None,
        description="The Kueue WorkloadPriorityClass of the flow's queued Jobs (label "
        "kueue.x-k8s.io/priority-class): it orders them in their queue and decides which may preempt "
        "which. Needs spec.queueName or a work with a queueName.",
    )
    schedule: str | None = Field(
        default=None,
        max_length=256,
        description="Starts a run at every tick of this cron schedule: five fields (minute hour "
        "day-of-month month day-of-week, e.g. '0 3 * * *') or one of @yearly, @annually, @monthly, "
        "@weekly, @daily, @midnight, @hourly, read in timeZone. Unset: runs start only when the flow "
        "is created, when what runs changes, and on request.",
    )
    time_zone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone the schedule is read in, e.g. Europe/Berlin. Defaults to UTC. "
        "Across daylight saving changes a tick at a fixed time that does not exist runs right after "
        "the change, and one that happens twice runs once.",
    )
    concurrency_policy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.FORBID,
        description="What a tick does while a run is active. Forbid (default): the tick is skipped. "
        "Replace: the active run is stopped and a new one starts. A flow whose batch works are done "
        "and whose serve works serve has no active run.",
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="A tick whose run cannot start within this many seconds (the operator was down) "
        "is skipped. Unset: no deadline. Either way, after missing several ticks at most one run "
        "catches up, for the latest of them.",
    )
    schedule_params: dict[str, str] = Field(
        default_factory=dict,
        description="Parameter values for the runs the schedule starts, over the parameters' "
        "defaults; every name must be one of spec.params.",
    )
    suspend: bool = Field(
        default=False,
        description="True: no work starts and no tick starts a run; running works finish. False "
        "again: the flow goes on where it stood. Spec changes and run requests still start runs, "
        "which wait too.",
    )
    cache: CacheSpec | None = Field(
        default=None,
        description="Caching for every batch work of the flow, unless a work's own cache says "
        "otherwise: enabled (off unless asked), version, maxAge (168h) and requireDigest. A work "
        "whose cache key matches an entry of an earlier run succeeds at once with that run's outputs "
        "(status.works[].cachedFrom) instead of running its Job.",
    )
    history_runs: int | None = Field(
        default=None,
        ge=1,
        le=MAX_HISTORY_RUNS,
        description="How many runs, the current one included, keep their summary in status.runs "
        "and their finished Jobs; older runs' Jobs are deleted. Unset: the operator's default "
        "(DAGFLOW_HISTORY_RUNS).",
    )
    workspace: WorkspaceSpec | None = Field(
        default=None,
        description="A volume per run, mounted at /workspace in every work's pods (works[].workspace "
        "says otherwise for one work): a PersistentVolumeClaim `{flow}-{run}-workspace` made when the "
        "run's first work starts, kept with the run's history (historyRuns) and deleted when the run "
        "leaves it. A retry's works use the workspace of the run it retries.",
    )

    def queue_of(self, work: Work) -> str | None:
        """The LocalQueue a work's child waits in, or None when it is not queued: the work's own
        queueName ("" opts out), else the flow's for a batch work; a serve work only by its own."""
        if work.queue_name is not None:
            return work.queue_name or None
        return None if work.serve is not None else self.queue_name

    def named_queues(self) -> dict[str, str]:
        """The LocalQueues the spec names, by where it names them (spec.queueName, works[NAME].queueName)."""
        named = {"spec.queueName": self.queue_name} if self.queue_name else {}
        named.update(
            {f"work {work.name!r} queueName": work.queue_name for work in self.works if work.queue_name}
        )
        return named

    def caches(self, work: Work) -> bool:
        """Whether a work is cached: its own `enabled` over spec.cache's; never a serve work, a gate
        (someone decides in every run) or a finally work. Asked of every work on every pass, so it
        reads only these fields. Nor a work that writes the run's workspace (see `writes_workspace`)."""
        own = work.cache.enabled if work.cache else None
        flow = self.cache.enabled if self.cache else None
        return (
            work.serve is None
            and work.approval is None
            and bool(own if own is not None else flow)
            and not self.is_finally(work.name)
            and not self.writes_workspace(work)
        )

    @cached_property
    def artifact_outputs(self) -> dict[str, dict[str, str]]:
        """The artifact outputs of the works that have any: their paths, by work and output name.
        Asked on every pass that starts works or computes cache keys, so found once per spec."""
        return {
            work.name: {output.name: output.artifact.path for output in work.outputs if output.artifact}
            for work in self.all_works
            if any(output.artifact for output in work.outputs)
        }

    def mounts_workspace(self, work: Work) -> bool:
        """Whether the work's pods mount the run's workspace."""
        return self.workspace is not None and (work.workspace is None or work.workspace.mount)

    def writes_workspace(self, work: Work) -> bool:
        """Whether the work may change the run's workspace: its results are then files of that run,
        which a later run's workspace would not have, so it is never cached."""
        return self.mounts_workspace(work) and not (work.workspace is not None and work.workspace.read_only)

    def cache_of(self, work: Work) -> CacheSettings:
        """A work's caching: its own fields over spec.cache over the defaults; never on for a serve work."""
        own, flow = work.cache or CacheSpec(), self.cache or CacheSpec()

        def pick(field: str, default: Any) -> Any:
            for source in (own, flow):
                value = getattr(source, field)
                if value is not None:
                    return value
            return default

        return CacheSettings(
            enabled=self.caches(work),
            version=str(pick("version", "")),
            max_age_seconds=duration_seconds(str(pick("max_age", DEFAULT_CACHE_MAX_AGE))),
            require_digest=bool(pick("require_digest", False)),
        )

    @property
    def all_works(self) -> list[Work]:
        """The works, then the finally works."""
        return [*self.works, *self.finally_works]

    def is_finally(self, name: str) -> bool:
        return any(work.name == name for work in self.finally_works)

    def work(self, name: str) -> Work:
        """The work or finally work called `name`; KeyError when there is none."""
        for work in self.all_works:
            if work.name == name:
                return work
        raise KeyError(name)


# Fields of the spec that say when runs happen and how many are kept, not what a run does: a change
# to one of them starts no run. Every other field of the spec shapes what runs.
RUN_CONTROL_FIELDS = frozenset(
    {
        "notify",
        "schedule",
        "time_zone",
        "concurrency_policy",
        "starting_deadline_seconds",
        "schedule_params",
        "suspend",
        "history_runs",
    }
)


class Condition(ApiModel):
    """A condition of the flow, shaped like metav1.Condition."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of the condition in CamelCase, e.g. Ready.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was set from."
    )
    last_transition_time: AwareDatetime = Field(description="When the status last changed.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Programmatic reason for the last transition, in CamelCase.",
    )
    message: str = Field(max_length=32768, description="Human readable details; may be empty.")


class FailedInstance(ApiModel):
    """A failed instance of a matrix work."""

    index: int = Field(ge=0, description="Index of the instance (its pod's job-completion-index).")
    values: dict[str, str] = Field(default_factory=dict, description="Its matrix values.")


class CachedFrom(ApiModel):
    """The run whose outcome a cached work took."""

    model_config = ConfigDict(extra="ignore")

    flow: str = Field(description="Name of the flow that ran the work.")
    run: int = Field(ge=1, description="Number of that run.")
    job: str | None = Field(default=None, description="Name of the Job that ran it (it may be gone).")
    finished_at: AwareDatetime | None = Field(default=None, description="When that Job finished.")


class WorkStatus(ApiModel):
    """Observed state of one work."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(description="Name of the work.")
    phase: WorkPhase = Field(
        default=WorkPhase.PENDING,
        description="Pending, Running, Succeeded, Failed, Skipped (its trigger rule can no longer be "
        "met), Serving (a serve work whose Deployment is available) or Stopped (its run was stopped "
        "before it finished).",
    )
    job: str | None = Field(
        default=None, description="Name of the Job (batch work) or Deployment (serve work) of the work."
    )
    attempts: int = Field(default=0, ge=0, description="Pods started for the work in the current run.")
    started_at: AwareDatetime | None = Field(default=None, description="When the work started.")
    finished_at: AwareDatetime | None = Field(default=None, description="When the work finished.")
    message: str | None = Field(default=None, description="Why the work is in its phase, if not obvious.")
    reason: str | None = Field(
        default=None,
        description="Why a Pending work that has its Job waits: Queued (Kueue has not admitted it yet) "
        "or Preempted (Kueue took its quota back and queued it again; no retry is used up). The message "
        "names the LocalQueue and gives Kueue's own words.",
    )
    endpoint: str | None = Field(default=None, description="URL of the Service of a serve work.")
    carried_from_run: int | None = Field(
        default=None,
        ge=1,
        description="Set when a retry carried this work's outcome over instead of running it again: "
        "the run that produced the outcome (its Job is that run's).",
    )
    cache_key: str | None = Field(
        default=None,
        description="The work's cache key in this run (works with caching on): the entry it was "
        "taken from, or the one its success was recorded under.",
    )
    cached_from: CachedFrom | None = Field(
        default=None,
        description="Set when the work was taken from the cache: where its outcome comes from. It ran "
        "no Job in this run.",
    )
    outputs: dict[str, Any] | None = Field(
        default=None,
        description="The declared outputs the work reported when it succeeded (a JSON object). "
        "A matrix work's are in its ConfigMap named by outputsConfigMap instead.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    instances: int | None = Field(
        default=None, ge=0, description="How many instances a matrix work runs in this run."
    )
    instance_counts: dict[str, int] | None = Field(
        default=None,
        description="Instances of a matrix work by phase: Pending, Running, Succeeded, Failed.",
    )
    failed_instances: list[FailedInstance] | None = Field(
        default=None,
        description="The failed instances of a matrix work, by index with their values (at most "
        "20 listed; instanceCounts has them all).",
    )
    outputs_config_map: str | None = Field(
        default=None,
        description="The ConfigMap that holds a matrix work's outputs: key outputs.json, a JSON "
        "object of output name to the list of the instances' values, in index order.",
    )
    approval: ApprovalStatus | None = Field(
        default=None, description="A gate's approval in this run (works with spec approval)."
    )
    finally_work: bool | None = Field(
        default=None,
        alias="finally",
        description="True for a work of spec.finally: it runs once the run's works have ended.",
    )
    cached_instances: int | None = Field(
        default=None,
        ge=0,
        description="How many of a matrix work's instances were taken from the cache in this run "
        "(counted as Succeeded in instanceCounts); the others run in its Job.",
    )
    job_indexes: str | None = Field(
        default=None,
        description="When some instances of a matrix work were taken from the cache: the indexes of "
        "the instances its Job runs, in the Job's index order (\"3,17-19\": the Job's index 0 runs "
        "instance 3).",
    )


class ApprovalDecision(StrEnum):
    APPROVED = "Approved"
    REJECTED = "Rejected"


class ApprovalStatus(ApiModel):
    """A gate's approval in the current run: when it began to wait, and who decided what."""

    requested_at: AwareDatetime | None = Field(default=None, description="When the gate began to wait.")
    decision: ApprovalDecision | None = Field(
        default=None, description="Approved or Rejected; unset while it waits."
    )
    by: str | None = Field(
        default=None, description="Who decided, as the API server authenticated them (never typed)."
    )
    decided_at: AwareDatetime | None = Field(default=None, description="When the decision was taken in.")
    params: dict[str, str] | None = Field(
        default=None, description="The parameter values the approver set (approval.params)."
    )
    message: str | None = Field(
        default=None, max_length=1024, description="The approver's or rejecter's words."
    )
    token: str | None = Field(default=None, description="The token of the request taken in.")


class NotificationState(StrEnum):
    PENDING = "Pending"
    SENT = "Sent"
    FAILED = "Failed"


class NotificationStatus(ApiModel):
    """What became of one notification of the current run."""

    index: int = Field(ge=0, description="Position of the notification in spec.notify.")
    on: FlowPhase = Field(description="The run's phase it was sent for.")
    run: int = Field(ge=1, description="The run it tells of.")
    state: NotificationState = Field(
        description="Pending (its pod posts, retrying), Sent (the receiver took it) or Failed."
    )
    job: str | None = Field(default=None, description="The Job of its pod.")
    http_status: int | None = Field(
        default=None, description="The HTTP status of the last attempt; unset when none got an answer."
    )
    attempts: int | None = Field(default=None, ge=0, description="Posts tried.")
    message: str | None = Field(default=None, max_length=1024, description="Why it failed, or is waiting.")
    finished_at: AwareDatetime | None = Field(default=None, description="When it was sent or gave up.")


class RunSummary(ApiModel):
    """One run of the flow, in short."""

    model_config = ConfigDict(extra="ignore")

    number: int = Field(ge=1, description="Number of the run.")
    trigger: RunTrigger = Field(
        description="Why it started: Created, SpecChange (what runs changed), Schedule, Rerun or Retry."
    )
    phase: FlowPhase = Field(description="Where the run stands or how it ended.")
    started_at: AwareDatetime | None = Field(default=None, description="When the run started.")
    finished_at: AwareDatetime | None = Field(
        default=None, description="When the run ended (Succeeded, Failed or Stopped)."
    )
    workspace_claim: str | None = Field(
        default=None,
        description="The PersistentVolumeClaim of the run's workspace (spec.workspace); it is deleted "
        "once no run kept in this history uses it.",
    )


class HandledRequests(ApiModel):
    """The token of the last run request of each kind that the operator acted on."""

    model_config = ConfigDict(extra="ignore")

    rerun: str | None = Field(default=None, description="Token of the last rerun request acted on.")
    retry: str | None = Field(default=None, description="Token of the last retry request acted on.")
    stop: str | None = Field(default=None, description="Token of the last stop request acted on.")

    def token(self, request: RunRequest) -> str | None:
        token: str | None = getattr(self, request.value)
        return token


class DAGFlowStatus(ApiModel):
    """Observed state of the flow, written by the operator."""

    model_config = ConfigDict(extra="ignore")

    phase: FlowPhase | None = Field(
        default=None, description="Pending, Running, Succeeded, Failed, Serving or Stopped."
    )
    progress: str | None = Field(
        default=None, description="Works finished or serving, out of all works, e.g. 2/4."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    run: int | None = Field(
        default=None,
        ge=0,
        description="Number of the current run. A run starts when the flow is created, when what "
        "runs changes, at a schedule tick, and on a rerun or retry request.",
    )
    run_spec_hash: str | None = Field(
        default=None,
        description="Fingerprint of the part of the spec the current run runs (everything but "
        "schedule, timeZone, concurrencyPolicy, startingDeadlineSeconds, suspend and historyRuns). "
        "A spec with another fingerprint starts a new run.",
    )
    started_at: AwareDatetime | None = Field(default=None, description="When the current run started.")
    finished_at: AwareDatetime | None = Field(
        default=None, description="When the current run ended: Succeeded, Failed or Stopped."
    )
    notifications: list[NotificationStatus] | None = Field(
        default=None,
        description="The current run's notifications (spec.notify), each once sent or given up.",
    )
    outcome: FlowPhase | None = Field(
        default=None,
        description="With finally works: how the run's works ended (Succeeded, Failed, Serving or "
        "Stopped), set once they have; the finally works run then, and the run's phase becomes this "
        "when they have ended too.",
    )
    endpoint: str | None = Field(
        default=None, description="URL of the Service when the flow has exactly one serve work."
    )
    queued: int | None = Field(
        default=None,
        ge=0,
        description="How many works wait for Kueue to admit their Jobs (reason Queued or Preempted); "
        "unset when none does.",
    )
    message: str | None = Field(default=None, description="Why the flow is in its phase, if not obvious.")
    artifact_store: dict[str, str] | None = Field(
        default=None,
        description="The artifact store the current run's works leave their artifacts and logs in "
        "(endpoint, bucket, region, secretName, prefix; never a credential), as the namespace's "
        "ConfigMap dagflow-artifacts or the operator's setting named it when they started.",
    )
    workspace_claim: str | None = Field(
        default=None,
        description="The PersistentVolumeClaim the current run's works mount at /workspace "
        "(spec.workspace); a retry's is the retried run's.",
    )
    works: list[WorkStatus] = Field(
        default_factory=list,
        max_length=MAX_WORKS,
        description="State of every work.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Conditions of the flow. Ready is True exactly when the phase is Succeeded or Serving.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    runs: list[RunSummary] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_RUNS,
        description="The latest runs, oldest first, the current one last; as many as spec.historyRuns keeps.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["number"]},
    )
    last_schedule_time: AwareDatetime | None = Field(
        default=None, description="The schedule tick the latest scheduled run started for."
    )
    next_schedule_time: AwareDatetime | None = Field(
        default=None,
        description="The next tick the operator acts on. Unset without a schedule and while suspended.",
    )
    handled_requests: HandledRequests | None = Field(
        default=None,
        description="Tokens of the last rerun, retry and stop requests (annotations dagflow.dev/rerun, "
        "dagflow.dev/retry, dagflow.dev/stop) the operator acted on: a request with one of these "
        "tokens is not acted on again.",
    )
    no_cache: bool | None = Field(
        default=None,
        description="True when the current run was asked for with dagflow.dev/no-cache=true: it runs "
        "every work and takes nothing from the cache (it still records its outcomes there).",
    )
    params: dict[str, str] | None = Field(
        default=None,
        description="Parameter values of the current run: the spec's defaults, overridden by the "
        "dagflow.dev/params annotation for a run a rerun or retry request started.",
    )


class DAGFlow(ApiModel):
    """A whole DAGFlow object as read from the API server or a manifest file."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["dagflow.dev/v1alpha1"] = "dagflow.dev/v1alpha1"
    kind: Literal["DAGFlow"] = "DAGFlow"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: DAGFlowSpec
    status: DAGFlowStatus | None = None

    @property
    def name(self) -> str | None:
        name = self.metadata.get("name")
        return name if isinstance(name, str) else None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> DAGFlow:
        """Parse an object as served by the API server (kopf hands these over as mappings)."""
        return cls.model_validate(dict(obj))


class CacheEntrySpec(ApiModel):
    """What a cache entry records: a work's outcome under its cache key. Written only by the operator."""

    model_config = ConfigDict(extra="ignore")

    key: str = Field(min_length=1, max_length=128, description="The work's full cache key (hex).")
    work: str = Field(description="Name of the work that ran.")
    flow: str = Field(description="Name of the flow it ran in.")
    run: int = Field(ge=1, description="Number of the run.")
    job: str | None = Field(default=None, description="Name of the Job that ran it; it may be gone since.")
    finished_at: AwareDatetime | None = Field(default=None, description="When the Job finished.")
    created_at: AwareDatetime = Field(description="When the entry was written; maxAge counts from here.")
    image: str | None = Field(default=None, description="The image as the work wrote it.")
    image_id: str | None = Field(
        default=None,
        alias="imageID",
        description="The image the kubelet ran (the pod's imageID): for an image written by tag, what "
        "the tag stood for then.",
    )
    parts: dict[str, str] = Field(
        default_factory=dict,
        description="Hash of each part of the key (image, command, args[0], env.NAME, upstream.WORK, ...), "
        "so that `dagflow plan` tells which part changed.",
    )
    outputs: dict[str, Any] | None = Field(
        default=None,
        description="The declared outputs of the work (a matrix work's: each output's list of values "
        "in index order).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    instances: int | None = Field(default=None, ge=0, description="How many instances a matrix work ran.")
    instance_keys: list[str] | None = Field(
        default=None,
        description="A matrix work's entry: the keys of the instances it holds (its `key` is the "
        "work's template key, without the instances' values); its outputs' lists go in this order.",
    )
