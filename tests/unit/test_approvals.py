"""Approval gates: a gate waits once its dependencies allow it, a decision is taken in only for its
run and once, who decided comes from the admission's stamp, and the approver's parameter values
reach the works after the gate and no other."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from dagflow.api.models import DAGFlowSpec
from dagflow.controller.planner import plan_run
from dagflow.controller.rundecisions import UNFINISHED
from dagflow.rules.approvals import (
    ApprovalRequest,
    RunParams,
    Unreadable,
    approval_annotation,
    approval_requests,
    approver_annotation,
    take_in,
)
from dagflow.rules.times import timestamp
from dagflow.rules.validation import topological_order, validate_flow
from tests.unit.test_planner import FLOW, NOW, job_obs, phases, previous_of, started, state, work
from tests.unit.test_rundecisions import TICK, decide, status_of

LATER = "2024-05-01T10:30:00Z"
GATE = {"message": "Promote the best model?", "timeoutSeconds": 3600, "params": ["version"]}


def gated(**gate: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate(
        {
            "params": [{"name": "version", "default": "none"}, {"name": "lr", "default": "0.1"}],
            "works": [
                work("evaluate"),
                work("promote", "evaluate", approval={**GATE, **gate}),
                work("serve", "promote"),
                work("side", "evaluate"),
            ],
            "finally": [work("report")],
        }
    )


def planned(spec: DAGFlowSpec, previous: dict[str, Any], now: str = NOW, **jobs: str | None) -> Any:
    return plan_run(
        FLOW,
        spec,
        topological_order(spec),
        1,
        {name: job_obs(name, outcome) for name, outcome in jobs.items()},
        {},
        previous,
        now,
    )


def request(decision: str = "Approved", run: int = 1, token: str = "t1", **extra: Any) -> str:
    return json.dumps({"run": run, "decision": decision, "token": token, **extra})


def annotations(value: str, by: str | None = "alice") -> dict[str, str]:
    found = {approval_annotation("promote"): value}
    if by is not None:
        found[approver_annotation("promote")] = by
    return found


def waiting_previous() -> dict[str, Any]:
    spec = gated()
    first = planned(spec, {}, evaluate="Succeeded")
    return previous_of(first)


def test_a_gate_waits_once_its_dependencies_allow_it_and_starts_nothing() -> None:
    spec = gated()
    result = planned(spec, {}, evaluate="Succeeded")
    gate = state(result, "promote")
    assert (gate.phase.value, gate.reason, gate.message) == ("Waiting", "ApprovalRequired", GATE["message"])
    assert gate.approval == {"requestedAt": NOW}
    assert "promote" not in started(result) and "side" in started(result)
    assert (result.phase.value, result.message) == ("Running", "waiting for approval: promote")
    # The run is unfinished while it waits: a stop stops it.
    assert gate.phase in UNFINISHED


def test_approved_the_gate_runs_and_keeps_who_approved_it() -> None:
    spec = gated()
    previous = waiting_previous()
    taken, refused = take_in(
        spec, 1, previous, approval_requests(annotations(request(params={"version": "v7"}))), LATER
    )
    assert refused == [] and [entry.by for entry in taken] == ["alice"]
    result = planned(spec, previous, LATER, evaluate="Succeeded", side=None)
    assert started(result) == ["promote"]
    assert state(result, "promote").approval == {
        "requestedAt": NOW,
        "decision": "Approved",
        "by": "alice",
        "decidedAt": LATER,
        "token": "t1",
        "params": {"version": "v7"},
    }


def test_rejected_the_gate_fails_and_the_works_after_it_are_skipped() -> None:
    spec = gated()
    previous = waiting_previous()
    take_in(
        spec, 1, previous, approval_requests(annotations(request("Rejected", message="score too low"))), LATER
    )
    result = planned(spec, previous, LATER, evaluate="Succeeded", side="Succeeded")
    gate = state(result, "promote")
    assert (gate.phase.value, gate.reason, gate.message) == (
        "Failed",
        "Rejected",
        "rejected by alice: score too low",
    )
    assert phases(result)["serve"] == "Skipped"
    assert result.phase.value in ("Running", "Failed")


def test_a_gate_nobody_decides_on_fails_when_its_time_is_up() -> None:
    spec = gated(timeoutSeconds=60)
    previous = waiting_previous()
    still = planned(spec, previous, "2024-05-01T10:00:59Z", evaluate="Succeeded")
    assert state(still, "promote").phase.value == "Waiting"
    late = planned(spec, previous, "2024-05-01T10:01:00Z", evaluate="Succeeded")
    gate = state(late, "promote")
    assert (gate.phase.value, gate.reason) == ("Failed", "ApprovalTimedOut")


def test_a_request_counts_only_for_its_run_once_and_with_a_stamped_approver() -> None:
    spec = gated()
    for value, by in ((request(run=2), "alice"), (request(), None)):
        previous = waiting_previous()
        taken, _ = take_in(spec, 1, previous, approval_requests(annotations(value, by)), LATER)
        assert taken == [] and "decision" not in previous["promote"]["approval"]
    previous = waiting_previous()
    take_in(spec, 1, previous, approval_requests(annotations(request("Rejected"))), LATER)
    # The same token again, or a new one once decided: nothing changes.
    again, _ = take_in(spec, 1, previous, approval_requests(annotations(request(token="t2"))), LATER)
    assert again == [] and previous["promote"]["approval"]["decision"] == "Rejected"


def test_a_request_that_cannot_be_taken_in_says_why() -> None:
    spec = gated()
    cases = {
        "not json": "it is not JSON",
        request(params={"lr": "1"}): "the gate sets no parameter 'lr' (it sets: version)",
        request(decision="Maybe"): "its decision must be Approved or Rejected",
        json.dumps({"run": 1, "decision": "Approved"}): "its token must be a non-empty string",
    }
    for value, why in cases.items():
        previous = waiting_previous()
        taken, refused = take_in(spec, 1, previous, approval_requests(annotations(value)), LATER)
        assert taken == [] and len(refused) == 1 and why in refused[0].why, refused
    previous = waiting_previous()
    _, [unstamped] = take_in(spec, 1, previous, approval_requests(annotations(request(), by=None)), LATER)
    assert isinstance(unstamped, Unreadable) and "approved-by.dagflow.dev/promote" in unstamped.why


def test_the_approvers_values_reach_the_gate_the_works_after_it_and_the_finally_works_only() -> None:
    spec = gated()
    works = [
        {"name": "promote", "approval": {"decision": "Approved", "params": {"version": "v7"}}},
        {"name": "evaluate"},
    ]
    params = RunParams.of_run(spec, {"version": "none", "lr": "0.1"}, works)
    assert params.of("promote")["version"] == "v7"
    assert params.of("serve") == {"version": "v7", "lr": "0.1"}
    assert params.of("report")["version"] == "v7"
    assert params.of("side")["version"] == "none" and params.of("evaluate")["version"] == "none"


def test_the_validator_keeps_gates_to_what_they_can_be() -> None:
    spec = {
        "params": [{"name": "version", "default": "none"}],
        "works": [
            work("a", approval={"params": ["version", "missing"]}),
            work("b", approval={"params": ["version"]}, cache={"enabled": True}),
        ],
        "finally": [work("report", approval={})],
    }
    problems = [f"{problem.path}: {problem.message}" for problem in validate_flow(spec)]
    assert problems == [
        "spec.finally[0].approval: finally work 'report': a finally work runs once the run has ended: "
        "no one can be asked to approve it",
        "spec.works[0].approval.params[1]: work 'a': 'missing' is not a parameter of the flow (spec.params)",
        "spec.works[1].approval.params[0]: work 'b': parameter 'version' is set at gate 'a' already; "
        "a parameter is set at one gate at most",
        "spec.works[1].cache.enabled: work 'b': a gate waits for a decision in every run, so it is never "
        "cached",
    ]


def test_a_request_is_read_as_the_cli_writes_it() -> None:
    [(work_name, read)] = approval_requests(
        annotations(request(params={"version": "v7"}, message="ok"), by="system:serviceaccount:ml:bot")
    ).items()
    assert work_name == "promote" and isinstance(read, ApprovalRequest)
    assert (read.run, read.decision.value, read.token, read.by, dict(read.params), read.message) == (
        1,
        "Approved",
        "t1",
        "system:serviceaccount:ml:bot",
        {"version": "v7"},
        "ok",
    )


def test_a_rejection_stays_told_on_the_passes_after_it() -> None:
    spec = gated()
    previous = waiting_previous()
    take_in(spec, 1, previous, approval_requests(annotations(request("Rejected"))), LATER)
    rejected = planned(spec, previous, LATER, evaluate="Succeeded")
    again = planned(spec, previous_of(rejected), "2024-05-01T11:00:00Z", evaluate="Succeeded")
    gate = state(again, "promote")
    assert (gate.phase.value, gate.reason, gate.approval["by"]) == ("Failed", "Rejected", "alice")


def test_a_scheduled_run_whose_gate_waits_is_active_forbid_skips_the_tick_and_replace_replaces_it() -> None:
    waiting = planned(gated(), {}, evaluate="Succeeded", side="Succeeded")
    assert waiting.phase.value == "Running"
    raw = {
        "params": [{"name": "version", "default": "none"}],
        "works": [work("evaluate"), work("promote", "evaluate", approval=GATE)],
        "schedule": "@hourly",
    }
    for policy, skipped in (("Forbid", True), ("Replace", False)):
        flow_spec = {**raw, "concurrencyPolicy": policy}
        status = status_of(
            flow_spec,
            run=2,
            phase=waiting.phase.value,
            works={"evaluate": "Succeeded", "promote": "Waiting"},
            nextScheduleTime=timestamp(TICK),
        )
        decision = decide(flow_spec, status, now=TICK + timedelta(seconds=1))
        if skipped:
            assert decision.new_run is None and decision.notices[0].reason == "ScheduleSkipped"
        else:
            assert decision.new_run is not None and decision.new_run.replaces == 2


def test_a_gate_is_never_cached_even_when_the_flow_caches_every_work() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "cache": {"enabled": True},
            "works": [work("evaluate"), work("promote", "evaluate", approval={"message": "go?"})],
        }
    )
    assert [spec.caches(entry) for entry in spec.works] == [True, False]


def test_without_the_admission_policies_no_request_is_taken_in() -> None:
    spec = gated()
    previous = waiting_previous()
    taken, [refused] = take_in(
        spec, 1, previous, approval_requests(annotations(request())), LATER, stamps_trusted=False
    )
    assert taken == [] and "decision" not in previous["promote"]["approval"]
    assert "DAGFLOW_APPROVAL_POLICY" in refused.why


def test_a_rejected_serve_gate_keeps_its_reason_and_many_waiting_gates_are_told_in_short() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                work("evaluate"),
                work("serve", "evaluate", serve={"port": 8080}, approval={"message": "go live?"}),
                *(work(f"gate-{index}", "evaluate", approval={}) for index in range(7)),
            ]
        }
    )
    first = planned(spec, {}, evaluate="Succeeded")
    assert first.message == "waiting for approval: serve, gate-0, gate-1, gate-2, gate-3 and 3 more"
    previous = previous_of(first)
    take_in(
        spec,
        1,
        previous,
        approval_requests(
            {approval_annotation("serve"): request("Rejected"), approver_annotation("serve"): "alice"}
        ),
        LATER,
    )
    rejected = planned(spec, previous, LATER, evaluate="Succeeded")
    later = planned(spec, previous_of(rejected), "2024-05-01T11:00:00Z", evaluate="Succeeded")
    gate = state(later, "serve")
    assert (gate.phase.value, gate.reason, gate.finished_at) == ("Failed", "Rejected", LATER)


def test_a_gate_waits_and_may_be_decided_while_its_flow_is_suspended() -> None:
    spec = gated()
    suspended = plan_run(
        FLOW,
        spec,
        topological_order(spec),
        1,
        {"evaluate": job_obs("evaluate", "Succeeded")},
        {},
        {},
        NOW,
        hold=True,
    )
    assert state(suspended, "promote").phase.value == "Waiting"
    previous = previous_of(suspended)
    take_in(spec, 1, previous, approval_requests(annotations(request())), LATER)
    still = plan_run(
        FLOW,
        spec,
        topological_order(spec),
        1,
        {"evaluate": job_obs("evaluate", "Succeeded")},
        {},
        previous,
        LATER,
        hold=True,
    )
    assert (
        "promote" not in started(still)
        and state(still, "promote").message == "suspended: starts once spec.suspend is false"
    )


def test_under_failfast_a_gate_rejected_in_a_pass_skips_the_gates_that_began_to_wait_in_it() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                work("evaluate"),
                work("first", "evaluate", approval={"message": "a?"}),
                work("second", "evaluate", approval={"message": "b?", "timeoutSeconds": 60}),
            ]
        }
    )
    previous = previous_of(planned(spec, {}, evaluate="Succeeded"))
    # Only the first gate began to wait; the second times out in the pass that makes the first wait.
    previous.pop("first")
    late = planned(spec, previous, "2024-05-01T10:01:00Z", evaluate="Succeeded")
    assert phases(late)["second"] == "Failed" and phases(late)["first"] == "Skipped"
    assert late.phase.value == "Failed"


def test_the_approvers_values_reach_the_end_of_a_chain_of_two_thousand_works() -> None:
    chain = [work("w0", approval={"params": ["version"]})]
    chain += [work(f"w{index}", f"w{index - 1}") for index in range(1, 2000)]
    spec = DAGFlowSpec.model_validate({"params": [{"name": "version", "default": "none"}], "works": chain})
    works = [{"name": "w0", "approval": {"decision": "Approved", "params": {"version": "v7"}}}]
    params = RunParams.of_run(spec, {"version": "none"}, works)
    assert params.of("w1999")["version"] == "v7"
