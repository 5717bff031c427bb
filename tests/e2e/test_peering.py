"""Two operators never both act: on one cluster, the one that started first works, the other stands by
(kopf peering, on by default) and takes over when the first one stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import delete_webhook_configurations
from tests.e2e.flows import create, flow, jobs_per_run_and_work, wait_for_phase, work
from tests.kube import get_json, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

STANDING_BY = "Standing by: "
RESUMED = "Resuming operations after the pause"


def fan_out(name: str) -> dict[str, object]:
    return flow(
        name, [work("a", duration="1s"), *[work(f"b{index}", "a") for index in range(4)], work("c", "b0")]
    )


def transitions(namespace: str, flow_name: str) -> dict[tuple[str, str], int]:
    """How often each (reason, message) Event was posted on the flow (duplicates counted)."""
    items = get_json("events", "--field-selector", f"involvedObject.name={flow_name}", namespace=namespace)[
        "items"
    ]
    counted: dict[tuple[str, str], int] = {}
    for event in items:
        key = (event["reason"], event["message"])
        counted[key] = counted.get(key, 0) + int(event.get("count") or 1)
    return counted


def created_jobs(operator: OperatorProcess, namespace: str) -> list[str]:
    return [
        line for line in operator.log_path.read_text().splitlines() if f"Created Job {namespace}/" in line
    ]


@pytest.mark.usefixtures("without_shared_operator")
def test_a_second_operator_stands_by_and_takes_over_when_the_first_stops(
    namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    # Default settings: peering is on, through the ClusterKopfPeering `dagflow` the operator creates.
    first = OperatorProcess(tmp_path / "first")
    second = OperatorProcess(tmp_path / "second")
    first.start()
    try:
        second.start()
        create(fan_out("shared"), namespace)
        final = wait_for_phase(namespace, "shared", timeout=120)
        assert final["phase"] == "Succeeded", final
        assert set(jobs_per_run_and_work(namespace).values()) == {1}
        assert len(created_jobs(first, namespace)) == 6
        assert created_jobs(second, namespace) == []
        events = transitions(namespace, "shared")
        assert events and set(events.values()) == {1}, f"Events posted more than once: {events}"
        standing_by = [line for line in second.log_path.read_text().splitlines() if STANDING_BY in line]
        assert standing_by and first.identity in standing_by[0], f"see {second.log_path}"

        # The first one stops cleanly: the second takes over at once, without waiting for a lifetime.
        first.stop()
        wait_for(
            lambda: RESUMED in second.log_path.read_text(), timeout=30, what="the second operator to resume"
        )
        create(fan_out("after"), namespace)
        final = wait_for_phase(namespace, "after", timeout=120)
        assert final["phase"] == "Succeeded", final
        assert len(created_jobs(second, namespace)) == 6
        assert set(transitions(namespace, "after").values()) == {1}
    finally:
        second.stop()
        first.stop()
    delete_webhook_configurations()


@pytest.mark.usefixtures("without_shared_operator")
def test_an_operator_killed_and_started_again_takes_over_its_own_record_at_once(
    namespace: str, tmp_path: Path
) -> None:
    """As a restarted container keeps its pod's name (POD_ID), a restarted operator keeps its
    identity among peers: its stale keep-alive does not hold it back."""
    operator = OperatorProcess(tmp_path)
    operator.start()
    try:
        operator.kill()
        operator.start()
        create(fan_out("quick"), namespace)
        final = wait_for_phase(namespace, "quick", timeout=30)
        assert final["phase"] == "Succeeded", final
        assert STANDING_BY not in operator.log_path.read_text()
    finally:
        operator.stop()
    delete_webhook_configurations()
