"""Datetimes, durations and ranges: parsed in one place, used by every command.

Everything is UTC. Stored and sent datetimes use whole seconds: ``YYYY-MM-DDTHH:MM:SSZ``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc

RANGE_FORMS = "30d, 24h, 2w (relative to now), YYYY-MM-DD..YYYY-MM-DD (inclusive days, UTC) or YYYY-MM-DD.. (until now)"

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    return datetime.now(UTC)


def today() -> date:
    """Today's UTC date: the one place the calendar is read (the revision-age warning), so that
    tests can pin it (tests/conftest.py does)."""
    return utcnow().date()


def floor_second(dt: datetime) -> datetime:
    return dt.replace(microsecond=0)


def ceil_second(dt: datetime) -> datetime:
    return dt if dt.microsecond == 0 else dt.replace(microsecond=0) + timedelta(seconds=1)


def parse_datetime(value: str) -> datetime:
    """Parse ISO-8601 (``Z``, an offset, a fraction, or a bare date); naive means UTC."""
    text = value.strip()
    if not text:
        raise ValueError("empty datetime")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 datetime: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def iso(dt: datetime) -> str:
    """The one textual form of a datetime in the database and in API filters."""
    dt = dt.astimezone(UTC)
    # strftime's %Y drops leading zeros of years before 1000 on glibc ("1-01-01"): four digits always.
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"


def normalize_iso(value: str | None) -> str | None:
    """An API datetime string as stored: UTC, whole seconds, ``Z``. Fast path for ``+00:00``."""
    if not value:
        return None
    if len(value) == 25 and value.endswith("+00:00"):
        return value[:19] + "Z"
    if len(value) == 20 and value[19] == "Z":
        return value
    try:
        return iso(parse_datetime(value))
    except ValueError:
        return value


# Klaviyo was founded in 2012: it holds nothing older, and no duration or range needs to reach
# further back than that (a larger one would overflow datetime arithmetic or run for hours).
EARLIEST = datetime(2012, 1, 1, tzinfo=timezone.utc)
MAX_DURATION = timedelta(days=3660)  # ten years


def parse_duration(value: str) -> timedelta:
    """``90s``, ``15m``, ``3h``, ``2d``, ``1w``: a positive duration, at most ten years."""
    m = _DURATION.match(value or "")
    if not m:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit, e.g. 30m, 3h, 2d, 1w")
    n = int(m.group(1))
    if n <= 0:
        raise ValueError(f"invalid duration {value!r}: must be greater than zero")
    seconds = n * _UNITS[m.group(2).lower()]
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"invalid duration {value!r}: at most {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def humanize_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(frozen=True)
class Window:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime
    label: str = ""

    def as_dict(self) -> dict:
        return {"start": iso(self.start), "end": iso(self.end)}


_DATE = r"(\d{4}-\d{2}-\d{2})"
_ABS_RANGE = re.compile(rf"^{_DATE}\.\.{_DATE}?$")


def parse_range(value: str, now: datetime | None = None, max_days: int | None = None,
                limit_reason: str = "") -> Window:
    """Parse an analyst's range into a Window. Raises ValueError listing the accepted forms, and
    for a range that starts before 2012 (Klaviyo holds nothing older) or, with ``max_days``,
    spans more days than that (``limit_reason`` says why)."""
    window = _parse_range(value, now)
    if window.start < EARLIEST:
        raise ValueError(f"invalid range {value!r}: it starts before {EARLIEST:%Y-%m-%d}, and Klaviyo "
                         "holds nothing older")
    if max_days is not None and window.end - window.start > timedelta(days=max_days):
        raise ValueError(f"invalid range {value!r}: at most {max_days} days{limit_reason}")
    return window


# Campaign and flow reports: Klaviyo's report timeframe is at most a year, and the account's
# report quota (225 a day, shared) could not pay for much more.
REPORT_MAX_DAYS = 366
VERIFY_MAX_DAYS = 731  # verify: two years of daily counts per metric in one run


def report_range(value: str, now: datetime | None = None) -> Window:
    """A --range of a campaign or flow command: at most a year."""
    return parse_range(value, now, REPORT_MAX_DAYS, " (a Klaviyo report covers at most a year, and the "
                                                    "account's report quota is 225 requests a day)")


def _parse_range(value: str, now: datetime | None = None) -> Window:
    now = floor_second(now or utcnow())
    text = (value or "").strip()
    m = _DURATION.match(text)
    if m and m.group(2).lower() in "hdw":
        n = int(m.group(1))
        if n <= 0:
            raise ValueError(f"invalid range {value!r}: must be greater than zero")
        seconds = n * _UNITS[m.group(2).lower()]
        if seconds > (now - EARLIEST).total_seconds():
            raise ValueError(f"invalid range {value!r}: it starts before {EARLIEST:%Y-%m-%d}, and Klaviyo "
                             "holds nothing older")
        return Window(now - timedelta(seconds=seconds), now, text)
    m = _ABS_RANGE.match(text)
    if m:
        try:
            start = datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=UTC)
            end = (
                datetime.strptime(m.group(2), "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(days=1)
                if m.group(2)
                else now
            )
        except ValueError:
            raise ValueError(f"invalid range {value!r}: not a real date; accepted forms: {RANGE_FORMS}") from None
        if end <= start:
            raise ValueError(f"invalid range {value!r}: the end is before the start")
        return Window(start, end, text)
    raise ValueError(f"invalid range {value!r}; accepted forms: {RANGE_FORMS}")
