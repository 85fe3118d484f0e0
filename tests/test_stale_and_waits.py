"""Stale serving and bounded waits (EXTENSIONS.md), through the one call
protocol: every test runs on memory, file and Redis, as sync calls and as
coroutines. Waits are proved by what happened (who returned while the
function was held on an event), never by a duration."""

import logging
import threading
import time

import cachu
import pytest
from faces import WAIT, Work, configure_backend, make_face

BACKENDS = ["memory", "file", "redis"]


@pytest.fixture(params=["sync", "async"])
def face(request):
    f = make_face(request.param)
    yield f
    f.close()


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    if request.param == "redis":
        server = request.getfixturevalue("server")
        request.getfixturevalue("r")  # flushed
    else:
        server = None
    return lambda **options: configure_backend(request.param, tmp_path, server, **options)


def expire(seconds=1.05):
    """Let entries of ttl=1 go stale (the only way to age a real entry)."""
    time.sleep(seconds)


def wait_until(predicate, what):
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


# -- stale_while_revalidate -------------------------------------------------------


def test_stale_value_served_at_once_while_one_refresh_runs(face, backend):
    backend()
    work = Work()
    fn = face.cache(work, ttl=1, stale_while_revalidate=60)
    assert face.call(fn, "k") == 1
    expire()
    work.hold()
    # 20 callers of the expired key, with the refresh held inside the
    # function: every one of them returns the stale value.
    assert face.many(fn, 20, "k") == [1] * 20
    assert work.entered.wait(WAIT), "no refresh started"
    assert work.runs == 2, "exactly one refresh"
    work.open.set()
    wait_until(lambda: face.call(fn, "k") == 2, "the refreshed value is served")
    assert work.runs == 2


def test_past_the_stale_window_callers_wait_for_the_function(face, backend):
    backend()
    work = Work()
    fn = face.cache(work, ttl=1, stale_while_revalidate=0.1)
    assert face.call(fn, "k") == 1
    expire(1.3)
    assert face.many(fn, 5, "k") == [2] * 5
    assert work.runs == 2


def test_refresh_failure_keeps_serving_and_is_logged_once(face, backend, caplog):
    backend()
    work = Work()
    fn = face.cache(work, ttl=1, stale_while_revalidate=60)
    assert face.call(fn, "k") == 1
    expire()
    work.fail = True
    caplog.set_level(logging.WARNING, logger="cachu")
    for _ in range(3):
        assert face.call(fn, "k") == 1  # never the refresh's error
        wait_until(lambda: not fn_refreshing(fn, work), "refresh over")
    failures = [r for r in caplog.records if "background refresh" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    work.fail = False
    wait_until(lambda: face.call(fn, "k") > 1, "a refresh succeeds")


def fn_refreshing(fn, work):
    # A refresh holds Work.lock only while counting; being "over" means the
    # run count stopped moving for a moment.
    before = work.runs
    time.sleep(0.05)
    return work.runs != before


def test_refresh_carries_the_callers_context(face, backend):
    import contextvars

    backend()
    seen = []
    tenant = contextvars.ContextVar("tenant", default=None)

    def work(x):
        seen.append(tenant.get())
        return len(seen)

    fn = face.cache(work, ttl=1, stale_while_revalidate=60)
    tenant.set("acme")
    if face.name == "async":

        async def call():
            tenant.set("acme")
            return await fn("k")

        assert face.run(call()) == 1
        expire()
        assert face.run(call()) == 1
    else:
        assert fn("k") == 1
        expire()
        assert fn("k") == 1
    wait_until(lambda: len(seen) == 2, "the refresh ran")
    assert seen == ["acme", "acme"]


# -- stale_if_error ----------------------------------------------------------------


def test_stale_if_error_inside_and_past_the_window(face, backend):
    backend()
    work = Work()
    fn = face.cache(work, ttl=1, stale_if_error=1)
    assert face.call(fn, "k") == 1
    expire()
    work.fail = True
    assert face.call(fn, "k") == 1, "the stale value instead of the error"
    expire(1.2)  # past ttl + window: the entry is gone
    out = face.call(fn, "k")
    assert isinstance(out, RuntimeError)
    work.fail = False
    assert face.call(fn, "k") == work.runs


def test_without_windows_an_expired_entry_is_gone(face, backend):
    """The defaults store exactly as 0.2.7 does: nothing stays past the TTL."""
    backend()
    work = Work()
    fn = face.cache(work, ttl=1)
    assert face.call(fn, "k") == 1
    expire()
    work.fail = True
    assert isinstance(face.call(fn, "k"), RuntimeError)


# -- on_lock_timeout and cache_deadline ---------------------------------------------


def hold_one_computation(face, fn, work):
    """Start a call that computes and stays held inside the function; returns
    a thread joining it."""
    work.hold()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("v", face.call(fn, "k")), daemon=True)
    t.start()
    assert work.entered.wait(WAIT)
    return t, box


def test_lock_timeout_raise(face, backend):
    backend(lock_timeout=0.3, on_lock_timeout="raise")
    work = Work()
    fn = face.cache(work, ttl=300)
    t, box = hold_one_computation(face, fn, work)
    out = face.call(fn, "k")
    assert isinstance(out, cachu.CacheLockTimeout), out
    assert isinstance(out, cachu.CacheError)
    assert work.runs == 1, "the waiter did not run the function"
    work.open.set()
    t.join(WAIT)
    assert box["v"] == 1


def test_lock_timeout_run_is_the_default(face, backend):
    backend(lock_timeout=0.3)
    work = Work()
    fn = face.cache(work, ttl=300)
    t, box = hold_one_computation(face, fn, work)
    threading.Timer(0.0, lambda: None).start()
    # The waiter gives up and runs the function itself (0.2.7), while the
    # first caller is still held.
    waiter = threading.Thread(target=lambda: box.setdefault("w", face.call(fn, "k")), daemon=True)
    waiter.start()
    wait_until(lambda: work.runs == 2, "the waiter runs the function")
    work.open.set()
    waiter.join(WAIT)
    t.join(WAIT)
    assert {box["v"], box["w"]} == {1, 2}


def test_cache_deadline_bounds_the_wait(face, backend):
    backend(lock_timeout=60, cache_deadline=0.3)
    work = Work()
    fn = face.cache(work, ttl=300)
    t, box = hold_one_computation(face, fn, work)
    waiter = threading.Thread(target=lambda: box.setdefault("w", face.call(fn, "k")), daemon=True)
    waiter.start()
    # Long before the 60 s lock timeout, the waiter runs uncached.
    wait_until(lambda: work.runs == 2, "the waiter gave up waiting")
    work.open.set()
    waiter.join(WAIT)
    t.join(WAIT)
    assert box["w"] == 2 and box["v"] == 1
    assert face.call(fn, "k") == 1, "the holder's value is the one stored"


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["stale_while_revalidate", "stale_if_error"])
@pytest.mark.parametrize(
    ("bad", "error"),
    [(-1, ValueError), (float("nan"), ValueError), ("10", TypeError), (True, TypeError)],
)
def test_bad_windows_refused_at_decoration(option, bad, error):
    with pytest.raises(error, match=option):
        cachu.cache(ttl=60, **{option: bad})


def test_windows_need_a_fixed_ttl():
    with pytest.raises(TypeError, match="stale_while_revalidate"):
        cachu.cache(ttl=lambda r: 60, stale_while_revalidate=10)
