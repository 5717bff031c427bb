"""Deterministic names and label values of the objects the operator creates for a flow.

Every name is a function of (flow, run, work) only, so a restarted operator finds the children it
created before instead of creating them twice. Kubernetes limits names and label values to 63
characters; longer ones are cut and end in a hash of the full, uncut value, which keeps them unique
and stable. Job names are kept shorter still: the pods of an Indexed Job are given the host name
`{job}-{index}`, which must fit in 63 characters too.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from typing import Any

FLOW_LABEL = "dagflow.dev/flow"
WORK_LABEL = "dagflow.dev/work"
RUN_LABEL = "dagflow.dev/run"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "dagflow-operator"
# The full names, for when a label value had to be shortened.
FLOW_ANNOTATION = "dagflow.dev/flow-name"
WORK_ANNOTATION = "dagflow.dev/work-name"
# On a serve work's Deployment: the run whose model served before the rollout it is in.
ROLLED_FROM_ANNOTATION = "dagflow.dev/rolled-from-run"
# The flow's generation a child was built from: the run that holds it runs that generation's spec.
GENERATION_ANNOTATION = "dagflow.dev/generation"
# On a matrix work's Job: its ConfigMaps (values, outputs) go when it goes.
MATRIX_ANNOTATION = "dagflow.dev/matrix"
# On the Job of a matrix work some of whose instances the cache had: how many it had, and the
# instances the Job runs, in its index order ("3,17-19": its index 0 runs instance 3).
CACHED_INSTANCES_ANNOTATION = "dagflow.dev/cached-instances"
JOB_INDEXES_ANNOTATION = "dagflow.dev/job-indexes"
# On the pods whose success alone settles their work (one pod, no deadline): the operator watches
# only these pods, so a matrix's thousands of pods never reach it.
SETTLES_WORK_LABEL = "dagflow.dev/settles-work"
# On a notification's Job (spec.notify): which one, `{index}-{phase}` ("0-failed").
NOTIFICATION_LABEL = "dagflow.dev/notification"
# The work name a notification's Job stands under, which no work may take.
NOTIFICATION_WORK = re.compile(r"notify-[0-9]+-(succeeded|failed|serving|stopped)")
RESERVED_LABEL_PREFIX = "dagflow.dev/"
RESERVED_LABELS = frozenset({FLOW_LABEL, WORK_LABEL, RUN_LABEL, MANAGED_BY_LABEL})

MAX_LENGTH = 63
HASH_LENGTH = 10
# Kubernetes allows an Indexed Job with per-index backoff at most 100,000 completions, so a pod's
# index has at most five digits; its host name `{job}-{index}` needs six characters past the Job's.
MAX_COMPLETION_INDEX = 99_999
MAX_JOB_NAME_LENGTH = MAX_LENGTH - len(f"-{MAX_COMPLETION_INDEX}")
# Prefix of a Service name whose flow name starts with a digit: Service names must start with a
# letter (DNS-1035), flow names need not.
SERVICE_PREFIX = "df-"

_DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NOT_IN_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_NOT_IN_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")


def short_hash(value: str) -> str:
    """First HASH_LENGTH hex digits of the SHA-256 of `value`: stable across runs and versions."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def is_dns1123_label(value: str) -> bool:
    return len(value) <= MAX_LENGTH and bool(_DNS_1123_LABEL.match(value))


def is_dns1035_label(value: str) -> bool:
    return len(value) <= MAX_LENGTH and bool(_DNS_1035_LABEL.match(value))


def is_label_value(value: str) -> bool:
    return len(value) <= MAX_LENGTH and bool(_LABEL_VALUE.match(value))


def job_name(flow: str, run: int, work: str) -> str:
    """Name of the Job of `work` in run `run` of `flow`: `{flow}-{run}-{work}`, a DNS-1123 label of
    at most MAX_JOB_NAME_LENGTH characters, so that every pod's host name `{job}-{index}` is valid."""
    return _dns_label_name([flow, str(run), work], MAX_JOB_NAME_LENGTH)


def notification_work(index: int, phase: str) -> str:
    """The name a notification's Job stands under in its run, as a work's would: `notify-0-failed`."""
    return f"notify-{index}-{phase.lower()}"


def notification_job_name(flow: str, run: int, index: int, phase: str) -> str:
    """Name of the Job that posts notification `index` of run `run` for `phase`."""
    return job_name(flow, run, notification_work(index, phase))


def matrix_values_name(flow: str, run: int, work: str, job_indexes: str = "") -> str:
    """The ConfigMap that brings a matrix work's values to its pods: its Job's name, suffixed (a
    ConfigMap name may be 253 characters long, so the suffix always fits). When the cache had some
    of its instances, the hash of those its Job runs (`job_indexes`) is in it too: what the cache
    has may change before the Job is made, and a Job's pods must read the values it was made for."""
    name = matrix_config_maps(job_name(flow, run, work))[0]
    if job_indexes:
        name = f"{name}-{hashlib.sha256(job_indexes.encode()).hexdigest()[:10]}"
    return name


def matrix_outputs_name(flow: str, run: int, work: str) -> str:
    """The ConfigMap that holds the outputs a matrix work's instances reported."""
    return matrix_config_maps(job_name(flow, run, work))[1]


def matrix_config_maps(job: str) -> tuple[str, str]:
    """The ConfigMaps of a matrix work's Job: its values, and its instances' outputs."""
    return f"{job}-matrix", f"{job}-outputs"


def workspace_claim_name(flow: str, run: int) -> str:
    """The PersistentVolumeClaim of run `run`'s workspace: `{flow}-{run}-workspace`."""
    return _dns_label_name([flow, str(run), "workspace"])


def workspace_labels(flow: str, run: int) -> dict[str, str]:
    """Labels of a workspace's claim: its flow and the run that made it (no work: every work uses it)."""
    return {FLOW_LABEL: label_value(flow), RUN_LABEL: str(run), MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def serve_name(flow: str, work: str) -> str:
    """Name of the Deployment and Service of a serve work: `{flow}-{work}`, a DNS-1035 label.

    The same for every run, so a new run rolls the Deployment instead of replacing it. A flow name
    starting with a digit gets the prefix `df-`, because a Service name must start with a letter.
    """
    parts = [flow, work]
    if not flow[:1] or flow[0] not in string.ascii_lowercase:
        parts[0] = SERVICE_PREFIX + flow
    return _dns_label_name(parts)


def label_value(value: str) -> str:
    """`value` when it is a valid label value; otherwise cut to fit and ended with its hash."""
    if is_label_value(value):
        return value
    readable = _NOT_IN_LABEL_VALUE.sub("-", value)
    readable = readable[: MAX_LENGTH - HASH_LENGTH - 1].strip("-_.")
    return f"{readable}-{short_hash(value)}" if readable else short_hash(value)


def child_labels(flow: str, work: str, run: int | None = None) -> dict[str, str]:
    """Labels of every child object and pod, by which the operator finds them again."""
    labels = {
        FLOW_LABEL: label_value(flow),
        WORK_LABEL: label_value(work),
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
    }
    if run is not None:
        labels[RUN_LABEL] = str(run)
    return labels


def child_annotations(flow: str, work: str) -> dict[str, str]:
    """Annotations of every child object and pod: the full flow and work names."""
    return {FLOW_ANNOTATION: flow, WORK_ANNOTATION: work}


def flow_selector(flow: str) -> str:
    """Label selector of all children of a flow, e.g. for a list or watch call."""
    return f"{FLOW_LABEL}={label_value(flow)},{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


def flow_of(metadata: Mapping[str, Any]) -> str:
    """The full name of the flow a child or a pod belongs to (the label may be hashed)."""
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return str(annotations.get(FLOW_ANNOTATION) or labels.get(FLOW_LABEL, ""))


def work_of(metadata: Mapping[str, Any]) -> str:
    # The work label may be hashed when too long; the annotation always holds the full name.
    annotations = metadata.get("annotations") or {}
    labels = metadata.get("labels") or {}
    return str(annotations.get(WORK_ANNOTATION) or labels.get(WORK_LABEL, ""))


def _dns_label_name(parts: list[str], max_length: int = MAX_LENGTH) -> str:
    """Join parts with '-'; if the result is not a DNS-1123 label of at most `max_length`, make it one.

    The longest part is cut first, so every part stays recognisable, and a hash of the uncut name
    keeps two different inputs from meeting in the same shortened name.
    """
    joined = "-".join(parts)
    if len(joined) <= max_length and is_dns1123_label(joined):
        return joined
    budget = max_length - HASH_LENGTH - 1
    cleaned = [_NOT_IN_DNS_LABEL.sub("-", part.lower()).strip("-") for part in parts]
    cleaned = [part for part in cleaned if part]
    while cleaned and len("-".join(cleaned)) > budget:
        longest = max(range(len(cleaned)), key=lambda index: len(cleaned[index]))
        cleaned[longest] = cleaned[longest][:-1].rstrip("-")
        cleaned = [part for part in cleaned if part]
    readable = "-".join(cleaned)
    return f"{readable}-{short_hash(joined)}" if readable else short_hash(joined)
