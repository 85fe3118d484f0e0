"""The fixtures of the behaviour suite (``test_behaviour_*.py``): each test
runs on every backend (memory, file, redis, null) and through both faces
(sync calls, coroutines; see ``faces.py``). The functions under test are
decorated, configured and cleared from ``faces.py``, so their package is
``faces``; ``store`` tells what a backend holds, read back through the
backend object (and, on Redis, the raw server: lifetimes, locks)."""

import pickle
import struct
import time

import cachu
import pytest
from faces import WAIT, configure_backend, make_face
from redis_raw import assert_no_locks, assert_ttl_about, raw_keys

PACKAGE = "faces"
BACKENDS = ["memory", "file", "redis", "null"]


@pytest.fixture(params=["sync", "async"])
def face(request):
    f = make_face(request.param)
    yield f
    f.close()


class Store:
    """One backend for the ``faces`` package, and what it holds."""

    def __init__(self, name, tmp_path, server):
        self.name = name
        self.tmp_path = tmp_path
        self.server = server
        self.raw = server.client() if server else None

    def __repr__(self):
        return self.name

    @property
    def keeps(self):
        """Whether entries are kept at all (not on null)."""
        return self.name != "null"

    def configure(self, **options):
        """Put the ``faces`` package on this backend, with ``options``."""
        return configure_backend(self.name, self.tmp_path, self.server, **options)

    def keys(self, ttl=300, package=PACKAGE):
        """The keys stored in the region of ``ttl`` (on Redis, where every
        region and package shares one database: the keys under the region's
        prefix)."""
        if self.raw is not None:
            return raw_keys(self.raw, f"{cachu._cachu.region_name(ttl)}:*")
        return sorted(cachu.get_backend(self.name, package, ttl=ttl).keys())

    def value(self, key, ttl=300):
        """The value stored under ``key``, read by the backend object."""
        return cachu.get_backend(self.name, PACKAGE, ttl=ttl).get(key)

    def created_at(self, key, ttl=300):
        return cachu.get_backend(self.name, PACKAGE, ttl=ttl).get_with_metadata(key)[1]

    def lives(self, key, ttl):
        """On Redis, ``key`` expires in about ``ttl`` seconds and no lock is
        left (other backends keep no TTL the server could show)."""
        if self.raw is not None:
            assert_ttl_about(self.raw, key, ttl)
            assert_no_locks(self.raw)

    def holds_pickle(self, key, value):
        """On Redis, ``key`` holds the reference layout: 8 bytes of
        ``created_at``, then ``pickle.dumps(value)`` (the file layout has
        tests of its own in test_file_backend.py)."""
        if self.raw is not None:
            raw = self.raw.get(key)
            assert raw[8:] == pickle.dumps(value)
            assert struct.unpack("d", raw[:8])[0] == self.created_at(key)

    def no_locks(self):
        """On Redis, no lock key is left (one released in the background,
        as a coroutine's may be, is waited for, within a hang guard)."""
        if self.raw is None:
            return
        deadline = time.monotonic() + WAIT
        while raw_keys(self.raw, "lock:*") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert_no_locks(self.raw)

    def close(self):
        if self.raw is not None:
            self.raw.close()


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    server = None
    if request.param == "redis":
        server = request.getfixturevalue("server")
        request.getfixturevalue("r")  # flushed
    s = Store(request.param, tmp_path, server)
    s.configure()
    yield s
    s.close()
