"""The memory miss's short path: its first lookup serves as the protocol's
first look, its key lock reads no clock unless it must wait, and keys short
enough to be kept inside the entry behave as any other key. Waits are proved
by what happened, never by a duration."""

import threading

import cachu
import pytest
from faces import WAIT, Work, configure_backend, make_face


@pytest.fixture(params=["sync", "async"])
def face(request):
    f = make_face(request.param)
    yield f
    f.close()


def info(face, fn):
    i = face.crud("cache_info", fn)
    return (i.hits, i.misses, i.currsize)


def test_a_miss_counts_one_miss_and_a_hit_one_hit(face, tmp_path):
    configure_backend("memory", tmp_path)
    work = Work()
    fn = face.cache(work, ttl=300)
    assert face.call(fn, 1) == 1
    assert info(face, fn) == (0, 1, 1)
    assert face.call(fn, 1) == 1
    assert info(face, fn) == (1, 1, 1)
    assert work.runs == 1


def test_concurrent_misses_of_one_key_compute_once(face, tmp_path):
    configure_backend("memory", tmp_path)
    work = Work()
    fn = face.cache(work, ttl=300)
    out = face.many(fn, 8, "k")
    assert out == [1] * 8
    assert work.runs == 1


@pytest.mark.parametrize("lock_timeout", [0.05, 0.25])
def test_a_lock_timeout_within_or_past_one_wait_slice_still_ends_the_wait(
    face, tmp_path, lock_timeout
):
    # The first wait of a key lock is asked for before any clock is read;
    # the timeout must still be kept whether it ends within that first wait
    # (0.05 s) or after more (0.25 s).
    configure_backend("memory", tmp_path, lock_timeout=lock_timeout, on_lock_timeout="raise")
    work = Work()
    fn = face.cache(work, ttl=300)
    work.open.clear()
    box = {}
    holder = threading.Thread(target=lambda: box.setdefault("v", face.call(fn, "k")), daemon=True)
    holder.start()
    assert work.entered.wait(WAIT)
    out = face.call(fn, "k")
    assert isinstance(out, cachu.CacheLockTimeout), out
    assert work.runs == 1, "the waiter did not run the function"
    work.open.set()
    holder.join(WAIT)
    assert box["v"] == 1
    assert face.call(fn, "k") == 1


def test_keys_around_the_in_entry_length_stay_apart(tmp_path):
    # Keys of every length from well below to well above what an entry
    # holds in place (30 bytes), differing only in their last characters.
    configure_backend("memory", tmp_path)
    runs = []

    @cachu.cache(ttl=300)
    def f(x):
        runs.append(x)
        return {"x": x}

    args = ["a" * n for n in range(0, 24)] + ["a" * 10 + "b", "a" * 10 + "c"]
    lengths = {len(f._key(x=x)) for x in args}
    assert min(lengths) < 30 < max(lengths), lengths
    for x in args:
        assert f(x) == {"x": x}
    for x in args:
        assert f(x) == {"x": x}
    assert runs == args
    assert cachu.cache_info(f).currsize == len(args)
    keys = cachu.get_backend("memory", ttl=300).keys()
    assert sorted(keys) == sorted(f._key(x=x) for x in args)
    f.invalidate(x="a" * 10 + "b")
    assert f.get(x="a" * 10 + "c") == {"x": "a" * 10 + "c"}
    with pytest.raises(KeyError):
        f.get(x="a" * 10 + "b")
    assert f("a" * 10 + "b") == {"x": "a" * 10 + "b"}
    assert runs[-1] == "a" * 10 + "b"


def test_a_stored_dict_is_a_private_copy_on_the_miss_too(tmp_path):
    configure_backend("memory", tmp_path)

    @cachu.cache(ttl=300)
    def f(x):
        return {"id": x, "tags": ["a"], "name": f"u{x}", "meta": {"n": [1]}}

    first = f(1)
    first["id"] = 99
    first["tags"].append("b")
    first["meta"]["n"].append(2)
    assert f(1) == {"id": 1, "tags": ["a"], "name": "u1", "meta": {"n": [1]}}
