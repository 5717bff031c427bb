"""When the schedule starts a run, with a fake clock: passes at chosen moments, each fed the
schedule times the previous one recorded, as the status carries them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagflow.api.models import ConcurrencyPolicy, DAGFlowSpec
from dagflow.controller.schedule import ScheduleAction, ScheduleDecision, decide_schedule, schedule_of
from dagflow.rules.cron import CronSchedule

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
FORBID, REPLACE = ConcurrencyPolicy.FORBID, ConcurrencyPolicy.REPLACE


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


@dataclass
class FakeFlow:
    """The schedule times a status would hold, moved on by each pass as the operator would."""

    schedule: CronSchedule | None
    policy: ConcurrencyPolicy = FORBID
    deadline: int | None = None
    suspended: bool = False
    last: datetime | None = None
    next: datetime | None = None
    decisions: list[tuple[datetime, ScheduleDecision]] = field(default_factory=list)

    def tick(self, now: datetime, active: bool = False) -> ScheduleDecision:
        decision = decide_schedule(
            self.schedule,
            last_schedule_time=self.last,
            next_schedule_time=self.next,
            run_active=active,
            now=now,
            concurrency_policy=self.policy,
            starting_deadline_seconds=self.deadline,
            suspended=self.suspended,
        )
        self.last, self.next = decision.last_schedule_time, decision.next_schedule_time
        self.decisions.append((now, decision))
        return decision

    def run(
        self,
        start: datetime,
        end: datetime,
        step: timedelta,
        active: Callable[[datetime], bool] = lambda _: False,
    ) -> None:
        now = start
        while now <= end:
            self.tick(now, active(now))
            now += step

    def started(self) -> list[datetime]:
        return [decision.tick for _, decision in self.decisions if decision.starts_run and decision.tick]


def flow(expression: str | None, zone: str = "UTC", **fields: object) -> FakeFlow:
    return FakeFlow(CronSchedule(expression, zone) if expression else None, **fields)  # type: ignore[arg-type]


def hours(*values: int, day: tuple[int, int, int] = (2025, 1, 1)) -> list[datetime]:
    return [utc(*day, value) for value in values]


# -- waiting and starting -----------------------------------------------------------------------


def test_without_a_schedule_nothing_is_due_and_the_last_tick_is_kept() -> None:
    decision = decide_schedule(
        None,
        last_schedule_time=utc(2025, 1, 1),
        next_schedule_time=utc(2025, 1, 2),
        run_active=False,
        now=utc(2025, 1, 3),
    )
    assert decision == ScheduleDecision(ScheduleAction.WAIT, utc(2025, 1, 1), None)


def test_a_new_schedule_waits_for_its_next_tick_without_catching_up() -> None:
    hourly = flow("@hourly")
    decision = hourly.tick(utc(2025, 1, 1, 10, 30))
    assert (decision.action, decision.next_schedule_time) == (ScheduleAction.WAIT, utc(2025, 1, 1, 11))
    assert hourly.tick(utc(2025, 1, 1, 10, 59, 59)).action == ScheduleAction.WAIT


def test_a_due_tick_starts_one_run_and_the_next_tick_is_waited_for() -> None:
    hourly = flow("@hourly")
    hourly.tick(utc(2025, 1, 1, 10, 30))
    decision = hourly.tick(utc(2025, 1, 1, 11, 0, 2))
    assert decision.action == ScheduleAction.START
    assert (decision.tick, decision.last_schedule_time, decision.next_schedule_time) == (
        utc(2025, 1, 1, 11),
        utc(2025, 1, 1, 11),
        utc(2025, 1, 1, 12),
    )
    assert (decision.missed, decision.reason) == (0, None)
    again = hourly.tick(utc(2025, 1, 1, 11, 0, 3))
    assert again.action == ScheduleAction.WAIT and again.last_schedule_time == utc(2025, 1, 1, 11)


def test_a_pass_exactly_on_the_tick_starts_it() -> None:
    hourly = flow("@hourly", next=utc(2025, 1, 1, 11))
    assert hourly.tick(utc(2025, 1, 1, 11)).tick == utc(2025, 1, 1, 11)


def test_passes_every_few_seconds_start_each_tick_once() -> None:
    quarterly = flow("*/15 * * * *")
    quarterly.run(utc(2025, 1, 1, 0, 0, 5), utc(2025, 1, 1, 2, 0, 5), timedelta(seconds=7))
    assert quarterly.started() == [utc(2025, 1, 1, 0, 15) + timedelta(minutes=15 * n) for n in range(8)]


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=1, max_value=5400), min_size=1, max_size=60),
    expression=st.sampled_from(["*/15 * * * *", "@hourly", "30 2 * * *", "0 */2 * * *"]),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
)
def test_whenever_the_passes_come_a_tick_starts_at_most_once_and_ticks_go_forward(
    gaps: list[int], expression: str, zone: str
) -> None:
    scheduled = flow(expression, zone)
    now = utc(2025, 10, 25, 20)  # the night Europe's clocks go back
    scheduled.tick(now)
    for gap in gaps:
        now += timedelta(seconds=gap)
        decision = scheduled.tick(now)
        if decision.starts_run:
            assert decision.tick is not None and decision.tick <= now
            assert decision.tick == scheduled.schedule.latest_until(now)  # type: ignore[union-attr]
        assert scheduled.next is not None and scheduled.next > now
    started = scheduled.started()
    assert started == sorted(set(started))


# -- missed ticks and the starting deadline -----------------------------------------------------


def test_after_an_outage_one_run_catches_up_on_the_latest_missed_tick() -> None:
    hourly = flow("@hourly")
    hourly.tick(utc(2025, 1, 1, 1, 30))  # then the operator is down until 05:30
    decision = hourly.tick(utc(2025, 1, 1, 5, 30))
    assert decision.action == ScheduleAction.START
    assert (decision.tick, decision.missed) == (utc(2025, 1, 1, 5), 3)  # 02:00, 03:00, 04:00
    assert (
        decision.reason
        == "catching up on the tick at 2025-01-01T05:00:00Z; 3 earlier ticks before it got no run"
    )
    assert decision.next_schedule_time == utc(2025, 1, 1, 6)
    assert hourly.tick(utc(2025, 1, 1, 5, 31)).action == ScheduleAction.WAIT


def test_a_tick_missed_by_more_than_the_starting_deadline_is_skipped() -> None:
    hourly = flow("@hourly", deadline=600)
    hourly.tick(utc(2025, 1, 1, 1, 30))
    decision = hourly.tick(utc(2025, 1, 1, 5, 30))
    assert decision.action == ScheduleAction.SKIP
    assert decision.tick == utc(2025, 1, 1, 5)
    assert decision.reason == (
        "the tick at 2025-01-01T05:00:00Z is 1800s past, more than startingDeadlineSeconds (600)"
    )
    assert (decision.last_schedule_time, decision.next_schedule_time) == (None, utc(2025, 1, 1, 6))
    assert hourly.tick(utc(2025, 1, 1, 6, 5)).action == ScheduleAction.START  # 300 s late: in time


def test_a_tick_within_the_starting_deadline_still_starts() -> None:
    daily = flow("@daily", deadline=3600, next=utc(2025, 1, 2))
    assert daily.tick(utc(2025, 1, 2, 0, 59, 59)).action == ScheduleAction.START
    late = flow("@daily", deadline=3600, next=utc(2025, 1, 2))
    assert late.tick(utc(2025, 1, 2, 1, 0, 1)).action == ScheduleAction.SKIP


def test_without_a_deadline_a_very_late_tick_still_catches_up_once() -> None:
    every_minute = flow("* * * * *", next=utc(2025, 1, 1))
    decision = every_minute.tick(utc(2025, 3, 1))
    assert decision.action == ScheduleAction.START and decision.tick == utc(2025, 3, 1)
    assert decision.reason is not None and "999+ earlier ticks" in decision.reason


# -- concurrency --------------------------------------------------------------------------------


def test_forbid_skips_a_tick_while_a_run_is_active_and_does_not_start_it_later() -> None:
    hourly = flow("@hourly", next=utc(2025, 1, 1, 3))
    decision = hourly.tick(utc(2025, 1, 1, 3, 0, 1), active=True)
    assert decision.action == ScheduleAction.SKIP
    assert (
        decision.reason
        == "the tick at 2025-01-01T03:00:00Z came while a run was active (concurrencyPolicy Forbid)"
    )
    assert hourly.tick(utc(2025, 1, 1, 3, 20), active=False).action == ScheduleAction.WAIT  # run ended
    assert hourly.tick(utc(2025, 1, 1, 4, 0, 1), active=False).action == ScheduleAction.START


def test_replace_stops_the_active_run_for_the_tick() -> None:
    hourly = flow("@hourly", policy=REPLACE, next=utc(2025, 1, 1, 3))
    decision = hourly.tick(utc(2025, 1, 1, 3, 0, 1), active=True)
    assert (decision.action, decision.tick, decision.last_schedule_time) == (
        ScheduleAction.REPLACE,
        utc(2025, 1, 1, 3),
        utc(2025, 1, 1, 3),
    )
    assert decision.starts_run


def test_replace_starts_plainly_when_no_run_is_active() -> None:
    hourly = flow("@hourly", policy=REPLACE, next=utc(2025, 1, 1, 3))
    assert hourly.tick(utc(2025, 1, 1, 3, 0, 1), active=False).action == ScheduleAction.START


def test_the_deadline_comes_before_the_concurrency_policy() -> None:
    hourly = flow("@hourly", policy=REPLACE, deadline=60, next=utc(2025, 1, 1, 3))
    decision = hourly.tick(utc(2025, 1, 1, 3, 5), active=True)
    assert decision.action == ScheduleAction.SKIP and "startingDeadlineSeconds" in (decision.reason or "")


def test_a_tick_answered_by_another_run_is_dealt_with_and_starts_none() -> None:
    hourly = flow("@hourly", next=utc(2025, 1, 1, 3))
    decision = hourly.tick(utc(2025, 1, 1, 3, 0, 1)).answered_by_another_run()
    assert decision.action == ScheduleAction.SKIP and not decision.starts_run
    assert (decision.last_schedule_time, decision.next_schedule_time) == (None, utc(2025, 1, 1, 4))
    waiting = flow("@hourly").tick(utc(2025, 1, 1, 3, 30))
    assert waiting.answered_by_another_run() == waiting


# -- suspend and schedule changes ---------------------------------------------------------------


def test_while_suspended_no_tick_is_waited_for_and_none_is_caught_up_on_resume() -> None:
    hourly = flow("@hourly", next=utc(2025, 1, 1, 3), last=utc(2025, 1, 1, 2))
    hourly.suspended = True
    decision = hourly.tick(utc(2025, 1, 1, 5, 30))
    assert decision == ScheduleDecision(ScheduleAction.WAIT, utc(2025, 1, 1, 2), None)
    hourly.suspended = False
    resumed = hourly.tick(utc(2025, 1, 1, 6, 30))
    assert (resumed.action, resumed.next_schedule_time) == (ScheduleAction.WAIT, utc(2025, 1, 1, 7))


def test_a_changed_schedule_counts_from_now_and_starts_no_run_by_itself() -> None:
    changed = flow("@hourly", next=utc(2026, 1, 1))  # waited for @yearly's next tick
    decision = changed.tick(utc(2025, 6, 1, 14, 30))
    assert (decision.action, decision.next_schedule_time) == (ScheduleAction.WAIT, utc(2025, 6, 1, 15))


def test_a_changed_time_zone_counts_from_now() -> None:
    moved = flow("@daily", "Europe/Berlin", next=utc(2025, 6, 2))  # UTC's midnight
    decision = moved.tick(utc(2025, 6, 1, 12))
    assert decision.next_schedule_time == local(BERLIN, 2025, 6, 2) == utc(2025, 6, 1, 22)


def test_a_schedule_changed_during_an_outage_catches_up_on_its_own_latest_tick() -> None:
    hourly = flow("@hourly", next=utc(2025, 1, 1, 3))  # the daily 03:00 tick was waited for
    decision = hourly.tick(utc(2025, 1, 1, 5, 30))
    assert (decision.action, decision.tick) == (ScheduleAction.START, utc(2025, 1, 1, 5))
    earlier = flow("0 1 * * *", next=utc(2025, 1, 1, 3))  # its latest tick precedes the stored one
    decision = earlier.tick(utc(2025, 1, 1, 5, 30))
    assert (decision.action, decision.next_schedule_time) == (ScheduleAction.WAIT, utc(2025, 1, 2, 1))


# -- daylight saving, with passes every minute --------------------------------------------------


def every_minute(scheduled: FakeFlow, start: datetime, end: datetime) -> list[datetime]:
    scheduled.run(start, end, timedelta(minutes=1) + timedelta(seconds=3))
    return scheduled.started()


def test_berlin_spring_forward_night_starts_one_run_right_after_the_change() -> None:
    nightly = flow("30 2 * * *", "Europe/Berlin")
    started = every_minute(nightly, local(BERLIN, 2025, 3, 29, 12), local(BERLIN, 2025, 3, 31, 12))
    assert started == [local(BERLIN, 2025, 3, 30, 3, 0), local(BERLIN, 2025, 3, 31, 2, 30)]


def test_berlin_fall_back_night_starts_one_run_in_the_first_pass_of_the_hour() -> None:
    nightly = flow("30 2 * * *", "Europe/Berlin")
    started = every_minute(nightly, local(BERLIN, 2025, 10, 25, 12), local(BERLIN, 2025, 10, 27, 12))
    assert started == [local(BERLIN, 2025, 10, 26, 2, 30, fold=0), local(BERLIN, 2025, 10, 27, 2, 30)]
    assert started[1] - started[0] == timedelta(hours=25)


def test_berlin_fall_back_night_runs_an_hourly_flow_in_both_passes() -> None:
    hourly = flow("@hourly", "Europe/Berlin")
    started = every_minute(hourly, local(BERLIN, 2025, 10, 26, 1, 30), local(BERLIN, 2025, 10, 26, 4, 30))
    assert started == [
        utc(2025, 10, 26, 0),  # 02:00 CEST
        utc(2025, 10, 26, 1),  # 02:00 CET
        utc(2025, 10, 26, 2),
        utc(2025, 10, 26, 3),
    ]


def test_new_york_daily_flow_keeps_local_midnight_across_both_changes() -> None:
    daily = flow("@daily", "America/New_York")
    spring = every_minute(daily, local(NEW_YORK, 2025, 3, 8, 12), local(NEW_YORK, 2025, 3, 10, 12))
    assert spring == [utc(2025, 3, 9, 5), utc(2025, 3, 10, 4)]  # EST midnight, then EDT midnight
    daily = flow("@daily", "America/New_York")
    autumn = every_minute(daily, local(NEW_YORK, 2025, 11, 1, 12), local(NEW_YORK, 2025, 11, 3, 12))
    assert autumn == [utc(2025, 11, 2, 4), utc(2025, 11, 3, 5)]


def test_new_york_fall_back_runs_a_fixed_time_in_the_repeated_hour_once() -> None:
    early = flow("30 1 * * *", "America/New_York")
    started = every_minute(early, local(NEW_YORK, 2025, 11, 1, 12), local(NEW_YORK, 2025, 11, 2, 12))
    assert started == [utc(2025, 11, 2, 5, 30)]


# -- macros and the spec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("macro", "runs"),
    [("@hourly", 24), ("@daily", 1), ("@midnight", 1)],
)
def test_macros_over_one_day(macro: str, runs: int) -> None:
    scheduled = flow(macro)
    scheduled.run(utc(2025, 1, 1, 0, 0, 30), utc(2025, 1, 2, 0, 0, 30), timedelta(minutes=5))
    assert len(scheduled.started()) == runs


def test_weekly_monthly_and_yearly_macros() -> None:
    monday = utc(2025, 1, 6, 12)
    for macro, expected in [
        ("@weekly", utc(2025, 1, 12)),
        ("@monthly", utc(2025, 2, 1)),
        ("@yearly", utc(2026, 1, 1)),
    ]:
        assert flow(macro).tick(monday).next_schedule_time == expected


def test_the_schedule_of_a_spec() -> None:
    works = [{"name": "a", "container": {"image": "x"}}]
    assert schedule_of(DAGFlowSpec.model_validate({"works": works})) is None
    spec = DAGFlowSpec.model_validate({"works": works, "schedule": "0 3 * * *", "timeZone": "Europe/Berlin"})
    assert schedule_of(spec) == CronSchedule("0 3 * * *", "Europe/Berlin")
