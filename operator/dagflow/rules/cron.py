"""Cron schedules read in an IANA time zone: the ticks of `spec.schedule` in `spec.timeZone`.

Expressions are parsed and stepped through by cronsim, which follows Debian cron across daylight
saving changes: a job at a fixed time that falls into the hour skipped in spring runs right after
the change, one in the hour repeated in autumn runs once, and a job with `*` in its minute or hour
field runs by the clock, in both passes of a repeated hour. Time zones come from zoneinfo, backed by
the `tzdata` package where the system has no zone files.

Every time handed out is in UTC: two aware datetimes in one zone compare by their wall clock, which
is wrong in the repeated hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# The macros of Vixie cron (and of Kubernetes CronJobs) that stand for a time, with the five fields
# each stands for. `@reboot` has no time, and `@every` is not cron.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_FORM = "five fields (minute hour day-of-month month day-of-week, e.g. '30 2 * * *') or one of " + ", ".join(
    MACROS
)


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message says which and why."""


def five_fields(expression: str) -> str:
    """The five cron fields an expression stands for: a macro expanded, spacing normalised."""
    text = expression.strip()
    if text.startswith("@"):
        fields = MACROS.get(text.lower())
        if fields is None:
            raise ScheduleError(f"schedule {expression!r} is no known macro: use {_FORM}")
        return fields
    parts = text.split()
    if parts and parts[0].upper().startswith(("TZ=", "CRON_TZ=")):
        raise ScheduleError(f"schedule {expression!r}: set the time zone in spec.timeZone, not here")
    if len(parts) != len(FIELDS):
        raise ScheduleError(f"schedule {expression!r} has {len(parts)} fields: a schedule is {_FORM}")
    return " ".join(parts)


def load_time_zone(name: str) -> ZoneInfo:
    """The IANA time zone called `name`, e.g. Europe/Berlin or UTC."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: not even a possible key (empty, an absolute path, '..').
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as UTC, Europe/Berlin or America/New_York"
        ) from None


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule: when its ticks fall, as instants in UTC."""

    expression: str
    time_zone: str = "UTC"
    _fields: str = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fields = five_fields(self.expression)
        zone = load_time_zone(self.time_zone)
        try:
            CronSim(fields, datetime(2000, 1, 1, tzinfo=zone))
        except CronSimError as error:
            # cronsim says "Bad minute"; the field's name is all it knows.
            reason = str(error).lower()
            raise ScheduleError(f"schedule {self.expression!r}: {reason}; a schedule is {_FORM}") from None
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_zone", zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment`."""
        return next(self._ticks(moment, reverse=False))

    def latest_until(self, moment: datetime) -> datetime:
        """The last tick at or before `moment`."""
        # cronsim steps strictly before its start; ticks fall on whole minutes, so one second past
        # `moment` (cut to the second) lets a tick at `moment` itself count.
        end = _utc(moment)
        start = end.replace(microsecond=0) + timedelta(seconds=1)
        latest = next(tick for tick in self._ticks(start, reverse=True) if tick <= end)
        # Stepping back from the second pass of a repeated hour, cronsim compares wall clocks and
        # may miss the first pass's tick; stepping forward from what it found is exact.
        for tick in self._ticks(latest, reverse=False):
            if tick > end:
                break
            latest = tick
        return latest

    def ticks_between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Ticks from `start` to `end`, both included, at most `limit` of them (the earliest)."""
        found: list[datetime] = []
        if limit <= 0 or _utc(start) > _utc(end):
            return found
        first = _utc(start) - timedelta(microseconds=1)
        for tick in self._ticks(first, reverse=False):
            if tick > _utc(end) or len(found) >= limit:
                break
            found.append(tick)
        return found

    def _ticks(self, moment: datetime, reverse: bool) -> Iterator[datetime]:
        start = _utc(moment)
        iterator = CronSim(self._fields, start.astimezone(self._zone), reverse=reverse)
        for tick in iterator:
            instant = tick.astimezone(UTC)
            # Started inside the second pass of a repeated hour, cronsim may still hand out the
            # first pass's tick, which lies before the start: skip it.
            if (instant > start) if not reverse else (instant < start):
                yield instant


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a time without a time zone cannot be placed on a schedule")
    return moment.astimezone(UTC)
