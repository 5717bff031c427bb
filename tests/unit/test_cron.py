"""Cron schedules in a time zone: parsing, macros, and ticks across daylight saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagflow.rules.cron import MACROS, CronSchedule, ScheduleError, five_fields, load_time_zone

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def ticks(schedule: CronSchedule, start: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        start = schedule.next_after(start)
        found.append(start)
    return found


@pytest.mark.parametrize(
    ("macro", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros_stand_for_five_fields(macro: str, fields: str) -> None:
    assert five_fields(macro) == fields
    assert CronSchedule(macro).next_after(utc(2025, 1, 1, 0, 30)) == CronSchedule(fields).next_after(
        utc(2025, 1, 1, 0, 30)
    )


def test_every_macro_is_usable() -> None:
    for macro in MACROS:
        CronSchedule(macro, "Europe/Berlin")


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("61 * * * *", "bad minute"),
        ("* 24 * * *", "bad hour"),
        ("0 0 30 2 *", "bad day-of-month"),
        ("*/0 * * * *", "bad minute"),
        ("0 0 * 13 *", "bad month"),
        ("0 0 * * 8", "bad day-of-week"),
        ("* * * *", "has 4 fields"),
        ("0 * * * * *", "has 6 fields"),
        ("", "has 0 fields"),
        ("@reboot", "'@reboot' is no known macro"),
        ("@every 1h", "no known macro"),
        ("CRON_TZ=Europe/Berlin 0 3 * * *", "spec.timeZone"),
        ("TZ=UTC 0 3 * * *", "spec.timeZone"),
    ],
)
def test_bad_schedules_are_refused_saying_why(expression: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says) as refused:
        CronSchedule(expression)
    assert f"schedule {expression!r}" in str(refused.value)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "/etc/localtime", "../UTC", "europe/berlin"])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ScheduleError, match="unknown time zone"):
        load_time_zone(name)
    with pytest.raises(ScheduleError, match="unknown time zone"):
        CronSchedule("@daily", name)


def test_names_and_ranges_of_cron_work() -> None:
    weekdays = CronSchedule("0 9 * * MON-FRI")
    saturday = utc(2025, 1, 4, 12)
    assert weekdays.next_after(saturday) == utc(2025, 1, 6, 9)
    assert CronSchedule("0 0 * * 7").next_after(saturday) == utc(2025, 1, 5)  # 7 is Sunday too


def test_next_is_strictly_after_and_latest_includes_the_moment() -> None:
    hourly = CronSchedule("@hourly")
    assert hourly.next_after(utc(2025, 1, 1, 12)) == utc(2025, 1, 1, 13)
    assert hourly.latest_until(utc(2025, 1, 1, 12)) == utc(2025, 1, 1, 12)
    assert hourly.latest_until(utc(2025, 1, 1, 12, 59, 59, 999999)) == utc(2025, 1, 1, 12)
    assert hourly.latest_until(utc(2025, 1, 1, 11, 59, 59)) == utc(2025, 1, 1, 11)


def test_times_come_back_in_utc_whatever_zone_they_were_given_in() -> None:
    nightly = CronSchedule("0 3 * * *", "Europe/Berlin")
    given = datetime(2025, 1, 1, 12, tzinfo=NEW_YORK)
    tick = nightly.next_after(given)
    assert tick.tzinfo is UTC and tick == local(BERLIN, 2025, 1, 2, 3)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        CronSchedule("@daily").next_after(datetime(2025, 1, 1))


def test_ticks_between_are_bounded_and_inclusive() -> None:
    every_minute = CronSchedule("* * * * *")
    start, end = utc(2025, 1, 1, 0, 0), utc(2025, 1, 1, 0, 10)
    assert len(every_minute.ticks_between(start, end, 100)) == 11
    assert every_minute.ticks_between(start, end, 3) == [
        start,
        start.replace(minute=1),
        start.replace(minute=2),
    ]
    assert every_minute.ticks_between(end, start, 100) == []


# -- daylight saving ----------------------------------------------------------------------------
# Europe/Berlin: 2025-03-30 02:00 CET -> 03:00 CEST (02:00-03:00 never happens);
#                2025-10-26 03:00 CEST -> 02:00 CET (02:00-03:00 happens twice).
# America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT; 2025-11-02 02:00 EDT -> 01:00 EST.


def test_berlin_spring_forward_runs_a_skipped_time_right_after_the_change() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert ticks(nightly, local(BERLIN, 2025, 3, 29, 12), 3) == [
        local(BERLIN, 2025, 3, 30, 3, 0),  # 02:30 does not exist that night
        local(BERLIN, 2025, 3, 31, 2, 30),
        local(BERLIN, 2025, 4, 1, 2, 30),
    ]


def test_berlin_spring_forward_keeps_the_days_apart_in_local_time() -> None:
    daily = CronSchedule("0 3 * * *", "Europe/Berlin")
    first, second = ticks(daily, local(BERLIN, 2025, 3, 29, 12), 2)
    assert first == local(BERLIN, 2025, 3, 30, 3) == utc(2025, 3, 30, 1)
    assert second - first == timedelta(hours=24)
    assert daily.next_after(local(BERLIN, 2025, 3, 28, 12)) == utc(2025, 3, 29, 2)  # still CET
    assert utc(2025, 3, 30, 1) - utc(2025, 3, 29, 2) == timedelta(hours=23)


def test_berlin_fall_back_runs_a_fixed_time_once() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert ticks(nightly, local(BERLIN, 2025, 10, 25, 12), 3) == [
        local(BERLIN, 2025, 10, 26, 2, 30, fold=0),  # the first 02:30 (CEST), not the second
        local(BERLIN, 2025, 10, 27, 2, 30),
        local(BERLIN, 2025, 10, 28, 2, 30),
    ]


def test_berlin_fall_back_started_in_the_repeated_hour_goes_on_to_the_next_day() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    second_pass = local(BERLIN, 2025, 10, 26, 2, 15, fold=1)
    assert nightly.next_after(second_pass) == local(BERLIN, 2025, 10, 27, 2, 30)
    assert nightly.latest_until(second_pass) == local(BERLIN, 2025, 10, 26, 2, 30, fold=0)


def test_berlin_fall_back_runs_a_clock_driven_job_in_both_passes() -> None:
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Berlin")
    assert ticks(half_hourly, local(BERLIN, 2025, 10, 26, 1, 45), 5) == [
        utc(2025, 10, 26, 0, 0),  # 02:00 CEST
        utc(2025, 10, 26, 0, 30),  # 02:30 CEST
        utc(2025, 10, 26, 1, 0),  # 02:00 CET
        utc(2025, 10, 26, 1, 30),  # 02:30 CET
        utc(2025, 10, 26, 2, 0),  # 03:00 CET
    ]


def test_new_york_spring_forward_and_fall_back() -> None:
    nightly = CronSchedule("30 2 * * *", "America/New_York")
    assert ticks(nightly, local(NEW_YORK, 2025, 3, 8, 12), 2) == [
        local(NEW_YORK, 2025, 3, 9, 3, 0),
        local(NEW_YORK, 2025, 3, 10, 2, 30),
    ]
    early = CronSchedule("30 1 * * *", "America/New_York")
    assert ticks(early, local(NEW_YORK, 2025, 11, 1, 12), 2) == [
        utc(2025, 11, 2, 5, 30),  # 01:30 EDT, once
        utc(2025, 11, 3, 6, 30),  # 01:30 EST
    ]


def test_latest_until_looks_back_across_a_change() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert nightly.latest_until(local(BERLIN, 2025, 3, 30, 12)) == local(BERLIN, 2025, 3, 30, 3, 0)
    just_before_the_change = local(BERLIN, 2025, 3, 30, 1, 59)
    assert nightly.latest_until(just_before_the_change) == local(BERLIN, 2025, 3, 29, 2, 30)


def test_utc_has_no_changes() -> None:
    nightly = CronSchedule("30 2 * * *")
    first, second = ticks(nightly, utc(2025, 3, 29, 12), 2)
    assert (first, second - first) == (utc(2025, 3, 30, 2, 30), timedelta(days=1))


@settings(max_examples=300, deadline=None)
@given(
    expression=st.sampled_from(
        ["30 2 * * *", "0 * * * *", "*/20 * * * *", "15 1-3 * * *", "@daily", "0 0 * * 0"]
    ),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    moment=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC)
    ),
)
def test_latest_and_next_enclose_every_moment_with_no_tick_between(
    expression: str, zone: str, moment: datetime
) -> None:
    schedule = CronSchedule(expression, zone)
    latest, following = schedule.latest_until(moment), schedule.next_after(moment)
    assert latest <= moment < following
    assert schedule.next_after(latest) == following
