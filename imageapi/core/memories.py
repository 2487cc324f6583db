"""Memories: what was taken on this day, week or month in earlier years.

taken_at is the local wall-clock time where the picture was taken, so "this day" compares the
month and day as the camera recorded them, whatever the server's time zone; the time zone only
decides what "today" is when no date is given. A week is the date and three days either side; a
window that crosses New Year belongs to the year in which its middle day falls.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from imageapi.core.config import Config
from imageapi.core.db import Connection
from imageapi.core.errors import UsageError
from imageapi.core.libraries import Library
from imageapi.core.listing import file_record
from imageapi.core.repositories import listing as repo

SPANS = ("day", "week", "month")
WEEK_HALF = 3


@dataclass
class MemoryYear:
    year: int
    items: list[dict[str, Any]]


def today_in(tz: str | None) -> date:
    if not tz:
        return datetime.now().astimezone().date()
    try:
        return datetime.now(ZoneInfo(tz)).date()
    # OSError: the tzdata package opens a file named after the key (too long a name, say).
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UsageError(f"unknown time zone {tz!r} (use an Area/City name such as Europe/Paris)") from None


def parse_date(text: str) -> date:
    """A YYYY-MM-DD date from 0001-01-01 to 9999-12-31 (what a date can hold)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"date must be YYYY-MM-DD between 0001-01-01 and 9999-12-31, not {text[:40]!r}") from None


def _window_month_days(anchor: date, span: str) -> list[str]:
    """The "MM-DD"s of the day or week around anchor. Counted in a stand-in year of the same
    leapness, so that a week around 0001-01-01 or 9999-12-31 needs no date outside the calendar."""
    if span == "day":
        return [f"{anchor.month:02d}-{anchor.day:02d}"]
    middle = anchor.replace(year=2000 if calendar.isleap(anchor.year) else 2001)
    days = [middle + timedelta(days=i) for i in range(-WEEK_HALF, WEEK_HALF + 1)]
    return sorted({f"{d.month:02d}-{d.day:02d}" for d in days})


def _anchor_year(taken: date, anchor: date) -> int | None:
    """The year Y whose week window around anchor's month-day contains `taken`, if any."""
    for year in (taken.year, taken.year - 1, taken.year + 1):
        if not MINYEAR <= year <= MAXYEAR:
            continue
        try:
            middle = anchor.replace(year=year)
        except ValueError:  # 29 February in a year that has none
            middle = date(year, 2, 28)
        if abs((taken - middle).days) <= WEEK_HALF:
            return year
    return None


async def memories(
    db: Connection,
    config: Config,
    libraries: list[Library],
    span: str,
    anchor: date,
    limit: int = 500,
) -> list[MemoryYear]:
    """Files taken in `span` around `anchor` in years before anchor's, grouped by year, newest
    year first, oldest picture first within a year; at most `limit` files in all."""
    if span not in SPANS:
        raise UsageError(f"span must be one of {', '.join(SPANS)}")
    month = f"{anchor.month:02d}" if span == "month" else None
    month_days = _window_month_days(anchor, span) if span != "month" else []
    by_year: dict[int, list[tuple[str, int, dict[str, Any]]]] = {}
    for lib in libraries:
        rows = await repo.files_on_days(db, lib.id, f"{anchor.year:04d}", month=month, month_days=month_days,
                                        excluded=config.excluded_dirs)
        for row in rows:
            try:
                taken = date.fromisoformat(row["taken_at"][:10])
            except ValueError:
                continue
            year = _anchor_year(taken, anchor) if span == "week" else taken.year
            if year is None or year >= anchor.year:
                continue
            by_year.setdefault(year, []).append((row["taken_at"], row["id"], file_record(config, lib, row)))
    out: list[MemoryYear] = []
    left = limit
    for year in sorted(by_year, reverse=True):
        if left <= 0:
            break
        items = [rec for _, _, rec in sorted(by_year[year], key=lambda t: (t[0], t[1]))][:left]
        left -= len(items)
        out.append(MemoryYear(year, items))
    return out
