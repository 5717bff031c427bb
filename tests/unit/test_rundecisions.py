"""When a run starts and why: the flow's first run, spec changes, run requests, the schedule, stop
and suspend, and that a decision once recorded in the status never starts a second run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dagflow.api.models import (
    DAGFlowSpec,
    FlowPhase,
    HandledRequests,
    RunTrigger,
    WorkPhase,
    WorkStatus,
)
from dagflow.controller.rundecisions import (
    RunAction,
    RunDecision,
    carried_job_names,
    decide_run,
    plan_retry,
    recorded_token,
    requested_tokens,
    run_fingerprint,
    run_is_active,
    stopped_works,
)

NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)
WORKS = ["process", "train-a", "train-b", "serve"]


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


def classic(**fields: Any) -> dict[str, Any]:
    """process -> train-a, train-b -> serve."""
    return {
        "works": [
            work("process"),
            work("train-a", "process"),
            work("train-b", "process"),
            work("serve", "train-a", "train-b", serve={"port": 8080}),
        ],
        **fields,
    }


def model(raw: dict[str, Any]) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate(raw)


def timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(
    raw_spec: dict[str, Any],
    run: int = 1,
    phase: str = "Running",
    works: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A status as the operator writes it, for run `run` of `raw_spec`."""
    status: dict[str, Any] = {
        "run": run,
        "phase": phase,
        "observedGeneration": 1,
        "runSpecHash": run_fingerprint(model(raw_spec)),
        "works": [
            {"name": name, "phase": work_phase, "job": f"f-{run}-{name}"}
            for name, work_phase in (works or {}).items()
        ],
    }
    status.update(fields)
    return status


def decide(
    raw_spec: dict[str, Any],
    status: dict[str, Any],
    annotations: dict[str, str] | None = None,
    now: datetime = NOW,
    generation: int = 1,
    newest_child_run: int = 0,
) -> RunDecision:
    return decide_run(
        model(raw_spec),
        status,
        annotations or {},
        now,
        generation=generation,
        newest_child_run=newest_child_run,
    )


def record(decision: RunDecision, status: dict[str, Any], raw_spec: dict[str, Any]) -> dict[str, Any]:
    """The status after the reconciler wrote down a decision (and before any child moved)."""
    updated = dict(status)
    updated["handledRequests"] = decision.handled.to_dict()
    for key, value in (
        ("lastScheduleTime", decision.last_schedule_time),
        ("nextScheduleTime", decision.next_schedule_time),
    ):
        if value is None:
            updated.pop(key, None)
        else:
            updated[key] = timestamp(value)
    if decision.new_run is not None:
        updated.update(run=decision.run, phase="Pending", runSpecHash=decision.new_run.spec_hash)
        updated["works"] = [carried.to_dict() for carried in decision.new_run.carried] + [
            {"name": name, "phase": "Pending"} for name in decision.new_run.works
        ]
    elif decision.action == RunAction.STOP:
        updated["phase"] = "Stopped"
    return updated


ALL_DONE = {"process": "Succeeded", "train-a": "Succeeded", "train-b": "Succeeded", "serve": "Serving"}
TRAIN_A_FAILED = {"process": "Succeeded", "train-a": "Failed", "train-b": "Succeeded", "serve": "Skipped"}


# -- the first run and spec changes -------------------------------------------------------------


def test_the_first_pass_starts_run_1_of_every_work() -> None:
    decision = decide(classic(), {})
    assert decision.action == RunAction.START and decision.run == 1
    assert decision.new_run is not None
    assert decision.new_run.trigger == RunTrigger.CREATED
    assert decision.new_run.works == tuple(WORKS)
    assert decision.new_run.spec_hash == run_fingerprint(model(classic()))
    assert decision.new_run.replaces is None and decision.new_run.carried == ()


def test_requests_the_flow_was_created_with_are_answered_by_its_first_run() -> None:
    annotations = {"dagflow.dev/rerun": "1", "dagflow.dev/retry": "2", "dagflow.dev/stop": "3"}
    first = decide(classic(), {}, annotations)
    assert first.handled == HandledRequests(rerun="1", retry="2", stop="3")
    assert decide(classic(), record(first, {}, classic()), annotations).action == RunAction.CONTINUE


def test_a_run_goes_on_while_what_runs_is_unchanged() -> None:
    decision = decide(classic(), status_of(classic(), run=3))
    assert (decision.action, decision.run, decision.new_run) == (RunAction.CONTINUE, 3, None)


@pytest.mark.parametrize(
    "change",
    [
        {"schedule": "@daily"},
        {"timeZone": "Europe/Berlin"},
        {"concurrencyPolicy": "Replace"},
        {"startingDeadlineSeconds": 60},
        {"suspend": True},
        {"historyRuns": 7},
    ],
)
def test_run_control_changes_start_no_run(change: dict[str, Any]) -> None:
    decision = decide(classic(**change), status_of(classic(), run=2, phase="Succeeded"), generation=5)
    assert decision.action == RunAction.CONTINUE


@pytest.mark.parametrize(
    "change",
    [
        {"failurePolicy": "Continue"},
        {"parallelism": 2},
        {"podDefaults": {"labels": {"team": "ml"}}},
        {"params": [{"name": "lr", "default": "0.1"}]},
    ],
)
def test_changes_to_what_runs_start_a_run(change: dict[str, Any]) -> None:
    decision = decide(classic(**change), status_of(classic(), run=2, phase="Succeeded"), generation=2)
    assert decision.action == RunAction.START and decision.run == 3
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.SPEC_CHANGE


def test_a_change_to_a_work_starts_a_run_that_ends_the_active_one() -> None:
    changed = classic()
    changed["works"][1]["container"] = {"image": "example/ml:2.0"}
    decision = decide(changed, status_of(classic(), run=2, phase="Running"))
    assert decision.new_run is not None
    assert (decision.new_run.trigger, decision.new_run.replaces) == (RunTrigger.SPEC_CHANGE, 2)


def test_the_fingerprint_ignores_spelled_out_defaults() -> None:
    plain = model(classic())
    spelled = classic(failurePolicy="FailFast", parallelism=0, podDefaults={})
    spelled["works"][0].update(when="AllSucceeded", gpu=0, retries=0, labels={})
    spelled["works"][3]["serve"] = {"replicas": 1, "port": 8080}
    assert run_fingerprint(model(spelled)) == run_fingerprint(plain)
    assert len(run_fingerprint(plain)) == 16


@settings(max_examples=50, deadline=None)
@given(
    schedule=st.sampled_from([None, "@hourly", "0 3 * * *"]),
    time_zone=st.sampled_from(["UTC", "Europe/Berlin"]),
    policy=st.sampled_from(["Forbid", "Replace"]),
    deadline=st.one_of(st.none(), st.integers(1, 10_000)),
    suspend=st.booleans(),
    history=st.one_of(st.none(), st.integers(1, 100)),
)
def test_no_run_control_setting_moves_the_fingerprint(
    schedule: str | None,
    time_zone: str,
    policy: str,
    deadline: int | None,
    suspend: bool,
    history: int | None,
) -> None:
    control: dict[str, Any] = {"timeZone": time_zone, "concurrencyPolicy": policy, "suspend": suspend}
    control.update(
        {
            key: value
            for key, value in [
                ("schedule", schedule),
                ("startingDeadlineSeconds", deadline),
                ("historyRuns", history),
            ]
            if value is not None
        }
    )
    assert run_fingerprint(model(classic(**control))) == run_fingerprint(model(classic()))


@pytest.mark.parametrize(
    "change",
    [
        {"gpu": 1},
        {"retries": 2},
        {"timeoutSeconds": 60},
        {"when": "AllDone"},
        {"labels": {"a": "b"}},
        {"annotations": {"a": "b"}},
        {"nodeSelector": {"pool": "gpu"}},
        {"serviceAccountName": "trainer"},
        {"volumes": [{"name": "data", "emptyDir": {}}]},
        {"container": {"image": "example/ml:1.0", "args": ["--fast"]}},
    ],
)
def test_every_change_to_a_work_moves_the_fingerprint(change: dict[str, Any]) -> None:
    changed = classic()
    changed["works"][1].update(change)
    assert run_fingerprint(model(changed)) != run_fingerprint(model(classic()))


def test_the_order_of_the_works_is_part_of_what_runs() -> None:
    # It decides which work starts first when parallelism leaves room for one.
    reordered = classic()
    reordered["works"][1], reordered["works"][2] = reordered["works"][2], reordered["works"][1]
    assert run_fingerprint(model(reordered)) != run_fingerprint(model(classic()))


def test_a_status_from_before_fingerprints_goes_on_for_the_generation_it_observed() -> None:
    legacy = status_of(classic(), run=4)
    del legacy["runSpecHash"]
    legacy["observedGeneration"] = 6
    assert decide(classic(), legacy, generation=6).action == RunAction.CONTINUE
    newer = decide(classic(), legacy, generation=7)
    assert newer.new_run is not None and newer.new_run.trigger == RunTrigger.SPEC_CHANGE


def test_a_fingerprint_kept_by_the_caller_is_used_as_given() -> None:
    status = status_of(classic(), run=2)
    kept = run_fingerprint(model(classic()))
    assert (
        decide_run(model(classic()), status, {}, NOW, generation=1, spec_hash=kept).action
        == RunAction.CONTINUE
    )
    other = decide_run(model(classic()), status, {}, NOW, generation=1, spec_hash="0" * 16)
    assert other.new_run is not None and other.new_run.spec_hash == "0" * 16


def test_a_new_run_takes_a_number_no_child_has() -> None:
    decision = decide(classic(parallelism=1), status_of(classic(), run=2), newest_child_run=3)
    assert decision.run == 4


# -- rerun, retry, stop ------------------------------------------------------------------------


def test_a_rerun_starts_one_run_however_often_it_is_applied() -> None:
    status = status_of(classic(), run=2, phase="Serving", works=ALL_DONE)
    annotations = {"dagflow.dev/rerun": "1735787045"}
    decision = decide(classic(), status, annotations)
    assert decision.new_run is not None
    assert (decision.new_run.trigger, decision.run, decision.new_run.works) == (
        RunTrigger.RERUN,
        3,
        tuple(WORKS),
    )
    assert decision.handled.rerun == "1735787045"
    recorded = record(decision, status, classic())
    assert decide(classic(), recorded, annotations).action == RunAction.CONTINUE
    assert decide(classic(), recorded, {"dagflow.dev/rerun": "1735787999"}).run == 4


def test_a_rerun_of_an_active_run_ends_it() -> None:
    decision = decide(classic(), status_of(classic(), run=2, phase="Running"), {"dagflow.dev/rerun": "x"})
    assert decision.new_run is not None and decision.new_run.replaces == 2


def test_an_empty_annotation_is_no_request() -> None:
    assert requested_tokens({"dagflow.dev/rerun": " ", "dagflow.dev/stop": ""}) == {}


def test_very_long_tokens_are_kept_by_their_hash() -> None:
    assert recorded_token("1735787045") == "1735787045"
    long = recorded_token("x" * 500)
    assert long.startswith("sha256:") and len(long) == 23 and long == recorded_token("x" * 500)


def test_a_retry_reruns_the_failed_work_and_its_skipped_dependents_and_carries_the_rest() -> None:
    status = status_of(classic(), run=2, phase="Failed", works=TRAIN_A_FAILED)
    decision = decide(classic(), status, {"dagflow.dev/retry": "t1"})
    assert decision.new_run is not None
    assert decision.new_run.trigger == RunTrigger.RETRY
    assert decision.new_run.works == ("train-a", "serve")
    assert [(w.name, w.phase, w.carried_from_run, w.job) for w in decision.new_run.carried] == [
        ("process", WorkPhase.SUCCEEDED, 2, "f-2-process"),
        ("train-b", WorkPhase.SUCCEEDED, 2, "f-2-train-b"),
    ]
    assert decision.handled.retry == "t1"
    recorded = record(decision, status, classic())
    assert decide(classic(), recorded, {"dagflow.dev/retry": "t1"}).action == RunAction.CONTINUE


def test_a_retry_of_a_retry_keeps_the_run_each_outcome_came_from() -> None:
    works = [
        WorkStatus(name="process", phase=WorkPhase.SUCCEEDED, job="f-2-process", carried_from_run=2),
        WorkStatus(name="train-a", phase=WorkPhase.SUCCEEDED, job="f-3-train-a"),
        WorkStatus(name="train-b", phase=WorkPhase.FAILED, job="f-3-train-b"),
        WorkStatus(name="serve", phase=WorkPhase.SKIPPED),
    ]
    plan = plan_retry(model(classic()), works, run=3)
    assert plan.rerun == ("train-b", "serve")
    assert [(w.name, w.carried_from_run) for w in plan.carried] == [("process", 2), ("train-a", 3)]
    assert carried_job_names(plan.carried) == {"f-2-process", "f-3-train-a"}


def test_a_retry_reruns_what_depends_on_a_rerun_work_even_if_it_succeeded() -> None:
    raw = {"works": [work("train"), work("report", "train", when="AllDone"), work("other")]}
    works = [
        WorkStatus(name="train", phase=WorkPhase.FAILED),
        WorkStatus(name="report", phase=WorkPhase.SUCCEEDED),
        WorkStatus(name="other", phase=WorkPhase.SUCCEEDED),
    ]
    assert plan_retry(model(raw), works, run=1).rerun == ("train", "report")


def test_a_retry_reruns_stopped_and_unfinished_works() -> None:
    works = [
        WorkStatus(name="process", phase=WorkPhase.SUCCEEDED),
        WorkStatus(name="train-a", phase=WorkPhase.STOPPED),
        WorkStatus(name="train-b", phase=WorkPhase.SUCCEEDED),
    ]  # serve has no entry at all
    assert plan_retry(model(classic()), works, run=5).rerun == ("train-a", "serve")


def test_a_retry_of_an_active_run_waits_for_it_to_end() -> None:
    status = status_of(classic(), run=2, phase="Running", works={**TRAIN_A_FAILED, "train-b": "Running"})
    decision = decide(classic(), status, {"dagflow.dev/retry": "t1"})
    assert decision.action == RunAction.CONTINUE
    assert decision.waiting == ("retry request 't1' waits for run 2 to end",)
    assert decision.handled.retry is None
    ended = {**status, "phase": "Failed", "works": status_of(classic(), 2, works=TRAIN_A_FAILED)["works"]}
    assert decide(classic(), ended, {"dagflow.dev/retry": "t1"}).action == RunAction.START


def test_a_retry_with_nothing_to_retry_is_dropped_saying_so() -> None:
    status = status_of(classic(), run=2, phase="Serving", works=ALL_DONE)
    decision = decide(classic(), status, {"dagflow.dev/retry": "t1"})
    assert decision.action == RunAction.CONTINUE and decision.handled.retry == "t1"
    (notice,) = decision.notices
    assert notice.reason == "RetryIgnored" and "every work of run 2 succeeded or serves" in notice.message


def test_a_stop_stops_an_active_run_once() -> None:
    status = status_of(classic(), run=2, phase="Running")
    decision = decide(classic(), status, {"dagflow.dev/stop": "s1"})
    assert (decision.action, decision.run, decision.handled.stop) == (RunAction.STOP, 2, "s1")
    recorded = record(decision, status, classic())
    assert decide(classic(), recorded, {"dagflow.dev/stop": "s1"}).action == RunAction.CONTINUE


def test_a_stop_of_a_finished_run_is_dropped_saying_so() -> None:
    decision = decide(classic(), status_of(classic(), run=2, phase="Serving"), {"dagflow.dev/stop": "s1"})
    assert decision.action == RunAction.CONTINUE and decision.handled.stop == "s1"
    assert [notice.reason for notice in decision.notices] == ["StopIgnored"]


def test_a_stop_comes_first_and_the_other_requests_follow_in_the_next_pass() -> None:
    annotations = {"dagflow.dev/stop": "s1", "dagflow.dev/rerun": "r1"}
    status = status_of(classic(), run=2, phase="Running")
    stop = decide(classic(), status, annotations)
    assert stop.action == RunAction.STOP and stop.handled.rerun is None
    rerun = decide(classic(), record(stop, status, classic()), annotations)
    assert rerun.new_run is not None and rerun.new_run.trigger == RunTrigger.RERUN
    assert rerun.new_run.replaces is None  # the stopped run is no longer active


def test_one_run_answers_a_spec_change_a_rerun_and_a_retry_at_once() -> None:
    status = status_of(classic(), run=2, phase="Failed", works=TRAIN_A_FAILED)
    annotations = {"dagflow.dev/rerun": "r1", "dagflow.dev/retry": "t1"}
    decision = decide(classic(parallelism=1), status, annotations, generation=2)
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.SPEC_CHANGE
    assert decision.handled == HandledRequests(rerun="r1", retry="t1")
    recorded = record(decision, status, classic(parallelism=1))
    assert decide(classic(parallelism=1), recorded, annotations, generation=2).action == RunAction.CONTINUE


def test_stopped_works_are_the_unfinished_ones() -> None:
    works = [
        WorkStatus(name="process", phase=WorkPhase.SUCCEEDED, finished_at=NOW - timedelta(minutes=5)),
        WorkStatus(name="train-a", phase=WorkPhase.RUNNING, job="f-2-train-a"),
        WorkStatus(name="train-b", phase=WorkPhase.PENDING),
        WorkStatus(name="serve", phase=WorkPhase.SERVING),
    ]
    stopped = stopped_works(works, NOW)
    assert [(w.name, w.phase) for w in stopped] == [
        ("process", WorkPhase.SUCCEEDED),
        ("train-a", WorkPhase.STOPPED),
        ("train-b", WorkPhase.STOPPED),
        ("serve", WorkPhase.SERVING),
    ]
    assert (stopped[1].finished_at, stopped[1].message, stopped[1].job) == (
        NOW,
        "stopped by request",
        "f-2-train-a",
    )
    assert stopped[2].finished_at is None


@pytest.mark.parametrize(
    ("phase", "active"),
    [
        ("Pending", True),
        ("Running", True),
        ("Succeeded", False),
        ("Failed", False),
        ("Serving", False),
        ("Stopped", False),
    ],
)
def test_which_runs_are_active(phase: str, active: bool) -> None:
    assert run_is_active(3, FlowPhase(phase)) is active
    assert run_is_active(0, None) is False


# -- the schedule -------------------------------------------------------------------------------

HOURLY = classic(schedule="@hourly")
TICK = datetime(2025, 1, 1, 13, tzinfo=UTC)


def scheduled(phase: str, **fields: Any) -> dict[str, Any]:
    return status_of(HOURLY, run=2, phase=phase, nextScheduleTime=timestamp(TICK), **fields)


def test_a_flow_s_first_run_waits_for_the_next_tick_after_it() -> None:
    decision = decide(HOURLY, {})
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.CREATED
    assert (decision.last_schedule_time, decision.next_schedule_time) == (None, TICK)


def test_a_due_tick_starts_a_scheduled_run() -> None:
    decision = decide(HOURLY, scheduled("Serving"), now=TICK + timedelta(seconds=1))
    assert decision.new_run is not None
    assert (decision.new_run.trigger, decision.new_run.schedule_time, decision.new_run.replaces) == (
        RunTrigger.SCHEDULE,
        TICK,
        None,
    )
    assert (decision.last_schedule_time, decision.next_schedule_time) == (TICK, TICK + timedelta(hours=1))


def test_forbid_skips_a_tick_while_a_run_is_active_saying_so() -> None:
    decision = decide(HOURLY, scheduled("Running"), now=TICK + timedelta(seconds=1))
    assert decision.action == RunAction.CONTINUE
    assert decision.next_schedule_time == TICK + timedelta(hours=1)
    (notice,) = decision.notices
    assert notice.reason == "ScheduleSkipped" and not notice.warning
    assert "came while a run was active (concurrencyPolicy Forbid)" in notice.message


def test_replace_ends_the_active_run_for_the_tick_and_answers_a_waiting_retry() -> None:
    raw = classic(schedule="@hourly", concurrencyPolicy="Replace")
    status = status_of(raw, run=2, phase="Running", nextScheduleTime=timestamp(TICK))
    decision = decide(raw, status, {"dagflow.dev/retry": "t1"}, now=TICK + timedelta(seconds=1))
    assert decision.new_run is not None
    assert (decision.new_run.trigger, decision.new_run.replaces) == (RunTrigger.SCHEDULE, 2)
    assert decision.handled.retry == "t1"


def test_a_late_tick_is_skipped_with_a_warning() -> None:
    raw = classic(schedule="@hourly", startingDeadlineSeconds=60)
    status = status_of(raw, run=2, phase="Serving", nextScheduleTime=timestamp(TICK))
    decision = decide(raw, status, now=TICK + timedelta(minutes=10))
    assert decision.action == RunAction.CONTINUE
    (notice,) = decision.notices
    assert (notice.reason, notice.warning) == ("ScheduleSkipped", True)


def test_a_catch_up_run_says_how_many_ticks_got_none() -> None:
    decision = decide(HOURLY, scheduled("Succeeded"), now=TICK + timedelta(hours=3, minutes=5))
    assert decision.new_run is not None and decision.new_run.schedule_time == TICK + timedelta(hours=3)
    (notice,) = decision.notices
    assert notice.reason == "ScheduleMissed" and notice.message.startswith("Catching up on the tick at")


def test_a_request_at_a_tick_starts_one_run_which_answers_the_tick() -> None:
    status = scheduled("Serving")
    decision = decide(HOURLY, status, {"dagflow.dev/rerun": "r1"}, now=TICK + timedelta(seconds=1))
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.RERUN
    assert decision.new_run.schedule_time is None
    assert (decision.last_schedule_time, decision.next_schedule_time) == (None, TICK + timedelta(hours=1))
    recorded = record(decision, status, HOURLY)
    again = decide(HOURLY, recorded, {"dagflow.dev/rerun": "r1"}, now=TICK + timedelta(seconds=2))
    assert again.action == RunAction.CONTINUE


def test_a_stop_at_a_tick_does_not_let_the_tick_start_a_run_right_after() -> None:
    status = scheduled("Running")
    stop = decide(HOURLY, status, {"dagflow.dev/stop": "s1"}, now=TICK + timedelta(seconds=1))
    assert stop.action == RunAction.STOP and stop.next_schedule_time == TICK + timedelta(hours=1)
    after = decide(
        HOURLY, record(stop, status, HOURLY), {"dagflow.dev/stop": "s1"}, now=TICK + timedelta(seconds=2)
    )
    assert after.action == RunAction.CONTINUE


# -- suspend ------------------------------------------------------------------------------------


def test_suspend_holds_the_works_and_the_schedule() -> None:
    raw = classic(schedule="@hourly", suspend=True)
    status = status_of(raw, run=2, phase="Running", nextScheduleTime=timestamp(TICK))
    decision = decide(raw, status, now=TICK + timedelta(seconds=1))
    assert (decision.action, decision.hold, decision.next_schedule_time) == (RunAction.CONTINUE, True, None)


def test_a_request_while_suspended_still_starts_its_run_which_holds() -> None:
    raw = classic(suspend=True)
    decision = decide(raw, status_of(raw, run=2, phase="Succeeded"), {"dagflow.dev/rerun": "r1"})
    assert decision.action == RunAction.START and decision.hold


def test_a_flow_created_suspended_has_its_first_run_held() -> None:
    decision = decide(classic(suspend=True), {})
    assert decision.action == RunAction.START and decision.hold and decision.run == 1


# -- recorded decisions settle: each request acts once ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    phase=st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Serving", "Stopped"]),
    outcomes=st.lists(
        st.sampled_from(["Succeeded", "Failed", "Skipped", "Stopped", "Running", "Pending"]),
        min_size=3,
        max_size=3,
    ),
    requests=st.dictionaries(st.sampled_from(["rerun", "retry", "stop"]), st.sampled_from(["a", "b"])),
    handled=st.dictionaries(st.sampled_from(["rerun", "retry", "stop"]), st.sampled_from(["a", "b"])),
    policy=st.sampled_from(["Forbid", "Replace"]),
    deadline=st.one_of(st.none(), st.integers(1, 7200)),
    suspend=st.booleans(),
    spec_changed=st.booleans(),
    tick_offset=st.integers(-3600, 4 * 3600),
)
def test_passes_that_record_their_decisions_start_at_most_one_run_and_settle(
    phase: str,
    outcomes: list[str],
    requests: dict[str, str],
    handled: dict[str, str],
    policy: str,
    deadline: int | None,
    suspend: bool,
    spec_changed: bool,
    tick_offset: int,
) -> None:
    fields: dict[str, Any] = {"schedule": "@hourly", "concurrencyPolicy": policy, "suspend": suspend}
    if deadline is not None:
        fields["startingDeadlineSeconds"] = deadline
    raw = classic(**fields)
    works = dict(zip(["process", "train-a", "train-b"], outcomes, strict=True)) | {"serve": "Pending"}
    status = status_of(
        classic(parallelism=3) if spec_changed else raw,
        run=2,
        phase=phase,
        works=works,
        nextScheduleTime=timestamp(TICK),
        handledRequests=handled,
    )
    annotations = {f"dagflow.dev/{kind}": token for kind, token in requests.items()}
    now = TICK + timedelta(seconds=tick_offset)
    assume(tick_offset % 3600 <= 3600 - 4)  # no further tick comes due during the passes
    decisions = []
    for _ in range(4):  # no request, change or tick here needs more than a stop and then a run
        decision = decide(raw, status, annotations, now=now)
        decisions.append(decision)
        status = record(decision, status, raw)
        now += timedelta(seconds=1)
    started = [decision.new_run for decision in decisions if decision.new_run is not None]
    assert len(started) <= 1, decisions
    assert [decision.action for decision in decisions].count(RunAction.STOP) <= 1
    assert decisions[-1].action == decisions[-2].action == RunAction.CONTINUE
    for new_run in started:
        assert new_run.number == 3
        assert set(new_run.works) | {work.name for work in new_run.carried} == set(WORKS)
    if spec_changed:
        assert started and started[0].trigger == RunTrigger.SPEC_CHANGE
    for kind, token in requests.items():
        waits = any(kind in waiting for waiting in decisions[-1].waiting)
        assert getattr(decisions[-1].handled, kind) == token or waits


# -- parameter values --------------------------------------------------------------------------------

WITH_PARAMS = classic(params=[{"name": "data", "default": "/data"}, {"name": "lr", "default": "0.1"}])
PARAMS = "dagflow.dev/params"


def test_runs_not_asked_for_by_a_request_take_the_defaults() -> None:
    decision = decide(WITH_PARAMS, {}, {PARAMS: '{"lr": "0.5"}'})
    assert decision.new_run is not None and decision.new_run.params == {"data": "/data", "lr": "0.1"}
    changed = {**WITH_PARAMS, "parallelism": 1}
    decision = decide(
        changed, status_of(WITH_PARAMS, params={"data": "/x", "lr": "9"}), {PARAMS: '{"lr": "0.5"}'}
    )
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.SPEC_CHANGE
    assert decision.new_run.params == {"data": "/data", "lr": "0.1"}


def test_a_rerun_takes_the_values_its_request_carries_over_the_defaults() -> None:
    status = status_of(WITH_PARAMS, phase="Succeeded", works=ALL_DONE, params={"data": "/x", "lr": "9"})
    decision = decide(WITH_PARAMS, status, {"dagflow.dev/rerun": "r1", PARAMS: '{"lr": "0.5"}'})
    assert decision.new_run is not None and decision.new_run.params == {"data": "/data", "lr": "0.5"}


def test_a_retry_keeps_the_values_of_the_run_it_retries_unless_asked_otherwise() -> None:
    status = status_of(WITH_PARAMS, phase="Failed", works=TRAIN_A_FAILED, params={"data": "/x", "lr": "9"})
    decision = decide(WITH_PARAMS, status, {"dagflow.dev/retry": "t1"})
    assert decision.new_run is not None and decision.new_run.params == {"data": "/x", "lr": "9"}
    decision = decide(WITH_PARAMS, status, {"dagflow.dev/retry": "t1", PARAMS: '{"lr": "0.5"}'})
    assert decision.new_run is not None and decision.new_run.params == {"data": "/x", "lr": "0.5"}


def test_bad_values_of_a_request_are_left_out_with_a_warning() -> None:
    status = status_of(WITH_PARAMS, phase="Succeeded", works=ALL_DONE)
    decision = decide(
        WITH_PARAMS, status, {"dagflow.dev/rerun": "r1", PARAMS: '{"epochs": "3", "lr": "0.5"}'}
    )
    assert decision.new_run is not None and decision.new_run.params == {"data": "/data", "lr": "0.5"}
    assert [(notice.reason, notice.warning) for notice in decision.notices] == [("ParamsIgnored", True)]
    assert "no parameter 'epochs'" in decision.notices[0].message


def test_a_scheduled_run_takes_the_schedules_values() -> None:
    scheduled_flow = {**WITH_PARAMS, "schedule": "@hourly", "scheduleParams": {"lr": "0.7"}}
    status = status_of(scheduled_flow, run=2, phase="Serving", nextScheduleTime=timestamp(TICK))
    decision = decide(scheduled_flow, status, now=TICK + timedelta(seconds=1))
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.SCHEDULE
    assert decision.new_run.params == {"data": "/data", "lr": "0.7"}


def test_a_spec_change_that_answers_a_rerun_in_the_same_pass_runs_with_the_requests_values() -> None:
    status = status_of(WITH_PARAMS, phase="Succeeded", works=ALL_DONE, params={"data": "/x", "lr": "9"})
    changed = {**WITH_PARAMS, "parallelism": 1}
    decision = decide(changed, status, {"dagflow.dev/rerun": "r1", PARAMS: '{"lr": "0.5"}'})
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.SPEC_CHANGE
    assert decision.handled.rerun == "r1"
    assert decision.new_run.params == {"data": "/data", "lr": "0.5"}


def test_a_waiting_retry_answered_by_a_spec_change_runs_with_the_requests_values() -> None:
    status = status_of(WITH_PARAMS, phase="Running", params={"data": "/x", "lr": "9"})
    changed = {**WITH_PARAMS, "parallelism": 1}
    decision = decide(changed, status, {"dagflow.dev/retry": "t1", PARAMS: '{"lr": "0.5", "nope": "1"}'})
    assert decision.new_run is not None and decision.handled.retry == "t1"
    assert decision.new_run.params == {"data": "/data", "lr": "0.5"}
    assert [notice.reason for notice in decision.notices] == ["ParamsIgnored"]


def test_a_replacing_tick_that_answers_a_retry_takes_the_requests_values_over_the_schedules() -> None:
    scheduled_flow = {
        **WITH_PARAMS,
        "schedule": "@hourly",
        "concurrencyPolicy": "Replace",
        "scheduleParams": {"lr": "0.7", "data": "/nightly"},
    }
    status = status_of(scheduled_flow, run=2, phase="Running", nextScheduleTime=timestamp(TICK))
    decision = decide(
        scheduled_flow,
        status,
        {"dagflow.dev/retry": "t1", PARAMS: '{"lr": "0.5"}'},
        now=TICK + timedelta(seconds=1),
    )
    assert decision.new_run is not None and decision.new_run.trigger == RunTrigger.SCHEDULE
    assert decision.handled.retry == "t1"
    assert decision.new_run.params == {"data": "/nightly", "lr": "0.5"}
