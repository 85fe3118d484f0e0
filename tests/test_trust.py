"""Trust: values planted by someone without the signing key never run code
in a reader, cache files are private and never someone else's, and no
password of a Redis URL (nor a signing key) shows in a message.

Real parts only: a redis-server, SQLite files, a real cachu 0.2.7 installed
from PyPI in its own virtualenv (cached under /tmp), chown to `nobody`.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import os
import pickle
import pwd
import sqlite3
import stat
import struct
import subprocess
import sys
import textwrap
import time

import cachu
import pytest
from cachu.config import get_all_configs, get_config

PKG = "test_trust"
SECRET = "s3cr3t-Pa55"
PERSON = "alice@example.com"


class Evil:
    """Unpickling it creates a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def signed(secret: bytes, key: str, created_at: float, payload: bytes) -> bytes:
    """The trailer format of src/sign.rs, written independently."""
    k = key.encode()
    msg = struct.pack("<Q", len(k)) + k + struct.pack("<d", created_at) + payload
    return payload + hmac.new(secret, msg, hashlib.sha256).digest() + b"CHS1"


class Planter:
    """Writes raw values under real keys, as an attacker with write access
    to Redis or to file_dir would (0.2.7's layouts)."""

    def __init__(self, backend, r=None, directory=None):
        self.backend, self.r, self.directory = backend, r, directory

    def __call__(self, key: str, value: bytes, created_at: float) -> None:
        if self.backend == "redis":
            self.r.set(key, struct.pack("d", created_at) + value, ex=300)
            return
        # Before cachu opens the file in this process (one SQLite library
        # per file and process).
        db = os.path.join(self.directory, f"{PKG}_cache5min.db")
        with sqlite3.connect(db) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                "created_at REAL NOT NULL, expires_at REAL NOT NULL)"
            )
            conn.execute(
                "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)",
                (key, value, created_at, created_at + 300),
            )
        conn.close()


@pytest.fixture(params=["file", "redis"])
def store(request, tmp_path):
    """(backend name, planter) with the package configured for it, signing with 'k1'."""
    if request.param == "redis":
        server = request.getfixturevalue("server")
        r = request.getfixturevalue("r")
        cachu.configure(redis_url=server.url, signing_key="k1", package=PKG)
        yield "redis", Planter("redis", r=r)
    else:
        cachu.configure(file_dir=str(tmp_path), signing_key="k1", package=PKG)
        yield "file", Planter("file", directory=str(tmp_path))


def test_planted_pickles_never_run(store, tmp_path, caplog):
    backend, plant = store
    calls = []

    @cachu.cache(ttl=300, backend=backend)
    def lookup(email: str) -> dict:
        calls.append(email)
        return {"email": email, "by": "function"}

    now = time.time()
    cases = {
        "unsigned": lambda key, m: pickle.dumps(Evil(m)),
        "wrong key": lambda key, m: signed(b"not-k1", key, now, pickle.dumps(Evil(m))),
        "moved": lambda key, m: signed(
            b"k1", "5m:lookup|email='other'", now, pickle.dumps(Evil(m))
        ),
        "wrong age": lambda key, m: signed(b"k1", key, now - 1, pickle.dumps(Evil(m))),
        "truncated": lambda key, m: signed(b"k1", key, now, pickle.dumps(Evil(m)))[:-1],
    }
    with caplog.at_level(logging.WARNING):
        for i, (case, make) in enumerate(cases.items()):
            email = f"{i}-{PERSON}"
            key = f"5m:lookup|email={email!r}"
            marker = tmp_path / f"pwned-{i}"
            plant(key, make(key, marker), now)
            assert lookup.get(default=None, email=email) is None, case
            assert lookup(email) == {"email": email, "by": "function"}, case
            assert lookup(email) == {"email": email, "by": "function"}, case
            assert not marker.exists(), f"{case}: the planted pickle ran"
            assert calls.count(email) == 1, case  # recomputed once, replaced, then a hit
    rejected = [r for r in caplog.records if "unsigned or wrongly signed" in r.getMessage()]
    assert len(rejected) == 1, [r.getMessage() for r in caplog.records]  # once per region and hour
    assert "5m:lookup" in rejected[0].getMessage()
    for r in caplog.records:
        assert PERSON not in r.getMessage(), r.getMessage()


def test_a_value_signed_as_documented_is_a_hit(store):
    """The README's trailer format, computed here with hmac, reads back."""
    backend, plant = store

    @cachu.cache(ttl=300, backend=backend)
    def lookup(x: int) -> dict:
        raise AssertionError("must be a hit")

    now = time.time()
    plant("5m:lookup|x=1", signed(b"k1", "5m:lookup|x=1", now, pickle.dumps({"x": 1})), now)
    assert lookup(1) == {"x": 1}


def test_async_redis_never_runs_planted_pickles(server, r, tmp_path):
    cachu.configure(redis_url=server.url, signing_key=b"k1", package=PKG)
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def lookup(x: int) -> dict:
        calls.append(x)
        return {"x": x}

    marker = tmp_path / "pwned"
    now = time.time()
    Planter("redis", r=r)("5m:lookup|x=1", pickle.dumps(Evil(marker)), now)

    async def main():
        return [await lookup(1), await lookup(1), await lookup.get(x=1)]

    assert asyncio.run(main()) == [{"x": 1}] * 3
    assert not marker.exists()
    assert calls == [1]


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_rotation_both_ways(backend, request, tmp_path):
    if backend == "redis":
        options = {"redis_url": request.getfixturevalue("server").url}
        request.getfixturevalue("r")
    else:
        options = {"file_dir": str(tmp_path)}
    calls = []

    @cachu.cache(ttl=300, backend=backend)
    def f(x: int) -> int:
        calls.append(x)
        return x * 10

    cachu.configure(signing_key="old", package=PKG, **options)
    assert f(1) == 10
    # The new key signs, the old one still verifies: no cold cache.
    cachu.configure(signing_key=("new", b"old"), package=PKG)
    assert f(1) == 10
    assert f(2) == 20
    assert calls == [1, 2]
    # The old key retired: what the new key signed stays, the rest is recomputed.
    cachu.configure(signing_key="new", package=PKG)
    assert f(2) == 20
    assert f(1) == 10
    assert calls == [1, 2, 1]
    # Signing off again: signed values are still read (their trailer is
    # ignored by the pickle), as 0.2.7 reads them.
    cachu.configure(signing_key=None, package=PKG)
    assert f(1) == 10 and f(2) == 20
    assert calls == [1, 2, 1]


# -- a real 0.2.7 reads our signed values ------------------------------------------

REFERENCE_VENV = "/tmp/cachu-test-reference-0.2.7"


@pytest.fixture(scope="module")
def reference_python():
    """A virtualenv with cachu 0.2.7 from PyPI, made once and kept in /tmp."""
    py = os.path.join(REFERENCE_VENV, "bin", "python")
    check = "import cachu, sys; sys.exit(0 if cachu.__version__ == '0.2.7' else 3)"
    usable = (
        os.path.exists(py)
        and subprocess.run([py, "-c", check], capture_output=True).returncode == 0
    )
    if not usable:
        subprocess.run([sys.executable, "-m", "venv", "--clear", REFERENCE_VENV], check=True)
        subprocess.run(
            [
                py,
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "cachu[redis]==0.2.7",
            ],
            check=True,
            timeout=110,
        )
    return py


SHARED_MODULE = """
    import cachu

    cachu.configure(backend={backend!r}, file_dir={file_dir!r}, redis_url={redis_url!r})
    calls = []

    @cachu.cache(ttl=300)
    def lookup(x):
        calls.append(x)
        return {{"x": x, "by": "0.2.7"}}
"""


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_cachu_027_reads_signed_values_as_hits(backend, reference_python, request, tmp_path):
    redis_url = "redis://127.0.0.1:1/0"
    if backend == "redis":
        redis_url = request.getfixturevalue("server").url
        request.getfixturevalue("r")
    shared = tmp_path / "mods"
    shared.mkdir()
    (shared / "trust_shared.py").write_text(
        textwrap.dedent(SHARED_MODULE).format(
            backend=backend, file_dir=str(tmp_path), redis_url=redis_url
        )
    )
    cachu.configure(
        backend=backend,
        file_dir=str(tmp_path),
        redis_url=redis_url,
        signing_key="k1",
        package="trust_shared",
    )

    @cachu.cache(ttl=300, package="trust_shared")
    def lookup(x):
        return {"x": x, "by": "ours"}

    assert lookup(1) == {"x": 1, "by": "ours"}
    cachu.get_backend(backend, "trust_shared", ttl=300).close()
    script = (
        "import json, trust_shared as m\nprint(json.dumps([m.lookup(1), m.lookup(2), m.calls]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHU_", "PYTHON"))}
    env["PYTHONPATH"] = str(shared)
    out = subprocess.run(
        [reference_python, "-c", script],
        env=env,
        cwd=str(shared),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    first, second, calls = json.loads(out.stdout.strip().splitlines()[-1])
    assert first == {"x": 1, "by": "ours"}  # our signed value, a hit in 0.2.7
    assert second == {"x": 2, "by": "0.2.7"}
    assert calls == [2]
    # And what 0.2.7 wrote (unsigned) is not taken on trust by us.
    assert lookup(2) == {"x": 2, "by": "ours"}


# -- files --------------------------------------------------------------------------


def test_files_are_created_private_whatever_the_umask(tmp_path):
    cachu.configure(file_dir=str(tmp_path), package=PKG)

    @cachu.cache(ttl=300, backend="file")
    def f(x: int) -> int:
        return x

    old = os.umask(0)
    try:
        assert f(1) == 1
        assert f(1) == 1
    finally:
        os.umask(old)
    db = tmp_path / f"{PKG}_cache5min.db"
    family = [db, tmp_path / (db.name + "-wal"), tmp_path / (db.name + "-shm")]
    for path in family:
        assert path.exists(), path  # WAL mode, connection open
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


def _uncached(tmp_path, caplog, backend_file, expect_in_error):
    cachu.configure(file_dir=str(tmp_path), package=PKG)
    calls = []

    @cachu.cache(ttl=300, backend="file")
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    with caplog.at_level(logging.WARNING):
        assert [f(1), f(1), f(1)] == [2, 2, 2]
    assert calls == [1, 1, 1]  # runs uncached
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    message = errors[0].getMessage()
    assert backend_file in message and expect_in_error in message, message
    return f


def test_a_file_of_another_user_is_never_opened(tmp_path, caplog):
    marker = tmp_path / "pwned"
    Planter("file", directory=str(tmp_path))("5m:f|x=1", pickle.dumps(Evil(marker)), time.time())
    name = f"{PKG}_cache5min.db"
    nobody = pwd.getpwnam("nobody")
    os.chown(tmp_path / name, nobody.pw_uid, nobody.pw_gid)
    before = (tmp_path / name).read_bytes()
    f = _uncached(tmp_path, caplog, name, "nobody")
    assert not marker.exists()
    assert (tmp_path / name).read_bytes() == before  # not written either
    assert cachu.cache_info(f).currsize == 0


def test_a_sidecar_of_another_user_is_never_opened(tmp_path, caplog):
    name = f"{PKG}_cache5min.db"
    (tmp_path / (name + "-wal")).write_bytes(b"")
    os.chown(tmp_path / (name + "-wal"), pwd.getpwnam("nobody").pw_uid, -1)
    _uncached(tmp_path, caplog, name + "-wal", "nobody")


def test_a_symlink_is_never_opened(tmp_path, caplog):
    target = tmp_path / "elsewhere.db"
    target.write_bytes(b"")
    name = f"{PKG}_cache5min.db"
    os.symlink(target, tmp_path / name)
    _uncached(tmp_path, caplog, name, "symbolic link")
    assert target.read_bytes() == b""  # never written through the link


# -- secrets ------------------------------------------------------------------------


def _no_secret(text: str) -> None:
    assert SECRET not in text, text


def test_configs_never_show_the_password_or_the_key(server):
    url = f"redis://user:{SECRET}@127.0.0.1:{server.port}/0"
    cfg = cachu.configure(redis_url=url, signing_key="the-signing-key", package=PKG)
    assert cfg.redis_url == url  # the setting itself is intact
    for text in (
        repr(cfg),
        str(cfg),
        repr(get_config(PKG)),
        repr(get_all_configs()),
        str(get_all_configs()),
    ):
        _no_secret(text)
        assert "the-signing-key" not in text
    assert "user:***@127.0.0.1" in repr(cfg)
    assert get_all_configs()[PKG]["redis_url"] == f"redis://user:***@127.0.0.1:{server.port}/0"
    unix = f"unix:///tmp/r.sock?db=0&password={SECRET}"
    cachu.configure(redis_url=unix, package=PKG)
    _no_secret(repr(get_config(PKG)) + repr(get_all_configs()))


@pytest.mark.parametrize(
    "url",
    [
        f"redis://u:{SECRET}@host:notaport/0",
        f"http://u:{SECRET}@host/0",
        f"redis://u:{SECRET}@/0",
        f"redis://u:{SECRET}@host/abc",
        f"redis://u:{SECRET}@host:99999/0",
        f"redis://:{SECRET}@host/0?db=x",
        f"rediss://u:{SECRET}@host/0?ssl_cert_reqs=maybe",
        f"unix:///tmp/x.sock?db=x&password={SECRET}",
        f"u:{SECRET}@host:6379",
    ],
)
def test_malformed_url_errors_hide_the_password(url):
    with pytest.raises(ValueError) as err:
        cachu.configure(redis_url=url, package=PKG)
    _no_secret(str(err.value))
    assert "redis_url" in str(err.value)


def test_import_error_for_a_bad_env_url_hides_the_password(clean_env):
    for url in (f"redis://u:{SECRET}@host:notaport/0", f"redis://u:{SECRET}@host/abc"):
        env = dict(clean_env, CACHU_REDIS_URL=url)
        out = subprocess.run(
            [sys.executable, "-c", "import cachu"], env=env, capture_output=True, text=True
        )
        assert out.returncode != 0
        assert "CACHU_REDIS_URL" in out.stderr and "***" in out.stderr, out.stderr
        _no_secret(out.stderr + out.stdout)


def test_unreachable_or_refusing_redis_hides_the_password(own_server, caplog):
    guarded = own_server(password="right-one")
    urls = [
        f"redis://u:{SECRET}@127.0.0.1:1/0",  # nothing listens
        f"redis://:{SECRET}@127.0.0.1:{guarded.port}/0",  # wrong password
        f"redis://default:{SECRET}@127.0.0.1:{guarded.port}/0?password={SECRET}",
    ]
    for url in urls:
        cachu.configure(redis_url=url, fail_open=True, redis_socket_timeout=2.0, package=PKG)

        @cachu.cache(ttl=300, backend="redis")
        def f(x: int) -> int:
            return x

        with caplog.at_level(logging.DEBUG):
            assert f(1) == 1  # fail open: a warning, the function's result
        cachu.configure(fail_open=False, package=PKG)
        with pytest.raises(cachu.BackendUnavailableError) as err:
            f(2)
        _no_secret(str(err.value))
        with pytest.raises(cachu.CacheError) as err:
            cachu.get_backend("redis", PKG, ttl=300).get("k")
        _no_secret(str(err.value) + repr(err.value))
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    for r in caplog.records:
        _no_secret(r.getMessage())


def test_signing_key_errors_never_show_a_key(clean_env):
    for bad in ("", b"", ("good-key-1", ""), ["good-key-1", 5], 42, ()):
        with pytest.raises(ValueError) as err:
            cachu.configure(signing_key=bad, package=PKG)
        assert "signing_key" in str(err.value)
        assert "good-key-1" not in str(err.value)
    env = dict(clean_env, CACHU_SIGNING_KEY="")
    out = subprocess.run(
        [sys.executable, "-c", "import cachu"], env=env, capture_output=True, text=True
    )
    assert out.returncode != 0 and "CACHU_SIGNING_KEY" in out.stderr, out.stderr
    env = dict(clean_env, CACHU_SIGNING_KEY="env-key-123")
    script = "import cachu; print(repr(cachu.get_config()), cachu.get_all_configs())"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "env-key-123" not in out.stdout and "***" in out.stdout


def test_dropped_entries_name_the_function_not_the_arguments(tmp_path, caplog):
    """A value that verifies but does not unpickle is dropped with a warning
    that names the function and region, never the key's arguments."""
    cachu.configure(file_dir=str(tmp_path), package=PKG)
    Planter("file", directory=str(tmp_path))(
        f"5m:lookup|email={PERSON!r}", b"not a pickle", time.time()
    )

    @cachu.cache(ttl=300, backend="file")
    def lookup(email: str) -> str:
        return email.upper()

    with caplog.at_level(logging.WARNING):
        assert lookup(PERSON) == PERSON.upper()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("5m:lookup" in m for m in warnings), warnings
    for m in warnings:
        assert PERSON not in m, m


def test_an_unreadable_value_signed_by_a_retired_key_is_replaced_at_once(server, r):
    """After rotation, a value the old key signed that no longer unpickles
    (a class renamed in the same deploy) is removed and recomputed in a few
    round trips, not re-read until lock_timeout."""
    cachu.configure(redis_url=server.url, signing_key=("new", "old"), package=PKG)
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def f(x: int) -> int:
        calls.append(x)
        return x + 1

    now = time.time()
    key = "5m:f|x=1"
    Planter("redis", r=r)(key, signed(b"old", key, now, b"\x80\x04cnowhere\nGone\n."), now)
    r.config_resetstat()
    assert f(1) == 2
    assert calls == [1]
    stats = r.info("commandstats")
    scripts = sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_eval"))
    assert scripts <= 20, stats  # a re-reading loop makes thousands
    assert f(1) == 2 and calls == [1]


@pytest.fixture
def dead_redis_dropped():
    """Forget the backends on a dead Redis at the end (the reset clears them)."""
    from cachu.decorator import clear_backends

    yield
    clear_backends()


def test_async_calls_and_helpers_hide_the_password(caplog, clean_env, dead_redis_dropped):
    url = f"redis://u:{SECRET}@127.0.0.1:1/0"
    cachu.configure(redis_url=url, fail_open=True, redis_socket_timeout=2.0, package=PKG)

    @cachu.cache(ttl=300, backend="redis")
    async def f(x: int) -> int:
        return x

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(f(1)) == 1
    for r in caplog.records:
        _no_secret(r.getMessage())
    cachu.configure(fail_open=False, package=PKG)
    with pytest.raises(cachu.CacheError) as err:
        asyncio.run(f(2))
    _no_secret(str(err.value))
    with pytest.raises(cachu.CacheError) as err:
        asyncio.run(cachu.async_cache_get(f, x=3))
    _no_secret(str(err.value))
    with pytest.raises(ValueError) as err:
        cachu.get_redis_client(f"redis://u:{SECRET}@host:notaport/0")
    _no_secret(str(err.value))
    # A valid URL from the environment: shown masked, used as it is.
    env = dict(clean_env, CACHU_REDIS_URL=url)
    script = (
        "import cachu; cfg = cachu.get_config()\n"
        "print(repr(cfg), cachu.get_all_configs(), cfg.redis_url)"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    shown, _, actual = out.stdout.strip().rpartition(" ")
    assert actual == url
    _no_secret(shown)
