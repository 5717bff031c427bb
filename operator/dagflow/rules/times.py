"""Times as the API server writes them (RFC 3339, `Z` for UTC)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def timestamp(moment: datetime) -> str:
    """A time as the status writes it: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """The moment of an RFC 3339 time; None for an empty value."""
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def seconds_between(earlier: str, later: str) -> float:
    """Seconds from one RFC 3339 time to another."""
    start, end = parse_time(earlier), parse_time(later)
    if start is None or end is None:
        return 0.0
    return (end - start).total_seconds()
