"""Tag clears take the tag literally: glob characters in a tag select only
that tag, and untagged entries are never cleared by a tag, whatever their
arguments hold. Memory, file and Redis read the same pattern."""

import cachu
import pytest
from cachu.decorator import clear_backends


@pytest.fixture(params=["memory", "file", "redis"])
def backend(request, tmp_path):
    if request.param == "file":
        cachu.configure(file_dir=str(tmp_path))
    if request.param == "redis":
        server = request.getfixturevalue("server")
        request.getfixturevalue("r")
        cachu.configure(redis_url=server.url)
    yield request.param
    clear_backends()


def functions(backend):
    made = {}
    for tag in ["", "users", "*", "u?ers", "[u]sers", "a\\b"]:

        def fn(x, _tag=tag):
            return (_tag, x)

        fn.__name__ = fn.__qualname__ = f"f{len(made)}"
        made[tag] = cachu.cache(ttl=300, backend=backend, tag=tag)(fn)
    return made


def stored(backend):
    return sorted(cachu.get_backend(backend, ttl=300).keys())


@pytest.mark.parametrize("tag", ["*", "u?ers", "[u]sers", "a\\b", "users"])
def test_a_tag_clear_removes_that_tag_only(backend, tag):
    fns = functions(backend)
    for fn in fns.values():
        fn(1)
        fn("|users|")  # an argument holding the tag's text
        fn(f"x|{tag}|")
    before = stored(backend)
    assert len(before) == 18
    removed = cachu.cache_clear(tag=tag, backend=backend, ttl=300)
    assert removed == 3
    left = stored(backend)
    assert len(left) == 15
    gone = set(before) - set(left)
    assert all(k.startswith(f"5m:{fns[tag].__name__}||") for k in gone)


def test_a_tag_clear_never_removes_untagged_entries(backend):
    fns = functions(backend)
    fns[""]("|users|")
    fns[""]("x")
    assert cachu.cache_clear(tag="users", backend=backend, ttl=300) == 0
    assert cachu.cache_clear(tag="*", backend=backend, ttl=300) == 0
    assert len(stored(backend)) == 2


def test_glob_characters_in_key_prefix_and_name_are_literal(backend):
    cachu.configure(key_prefix="v[1]*:")

    @cachu.cache(ttl=300, backend=backend)
    def f(x):
        return x

    f(1)
    f(2)
    assert cachu.cache_info(f).currsize == 2
    # Another prefix that the unescaped glob would have matched.
    cachu.configure(key_prefix="v1:")
    f(3)
    cachu.configure(key_prefix="v[1]*:")
    assert cachu.cache_info(f).currsize == 2
