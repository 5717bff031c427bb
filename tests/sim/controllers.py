"""Models of the controllers the operator's children depend on: the Job controller (Indexed Jobs
with per-index backoff, pod failure policy, deadlines) with the pods it makes, and the Deployment
controller (rollouts, availability, progress deadlines).

What a pod does is steered by annotations of its template, which a flow sets through a work's
`annotations` (as the kwok-simulated nodes of the local cluster are steered):
- `sim.dagflow.dev/outcome`: `succeed` (default), `fail`, `flaky` (fails or succeeds by the seed),
  `launch-fail` (the launcher's exit code: its index fails at once);
- `sim.dagflow.dev/message`: the termination message of a succeeded pod, `{index}` replaced by its
  completion index and `{fill:N}` by N characters (so that a flow of many large reports still fits
  its own object);
- `sim.dagflow.dev/duration` (`60s`): a pod runs at least that long;
- `sim.dagflow.dev/ready: "false"` on a serve work: its pods never become ready.
"""

from __future__ import annotations

import copy
import random
import re
from datetime import datetime
from typing import Any

from dagflow.controller.builders import LAUNCHER_EXIT_CODE
from dagflow.controller.observe import index_ranges
from tests.sim.apiserver import ApiServer

OUTCOME_ANNOTATION = "sim.dagflow.dev/outcome"
MESSAGE_ANNOTATION = "sim.dagflow.dev/message"
READY_ANNOTATION = "sim.dagflow.dev/ready"
DURATION_ANNOTATION = "sim.dagflow.dev/duration"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
DEFAULT_PROGRESS_DEADLINE = 600


def format_indexes(indexes: set[int]) -> str:
    """Indexes as the Job controller writes them: "0-2,5,7,8" (a run of two is not a range)."""
    runs: list[list[int]] = []
    for index in sorted(indexes):
        if runs and runs[-1][1] == index - 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    parts = [
        str(first) if last == first else f"{first}{',' if last == first + 1 else '-'}{last}"
        for first, last in runs
    ]
    return ",".join(parts)


def parse(text: str) -> set[int]:
    return {index for indexes in index_ranges(text) for index in indexes}


def _condition(kind: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now,
        "lastTransitionTime": now,
    }


class JobController:
    """One step of the Job controller over every Job: pods start, end, and Jobs finish."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.pods = 0
        # The keys of each Job's pods (by the Job's uid) as the step began: a step only adds pods
        # after it has read them, so one look over all pods serves the whole step.
        self._pod_keys: dict[str, list[tuple[str, str, str]]] = {}

    def step(self, rng: random.Random) -> None:
        self.server.actor = "job-controller"
        self._pod_keys = {}
        for pod in self.server.items("pods"):
            uid = (pod["metadata"].get("labels") or {}).get(CONTROLLER_UID)
            if uid:
                key = ("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
                self._pod_keys.setdefault(uid, []).append(key)
        for job in list(self.server.items("jobs")):
            if rng.random() < 0.7:
                self._step_job(copy.deepcopy(job), rng)

    def _pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        found = (self.server.objects.get(key) for key in self._pod_keys.get(job["metadata"]["uid"], []))
        return [pod for pod in found if pod is not None]

    def _step_job(self, job: dict[str, Any], rng: random.Random) -> None:
        status = job.setdefault("status", {})
        if any(c.get("type") in ("Complete", "Failed") for c in status.get("conditions") or []):
            return
        if job["metadata"].get("deletionTimestamp"):
            return  # its pods go with it (the garbage collector)
        spec = job["spec"]
        now = self.server.clock.timestamp()
        completions = int(spec.get("completions") or 1)
        parallelism = int(spec.get("parallelism") or 1)
        per_index_limit = spec.get("backoffLimitPerIndex")
        template = spec["template"]
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        behaviour = annotations.get(OUTCOME_ANNOTATION, "succeed")
        completed, failed_indexes = (
            parse(status.get("completedIndexes") or ""),
            parse(status.get("failedIndexes") or ""),
        )
        status.setdefault("startTime", now)
        failures: dict[int, int] = {}
        for pod in self._pods(job):
            index = int(pod["metadata"]["annotations"][COMPLETION_INDEX])
            phase = pod["status"]["phase"]
            if phase == "Running" and self._ran_long_enough(pod, annotations) and rng.random() < 0.5:
                self._finish_pod(pod, behaviour, annotations, rng)
                phase = pod["status"]["phase"]
            if phase == "Succeeded":
                completed.add(index)
            elif phase == "Failed" and not pod["status"].get("ignored"):
                failures[index] = failures.get(index, 0) + 1
                if pod["status"].get("failIndex") or (
                    per_index_limit is not None and failures[index] > int(per_index_limit)
                ):
                    failed_indexes.add(index)
        pods = self._pods(job)
        active = {
            int(pod["metadata"]["annotations"][COMPLETION_INDEX])
            for pod in pods
            if pod["status"]["phase"] == "Running"
        }
        status["succeeded"] = sum(1 for pod in pods if pod["status"]["phase"] == "Succeeded")
        status["failed"] = sum(
            1 for pod in pods if pod["status"]["phase"] == "Failed" and not pod["status"].get("ignored")
        )
        if completed:
            status["completedIndexes"] = format_indexes(completed)
        else:
            status.pop("completedIndexes", None)  # as the Job controller leaves it out
        if per_index_limit is not None:
            status["failedIndexes"] = format_indexes(failed_indexes)
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and self._age(status["startTime"]) >= int(deadline):
            self._end(
                job,
                status,
                pods,
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
            return
        max_failed = spec.get("maxFailedIndexes")
        if max_failed is not None and len(failed_indexes) > int(max_failed):
            self._end(
                job,
                status,
                pods,
                "Failed",
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
            return
        if len(completed | failed_indexes) >= completions:
            if failed_indexes:
                self._end(job, status, pods, "Failed", "FailedIndexes", "Job has failed indexes")
            else:
                status["completionTime"] = now
                self._end(
                    job,
                    status,
                    pods,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
            return
        waiting = [
            index
            for index in range(completions)
            if index not in completed and index not in failed_indexes and index not in active
        ]
        for index in waiting[: max(parallelism - len(active), 0)]:
            self._start_pod(job, index)
            active.add(index)
        status["active"] = len(active)
        self._write_status(job)

    def _ran_long_enough(self, pod: dict[str, Any], annotations: dict[str, str]) -> bool:
        """Whether a pod has run for its `DURATION_ANNOTATION`, when it has one."""
        duration = annotations.get(DURATION_ANNOTATION)
        started = pod["status"].get("startTime")
        if not duration or not started:
            return True
        return self._age(started) >= float(duration.removesuffix("s"))

    def _age(self, timestamp: str) -> float:
        started = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        return (self.server.clock.wall() - started).total_seconds()

    def _end(
        self,
        job: dict[str, Any],
        status: dict[str, Any],
        pods: list[dict[str, Any]],
        kind: str,
        reason: str,
        message: str,
    ) -> None:
        for pod in pods:
            if pod["status"]["phase"] == "Running":
                pod["status"]["phase"] = "Failed"
                self.server.replace("pods", pod)
        status["active"] = 0
        condition = _condition(kind, reason, message, self.server.clock.timestamp())
        status["conditions"] = [*(status.get("conditions") or []), condition]
        self._write_status(job)

    def _write_status(self, job: dict[str, Any]) -> None:
        current = self.server.get("jobs", job["metadata"]["namespace"], job["metadata"]["name"])
        if current is None or current["metadata"]["uid"] != job["metadata"]["uid"]:
            return
        if current.get("status") != job["status"]:
            current["status"] = job["status"]
            self.server.replace("jobs", current)

    def _start_pod(self, job: dict[str, Any], index: int) -> None:
        self.pods += 1
        template = copy.deepcopy(job["spec"]["template"])
        metadata = template.get("metadata") or {}
        labels = {
            **(metadata.get("labels") or {}),
            CONTROLLER_UID: job["metadata"]["uid"],
            COMPLETION_INDEX: str(index),
        }
        annotations = {**(metadata.get("annotations") or {}), COMPLETION_INDEX: str(index)}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job['metadata']['name']}-{index}-{self.pods:05d}",
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
            "status": {"phase": "Running", "startTime": self.server.clock.timestamp()},
        }
        self.server.create("pods", job["metadata"]["namespace"], pod)

    def _finish_pod(
        self, pod: dict[str, Any], behaviour: str, annotations: dict[str, str], rng: random.Random
    ) -> None:
        index = pod["metadata"]["annotations"][COMPLETION_INDEX]
        container = ((pod["spec"].get("containers") or [{}])[0]).get("name", "")
        if rng.random() < 0.05:
            # Evicted or preempted: the pod failure policy ignores it, its index gets another pod.
            pod["status"].update(
                phase="Failed", ignored=True, conditions=[{"type": "DisruptionTarget", "status": "True"}]
            )
        elif behaviour == "fail" or (behaviour == "flaky" and rng.random() < 0.5):
            pod["status"].update(phase="Failed", containerStatuses=[_terminated(container, 1, "")])
        elif behaviour == "launch-fail":
            pod["status"].update(
                phase="Failed",
                failIndex=True,
                containerStatuses=[
                    _terminated(container, LAUNCHER_EXIT_CODE, f"no such value for instance {index}")
                ],
            )
        else:
            message = termination_message(annotations.get(MESSAGE_ANNOTATION, ""), index)
            pod["status"].update(phase="Succeeded", containerStatuses=[_terminated(container, 0, message)])
        self.server.replace("pods", pod)


def termination_message(template: str, index: str) -> str:
    """The message a pod steered by `template` reports: see `MESSAGE_ANNOTATION`."""
    message = template.replace("{index}", index)
    return re.sub(r"\{fill:(\d+)\}", lambda match: "x" * int(match.group(1)), message)


def _terminated(container: str, code: int, message: str) -> dict[str, Any]:
    return {"name": container, "state": {"terminated": {"exitCode": code, "message": message}}}


class DeploymentController:
    """One step of the Deployment controller: rollouts start, finish, stall past their deadline,
    and available pods come and go."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        # When each Deployment's current rollout began, by uid.
        self.rollouts: dict[str, float] = {}
        # Every serving node out: no pod is available, none comes back, until the outage ends.
        self.outage = False

    def step(self, rng: random.Random, disrupt: bool = True) -> None:
        self.server.actor = "deployment-controller"
        for deployment in list(self.server.items("deployments")):
            if deployment["metadata"].get("deletionTimestamp") or rng.random() < 0.3:
                continue
            self._step(copy.deepcopy(deployment), rng, disrupt)

    def _step(self, deployment: dict[str, Any], rng: random.Random, disrupt: bool) -> None:
        metadata, spec = deployment["metadata"], deployment.get("spec") or {}
        status = copy.deepcopy(deployment.get("status") or {})
        now = self.server.clock.timestamp()
        replicas = int(spec.get("replicas", 1))
        generation = int(metadata.get("generation") or 1)
        ready = (
            ((spec.get("template") or {}).get("metadata") or {}).get("annotations", {}).get(READY_ANNOTATION)
        )
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        if int(status.get("observedGeneration") or 0) < generation:
            status["observedGeneration"] = generation
            status["updatedReplicas"] = 0
            status["replicas"] = int(status.get("availableReplicas") or 0)
            self.rollouts[metadata["uid"]] = self.server.clock.monotonic()
            conditions["Progressing"] = _deployment_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{metadata["name"]}" is progressing.',
                now,
                conditions,
            )
            if "Available" not in conditions:
                conditions["Available"] = _available(False, now, conditions)
        elif int(status.get("updatedReplicas") or 0) < replicas:
            began = self.rollouts.get(metadata["uid"], self.server.clock.monotonic())
            deadline = int(spec.get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE)
            if ready == "false" or self.outage or rng.random() < 0.3:
                if self.server.clock.monotonic() - began > deadline:
                    conditions["Progressing"] = _deployment_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{metadata["name"]}" has timed out progressing.',
                        now,
                        conditions,
                    )
            else:
                status.update(
                    updatedReplicas=replicas,
                    availableReplicas=replicas,
                    readyReplicas=replicas,
                    replicas=replicas,
                )
                conditions["Available"] = _available(True, now, conditions)
                conditions["Progressing"] = _deployment_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{metadata["name"]}" has successfully progressed.',
                    now,
                    conditions,
                )
        elif int(status.get("availableReplicas") or 0) < replicas:
            # Pods lost after the rollout completed: the ReplicaSet makes new ones, unless their
            # nodes are out. Not a rollout, so no progress deadline runs (the real controller
            # never times out a Deployment whose Progressing reason is NewReplicaSetAvailable).
            if not self.outage and rng.random() < 0.5:
                status.update(availableReplicas=replicas, readyReplicas=replicas)
                conditions["Available"] = _available(True, now, conditions)
        elif (disrupt and ready != "false" and rng.random() < 0.1) or self.outage:
            # Its pods lost (a node gone); they come back at a later step.
            status.update(availableReplicas=0, readyReplicas=0)
            conditions["Available"] = _available(False, now, conditions)
        status["conditions"] = sorted(conditions.values(), key=lambda c: str(c["type"]))
        if status != deployment.get("status"):
            deployment["status"] = status
            self.server.replace("deployments", deployment)


def _available(available: bool, now: str, previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if available:
        return _deployment_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
            previous,
        )
    return _deployment_condition(
        "Available",
        "False",
        "MinimumReplicasUnavailable",
        "Deployment does not have minimum availability.",
        now,
        previous,
    )


def _deployment_condition(
    kind: str, value: str, reason: str, message: str, now: str, previous: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    earlier = previous.get(kind)
    if earlier and earlier.get("status") == value and earlier.get("reason") == reason:
        return earlier
    since = earlier["lastTransitionTime"] if earlier and earlier.get("status") == value else now
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": since,
    }
