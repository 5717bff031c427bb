"""Notifications (spec.notify), pure: which are due, the Job whose pod posts each, and what became of
them.

The operator never reads the webhook's URL: the pod reads it from the user's Secret through its
environment, runs as the flow's own ServiceAccount, and posts with the launcher's `notify` command,
which retries with backoff and leaves the result in its termination message:
`{"sent": true, "status": 200, "attempts": 1}` (exit 0), the same with `"sent": false` and an `error`
when the receiver refused or could not be reached (exit 243), or an `error` alone for input it could
not send (exit 242).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dagflow.api.models import DAGFlowSpec, FlowPhase, NotificationState, NotifyPhase
from dagflow.controller.builders import LAUNCHER_EXIT_CODE, FlowRef
from dagflow.controller.observe import JobObservation
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming

# The launcher's command, and the longest a notification's pod may take, its retries included: a
# pod that cannot start (its Secret is missing) ends then, and the notification fails.
NOTIFY_COMMAND = ["/dagflow-launcher", "notify"]
NOTIFY_DEADLINE_SECONDS = 300
# After this long without a result, the status tells why the pod has not run (its Secret...).
WAITING_NOTICE_SECONDS = 10
NOTIFY_CONTAINER = "notify"
# What the launcher exits with when the receiver refused or could not be reached.
NOT_SENT_EXIT_CODE = 243


@dataclass(frozen=True)
class DueNotification:
    """Notification `index` of spec.notify, for the run's `phase`."""

    index: int
    phase: NotifyPhase

    @property
    def work(self) -> str:
        return naming.notification_work(self.index, self.phase.value)


def due_notifications(
    spec: DAGFlowSpec, run: int, phase: FlowPhase, recorded: Sequence[Mapping[str, Any]]
) -> list[DueNotification]:
    """The notifications the run's `phase` calls for that the status has not recorded for this run."""
    if phase.value not in NotifyPhase._value2member_map_:
        return []
    reached = NotifyPhase(phase.value)
    made = {(entry.get("index"), entry.get("on")) for entry in recorded if entry.get("run") == run}
    return [
        DueNotification(index, reached)
        for index, notification in enumerate(spec.notify)
        if reached in notification.on and (index, reached.value) not in made
    ]


def run_event(flow: FlowRef, run: int, phase: FlowPhase, status: Mapping[str, Any]) -> dict[str, Any]:
    """What the message tells: the flow, the run, its phase, the works that failed, its message."""
    event: dict[str, Any] = {
        "namespace": flow.namespace,
        "flow": flow.name,
        "run": run,
        "phase": phase.value,
        "failedWorks": [
            work["name"]
            for work in status.get("works") or []
            if work.get("phase") == "Failed" and not work.get("finally")
        ],
    }
    for field in ("message", "startedAt", "finishedAt"):
        if status.get(field):
            event[field] = status[field]
    return event


def build_notification_job(
    flow: FlowRef,
    spec: DAGFlowSpec,
    run: int,
    due: DueNotification,
    event: Mapping[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The Job whose one pod posts the notification, as the flow's ServiceAccount."""
    notification = spec.notify[due.index]
    secret = notification.webhook.url_from.secret_key_ref
    labels = {
        **naming.child_labels(flow.name, due.work, run),
        naming.NOTIFICATION_LABEL: f"{due.index}-{due.phase.value.lower()}",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # It talks to no API server: the ServiceAccount only places it under the flow's identity.
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": NOTIFY_CONTAINER,
                "image": settings.launcher_image,
                "imagePullPolicy": settings.launcher_pull_policy,
                "command": NOTIFY_COMMAND,
                "env": [
                    {
                        "name": "DAGFLOW_NOTIFY_URL",
                        "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
                    },
                    {"name": "DAGFLOW_NOTIFY_FORMAT", "value": notification.format.value},
                    {
                        "name": "DAGFLOW_NOTIFY_EVENT",
                        # Kubernetes would expand $(VAR) in the value: $$ keeps a message's text as it is.
                        "value": json.dumps(event, separators=(",", ":"), ensure_ascii=False).replace(
                            "$", "$$"
                        ),
                    },
                ],
                # Small and bounded, so that a namespace's ResourceQuota admits it.
                "resources": {
                    "requests": {"cpu": "10m", "memory": "16Mi"},
                    "limits": {"cpu": "200m", "memory": "64Mi"},
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65532,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
    }
    # The flow's pod defaults place it as they place the works' pods; their env is the works'.
    defaults = spec.pod_defaults
    pod_metadata: dict[str, Any] = {"labels": labels}
    if defaults is not None:
        if defaults.service_account_name:
            pod_spec["serviceAccountName"] = defaults.service_account_name
        if defaults.node_selector:
            pod_spec["nodeSelector"] = dict(defaults.node_selector)
        if defaults.tolerations:
            pod_spec["tolerations"] = [dict(toleration) for toleration in defaults.tolerations]
        if defaults.image_pull_secrets:
            pod_spec["imagePullSecrets"] = [dict(secret) for secret in defaults.image_pull_secrets]
        pod_metadata["labels"] = {**defaults.labels, **labels}
        if defaults.annotations:
            pod_metadata["annotations"] = dict(defaults.annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": naming.notification_job_name(flow.name, run, due.index, due.phase.value),
            "namespace": flow.namespace,
            "labels": labels,
            "annotations": naming.child_annotations(flow.name, due.work),
            "ownerReferences": [flow.owner_reference()],
        },
        "spec": {
            "backoffLimit": 0,
            # Indexed as a work's Job of one pod: its result is read as a work's outputs are.
            "completions": 1,
            "parallelism": 1,
            "completionMode": "Indexed",
            "activeDeadlineSeconds": NOTIFY_DEADLINE_SECONDS,
            # The launcher's own exit codes say it all: no second pod would do better.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": NOTIFY_CONTAINER,
                            "operator": "In",
                            "values": [LAUNCHER_EXIT_CODE, NOT_SENT_EXIT_CODE],
                        },
                    }
                ]
            },
            "template": {"metadata": pod_metadata, "spec": pod_spec},
        },
    }


def pending_entry(run: int, due: DueNotification, job: str) -> dict[str, Any]:
    return {
        "index": due.index,
        "on": due.phase.value,
        "run": run,
        "state": NotificationState.PENDING.value,
        "job": job,
    }


def settled_entry(
    entry: Mapping[str, Any], job: JobObservation, reported: str | None, now: str
) -> dict[str, Any]:
    """A Pending notification's entry once its Job has ended: Sent, or Failed saying why. `reported`
    is its pod's termination message (None: no pod left to read it from)."""
    result: dict[str, Any] = {}
    if reported:
        try:
            parsed = json.loads(reported)
            result = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            result = {}
    sent = job.outcome == "Succeeded" and bool(result.get("sent"))
    settled = {key: value for key, value in entry.items() if key not in ("message", "httpStatus", "attempts")}
    settled.update(
        {
            "state": (NotificationState.SENT if sent else NotificationState.FAILED).value,
            "finishedAt": job.finished_at or now,
        }
    )
    if result.get("status"):
        settled["httpStatus"] = int(result["status"])
    if result.get("attempts"):
        settled["attempts"] = int(result["attempts"])
    if not sent:
        # Without the launcher's word, why its pod could not start (a missing Secret) says more
        # than the Job's deadline.
        why = result.get("error") or entry.get("message") or job.message or "its pod left no result"
        settled["message"] = str(why)[:1024]
    return settled
