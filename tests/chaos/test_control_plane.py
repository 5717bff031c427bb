"""The control plane failing under a running flow: kube-apiserver and etcd killed and started again,
and the API server stopped (SIGSTOP) for longer than the operator's watches last."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from dagflow.controller.main import WATCH_CLIENT_MARGIN
from tests.chaos.conftest import WATCH_TIMEOUT_SECONDS
from tests.chaos.drills import DrillResult, layered, record, wait_for_run_end
from tests.e2e.flows import status, works_by_name
from tests.e2e.recorder import recording
from tests.kube import apply, killed_and_restarted, paused, wait_for
from tests.operator_process import OperatorProcess

pytestmark = [pytest.mark.local_cluster, pytest.mark.disruptive]


def phases(namespace: str, name: str) -> dict[str, str]:
    return {work: entry.get("phase", "") for work, entry in works_by_name(status(namespace, name)).items()}


def seconds_until_progress(namespace: str, name: str) -> float:
    """How long until a work of the flow changes phase, from now: the operator acting again."""
    began = time.monotonic()
    before = phases(namespace, name)
    wait_for(lambda: phases(namespace, name) != before, timeout=180, interval=0.25, what=f"{name} to move")
    return time.monotonic() - began


def half_way(namespace: str, name: str) -> bool:
    current = phases(namespace, name)
    return current.get("root") == "Succeeded" and "Running" in current.values()


def check_each_job_made_once(made: dict[Any, int], manifest: dict[str, Any], name: str) -> None:
    expected = {(name, entry["name"], 1): 1 for entry in manifest["spec"]["works"]}
    assert made == expected, "Jobs made per (flow, work, run) differ from one each"


def flow_through(namespace: str, name: str, drill: str, disrupt: Callable[[], float]) -> dict[str, Any]:
    """Run a 20-work flow, `disrupt` the cluster half-way, and return the flow's final status once
    the drill's numbers are recorded and its Jobs checked. `disrupt` returns the seconds that count
    towards recovery before the flow is watched for progress."""
    manifest = layered(name, branches=6, depth=3, duration="2s")
    started = time.monotonic()
    with recording(namespace) as recorder:
        apply(manifest, namespace=namespace)
        wait_for(lambda: half_way(namespace, name), timeout=120, what=f"{name} to be half-way")
        recovery = disrupt()
        recovery += seconds_until_progress(namespace, name)
        final = wait_for_run_end(namespace, name, 1, timeout=240)
        time.sleep(2)
    made = recorder.jobs_made()
    record(
        DrillResult(
            drill,
            runs=1,
            disruptions=1,
            jobs_made=sum(made.values()),
            jobs_expected=len(manifest["spec"]["works"]),
            recover_seconds=[recovery],
            seconds=time.monotonic() - started,
        )
    )
    assert final["phase"] == "Succeeded", final
    check_each_job_made_once(dict(made), manifest, name)
    return final


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_process_killed_and_started_again_mid_flow(
    component: str, namespace: str, operator: OperatorProcess
) -> None:
    final = flow_through(
        namespace,
        f"under-{component}",
        f"{component} SIGKILLed mid-flow, started again 5 s later",
        lambda: killed_and_restarted(component, down_for=5),
    )
    assert all(entry["attempts"] == 1 for entry in final["works"]), final["works"]
    assert operator.process is not None and operator.process.poll() is None, "the operator exited"


def test_the_api_server_stopped_past_the_watch_timeout_mid_flow(
    namespace: str, operator: OperatorProcess
) -> None:
    stall = WATCH_TIMEOUT_SECONDS + WATCH_CLIENT_MARGIN + 5
    assert operator.process is not None
    operator_pid = operator.process.pid

    def stalled() -> float:
        with paused("kube-apiserver"):
            time.sleep(stall)
        return 0.0

    flow_through(
        namespace,
        "stalled",
        f"kube-apiserver stopped (SIGSTOP) for {stall} s, past the watch timeout",
        stalled,
    )
    assert operator.process is not None and operator.process.pid == operator_pid, "the operator restarted"
    assert operator.process.poll() is None, "the operator exited"
