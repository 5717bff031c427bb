"""When a flow's status may be patched (big flows space their patches, final phases never wait),
and when a pass skips the wait that gathers a burst of events."""

from __future__ import annotations

import pytest

from dagflow.api.models import FlowPhase
from dagflow.controller.reconciler import newer_or_same, skips_gathering, status_hold


def test_the_first_patch_of_a_flow_never_waits() -> None:
    assert status_hold(None, now=100.0, spacing=5.0, phase=FlowPhase.RUNNING) == 0.0


def test_a_running_flow_waits_out_the_rest_of_its_spacing() -> None:
    assert status_hold(98.0, now=100.0, spacing=5.0, phase=FlowPhase.RUNNING) == pytest.approx(3.0)
    assert status_hold(90.0, now=100.0, spacing=5.0, phase=FlowPhase.RUNNING) == 0.0


@pytest.mark.parametrize("phase", [FlowPhase.SUCCEEDED, FlowPhase.FAILED, FlowPhase.SERVING])
def test_a_final_phase_is_patched_at_once(phase: FlowPhase) -> None:
    assert status_hold(99.9, now=100.0, spacing=5.0, phase=phase) == 0.0


def test_resource_versions_compare_as_numbers() -> None:
    assert newer_or_same("100", "99")
    assert newer_or_same("100", "100")
    assert not newer_or_same("99", "100")
    # Not numbers: taken as new rather than dropping an event.
    assert newer_or_same("abc", "100")
    assert newer_or_same(None, "100")


def test_a_pod_success_is_acted_on_at_once_when_the_flow_had_no_such_pass_lately() -> None:
    assert skips_gathering(None, now=100.0, delay=0.01)
    assert skips_gathering(99.0, now=100.0, delay=0.01)
    assert skips_gathering(99.99, now=100.0, delay=0.01)


def test_a_burst_of_pod_successes_is_gathered_after_the_first() -> None:
    assert not skips_gathering(99.995, now=100.0, delay=0.01)
    # A big flow gathers longer, so at once comes more rarely.
    assert not skips_gathering(99.95, now=100.0, delay=0.1)
