"""The circuit breaker: during a Redis outage decorated calls skip Redis
(after the first failure, for a back-off of 100 ms growing to 5 s, with one
probe at a time), so a hung Redis (SIGSTOP) costs about what an absent one
does, and the outage is logged once. Counted, never timed: 8 threads call
for a fixed window, and the calls completed are far more than calls that each
waited for the server could be."""

import logging
import os
import signal
import threading
import time
from collections import Counter

import cachu
import pytest
from cachu.decorator import clear_backends

THREADS = 8
WINDOW = 3.0  # seconds each phase is counted for
SOCKET_TIMEOUT = 0.5
DEADLINE = 30


@pytest.fixture
def redis_proc(own_server):
    s = own_server()
    cachu.configure(
        backend="redis", redis_url=s.url, redis_socket_timeout=SOCKET_TIMEOUT, fail_open=True
    )
    yield s
    if s.proc is not None:
        os.kill(s.proc.pid, signal.SIGCONT)
    clear_backends()


def outage_warnings(caplog):
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("cachu") and "unavailable" in r.msg
    ]


def in_threads(step, seconds):
    """Run ``step(x)`` over and over in 8 threads for ``seconds`` (each
    thread on its own 64 values of x) and count what the steps returned.
    Fails (rather than hangs) if a thread never comes back."""
    stop = threading.Event()
    tallies = [Counter() for _ in range(THREADS)]
    errors = []

    def work(t):
        i = 0
        try:
            while not stop.is_set():
                tallies[t][step(t * 1000 + i % 64)] += 1
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(DEADLINE)
        assert not t.is_alive(), "a call hung"
    if errors:
        raise errors[0]
    return sum(tallies, Counter())


def count_calls(fn, seconds):
    """Calls of ``fn`` completed by 8 threads in ``seconds``; every result
    is checked."""

    def step(x):
        assert fn(x) == x
        return "returned"

    return in_threads(step, seconds)["returned"]


def wait_until_cached(fn):
    end = time.monotonic() + DEADLINE
    while True:
        before = fn.__wrapped__.calls
        fn(-1)
        fn(-1)
        if fn.__wrapped__.calls - before <= 1 and cachu.cache_info(fn).currsize > 0:
            return
        assert time.monotonic() < end, "caching did not resume"
        time.sleep(0.02)


def make_fn():
    def f(x):
        f.calls += 1
        return x

    f.calls = 0
    return cachu.cache(ttl=300)(f)


def test_hung_redis_costs_about_what_an_absent_one_does(redis_proc, caplog):
    caplog.set_level(logging.WARNING)
    f = make_fn()
    assert count_calls(f, 0.3) > 0  # warm: connections open, values stored
    assert outage_warnings(caplog) == []

    os.kill(redis_proc.proc.pid, signal.SIGSTOP)
    try:
        hung = count_calls(f, WINDOW)
    finally:
        os.kill(redis_proc.proc.pid, signal.SIGCONT)
    assert len(outage_warnings(caplog)) == 1

    wait_until_cached(f)  # the breaker closes by itself once Redis answers

    redis_proc.stop()
    absent = count_calls(f, WINDOW)
    assert len(outage_warnings(caplog)) == 2  # one per outage
    print(f"calls in {WINDOW}s: redis hung {hung}, redis absent {absent}")
    # Calls that each waited for the hung server could complete at most
    # THREADS * WINDOW / SOCKET_TIMEOUT of them (48); skipping it, they
    # complete orders of magnitude more. (The two counts are not compared
    # with each other: the machine's load may change between the windows.)
    waiting_at_most = THREADS * WINDOW / SOCKET_TIMEOUT
    assert hung >= 100 * waiting_at_most, (hung, absent)
    assert absent >= 100 * waiting_at_most, (hung, absent)


def test_crud_and_backend_objects_still_raise_while_open(redis_proc, caplog):
    caplog.set_level(logging.WARNING)
    f = make_fn()
    f(1)
    redis_proc.stop()
    assert f(2) == 2  # opens the breaker
    assert f(3) == 3
    with pytest.raises(cachu.BackendUnavailableError):
        f.get(x=1)
    with pytest.raises(cachu.BackendUnavailableError):
        cachu.get_backend("redis", ttl=300).get("5m:f|x=1")
    redis_proc.start()
    wait_until_cached(f)
    assert len(outage_warnings(caplog)) == 1


def test_file_outage_is_skipped_and_heals(tmp_path, caplog):
    import shutil

    caplog.set_level(logging.WARNING)
    d = tmp_path / "c"
    d.mkdir()
    cachu.configure(backend="file", file_dir=str(d))
    f = make_fn()
    f(1)
    shutil.rmtree(d)
    end = time.monotonic() + DEADLINE
    while not outage_warnings(caplog):
        assert time.monotonic() < end
        assert f(2) == 2
        time.sleep(0.01)
    assert count_calls(f, 0.5) > 0
    d.mkdir()
    wait_until_cached(f)
    assert len(outage_warnings(caplog)) == 1
    clear_backends()


def count_outcomes(fn, seconds):
    """Like ``count_calls`` for calls that may raise: how many returned,
    raised at once because the breaker is open, and raised after trying
    the backend."""

    def step(x):
        try:
            assert fn(x) == x
            return "returned"
        except cachu.BackendUnavailableError as e:
            return "refused" if "not tried again" in str(e) else "tried"

    return in_threads(step, seconds)


def test_fail_closed_raises_at_once_while_the_breaker_is_open(redis_proc, caplog):
    """fail_open=False: the breaker applies too. During an outage only the
    calls already under way and one probe per back-off wait for Redis;
    every other call raises BackendUnavailableError without trying it."""
    caplog.set_level(logging.WARNING)
    cachu.configure(fail_open=False)
    f = make_fn()
    assert count_calls(f, 0.3) > 0
    os.kill(redis_proc.proc.pid, signal.SIGSTOP)
    try:
        out = count_outcomes(f, WINDOW)
    finally:
        os.kill(redis_proc.proc.pid, signal.SIGCONT)
    print(f"fail_open=False, calls in {WINDOW}s with redis hung: {out}")
    # Tried: the 8 calls under way when it hung, then one probe per
    # back-off (100 ms doubling: at most 5 in the window). Each of them
    # costs a socket timeout; paying it on every call would allow at most
    # THREADS * WINDOW / SOCKET_TIMEOUT (48) calls in all.
    assert out["tried"] <= THREADS + 5, out
    assert out["refused"] > 10 * THREADS * WINDOW / SOCKET_TIMEOUT, out
    assert out["returned"] == 0, out
    warned = outage_warnings(caplog)
    assert len(warned) == 1 and "fail_open=False" in warned[0].getMessage()
    # Back by itself: the next probe closes the breaker and calls return.
    end = time.monotonic() + DEADLINE
    while True:
        try:
            assert f(5) == 5
            break
        except cachu.BackendUnavailableError:
            assert time.monotonic() < end, "the breaker never closed"
            time.sleep(0.02)
    wait_until_cached(f)


def breaker_records(caplog):
    return [
        (r.levelname, r.getMessage().split(",")[0])
        for r in caplog.records
        if r.name.startswith("cachu") and r.levelno >= logging.INFO
    ]


def test_each_outage_logs_one_warning_and_one_info_per_region(redis_proc, caplog):
    """Two Redis regions (two TTLs), two outages (SIGSTOP, then the server
    stopped): each region logs one warning when its breaker opens and one
    info line when it closes, per outage, however many calls were made."""
    caplog.set_level(logging.INFO, logger="cachu")
    cachu.configure(fail_open=True)  # reads the logging levels again

    short = make_fn()
    long = cachu.cache(ttl=3600)(lambda x: x)

    def both(x):
        assert short(x) == x
        assert long(x) == x
        return x

    assert count_calls(both, 0.2) > 0
    assert breaker_records(caplog) == []

    os.kill(redis_proc.proc.pid, signal.SIGSTOP)
    try:
        assert count_calls(both, 1.0) > 0
    finally:
        os.kill(redis_proc.proc.pid, signal.SIGCONT)
    end = time.monotonic() + DEADLINE
    while len(breaker_records(caplog)) < 4:
        assert time.monotonic() < end, breaker_records(caplog)
        both(7)
        time.sleep(0.02)
    opened = ("WARNING", "cache unavailable")
    closed = ("INFO", "cache reachable again")
    assert sorted(breaker_records(caplog)) == [closed, closed, opened, opened]

    redis_proc.stop()
    assert count_calls(both, 1.0) > 0
    redis_proc.start()
    end = time.monotonic() + DEADLINE
    while len(breaker_records(caplog)) < 8:
        assert time.monotonic() < end, breaker_records(caplog)
        both(7)
        time.sleep(0.02)
    assert sorted(breaker_records(caplog)) == [closed] * 4 + [opened] * 4
