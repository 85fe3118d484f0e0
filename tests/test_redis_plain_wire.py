"""The sync face's own connection to a ``redis://`` server (plain TCP, RESP2,
``src/backend/redis/plain.rs``), against a real ``redis-server``: replies of
every size and shape it reads itself, and the opening it sends (``AUTH`` with
a user name, ``SELECT``, ``CLIENT SETINFO``) as the ``redis`` crate's own
connection would. The rest of the Redis suite runs over it too (every
``redis://`` test); TLS, Unix-socket and RESP3 tests keep the crate's.

What a caller sees does not depend on the connection: the tests of
behaviour run on the async face too (the crate's connection, always).
"""

import asyncio
import os

import cachu
import pytest
from redis_raw import read_raw


@pytest.fixture(autouse=True)
def on_module_server(server, r):
    cachu.configure(redis_url=server.url)
    yield
    from cachu.decorator import clear_backends

    clear_backends()


FACES = ["sync", "async"]


def _on_face(face, body):
    """``body`` (a plain function) cached as ``blob`` on ``face``, called as a
    plain function either way."""
    if face == "sync":

        def blob(n: int):
            return body(n)

        return cachu.cache(ttl=300, backend="redis")(blob)

    # Named as the sync one: the same key on either face.
    async def blob(n: int):
        return body(n)

    cached = cachu.cache(ttl=300, backend="redis")(blob)
    return lambda n: asyncio.run(cached(n))


def _cached(calls, face="sync"):
    def body(n: int) -> bytes:
        calls.append(n)
        # Random bytes: CRLFs and every byte value inside the bulk string.
        return os.urandom(n)

    return _on_face(face, body)


@pytest.mark.parametrize("face", FACES)
@pytest.mark.parametrize("size", [0, 1, 16 * 1024 - 40, 16 * 1024, 16 * 1024 + 7, 3 << 20])
def test_values_of_any_size_come_back_whole(r, size, face):
    calls = []
    blob = _cached(calls, face)
    first = blob(size)
    # A fresh connection reads it back, and the first one reads it again.
    cachu.decorator.clear_backends()
    again = _cached(calls, face)(size)
    assert again == first and blob(size) == first
    assert calls == [size]
    stored = read_raw(r, f"5m:blob|n={size}")[1]
    assert stored == first


def test_many_replies_in_one_read_each_go_to_their_command(r):
    """A clear walks the keys with SCAN (arrays of arrays) and deletes them
    in batches: the replies of many commands arrive together."""
    calls = []
    blob = _cached(calls)
    for n in range(600):
        blob(n)
    assert len(r.keys("5m:blob|*")) == 600
    cachu.cache_clear(backend="redis", ttl=300)
    assert r.keys("5m:blob|*") == []
    assert blob(3) is not None and calls.count(3) == 2


@pytest.mark.parametrize("face", FACES)
def test_a_user_of_its_own_and_a_database_of_its_own(server, r, face):
    r.acl_setuser(
        "cachu-user",
        enabled=True,
        passwords=["+user-pw"],
        keys=["*"],
        commands=["+@all"],
    )
    try:
        cachu.configure(redis_url=f"redis://cachu-user:user-pw@127.0.0.1:{server.port}/1")
        calls = []
        blob = _cached(calls, face)
        value = blob(10)
        assert blob(10) == value and calls == [10]
        db1 = server.client(db=1)
        try:
            assert db1.exists("5m:blob|n=10") == 1
            assert r.exists("5m:blob|n=10") == 0
        finally:
            db1.close()
        # The server knows the connection as that user, in that database.
        # (It also sends CLIENT SETINFO, as the crate's does; a server older
        # than 7.2, as here, refuses it and the connection goes on.)
        ours = [c for c in r.client_list() if c.get("user") == "cachu-user"]
        assert ours, r.client_list()
        assert {c.get("db") for c in ours} == {"1"}
    finally:
        r.acl_deluser("cachu-user")


@pytest.mark.parametrize("face", FACES)
def test_a_wrong_password_for_a_user_is_refused_without_the_password(server, r, face):
    r.acl_setuser("cachu-user2", enabled=True, passwords=["+right"], keys=["*"], commands=["+@all"])
    try:
        cachu.configure(
            redis_url=f"redis://cachu-user2:wrong-secret@127.0.0.1:{server.port}/0",
            fail_open=False,
        )
        calls = []
        with pytest.raises(cachu.BackendUnavailableError) as err:
            _cached(calls, face)(1)
        assert "wrong-secret" not in str(err.value)
        assert "authentication" in str(err.value).lower()
    finally:
        r.acl_deluser("cachu-user2")


@pytest.mark.parametrize("face", FACES)
def test_pickled_values_with_crlf_inside(r, face):
    """RESP's own framing inside a value: read by length, never by line."""
    expected = "\r\n" * 5 + "$3\r\nabc\r\n*2\r\n-ERR no\r\n"
    text = _on_face(face, lambda n: expected)
    assert text(5) == expected
    cachu.decorator.clear_backends()
    text = _on_face(face, lambda n: expected)
    assert text(5) == expected
    assert read_raw(r, "5m:blob|n=5")[1] == expected
