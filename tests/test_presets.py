"""cachu.presets.today_aware: its ttl and cache_if callables directly, and
through @cache on memory, file and Redis (sync and async)."""

import asyncio
import datetime

import backend_kinds
import cachu
import pytest
from cachu.presets import today_aware

# The fixtures kind and use_backend, shared by the modules of these features.
kind = backend_kinds.kind
use_backend = backend_kinds.use_backend

TODAY = datetime.date(2024, 3, 15)
PAST = datetime.date(2024, 3, 1)


def preset(**overrides):
    options = {
        "date_param": "day",
        "today_ttl": 900,
        "past_ttl": 86400,
        "today_fn": lambda: TODAY,
    }
    options.update(overrides)
    return today_aware(**options)


def test_returns_the_two_options():
    options = preset()
    assert sorted(options) == ["cache_if", "ttl"]


@pytest.mark.parametrize(
    "day",
    [TODAY, datetime.datetime(2024, 3, 15, 23, 59), "2024-03-15"],
    ids=["date", "datetime", "iso"],
)
def test_ttl_for_today(day):
    assert preset()["ttl"]({"rows": 1}, {"day": day}) == 900


@pytest.mark.parametrize("day", [PAST, "2024-03-01", datetime.date(2025, 1, 1)])
def test_ttl_for_another_day(day):
    assert preset()["ttl"]({"rows": 1}, {"day": day}) == 86400


@pytest.mark.parametrize("empty", [None, [], {}, "", ()])
def test_empty_results(empty):
    cache_if = preset()["cache_if"]
    assert cache_if(empty, {"day": TODAY}) is False  # today's data may not be there yet
    assert cache_if(empty, {"day": PAST}) is True  # a past day's empty is final
    both = preset(skip_empty_past=True)["cache_if"]
    assert both(empty, {"day": PAST}) is False
    neither = preset(skip_empty_today=False)["cache_if"]
    assert neither(empty, {"day": TODAY}) is True


@pytest.mark.parametrize("value", [[1], {"a": 1}, 0, 0.0, False, "x"])
def test_non_empty_results_are_kept(value):
    # Numbers and booleans have no length: they are values, not "empty".
    cache_if = preset(skip_empty_past=True)["cache_if"]
    assert cache_if(value, {"day": TODAY}) is True
    assert cache_if(value, {"day": PAST}) is True


def test_today_is_asked_at_each_call():
    days = iter([TODAY, TODAY + datetime.timedelta(days=1)])
    ttl = preset(today_fn=lambda: next(days))["ttl"]
    assert ttl([1], {"day": TODAY}) == 900
    assert ttl([1], {"day": TODAY}) == 86400  # midnight passed


def test_the_default_today_is_the_local_date():
    ttl = today_aware(date_param="day", today_ttl=1, past_ttl=2)["ttl"]
    assert ttl([1], {"day": datetime.date.today()}) == 1


def test_missing_argument_names_it():
    options = preset()
    for check in (options["ttl"], options["cache_if"]):
        with pytest.raises(cachu.ConfigurationError, match=r"'day'.*\['date'\]"):
            check(None, {"date": TODAY})


def test_unreadable_date_names_it():
    with pytest.raises(cachu.ConfigurationError, match=r"'day'.*'yesterday'"):
        preset()["ttl"]([1], {"day": "yesterday"})


@pytest.mark.parametrize(
    ("bad", "option"),
    [
        ({"date_param": ""}, "date_param"),
        ({"today_ttl": -1}, "today_ttl"),
        ({"past_ttl": "1d"}, "past_ttl"),
        ({"today_fn": TODAY}, "today_fn"),
    ],
)
def test_bad_options(bad, option):
    with pytest.raises(cachu.ConfigurationError, match=option):
        preset(**bad)


# --- through @cache (ttl and cache_if called with the key arguments) -------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_through_the_decorator(use_backend, kind, is_async):
    use_backend("presetpkg")
    calls = []
    rows = {TODAY: [], PAST: []}

    def fetch(day):
        calls.append(day)
        return list(rows[day])

    if is_async:

        @cachu.cache(package="presetpkg", **preset())
        async def load(day):
            return fetch(day)

        def call(day):
            return asyncio.run(load(day))

    else:

        @cachu.cache(package="presetpkg", **preset())
        def load(day):
            return fetch(day)

        call = load

    # Today, empty: not kept, so the next call asks again (and gets data).
    assert call(TODAY) == []
    rows[TODAY] = [1]
    assert call(TODAY) == [1]
    assert call(TODAY) == [1]
    # A past day, empty: kept.
    assert call(PAST) == []
    rows[PAST] = [2]
    assert call(PAST) == []
    assert calls == [TODAY, TODAY, PAST]
    # Both kept in the region of functions with a callable ttl.
    backend = cachu.get_backend(kind, "presetpkg", ttl=preset()["ttl"])
    assert len(list(backend.keys())) == 2
    if kind == "redis":  # each for its own TTL
        raw = request_server(use_backend).client()
        ttls = {key.decode(): raw.ttl(key) for key in raw.keys("*load*")}
        assert 0 < ttls["-1s:load|day=datetime.date(2024, 3, 15)"] <= 900
        assert 900 < ttls["-1s:load|day=datetime.date(2024, 3, 1)"] <= 86400


def request_server(use_backend):
    return use_backend.server


def test_date_param_left_out_of_the_key_is_named_at_the_call():
    @cachu.cache(exclude={"day"}, package="presetpkg", **preset())
    def load(day, region):
        return [region]

    with pytest.raises(cachu.ConfigurationError, match=r"'day'.*\['region'\]"):
        load(TODAY, "eu")
