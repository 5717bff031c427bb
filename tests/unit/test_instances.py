"""A matrix work's instances: why its Job failed, with the reason the launcher gave for an instance
it could not start, read from that instance's failed pod."""

from __future__ import annotations

import asyncio
from typing import Any

from dagflow.api.models import DAGFlowSpec
from dagflow.controller.builders import LAUNCHER_EXIT_CODE, FlowRef
from dagflow.controller.instances import InstanceCounts, failure_message
from dagflow.controller.observe import JobObservation
from dagflow.controller.workdata import LAUNCH_FAILURE_LOOKUPS_PER_PASS, WorkData

FLOW = FlowRef(name="sweep", namespace="team-a", uid="flow-uid")


def test_the_launchers_reason_follows_the_failed_instances() -> None:
    counts = InstanceCounts(total=3, succeeded=2, failed=1, running=0)
    listed = [{"index": 1, "values": {"model": "b"}}]
    assert failure_message(counts, listed) == "1 of 3 instances failed: 1 (model=b)"
    reason = "instance 1 could not start: dagflow-launcher: index 1, but values.json has 1 instances"
    assert failure_message(counts, listed, reason) == f"1 of 3 instances failed: 1 (model=b); {reason}"


def failed_pod(index: int, exit_code: int, message: str, container: str = "train") -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {"name": container, "state": {"terminated": {"exitCode": exit_code, "message": message}}}
            ],
        },
    }


class PodLister:
    """Stands for the KubeClient in the one call WorkData.launch_failures makes: a list of a Job's
    failed pods."""

    def __init__(self, pods: dict[str, list[dict[str, Any]]]) -> None:
        self.pods = pods
        self.calls: list[dict[str, Any]] = []

    async def failed_pods(self, namespace: str, job_uid: str, limit: int) -> list[dict[str, Any]]:
        assert namespace == "team-a"
        self.calls.append({"job_uid": job_uid, "limit": limit})
        return self.pods.get(job_uid, [])


def matrix_job(work: str, outcome: str | None, failed_indexes: str = "") -> JobObservation:
    return JobObservation(
        name=f"sweep-1-{work}",
        work=work,
        run=1,
        active=0,
        succeeded=1,
        failed=1,
        outcome=outcome,
        reason="FailedIndexes" if outcome == "Failed" else None,
        message=None,
        started_at=None,
        finished_at=None,
        deleting=False,
        uid=f"uid-{work}",
        completions=3,
        failed_indexes=failed_indexes,
        matrix=True,
    )


def test_the_reason_of_a_failed_launch_is_read_once_from_the_failed_pods_of_a_failed_matrix_job() -> None:
    works = [
        {
            "name": name,
            "container": {"image": "ml:1", "command": ["t", "$(matrix.m)"]},
            "matrix": {"m": ["a"]},
        }
        for name in ("train", "other", "running", "plain-failure")
    ]
    spec = DAGFlowSpec.model_validate({"works": works})
    lister = PodLister(
        {
            "uid-train": [
                failed_pod(
                    2, LAUNCHER_EXIT_CODE, "dagflow-launcher: /dagflow-matrix/values.json: no such file"
                ),
                failed_pod(1, LAUNCHER_EXIT_CODE, "dagflow-launcher: index 1, but " + "x" * 900),
                failed_pod(0, 1, "the program's own failure"),
            ],
            "uid-plain-failure": [failed_pod(0, 1, "Traceback ...")],
        }
    )
    data = WorkData(lister)  # type: ignore[arg-type]
    jobs = {
        "train": matrix_job("train", "Failed", "0-2"),
        "running": matrix_job("running", None, "1"),
        "plain-failure": matrix_job("plain-failure", "Failed", "0"),
    }
    found = asyncio.run(data.launch_failures(FLOW, spec, jobs))
    assert list(found) == ["train"]
    assert found["train"].startswith("instance 1 could not start: dagflow-launcher: index 1, but xxx")
    assert found["train"].endswith("...") and len(found["train"]) < 600, "a long message is cut"
    assert lister.calls == [
        {"job_uid": "uid-train", "limit": 100},
        {"job_uid": "uid-plain-failure", "limit": 100},
    ]
    # Read once: later passes, and a Job whose failures were not the launcher's, cost no call.
    assert asyncio.run(data.launch_failures(FLOW, spec, jobs)) == found
    assert len(lister.calls) == 2


def test_at_most_a_few_jobs_are_asked_about_per_pass() -> None:
    names = [f"w{index}" for index in range(LAUNCH_FAILURE_LOOKUPS_PER_PASS + 5)]
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                {"name": name, "container": {"image": "i", "command": ["t"]}, "matrix": {"m": ["a"]}}
                for name in names
            ]
        }
    )
    lister = PodLister({})
    data = WorkData(lister)  # type: ignore[arg-type]
    jobs = {name: matrix_job(name, "Failed", "0") for name in names}
    asyncio.run(data.launch_failures(FLOW, spec, jobs))
    assert len(lister.calls) == LAUNCH_FAILURE_LOOKUPS_PER_PASS
    asyncio.run(data.launch_failures(FLOW, spec, jobs))
    assert len(lister.calls) == len(names)
