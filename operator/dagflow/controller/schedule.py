"""When a flow's schedule starts a run: pure, from the spec, the schedule times in the status,
whether a run is active, and the time now.

The status carries the schedule from one pass to the next. `nextScheduleTime` is the tick the
operator waits for: every tick before it has been dealt with (a run started for it, or it was
skipped). `lastScheduleTime` is the tick the latest scheduled run started for. So a pass needs no
memory of earlier passes, a restarted operator picks up where the last one stopped, and after an
outage the ticks it missed are found again, of which the latest alone may start a run.

A stored `nextScheduleTime` that is still to come but is not the schedule's next tick belongs to a
schedule or time zone that has since been changed: the new schedule counts from now, so changing a
schedule never starts a run by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from dagflow.api.models import ConcurrencyPolicy, DAGFlowSpec
from dagflow.rules.cron import CronSchedule

# Missed ticks are counted for messages only; an outage of a year under `* * * * *` need not be.
MISSED_TICKS_COUNTED = 1000


class ScheduleAction(StrEnum):
    """What the schedule asks for in this pass."""

    WAIT = "Wait"  # no tick is due
    START = "Start"  # start a run for the due tick
    REPLACE = "Replace"  # stop the active run, then start one for the due tick
    SKIP = "Skip"  # the due tick gets no run; `reason` says why


@dataclass(frozen=True)
class ScheduleDecision:
    """The schedule's verdict, and the schedule times the status records after it."""

    action: ScheduleAction
    # The tick the latest scheduled run started for, before this decision.
    previous_schedule_time: datetime | None
    next_schedule_time: datetime | None
    tick: datetime | None = None
    # Ticks before `tick`, since the last one dealt with, that get no run of their own (an outage).
    missed: int = 0
    reason: str | None = None
    # Skipped for coming later than startingDeadlineSeconds allows (the operator was down).
    late: bool = False

    @property
    def starts_run(self) -> bool:
        return self.action in (ScheduleAction.START, ScheduleAction.REPLACE)

    @property
    def last_schedule_time(self) -> datetime | None:
        """`lastScheduleTime` after this decision: the due tick if it starts a run."""
        return self.tick if self.starts_run else self.previous_schedule_time

    @property
    def tick_due(self) -> bool:
        return self.action != ScheduleAction.WAIT

    def answered_by_another_run(
        self, reason: str = "a run started for another reason answered it"
    ) -> ScheduleDecision:
        """This decision when something else happens to the runs in the same pass (a spec change or
        a request starts a run, a stop ends one): the due tick is dealt with and starts no run."""
        if not self.tick_due:
            return self
        return replace(self, action=ScheduleAction.SKIP, reason=reason)


def schedule_of(spec: DAGFlowSpec) -> CronSchedule | None:
    """The flow's schedule in its time zone, or None without one."""
    return CronSchedule(spec.schedule, spec.time_zone) if spec.schedule else None


def decide_schedule(
    schedule: CronSchedule | None,
    *,
    last_schedule_time: datetime | None,
    next_schedule_time: datetime | None,
    run_active: bool,
    now: datetime,
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID,
    starting_deadline_seconds: int | None = None,
    suspended: bool = False,
) -> ScheduleDecision:
    """Whether a tick is due now and what it does.

    `run_active`: the current run has works still to run (not Succeeded, Failed, Stopped or, with
    its batch works done, Serving). While `suspended` no tick starts a run and none is waited for:
    ticks that pass meanwhile are not caught up on resume.
    """
    if schedule is None or suspended:
        return ScheduleDecision(ScheduleAction.WAIT, last_schedule_time, None)
    following = schedule.next_after(now)
    if next_schedule_time is None or next_schedule_time > now:
        # First sight of the schedule, waiting for the next tick, or a stored tick of a schedule
        # that has since been changed: either way the next tick counts from now.
        return ScheduleDecision(ScheduleAction.WAIT, last_schedule_time, following)

    tick = schedule.latest_until(now)
    if tick < next_schedule_time:
        # None of the current schedule's ticks fell since the stored one (itself a changed
        # schedule's): nothing is due.
        return ScheduleDecision(ScheduleAction.WAIT, last_schedule_time, following)
    passed = schedule.ticks_between(next_schedule_time, now, MISSED_TICKS_COUNTED)
    missed = max(len(passed) - 1, 0)
    late = (now - tick).total_seconds()

    def skip(reason: str, late: bool = False) -> ScheduleDecision:
        return ScheduleDecision(
            ScheduleAction.SKIP, last_schedule_time, following, tick, missed, reason, late
        )

    if starting_deadline_seconds is not None and late > starting_deadline_seconds:
        return skip(
            f"the tick at {_timestamp(tick)} is {late:.0f}s past, more than startingDeadlineSeconds "
            f"({starting_deadline_seconds})",
            late=True,
        )
    if run_active and concurrency_policy == ConcurrencyPolicy.FORBID:
        return skip(f"the tick at {_timestamp(tick)} came while a run was active (concurrencyPolicy Forbid)")
    action = ScheduleAction.REPLACE if run_active else ScheduleAction.START
    reason = None
    if missed:
        reason = f"catching up on the tick at {_timestamp(tick)}; {_ticks(missed)} before it got no run"
    return ScheduleDecision(action, last_schedule_time, following, tick, missed, reason)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ticks(count: int) -> str:
    more = "+" if count >= MISSED_TICKS_COUNTED - 1 else ""
    return "1 earlier tick" if count == 1 else f"{count}{more} earlier ticks"
