"""Redis shared with peers (a 0.2.7 process, another program), the same
through both faces: a peer's lock is waited for and its value served, a dead
owner's lock expires, a value cachu did not write is a miss and replaced,
and a result that cannot be pickled raises before anything is written. The
raw redis-py client plays the peer, writing the reference layout
(``redis_raw.py``)."""

import pickle
import threading
import time

import behaviour
import cachu
import pytest
from cachu.backends import NO_VALUE
from redis_raw import put_raw, raw_keys, read_raw

face = behaviour.face
PICKLE_ERRORS = (TypeError, pickle.PicklingError, AttributeError)


@pytest.fixture
def store(server, r, tmp_path):
    s = behaviour.Store("redis", tmp_path, server)
    s.configure()
    yield s
    s.close()


def test_a_peers_lock_is_waited_for_and_its_value_served(face, store, r):
    key = "5m:contended|n=1"
    r.set(f"lock:{key}", "peer-token", nx=True, ex=10)
    calls = []

    def contended(n):
        calls.append(n)
        return "ours"

    contended = face.decorate(contended, ttl=300)

    def peer_finishes():
        time.sleep(0.3)
        put_raw(r, key, "theirs")
        r.delete(f"lock:{key}")

    peer = threading.Thread(target=peer_finishes)
    peer.start()
    try:
        results = face.many(contended, 5, 1)
    finally:
        peer.join()
    assert results == ["theirs"] * 5
    assert calls == []
    assert read_raw(r, key)[1] == "theirs"
    info = face.crud("cache_info", contended)
    assert (info.hits, info.misses) == (5, 0)


def test_the_lock_of_a_dead_owner_expires(face, store, r):
    # The dead lock expires well before the waiter would give up (so the
    # waiter must be the one that takes the lock after it).
    store.configure(lock_timeout=5)
    key = "5m:orphaned|n=1"
    r.set(f"lock:{key}", "dead-owner", nx=True, ex=1)
    calls = []

    def orphaned(n):
        # The dead owner's lock is gone by the time the function runs.
        calls.append((n, r.get(f"lock:{key}")))
        return "computed"

    orphaned = face.decorate(orphaned, ttl=300)
    assert face.wait(orphaned(1)) == "computed"
    assert len(calls) == 1 and calls[0][1] != b"dead-owner", calls
    assert read_raw(r, key)[1] == "computed"
    assert face.wait(orphaned(1)) == "computed"
    assert len(calls) == 1
    store.no_locks()


@pytest.mark.parametrize("bad", [b"hello world, not a pickle", b"abc"], ids=["long", "3-bytes"])
def test_a_value_cachu_did_not_write_is_a_miss_and_replaced(face, store, r, bad):
    key = "5m:victim|n=1"
    r.set(key, bad)
    calls = []

    def victim(n):
        calls.append(n)
        return {"fine": n}

    victim = face.decorate(victim, ttl=300)
    assert face.wait(victim(1)) == {"fine": 1}
    assert calls == [1]
    assert read_raw(r, key)[1] == {"fine": 1}
    assert face.wait(victim(1)) == {"fine": 1}
    assert calls == [1]
    store.no_locks()
    # Read by the CRUD functions or a backend object: missing, and removed.
    r.set(key, bad)
    assert face.crud("cache_get", victim, n=1, default="missing") == "missing"
    assert r.get(key) is None
    r.set(key, bad)
    assert face.wait(face.backend("redis", 300).get(key)) is NO_VALUE
    assert r.get(key) is None


def test_an_unpicklable_result_raises_before_anything_is_written(face, store, r):
    bad = {"on": False}
    calls = []

    def maker(n):
        calls.append(n)
        return threading.Lock() if bad["on"] else {"n": n}

    maker = face.decorate(maker, ttl=300)
    face.wait(maker(1))
    stored = r.get("5m:maker|n=1")
    bad["on"] = True
    with pytest.raises(PICKLE_ERRORS):
        face.wait(maker(2))
    assert r.get("5m:maker|n=2") is None
    with pytest.raises(PICKLE_ERRORS):
        face.wait(maker(1, _overwrite_cache=True))
    assert r.get("5m:maker|n=1") == stored
    with pytest.raises(PICKLE_ERRORS):
        face.wait(maker.set(threading.Lock(), n=3))
    with pytest.raises(PICKLE_ERRORS):
        face.crud("cache_set", maker, threading.Lock(), n=3)
    with pytest.raises(PICKLE_ERRORS):
        face.wait(face.backend("redis", 300).set("5m:maker|n=4", threading.Lock(), 300))
    assert raw_keys(r) == ["5m:maker|n=1"]
    store.no_locks()
    bad["on"] = False
    assert face.wait(maker(2)) == {"n": 2}
    assert face.wait(maker(1)) == {"n": 1}
    assert calls == [1, 2, 1, 2]
    assert cachu.cache_info(maker).currsize == 2
