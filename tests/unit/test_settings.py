"""Operator settings that decide how operators share a cluster and how they stop."""

from __future__ import annotations

import kopf
import pytest
from pydantic import ValidationError

from dagflow.controller import main
from dagflow.controller.peering import own_identity, start_priority
from dagflow.controller.settings import OperatorSettings


def test_peering_is_on_by_default_and_an_empty_name_runs_standalone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGFLOW_PEERING", raising=False)
    assert OperatorSettings().peering == "dagflow"
    monkeypatch.setenv("DAGFLOW_PEERING", "")
    assert OperatorSettings().peering is None
    monkeypatch.setenv("DAGFLOW_PEERING", "team-a")
    assert OperatorSettings().peering == "team-a"


def test_an_operator_started_earlier_has_the_higher_priority() -> None:
    first, second = start_priority(now=1_800_000_000.000), start_priority(now=1_800_000_000.001)
    assert first > second > 0
    assert start_priority(now=1_800_000_000.0) < 2**53  # exact in any JSON reader


def test_identity_is_the_pod_name_when_given_else_new_at_every_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "dagflow-operator-7d9f-abcde")
    assert own_identity() == "dagflow-operator-7d9f-abcde"
    monkeypatch.delenv("POD_ID")
    assert own_identity() != own_identity()


class StalledReconciler:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def stalled_seconds(self) -> float:
        return self.seconds


def test_liveness_fails_once_the_reconcile_loop_stalls_longer_than_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(main.state, "settings", OperatorSettings(liveness_stall_seconds=60))
    monkeypatch.setitem(main.state, "reconciler", StalledReconciler(59))
    assert main.reconcile_progress() == 59
    monkeypatch.setitem(main.state, "reconciler", StalledReconciler(61))
    with pytest.raises(kopf.PermanentError, match="no reconcile pass finished for 61s"):
        main.reconcile_progress()


def test_crds_holds_the_charts_copy_of_kopfs_peering_crds() -> None:
    from tests.kube import REPO_ROOT

    generated = (REPO_ROOT / "crds" / "kopf.dev_peerings.yaml").read_text()
    chart = (REPO_ROOT / "charts" / "dagflow-operator" / "crds" / "kopf.dev_peerings.yaml").read_text()
    assert generated == chart, "crds/kopf.dev_peerings.yaml differs from the chart's: run `make crds`"


def test_the_watch_timeout_is_whole_seconds_as_the_api_server_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAGFLOW_WATCH_TIMEOUT_SECONDS", "10")
    assert OperatorSettings().watch_timeout_seconds == 10
    # The API server refuses a watch whose timeoutSeconds is not an integer ("10.5"): refused here
    # instead, when the operator starts.
    monkeypatch.setenv("DAGFLOW_WATCH_TIMEOUT_SECONDS", "10.5")
    with pytest.raises(ValidationError, match="watch_timeout_seconds"):
        OperatorSettings()
