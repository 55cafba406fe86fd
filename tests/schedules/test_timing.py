"""When schedules fire: cron in a time zone, intervals that keep their rhythm, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from submitter.schedules.timing import (
    InvalidTiming,
    check_cron,
    check_timezone,
    next_cron,
    next_interval,
    next_run,
)

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def test_cron_is_read_in_the_schedules_time_zone() -> None:
    # 03:00 in Helsinki is 01:00 UTC in winter (UTC+2) and 00:00 UTC in summer (UTC+3).
    assert next_cron("0 3 * * *", "Europe/Helsinki", T0) == datetime(2026, 11, 30, 1, tzinfo=UTC)
    summer = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert next_cron("0 3 * * *", "Europe/Helsinki", summer) == datetime(2026, 7, 2, 0, tzinfo=UTC)
    assert next_cron("0 3 * * *", "UTC", T0) == datetime(2026, 11, 30, 3, tzinfo=UTC)


def test_cron_next_is_strictly_after() -> None:
    at_match = datetime(2026, 11, 30, 3, tzinfo=UTC)
    assert next_cron("0 3 * * *", "UTC", at_match) == at_match + timedelta(days=1)


def test_cron_macros_and_weekdays() -> None:
    assert next_cron("@hourly", "UTC", T0) == T0 + timedelta(hours=1)
    # 2026-11-29 is a Sunday: the next weekday 06:30 is Monday.
    assert next_cron("30 6 * * mon-fri", "UTC", T0) == datetime(2026, 11, 30, 6, 30, tzinfo=UTC)


def test_interval_keeps_its_rhythm_and_coalesces_missed_runs() -> None:
    due = T0
    assert next_interval(60, due, due + timedelta(seconds=1)) == due + timedelta(seconds=60)
    # Beat was down for an hour: one run now, then the old rhythm; not 60 runs at once.
    late = due + timedelta(minutes=60, seconds=30)
    assert next_interval(60, due, late) == due + timedelta(minutes=61)
    # Exactly on a tick: that tick has passed, the next one is one interval later.
    assert next_interval(60, due, due + timedelta(minutes=2)) == due + timedelta(minutes=3)


def test_new_schedules_fire_at_their_first_match_or_one_interval_from_now() -> None:
    assert next_run(cron=None, interval_seconds=30, timezone="UTC", due=None, now=T0) == (
        T0 + timedelta(seconds=30)
    )
    assert next_run(
        cron="*/5 * * * *", interval_seconds=None, timezone="UTC", due=None, now=T0
    ) == (T0 + timedelta(minutes=5))


def test_cron_after_a_run_is_never_the_run_itself() -> None:
    due = datetime(2026, 11, 29, 12, 5, tzinfo=UTC)
    early_clock = due - timedelta(milliseconds=5)  # another host's clock is a little behind
    assert next_run(
        cron="*/5 * * * *", interval_seconds=None, timezone="UTC", due=due, now=early_clock
    ) == due + timedelta(minutes=5)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "* * *",
        "0 3 * * * *",
        "61 * * * *",
        "0 3 * * funday",
        "; rm -rf ~",
        "@sometimes",
        "0 0 30 2 *",  # valid fields, but February 30th never comes
        "0 0 31 4,6,9,11 *",
    ],
)
def test_bad_cron_expressions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTiming) as caught:
        check_cron(bad)
    assert caught.value.field == "cron"


def test_cron_whitespace_is_normalised() -> None:
    assert check_cron("  0   3 * *  * ") == "0 3 * * *"


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", "UTC+2"])
def test_unknown_time_zones_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTiming) as caught:
        check_timezone(bad)
    assert caught.value.field == "timezone"
