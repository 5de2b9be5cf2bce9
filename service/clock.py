"""The service's clock: always timezone-aware UTC, and replaceable in tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import current_app


def system_now() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    """The current time as the app sees it (`app.config["CLOCK"]`, a callable)."""
    return current_app.config["CLOCK"]()


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` suffix, as API.md requires."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    """Parse an ISO 8601 UTC time (`Z` or an offset); raises ValueError otherwise."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("time zone missing")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError("out of range") from None


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime):
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **kwargs) -> datetime:
        self.current += timedelta(**kwargs)
        return self.current
