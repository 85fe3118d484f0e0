"""The Redis backend against a real ``redis-server``.

A module-wide server (127.0.0.1, free port, nothing persisted) is flushed
before every test; outage, TLS, unix-socket and password tests start servers
of their own. A raw redis-py client plays the peer: it inspects what cachu
wrote and writes entries the way the reference (pure-Python cachu 0.2.7)
does, so the layout in COMPAT.md is checked from both sides:

    value = struct.pack('d', created_at) + pickle.dumps(result), via SETEX
    lock  = SET lock:{mangled key} <token> NX EX int(lock_timeout)

Keys are written out by hand here (``5m:name|arg=1``), which also pins the
key format for Redis.

Processes sharing one Redis are in test_redis_processes.py.
"""

import asyncio
import logging
import pickle
import struct
import threading
import time

import cachu
import pytest
import redis
from cachu.decorator import clear_backends
from helpers import within
from redis_raw import (
    assert_no_locks,
    assert_ttl_about,
    pack,
    put_raw,
    raw_keys,
    read_raw,
    requests_seen,
)
from redis_server import (
    make_ca,
    make_server_cert,
    openssl_binary,
    redis_supports_tls,
)

# -- servers and helpers ---------------------------------------------------------


@pytest.fixture(autouse=True)
def on_module_server(server, r):
    """Point this module's package at the module server. At teardown cachu's
    instances are forgotten without clearing them (the database is flushed
    before the next test anyway), since some tests leave a server down or
    unreachable and clearing through it would fail."""
    cachu.configure(redis_url=server.url)
    yield
    clear_backends()


def cachu_warnings(caplog):
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("cachu")
    ]


# -- decorated calls ---------------------------------------------------------------


def test_configured_default_backend_is_redis(r):
    cachu.configure(backend="redis")

    @cachu.cache(ttl=300)
    def triple(x):
        return x * 3

    assert triple(2) == 6
    assert raw_keys(r) == ["5m:triple|x=2"]


# -- backend objects ---------------------------------------------------------


def test_backend_reads_reference_written_metadata(r):
    put_raw(r, "5m:peer|k=1", ["peer"], created_at=1_700_000_000.125)
    b = cachu.get_backend("redis", ttl=300)
    assert b.get_with_metadata("5m:peer|k=1") == (["peer"], 1_700_000_000.125)


# -- the stored format, both ways ----------------------------------------------


def test_stored_bytes_are_the_reference_layout(r):
    result = {"id": 5, "tags": ("a", "b"), "score": 1.5, "blob": b"\x00\xff", "none": None}

    @cachu.cache(ttl=300, backend="redis")
    def record(n):
        return result

    before = time.time()
    record(5)
    after = time.time()
    raw = r.get("5m:record|n=5")
    assert raw[8:] == pickle.dumps(result)
    (created,) = struct.unpack("d", raw[:8])
    assert before - 0.5 <= created <= after + 0.5
    assert_ttl_about(r, "5m:record|n=5", 300)


def test_reference_written_value_is_a_hit(r):
    calls = []
    seen = []

    def check(entry):
        seen.append((entry.value, entry.created_at, entry.age))
        return True

    @cachu.cache(ttl=300, backend="redis", validate=check)
    def lookup(name):
        calls.append(name)
        return "computed"

    created = time.time() - 1000.25
    put_raw(r, "5m:lookup|name='a'", {"from": "peer"}, created_at=created)
    assert lookup("a") == {"from": "peer"}
    assert lookup(name="a") == {"from": "peer"}
    assert calls == []
    assert seen[0][:2] == ({"from": "peer"}, created)
    assert 999 < seen[0][2] < 1010
    assert cachu.cache_info(lookup).hits == 2


def test_ctrl_c_ends_a_wait_for_a_foreign_lock(r, ctrl_c):
    """Waiting on another client's lock (without the GIL), the main thread
    still gets KeyboardInterrupt, rather than after lock_timeout."""
    import _thread

    cachu.configure(lock_timeout=60)
    key = "5m:held_elsewhere|n=1"
    r.set(f"lock:{key}", "peer-token", ex=60)
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def held_elsewhere(n):
        calls.append(n)
        return n

    interrupt = threading.Timer(0.2, _thread.interrupt_main)
    # Should the wait ignore the interrupt, the lock goes away and the
    # function runs, so that the test fails instead of hanging.
    safety = threading.Timer(20, lambda: r.delete(f"lock:{key}"))
    interrupt.start()
    safety.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            held_elsewhere(1)
        assert calls == []
        assert r.exists(f"lock:{key}")
    finally:
        interrupt.cancel()
        safety.cancel()


@pytest.mark.parametrize(
    "url", ["http://x", "redis://host:notaport", "redis://host:99999/0", "localhost:6379", ""]
)
def test_malformed_url_rejected_at_configure(server, url):
    with pytest.raises(ValueError):
        cachu.configure(redis_url=url)
    assert cachu.get_config().redis_url == server.url


def test_database_number_in_the_url(server, r):
    cachu.configure(redis_url=f"redis://127.0.0.1:{server.port}/2")

    @cachu.cache(ttl=300, backend="redis")
    def in_db2(n):
        return n

    in_db2(1)
    assert raw_keys(r) == []
    db2 = server.client(db=2)
    try:
        assert [k.decode() for k in db2.scan_iter()] == ["5m:in_db2|n=1"]
    finally:
        db2.close()


# -- round trips -------------------------------------------------------------------


def test_hit_is_one_get_and_miss_two_round_trips(server, r):
    @cachu.cache(ttl=300, backend="redis")
    def rt(n):
        return n

    # Warm up: the connection is made and the scripts are loaded once per
    # server (a first EVALSHA may meet NOSCRIPT); neither is counted.
    rt(0)
    rt(0)

    with requests_seen(server) as hit:
        assert rt(0) == 0
    # A key found before is read with a plain GET.
    assert hit["commands"] == ["GET"], hit
    assert hit["round_trips"] == 1, hit

    with requests_seen(server) as miss:
        assert rt(1) == 1
    # Lock then read, in one write; store then release, in another.
    assert miss["commands"] == ["SET", "GET", "SETEX", "EVALSHA"], miss
    assert miss["round_trips"] == 2, miss
    assert read_raw(r, "5m:rt|n=1")[1] == 1
    assert_no_locks(r)


def test_clear_uses_scan_in_batches_not_keys(server, r):
    n = 20_000
    payload = pack("v", time.time())
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("SETEX", f"5m:bulk|i={i}", 300, payload)
    pipe.execute()
    assert r.dbsize() == n

    cachu.get_backend("redis", ttl=300).count("5m:none")  # connect first
    r.config_resetstat()
    assert cachu.cache_clear(backend="redis", ttl=300) == n
    stats = r.info("commandstats")
    assert r.dbsize() == 0
    assert "cmdstat_keys" not in stats, stats
    assert stats["cmdstat_scan"]["calls"] >= 2, stats
    deletes = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("unlink", "del"))
    assert deletes >= 2, stats


# -- outages -------------------------------------------------------------------------


def test_outage_fails_open_logs_once_and_recovers(own_server, caplog):
    srv = own_server()
    cachu.configure(redis_url=srv.url, redis_socket_timeout=0.5)
    peer = srv.client()
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def resilient(n):
        calls.append(n)
        return n * 10

    assert resilient(1) == 10
    assert resilient(1) == 10
    assert calls == [1]

    caplog.set_level(logging.WARNING)
    srv.stop()
    caplog.clear()
    for _ in range(5):
        assert within(5, resilient, 1) == 10
    assert calls == [1] * 6
    outage_warnings = cachu_warnings(caplog)
    assert len(outage_warnings) == 1, [r.getMessage() for r in outage_warnings]

    srv.start()
    # Caching resumes once the circuit breaker's back-off lets a probe through.
    end = time.monotonic() + 10
    while not peer.exists("5m:resilient|n=2"):
        assert time.monotonic() < end, "caching did not resume"
        assert within(5, resilient, 2) == 20
        time.sleep(0.02)
    computed = len(calls)
    assert within(5, resilient, 2) == 20  # hit
    assert len(calls) == computed
    assert read_raw(peer, "5m:resilient|n=2")[1] == 20

    # A second outage is logged again, once.
    srv.stop()
    caplog.clear()
    for _ in range(5):
        assert within(5, resilient, 3) == 30
    assert len(cachu_warnings(caplog)) == 1
    peer.close()


def test_fail_open_false_raises_cache_error(own_server):
    srv = own_server()
    cachu.configure(redis_url=srv.url, redis_socket_timeout=0.5, fail_open=False)

    @cachu.cache(ttl=300, backend="redis")
    def strict(n):
        return n

    assert strict(1) == 1
    srv.stop()
    with pytest.raises(cachu.CacheError):
        within(5, strict, 1)
    with pytest.raises(cachu.CacheError):
        within(5, strict, 2)


def test_black_holed_address_times_out_and_fails_open():
    """A listening socket that never accepts: connects hang in the backlog
    or reads never answer; the socket timeout bounds each call."""
    hole = socket_listening_never_accepting()
    try:
        port = hole.getsockname()[1]
        cachu.configure(redis_url=f"redis://127.0.0.1:{port}/0", redis_socket_timeout=0.3)
        calls = []

        @cachu.cache(ttl=300, backend="redis")
        def through(n):
            calls.append(n)
            return n + 1

        for n in (1, 2):
            assert within(10, through, n) == n + 1
        assert calls == [1, 2]
    finally:
        hole.close()


def socket_listening_never_accepting():
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    return s


def test_crud_and_backend_objects_raise_while_down(own_server):
    srv = own_server()
    cachu.configure(redis_url=srv.url, redis_socket_timeout=0.5)

    @cachu.cache(ttl=300, backend="redis")
    def fn(n):
        return n

    fn(1)
    b = cachu.get_backend("redis", ttl=300)
    srv.stop()
    for op in (
        lambda: cachu.cache_get(fn, n=1),
        lambda: cachu.cache_get(fn, n=1, default=None),
        lambda: cachu.cache_set(fn, 5, n=1),
        lambda: cachu.cache_delete(fn, n=1),
        lambda: cachu.cache_clear(backend="redis", ttl=300),
        lambda: fn.get(n=1),
        lambda: fn.set(1, n=1),
        lambda: fn.invalidate(n=1),
        lambda: b.get("k"),
        lambda: b.get_with_metadata("k"),
        lambda: b.set("k", 1, 300),
        lambda: b.delete("k"),
        lambda: b.clear(),
        lambda: list(b.keys()),
        lambda: b.count(),
    ):
        with pytest.raises(cachu.CacheError):
            within(5, op)
    assert within(5, fn, 1) == 1  # the decorated call still fails open


# -- connection forms --------------------------------------------------------------


def test_unix_socket_url(own_server):
    srv = own_server(unixsocket=True)
    sock = srv.unixsocket
    cachu.configure(redis_url=f"unix://{sock}?db=1")
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def via_socket(n):
        calls.append(n)
        return [n]

    assert via_socket(1) == [1]
    assert via_socket(1) == [1]
    assert calls == [1]
    peer = srv.client(db=1)
    try:
        assert read_raw(peer, "5m:via_socket|n=1")[1] == [1]
    finally:
        peer.close()
    db0 = srv.client(db=0)
    try:
        assert db0.dbsize() == 0
    finally:
        db0.close()


def test_password_url(own_server):
    srv = own_server(password="secret")
    cachu.configure(redis_url=f"redis://:secret@127.0.0.1:{srv.port}/0")
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def guarded(n):
        calls.append(n)
        return n

    assert guarded(1) == 1
    assert guarded(1) == 1
    assert calls == [1]
    peer = srv.client()
    try:
        assert read_raw(peer, "5m:guarded|n=1")[1] == 1
    finally:
        peer.close()

    cachu.configure(redis_url=f"redis://:wrong@127.0.0.1:{srv.port}/0", redis_socket_timeout=0.5)
    assert within(5, guarded, 2) == 2  # fails open
    assert within(5, guarded, 2) == 2
    assert calls == [1, 2, 2]
    with pytest.raises(cachu.CacheError):
        within(5, cachu.get_backend("redis", ttl=300).get, "5m:guarded|n=1")


def test_get_redis_client(server, r):
    @cachu.cache(ttl=300, backend="redis")
    def seen_by_client(n):
        return n

    seen_by_client(1)
    client = cachu.get_redis_client()
    try:
        assert isinstance(client, redis.Redis)
        assert client.ping()
        assert client.exists("5m:seen_by_client|n=1") == 1
    finally:
        client.close()
    client = cachu.get_redis_client(f"redis://127.0.0.1:{server.port}/3")
    try:
        assert client.ping()
        client.set("direct_key", "value")
        db3 = server.client(db=3)
        assert db3.get("direct_key") == b"value"
        db3.close()
        assert r.get("direct_key") is None
    finally:
        client.close()


# -- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    if openssl_binary() is None:
        pytest.skip("openssl CLI not found: cannot make test certificates")
    ok, why = redis_supports_tls()
    if not ok:
        pytest.skip(why)
    d = str(tmp_path_factory.mktemp("tls"))
    ca = make_ca(d, "ca")
    server_cert = make_server_cert(d, ca)
    other_ca = make_ca(d, "other-ca")
    return {
        "ca": ca["cert"],
        "cert": server_cert["cert"],
        "key": server_cert["key"],
        "other_ca": other_ca["cert"],
    }


@pytest.fixture
def tls_server(tls_files, own_server):
    return own_server(
        tls={"cert": tls_files["cert"], "key": tls_files["key"], "ca": tls_files["ca"]}
    )


def test_tls_with_ca_file(tls_server, tls_files):
    cachu.configure(
        redis_url=f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={tls_files['ca']}"
    )
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def secure(n):
        calls.append(n)
        return {"n": n}

    assert secure(1) == {"n": 1}
    assert secure(1) == {"n": 1}
    assert calls == [1]
    peer = tls_server.client()
    try:
        assert read_raw(peer, "5m:secure|n=1")[1] == {"n": 1}
    finally:
        peer.close()
    assert cachu.get_backend("redis", ttl=300).count() == 1


def test_tls_without_verification(tls_server):
    cachu.configure(redis_url=f"rediss://127.0.0.1:{tls_server.port}/0?ssl_cert_reqs=none")
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def unverified(n):
        calls.append(n)
        return n

    assert unverified(1) == 1
    assert unverified(1) == 1
    assert calls == [1]


def test_tls_wrong_ca_fails_open_but_backend_raises(tls_server, tls_files):
    cachu.configure(
        redis_url=(f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={tls_files['other_ca']}"),
        redis_socket_timeout=1.0,
    )
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def distrusted(n):
        calls.append(n)
        return n

    assert within(5, distrusted, 1) == 1
    assert within(5, distrusted, 1) == 1
    assert calls == [1, 1]
    with pytest.raises(cachu.CacheError):
        within(5, cachu.get_backend("redis", ttl=300).get, "5m:distrusted|n=1")
    peer = tls_server.client()
    try:
        assert peer.dbsize() == 0
    finally:
        peer.close()


# -- async ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_redis_io_does_not_block_the_loop(r):
    """The server is paused (CLIENT PAUSE) while the lookup is on the wire:
    a heartbeat task keeps running on the loop all the while, before the
    function's body (which runs once the lookup answers) has started."""
    body_started = []

    @cachu.cache(ttl=300, backend="redis")
    async def slow(n):
        body_started.append(n)
        return n

    await slow(0)  # connection made
    body_started.clear()
    beats_while_waiting = 0
    stop = asyncio.Event()

    async def heartbeat():
        nonlocal beats_while_waiting
        while not stop.is_set():
            if not body_started:
                beats_while_waiting += 1
            await asyncio.sleep(0.01)

    r.client_pause(500, all=True)
    hb = asyncio.create_task(heartbeat())
    assert await slow(1) == 1
    stop.set()
    await hb
    # The lookup waited out the pause with the loop free: beats went on (a
    # blocked loop would have run none until the lookup answered).
    assert beats_while_waiting >= 3, beats_while_waiting
