"""Timestamps on the wire: ISO 8601 UTC with milliseconds and a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now_ms() -> datetime:
    """Naive UTC now, truncated to milliseconds so a database round trip is exact.

    The database stores naive UTC (SQLite has no time zones), so every stored
    timestamp is made here.
    """
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def from_epoch(seconds: float) -> datetime:
    """Naive UTC for epoch ``seconds`` (a JWT's ``exp``)."""
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


def to_iso(moment: datetime) -> str:
    """Format as ``2026-01-11T12:00:00.000Z`` (naive values are taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def iso_from_ms(epoch_ms: int) -> str:
    """:func:`to_iso` of epoch milliseconds (Redis ``TIME``-based stamps)."""
    return to_iso(from_epoch(epoch_ms / 1000))
