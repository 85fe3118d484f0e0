"""Which commands a decorated call sends to one Redis, and in how many round
trips: a key found before is read with a plain GET; any other key is locked
and read in one write (lock first); a store and its lock's release go in one
write. Whatever the guess, the answer and the lock are right.

Counted on a real server: MONITOR for the commands, INFO stats'
``total_reads_processed`` for the round trips (see ``redis_raw.requests_seen``).
"""

import threading

import cachu
import pytest
from cachu.decorator import clear_backends
from helpers import within
from redis_raw import assert_no_locks, put_raw, raw_keys, read_raw, requests_seen


@pytest.fixture(autouse=True)
def on_module_server(server, r):
    cachu.configure(redis_url=server.url)
    yield
    clear_backends()


def counted():
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def f(n):
        calls.append(n)
        return {"n": n}

    return f, calls


def acounted():
    """``counted`` for the async face (named ``g``)."""
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def g(n):
        calls.append(n)
        return {"n": n}

    return g, calls


def no_locks_soon(r):
    """A release not awaited reaches the server right behind the call's
    last command; poll for it with a bound."""

    def wait():
        while raw_keys(r, "lock:*"):
            threading.Event().wait(0.005)

    within(10, wait)


def test_a_key_stored_by_another_client_is_a_hit_in_one_round_trip(server, r):
    f, calls = counted()
    f(0)  # connected, scripts loaded
    put_raw(r, "5m:f|n=7", {"n": "theirs"})

    with requests_seen(server) as first:
        assert f(7) == {"n": "theirs"}
    # Lock and look in one write; the lock taken in passing is released
    # without waiting for the reply.
    assert first["commands"] == ["SET", "GET", "EVAL"], first
    assert calls == [0]
    no_locks_soon(r)

    with requests_seen(server) as again:
        assert f(7) == {"n": "theirs"}
    assert again["commands"] == ["GET"], again
    assert again["round_trips"] == 1, again
    assert calls == [0]
    assert_no_locks(r)


def test_a_key_found_before_then_deleted_is_computed_under_the_lock(server, r):
    f, calls = counted()
    assert f(1) == {"n": 1}
    assert f(1) == {"n": 1}
    r.delete("5m:f|n=1")

    with requests_seen(server) as seen:
        assert f(1) == {"n": 1}
    assert seen["commands"] == ["GET", "SET", "GET", "SETEX", "EVALSHA"], seen
    assert seen["round_trips"] == 3, seen
    assert calls == [1, 1]
    assert read_raw(r, "5m:f|n=1")[1] == {"n": 1}
    assert_no_locks(r)


def test_a_key_locked_by_another_caller_is_waited_for(server, r):
    f, calls = counted()
    f(0)
    r.set("lock:5m:f|n=2", "their-token", ex=30)

    def store_theirs():
        put_raw(r, "5m:f|n=2", {"n": "theirs"})
        r.delete("lock:5m:f|n=2")

    timer = threading.Timer(0.2, store_theirs)
    timer.start()
    try:
        assert within(30, f, 2) == {"n": "theirs"}
    finally:
        timer.join()
    assert calls == [0]
    assert_no_locks(r)


def test_a_stale_guess_after_a_restart_of_the_scripts(server, r):
    """SCRIPT FLUSH: the store's release meets NOSCRIPT and is made again
    with the script's text; no lock is left behind."""
    f, calls = counted()
    f(0)
    r.script_flush()
    assert f(3) == {"n": 3}
    assert calls == [0, 3]
    assert read_raw(r, "5m:f|n=3")[1] == {"n": 3}
    assert_no_locks(r)


def test_the_guess_is_per_key_and_forgets_deleted_keys(server, r):
    f, calls = counted()
    for n in range(50):
        f(n)
    cachu.cache_clear(backend="redis", ttl=300)
    for n in range(50):
        assert f(n) == {"n": n}
    assert calls == list(range(50)) * 2
    for n in range(50):
        assert f(n) == {"n": n}
    assert calls == list(range(50)) * 2
    assert_no_locks(r)


@pytest.mark.asyncio
async def test_async_calls_send_the_same_commands(server, r):
    g, calls = acounted()
    await g(0)
    with requests_seen(server) as miss:
        assert await g(1) == {"n": 1}
    assert miss["commands"] == ["SET", "GET", "SETEX", "EVALSHA"], miss
    assert miss["round_trips"] == 2, miss
    with requests_seen(server) as hit:
        assert await g(1) == {"n": 1}
    assert hit["commands"] == ["GET"], hit
    assert calls == [0, 1]
    assert_no_locks(r)


@pytest.mark.asyncio
async def test_async_first_hit_of_another_clients_value_and_script_flush(server, r):
    g, calls = acounted()
    await g(0)
    put_raw(r, "5m:g|n=7", {"n": "theirs"})
    with requests_seen(server) as first:
        assert await g(7) == {"n": "theirs"}
    # Lock and look in one write; the lock taken in passing is released.
    assert first["commands"][:2] == ["SET", "GET"], first
    assert calls == [0]
    no_locks_soon(r)

    r.script_flush()
    assert await g(8) == {"n": 8}
    assert calls == [0, 8]
    assert read_raw(r, "5m:g|n=8")[1] == {"n": 8}
    assert_no_locks(r)
