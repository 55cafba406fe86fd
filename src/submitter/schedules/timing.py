"""When a schedule fires next: cron expressions (in a time zone) and fixed intervals.

Pure functions, so the rules are unit-tested without a clock. Two rules worth knowing:

- Missed runs are coalesced: after beat was down for a day, an hourly schedule fires once,
  then keeps its rhythm. Twenty-four training jobs at once helps nobody.
- Cron expressions are read in the schedule's time zone (`0 3 * * *` in `Europe/Helsinki`
  is 03:00 local, summer and winter); all stored times are UTC.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

#: The shortest interval a schedule may have: beat checks schedules about once a second.
MIN_INTERVAL_SECONDS = 1.0


class InvalidTiming(ValueError):
    """A cron expression, interval or time zone that cannot be used; says which and why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_cron(expression: str) -> str:
    """Return the expression stripped, or raise: 5 fields (minute hour day month weekday)
    or a macro such as `@daily`. croniter's optional 6th (seconds) field is refused: it
    reads a familiar expression in an unfamiliar way."""
    expression = " ".join(expression.split())
    if not expression.startswith("@") and len(expression.split(" ")) != 5:
        raise InvalidTiming(
            "cron", f"{expression!r}: need 5 fields (minute hour day month weekday) or @daily etc."
        )
    if not croniter.is_valid(expression):
        raise InvalidTiming("cron", f"{expression!r} is not a valid cron expression")
    try:  # valid but impossible, e.g. `0 0 30 2 *` (February 30th)
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidTiming("cron", f"{expression!r} never fires") from None
    return expression


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTiming("timezone", f"unknown time zone {name!r}") from None


def next_cron(expression: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after `after` that matches, in UTC."""
    local = after.astimezone(check_timezone(timezone))
    following: datetime = croniter(expression, local).get_next(datetime)
    return following.astimezone(UTC)


def next_interval(interval_seconds: float, due: datetime, now: datetime) -> datetime:
    """The first `due + k * interval` (k >= 1) strictly after `now`: the rhythm is kept and
    missed runs are coalesced into one."""
    step = timedelta(seconds=interval_seconds)
    if due + step > now:
        return due + step
    k = math.floor((now - due) / step) + 1
    return due + k * step


def next_run(
    *,
    cron: str | None,
    interval_seconds: float | None,
    timezone: str,
    due: datetime | None,
    now: datetime,
) -> datetime:
    """When to fire next. `due` is the run that just fired (None for a new schedule, which
    fires at its first cron match, or one interval from now)."""
    if cron is not None:
        return next_cron(cron, timezone, max(now, due) if due else now)
    assert interval_seconds is not None
    return next_interval(interval_seconds, due or now, now)
