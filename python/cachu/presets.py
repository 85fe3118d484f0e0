"""Ready-made ``@cache`` options for common patterns, to splat into the
decorator: ``@cache(**today_aware(date_param='day', ...))``.

They use the two-argument form of ``ttl`` and ``cache_if`` (``(result,
args)``, ``args`` being the call's key arguments by name).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from cachu._cachu import ConfigurationError


def today_aware(
    *,
    date_param: str,
    today_ttl: float,
    past_ttl: float,
    skip_empty_today: bool = True,
    skip_empty_past: bool = False,
    today_fn: Callable[[], datetime.date] = datetime.date.today,
) -> dict[str, Any]:
    """Options for a function of a date whose results for today still change
    while those for past days do not.

    A call whose argument ``date_param`` is today (``today_fn()``) is kept
    ``today_ttl`` seconds, any other date ``past_ttl`` seconds. An empty
    result (``None``, or anything of length 0) is not kept for today when
    ``skip_empty_today`` (the data may not be there yet), nor for other
    days when ``skip_empty_past``. The argument may be a ``date``, a
    ``datetime`` (its date counts) or an ISO ``'YYYY-MM-DD'`` string.

    Returns ``{'ttl': ..., 'cache_if': ...}``. ``date_param`` must be part of
    the key (not in ``exclude``); a call without it raises
    ``ConfigurationError`` naming it when its result would be stored.
    """
    if not isinstance(date_param, str) or not date_param:
        raise ConfigurationError(f"date_param must be a parameter name, got {date_param!r}")
    for name, value in (("today_ttl", today_ttl), ("past_ttl", past_ttl)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if not callable(today_fn):
        raise ConfigurationError(f"today_fn must be a callable returning a date, got {today_fn!r}")

    def is_today(args: dict[str, Any]) -> bool:
        if date_param not in args:
            raise ConfigurationError(
                f"today_aware(date_param={date_param!r}): the call has no argument "
                f"{date_param!r} in its key (key arguments: {sorted(args)}); is it "
                "named otherwise, or excluded?"
            )
        return _as_date(args[date_param], date_param) == today_fn()

    def ttl(result: Any, args: dict[str, Any]) -> float:
        return today_ttl if is_today(args) else past_ttl

    def cache_if(result: Any, args: dict[str, Any]) -> bool:
        if not _is_empty(result):
            return True
        return not (skip_empty_today if is_today(args) else skip_empty_past)

    return {"ttl": ttl, "cache_if": cache_if}


def _as_date(value: Any, name: str) -> datetime.date:
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigurationError(
        f"today_aware: argument {name!r} must be a date, a datetime or an ISO "
        f"'YYYY-MM-DD' string, got {value!r}"
    )


def _is_empty(result: Any) -> bool:
    if result is None:
        return True
    try:
        return len(result) == 0
    except TypeError:  # no length: a number, an object
        return False


__all__ = ["today_aware"]
