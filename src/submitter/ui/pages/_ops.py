"""Small helpers shared by the operations pages (schedules, workers, beat tasks, clusters,
service logs). Not a page: `pages.modules()` skips modules whose name starts with `_`.

The filters are registered on the console's Jinja environment when this module is imported,
which every operations page does, so their templates may use `|every` and `|ago`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from submitter.ui.render import DASH, templates

#: Longest decimal text read as an offset or id from a query (beyond it: 0, never a 500).
MAX_DIGITS = 18


def every(seconds: float | None) -> str:
    """An interval as people say it: `every 90 s`, `every 5 min`, `every 2 h`, `every 1 d`.

    Whole minutes, hours and days read better than `3600.0 s`; anything else keeps its
    seconds (intervals may be fractional)."""
    if seconds is None:
        return DASH
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {int(seconds // size)} {unit}"
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"every {text} s"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago `moment` was, coarsely (`4 s ago`, `3 min ago`, `2 h ago`, `5 d ago`):
    a heartbeat's or a task's age is read at a glance, its exact time is in the title."""
    if moment is None:
        return DASH
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:  # another host's clock ahead of ours
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def whole_number(text: str | None) -> int:
    """A non-negative integer from a query string, or 0 for anything else (never a 422:
    a hand-edited `?offset=` is not worth an error page)."""
    if text and text.isdigit() and len(text) <= MAX_DIGITS:
        return int(text)
    return 0


templates.filters.update(every=every, ago=ago)
