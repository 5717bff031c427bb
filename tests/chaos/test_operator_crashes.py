"""The operator killed (SIGKILL, as an OOM kill or a node loss does) and restarted while flows run:
no work runs twice, none is forgotten, every run ends."""

from __future__ import annotations

import time

import pytest

from tests.chaos.drills import (
    DrillResult,
    OperatorKiller,
    layered,
    record,
    request_rerun,
    wait_for_run_end,
)
from tests.e2e.flows import flow, status, wait_for_phase, work
from tests.e2e.recorder import recording
from tests.kube import apply
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

RUNS = 3


def test_sigkill_every_5_to_20s_through_three_runs_of_a_50_work_flow(
    namespace: str, operator: OperatorProcess
) -> None:
    manifest = layered("crashy", branches=12, depth=4, duration="1s")
    names = [entry["name"] for entry in manifest["spec"]["works"]]
    assert len(names) == 50
    started = time.monotonic()
    with recording(namespace) as recorder, OperatorKiller(operator, low=5, high=20, seed=16) as killer:
        apply(manifest, namespace=namespace)
        finals = [wait_for_run_end(namespace, "crashy", 1, timeout=300)]
        for run in range(2, RUNS + 1):
            request_rerun(namespace, "crashy", f"chaos-{run}")
            finals.append(wait_for_run_end(namespace, "crashy", run, timeout=300))
        # One more kill past the last run's end: the restarted operator must not start anything.
        kills_before_the_end = killer.kills
        while killer.kills == kills_before_the_end:
            time.sleep(1)
    time.sleep(3)
    made = recorder.jobs_made()
    result = DrillResult(
        "SIGKILL the operator every 5-20 s, 50-work flow, 3 runs",
        runs=RUNS,
        disruptions=killer.kills,
        jobs_made=sum(made.values()),
        jobs_expected=RUNS * len(names),
        recover_seconds=killer.recoveries,
        seconds=time.monotonic() - started,
    )
    record(result)
    assert [final["phase"] for final in finals] == ["Succeeded"] * RUNS, finals
    expected = {("crashy", name, run): 1 for name in names for run in range(1, RUNS + 1)}
    assert dict(made) == expected, "Jobs made per (flow, work, run) differ from one each"
    assert all(entry["attempts"] == 1 for entry in finals[-1]["works"]), finals[-1]["works"]
    assert status(namespace, "crashy")["run"] == RUNS


def test_200_flows_at_once_through_two_operator_restarts(namespace: str, operator: OperatorProcess) -> None:
    count = 200
    manifests = [
        flow(f"many-{index}", [work("a", duration="1s"), work("b", "a", duration="1s"), work("c", "a")])
        for index in range(count)
    ]
    started = time.monotonic()
    recoveries = []
    with recording(namespace) as recorder:
        apply({"apiVersion": "v1", "kind": "List", "items": manifests}, namespace=namespace)
        # One restart as on a crash, one as on a rollout, each with the flows half-way.
        for stop in (operator.kill, operator.stop):
            time.sleep(8)
            stopped = time.monotonic()
            stop()
            operator.start()
            recoveries.append(time.monotonic() - stopped)
        finals = {
            manifest["metadata"]["name"]: wait_for_phase(namespace, manifest["metadata"]["name"], timeout=300)
            for manifest in manifests
        }
        time.sleep(3)
    made = recorder.jobs_made()
    record(
        DrillResult(
            "200 flows at once, two operator restarts",
            runs=count,
            disruptions=2,
            jobs_made=sum(made.values()),
            jobs_expected=3 * count,
            recover_seconds=recoveries,
            seconds=time.monotonic() - started,
        )
    )
    failed = {name: final for name, final in finals.items() if final["phase"] != "Succeeded"}
    assert not failed, failed
    expected = {(name, work_name, 1): 1 for name in finals for work_name in ("a", "b", "c")}
    assert dict(made) == expected, "Jobs made per (flow, work, run) differ from one each"
