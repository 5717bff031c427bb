"""What the operator reads from Jobs and Deployments as the Kubernetes API returns them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dagflow.api.models import DAGFlowSpec
from dagflow.controller.builders import FlowRef, build_deployment, build_job
from dagflow.controller.observe import (
    observe_deployment,
    observe_job,
    observe_pod,
    owner_flow,
    pods_by_job,
    settled_by_pod,
    starved,
)
from dagflow.controller.settings import OperatorSettings

CREATED = "2024-05-01T10:00:00Z"
STARTED = "2024-05-01T10:00:01Z"
ENDED = "2024-05-01T10:03:20Z"
OWNER = {
    "apiVersion": "dagflow.dev/v1alpha1",
    "kind": "DAGFlow",
    "name": "ml-pipeline",
    "uid": "4f1c7a8e-3b2d-4c55-9a10-5e6f7a8b9c0d",
    "controller": True,
    "blockOwnerDeletion": True,
}


# -- factories -----------------------------------------------------------------------------------


def job_body(
    status: dict[str, Any] | None = None, *, work: str = "train", run: str = "1", **metadata: Any
) -> dict[str, Any]:
    """A Job as read back from the API server (server-set fields included)."""
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"ml-pipeline-{run}-{work}",
            "namespace": "default",
            "uid": "d3b07384-d9a7-4e3b-8b7e-1c2f3a4b5c6d",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": CREATED,
            "labels": {
                "app.kubernetes.io/managed-by": "dagflow-operator",
                "dagflow.dev/flow": "ml-pipeline",
                "dagflow.dev/run": run,
                "dagflow.dev/work": work,
            },
            "annotations": {
                "batch.kubernetes.io/job-tracking": "",
                "dagflow.dev/flow-name": "ml-pipeline",
                "dagflow.dev/work-name": work,
            },
            "ownerReferences": [OWNER],
            **metadata,
        },
        "spec": {
            "backoffLimit": 2,
            "backoffLimitPerIndex": 2,
            "completionMode": "Indexed",
            "completions": 1,
            "parallelism": 1,
            "suspend": False,
            "template": {"spec": {"containers": [{"name": work, "image": "example/ml:1.0"}]}},
        },
    }
    if status is not None:
        body["status"] = status
    return body


def condition(kind: str, reason: str, message: str, at: str = ENDED, status: str = "True") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "lastProbeTime": at,
        "lastTransitionTime": at,
        "reason": reason,
        "message": message,
    }


def running_status(active: int = 1, failed: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {
        "startTime": STARTED,
        "active": active,
        "ready": active,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
    if failed:
        status["failed"] = failed
    return status


def failed_status(reason: str, message: str, failed: int) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [
            condition("FailureTarget", reason, message, at="2024-05-01T10:03:19Z"),
            condition("Failed", reason, message),
        ],
        "startTime": STARTED,
        "failed": failed,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
    if reason == "FailedIndexes":
        status["failedIndexes"] = "0"
    return status


def deployment_body(
    status: dict[str, Any] | None = None, *, run: str = "1", replicas: int = 1, generation: int = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "ml-pipeline-serve",
            "namespace": "default",
            "uid": "a1b2c3d4-0000-4000-8000-000000000001",
            "resourceVersion": "50120",
            "generation": generation,
            "creationTimestamp": CREATED,
            "labels": {
                "app.kubernetes.io/managed-by": "dagflow-operator",
                "dagflow.dev/flow": "ml-pipeline",
                "dagflow.dev/run": run,
                "dagflow.dev/work": "serve",
            },
            "annotations": {
                "deployment.kubernetes.io/revision": str(generation),
                "dagflow.dev/flow-name": "ml-pipeline",
                "dagflow.dev/work-name": "serve",
            },
            "ownerReferences": [OWNER],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"dagflow.dev/flow": "ml-pipeline", "dagflow.dev/work": "serve"}},
            "template": {
                "metadata": {
                    "labels": {
                        "app.kubernetes.io/managed-by": "dagflow-operator",
                        "dagflow.dev/flow": "ml-pipeline",
                        "dagflow.dev/run": run,
                        "dagflow.dev/work": "serve",
                    }
                },
                "spec": {"containers": [{"name": "serve", "image": "example/ml:1.0"}]},
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "progressDeadlineSeconds": 600,
        },
    }
    if status is not None:
        body["status"] = status
    return body


def rollout_status(
    *,
    observed: int = 1,
    replicas: int = 1,
    updated: int = 1,
    available: int = 1,
    available_condition: str = "True",
    progressing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": [
            condition(
                "Available",
                "MinimumReplicasAvailable" if available_condition == "True" else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available_condition == "True"
                else "Deployment does not have minimum availability.",
                status=available_condition,
            ),
            progressing
            or condition(
                "Progressing",
                "NewReplicaSetAvailable",
                'ReplicaSet "ml-pipeline-serve-7c9d8f" has successfully progressed.',
            ),
        ],
    }
    if not available:
        status.pop("availableReplicas")
        status["unavailableReplicas"] = replicas
    return status


# -- Jobs ----------------------------------------------------------------------------------------


def test_a_job_just_created_has_no_attempts_yet() -> None:
    observed = observe_job(job_body())
    assert (observed.name, observed.work, observed.run) == ("ml-pipeline-1-train", "train", 1)
    assert observed.outcome is None
    assert observed.attempts == 0
    assert observed.started_at == CREATED
    assert not observed.deleting


def test_a_running_job() -> None:
    observed = observe_job(job_body(running_status()))
    assert observed.outcome is None
    assert observed.attempts == 1
    assert observed.started_at == STARTED
    assert observed.finished_at is None


def test_a_retry_in_progress_counts_every_attempt() -> None:
    observed = observe_job(job_body(running_status(active=1, failed=2)))
    assert observed.outcome is None
    assert observed.attempts == 3


def test_a_completed_job_succeeded_when_it_completed() -> None:
    status = {
        "conditions": [
            condition(
                "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
            ),
            condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
        ],
        "startTime": STARTED,
        "completionTime": "2024-05-01T10:03:21Z",
        "succeeded": 1,
        "failed": 1,
        "completedIndexes": "0",
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
    observed = observe_job(job_body(status))
    assert observed.outcome == "Succeeded"
    assert observed.finished_at == "2024-05-01T10:03:21Z"
    assert observed.attempts == 2
    assert (observed.reason, observed.message) == (None, None)


@pytest.mark.parametrize(
    ("reason", "message", "failed"),
    [
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit", 3),
        ("DeadlineExceeded", "Job was active longer than specified deadline", 1),
        ("FailedIndexes", "Job has failed indexes", 3),
    ],
)
def test_a_failed_job_reports_why(reason: str, message: str, failed: int) -> None:
    observed = observe_job(job_body(failed_status(reason, message, failed)))
    assert observed.outcome == "Failed"
    assert (observed.reason, observed.message) == (reason, message)
    assert observed.finished_at == ENDED  # a failed Job has no completionTime
    assert observed.attempts == failed


def test_a_job_whose_pods_are_still_terminating_is_not_finished_yet() -> None:
    status = failed_status("FailedIndexes", "Job has failed indexes", 3)
    status["conditions"] = status["conditions"][:1]  # FailureTarget only, Failed not yet added
    status["terminating"] = 1
    assert observe_job(job_body(status)).outcome is None


def test_conditions_that_are_not_true_do_not_count() -> None:
    status = running_status()
    status["conditions"] = [condition("Failed", "BackoffLimitExceeded", "old", status="False")]
    assert observe_job(job_body(status)).outcome is None


def test_a_job_being_deleted() -> None:
    observed = observe_job(job_body(running_status(), deletionTimestamp=ENDED))
    assert observed.deleting


def test_the_full_work_name_comes_from_the_annotation_when_the_label_is_shortened() -> None:
    body = job_body(running_status())
    body["metadata"]["labels"]["dagflow.dev/work"] = "shortened-3f2a9c1b0d"
    body["metadata"]["annotations"]["dagflow.dev/work-name"] = "train"
    assert observe_job(body).work == "train"
    del body["metadata"]["annotations"]
    assert observe_job(body).work == "shortened-3f2a9c1b0d"


def test_a_job_with_a_bad_run_label_is_not_taken_for_any_run() -> None:
    observed = observe_job(job_body(running_status(), run="seven"))
    assert observed.run == 0


def test_a_job_the_builder_made_is_observed_as_its_work_and_run() -> None:
    flow_spec = DAGFlowSpec.model_validate({"works": [{"name": "train-a", "container": {"image": "x"}}]})
    flow = FlowRef(name="f" * 80, namespace="default", uid="u")
    job = build_job(flow, flow_spec, flow_spec.works[0], 12, OperatorSettings())
    observed = observe_job(job)
    assert (observed.work, observed.run, observed.name) == ("train-a", 12, job["metadata"]["name"])
    assert owner_flow(job) == "f" * 80


# -- Deployments ---------------------------------------------------------------------------------


def test_a_deployment_just_created_is_not_available() -> None:
    observed = observe_deployment(deployment_body())
    assert (observed.name, observed.work, observed.run, observed.replicas) == (
        "ml-pipeline-serve",
        "serve",
        1,
        1,
    )
    assert not observed.available
    assert observed.started_at == CREATED


def test_a_deployment_waiting_for_its_pods_is_not_available() -> None:
    status = rollout_status(
        available=0,
        available_condition="False",
        progressing=condition("Progressing", "ReplicaSetUpdated", 'ReplicaSet "x" is progressing.'),
    )
    observed = observe_deployment(deployment_body(status))
    assert not observed.available
    assert observed.message is None


def test_a_rolled_out_deployment_is_available() -> None:
    observed = observe_deployment(deployment_body(rollout_status()))
    assert observed.available
    assert observed.available_at == ENDED


def test_a_deployment_rolled_for_a_new_run_is_not_available_until_the_controller_saw_it() -> None:
    # The old pods still serve (Available True), but the new template has not been looked at.
    observed = observe_deployment(deployment_body(rollout_status(observed=1), run="2", generation=2))
    assert observed.run == 2
    assert not observed.available


def test_a_deployment_halfway_through_a_rollout_is_not_available() -> None:
    status = rollout_status(observed=2, replicas=2, updated=1, available=1)
    observed = observe_deployment(deployment_body(status, run="2", generation=2))
    assert not observed.available


def test_a_deployment_needs_every_replica_available() -> None:
    status = rollout_status(replicas=3, updated=3, available=2)
    assert not observe_deployment(deployment_body(status, replicas=3)).available
    status = rollout_status(replicas=3, updated=3, available=3)
    assert observe_deployment(deployment_body(status, replicas=3)).available


def test_a_stuck_rollout_says_why() -> None:
    stuck = condition(
        "Progressing",
        "ProgressDeadlineExceeded",
        'ReplicaSet "ml-pipeline-serve-7c9d8f" has timed out progressing.',
        status="False",
    )
    status = rollout_status(available=0, available_condition="False", progressing=stuck)
    observed = observe_deployment(deployment_body(status))
    assert not observed.available
    assert observed.message == 'ReplicaSet "ml-pipeline-serve-7c9d8f" has timed out progressing.'


def test_a_deployment_the_builder_made_is_observed_as_its_work_and_run() -> None:
    raw = {"works": [{"name": "serve", "container": {"image": "x"}, "serve": {"port": 80, "replicas": 2}}]}
    flow_spec = DAGFlowSpec.model_validate(raw)
    flow = FlowRef(name="ml-pipeline", namespace="default", uid="u")
    deployment = build_deployment(flow, flow_spec, flow_spec.works[0], 5, OperatorSettings())
    observed = observe_deployment(deployment)
    assert (observed.work, observed.run, observed.replicas, observed.available) == ("serve", 5, 2, False)


# -- owner_flow ----------------------------------------------------------------------------------


def test_owner_flow_is_the_controlling_dagflow() -> None:
    body = job_body()
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "rs",
        "uid": "1",
        "controller": False,
    }
    body["metadata"]["ownerReferences"] = [replica_set, OWNER]
    assert owner_flow(body) == "ml-pipeline"


@pytest.mark.parametrize(
    "references",
    [
        None,
        [],
        [{**OWNER, "controller": False}],
        [{k: v for k, v in OWNER.items() if k != "controller"}],
        [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "2", "controller": True}],
    ],
)
def test_children_not_controlled_by_a_dagflow_have_no_owner_flow(
    references: list[dict[str, Any]] | None,
) -> None:
    body = copy.deepcopy(job_body())
    if references is None:
        del body["metadata"]["ownerReferences"]
    else:
        body["metadata"]["ownerReferences"] = references
    assert owner_flow(body) is None
    assert owner_flow({}) is None


# -- pods: a work succeeds when its pod did ------------------------------------------------------

JOB_UID = "d3b07384-d9a7-4e3b-8b7e-1c2f3a4b5c6d"
POD_ENDED = "2024-05-01T10:03:19Z"
NOW = "2024-05-01T10:03:19Z"


def pod_body(
    phase: str, job_uid: str | None = JOB_UID, finished_at: str | None = POD_ENDED
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "dagflow-operator", "dagflow.dev/flow": "ml-pipeline"}
    if job_uid:
        labels["batch.kubernetes.io/controller-uid"] = job_uid
    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        **({"finishedAt": finished_at} if finished_at else {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ml-pipeline-1-train-0-x7k2p", "labels": labels},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "train", "state": {"terminated": terminated}}]
            if phase in ("Succeeded", "Failed")
            else [],
        },
    }


def settled(job: dict[str, Any], *pods: dict[str, Any]) -> Any:
    observed = [pod for pod in (observe_pod(body) for body in pods) if pod is not None]
    return settled_by_pod(observe_job(job), pods_by_job(observed), NOW)


def running_job(**spec: Any) -> dict[str, Any]:
    body = job_body({"startTime": STARTED, "active": 1})
    body["spec"].update(spec)
    return body


def test_a_work_succeeds_when_its_pod_did_before_the_job_controller_says_so() -> None:
    observed = settled(running_job(), pod_body("Succeeded"))
    assert (observed.outcome, observed.finished_at, observed.attempts) == ("Succeeded", POD_ENDED, 1)
    # A pod without its end time: the moment the operator saw it.
    assert settled(running_job(), pod_body("Succeeded", finished_at=None)).finished_at == NOW


def test_a_job_that_could_still_fail_waits_for_the_job_controller() -> None:
    # Its deadline may pass before the Job controller counts the success: it would then fail.
    assert settled(running_job(activeDeadlineSeconds=60), pod_body("Succeeded")).outcome is None
    # A pod still running, or failed (a retry may follow), says nothing yet.
    assert settled(running_job(), pod_body("Running")).outcome is None
    assert settled(running_job(), pod_body("Failed")).outcome is None
    # Another Job's pod (an earlier Job of the name, deleted and made again) is not this Job's.
    assert settled(running_job(), pod_body("Succeeded", job_uid="another-job")).outcome is None


def test_a_job_that_ended_or_is_being_deleted_is_taken_as_the_job_controller_says() -> None:
    failed = job_body({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "X"}]})
    assert settled(failed, pod_body("Succeeded")).outcome == "Failed"
    deleting = running_job()
    deleting["metadata"]["deletionTimestamp"] = ENDED
    assert settled(deleting, pod_body("Succeeded")).outcome is None


def test_a_matrix_works_job_waits_for_every_instance_through_the_job_controller() -> None:
    matrix = running_job(completions=3, parallelism=3)
    assert settled(matrix, pod_body("Succeeded")).outcome is None


def test_pods_no_job_controls_are_not_observed() -> None:
    assert observe_pod(pod_body("Running", job_uid=None)) is None


def test_a_work_settled_by_its_pod_counts_its_failed_attempts_before_its_job_does() -> None:
    first = pod_body("Failed")
    first["metadata"]["name"] = "ml-pipeline-1-train-0-aaaaa"
    observed = settled(running_job(), first, pod_body("Succeeded"))
    assert (observed.outcome, observed.attempts) == ("Succeeded", 2)


# -- a Job without pods: asked about only when its pods may be refused ----------------------------


def pods_of(*bodies: dict[str, Any]) -> dict[str, list[Any]]:
    return pods_by_job(pod for pod in (observe_pod(body) for body in bodies) if pod is not None)


def test_a_job_taken_up_by_the_job_controller_without_a_pod_may_have_its_pods_refused() -> None:
    assert starved(observe_job(job_body({"startTime": STARTED})), pods_of())


def test_a_job_whose_pod_the_watch_saw_is_not_refused_pods_while_its_counts_lag() -> None:
    # A busy Job controller writes `active` after the pod runs: the pod itself is the answer.
    lagging = observe_job(job_body({"startTime": STARTED}))
    assert not starved(lagging, pods_of(pod_body("Running")))
    assert not starved(lagging, pods_of(pod_body("Succeeded")))
    # Another Job's pod says nothing about this one.
    assert starved(lagging, pods_of(pod_body("Running", job_uid="another-job")))


def test_a_job_the_job_controller_has_not_taken_up_is_not_refused_pods_yet() -> None:
    # No startTime: the Job controller has not tried to make its pods, so nothing refused them.
    assert not starved(observe_job(job_body({})), pods_of())
    suspended = job_body({})
    suspended["spec"]["suspend"] = True
    assert not starved(observe_job(suspended), pods_of())


def test_a_job_with_pods_counted_or_an_outcome_is_not_refused_pods() -> None:
    assert not starved(observe_job(job_body({"startTime": STARTED, "active": 1})), pods_of())
    failed = {"startTime": STARTED, "conditions": [{"type": "Failed", "status": "True"}]}
    assert not starved(observe_job(job_body(failed)), pods_of())
