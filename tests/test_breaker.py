"""The circuit breaker: during a Redis outage decorated calls skip Redis
(after the first failure, for a back-off of 100 ms growing to 5 s, with one
probe at a time), so a hung Redis (SIGSTOP) costs about what an absent one
does, and the outage is logged once. Counted, never timed: 8 threads call
for a fixed window and the calls completed are compared."""

import logging
import os
import signal
import threading
import time

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


def count_calls(fn, seconds):
    """Calls of ``fn`` completed by 8 threads in ``seconds``; every result
    is checked. Fails (rather than hangs) if a thread never comes back."""
    stop = threading.Event()
    counts = [0] * THREADS
    errors = []

    def work(t):
        i = 0
        try:
            while not stop.is_set():
                assert fn(t * 1000 + i % 64) == t * 1000 + i % 64
                counts[t] += 1
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
    return sum(counts)


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
    assert hung * 2 >= absent, (hung, absent)


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
