"""``ttl``, ``cache_if`` and ``validate`` callables that take the call's key
arguments as a second argument (upstream's form), on every backend and both
faces; one-argument callables behave as in 0.2.7."""

import cachu
import pytest
from faces import configure_backend, make_face

BACKENDS = ["memory", "file", "redis"]


@pytest.fixture(params=["sync", "async"])
def face(request):
    f = make_face(request.param)
    yield f
    f.close()


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    server = None
    if request.param == "redis":
        server = request.getfixturevalue("server")
        request.getfixturevalue("r")
    configure_backend(request.param, tmp_path, server)
    return request.param


class Counter:
    def __init__(self):
        self.runs = []

    def __call__(self, x):
        self.runs.append(x)
        return {"x": x, "n": len(self.runs)}


def test_cache_if_sees_the_key_arguments(face, backend):
    seen = []

    def cache_if(result, args):
        seen.append(dict(args))
        return args["x"] != "volatile"

    work = Counter()
    fn = face.cache(work, ttl=300, cache_if=cache_if)
    for x in ("volatile", "volatile", "steady", "steady"):
        face.call(fn, x)
    assert work.runs == ["volatile", "volatile", "steady"]
    assert seen == [{"x": "volatile"}, {"x": "volatile"}, {"x": "steady"}]


def test_ttl_from_result_and_arguments(face, backend):
    def ttl(result, args):
        return 0 if args["x"] == "never" else 300

    work = Counter()
    fn = face.cache(work, ttl=ttl)
    for x in ("never", "never", "keep", "keep"):
        face.call(fn, x)
    assert work.runs == ["never", "never", "keep"]


def test_validate_sees_the_key_arguments(face, backend):
    def validate(entry, args):
        return args["x"] != "recheck"

    work = Counter()
    fn = face.cache(work, ttl=300, validate=validate)
    for x in ("recheck", "recheck", "trusted", "trusted"):
        face.call(fn, x)
    assert work.runs == ["recheck", "recheck", "trusted"]


def test_one_argument_callables_unchanged(face, backend):
    work = Counter()
    fn = face.cache(
        work,
        ttl=lambda result: 300,
        cache_if=lambda result: result["x"] != "no",
        validate=lambda entry: entry.age < 60,
    )
    for x in ("no", "no", "yes", "yes"):
        face.call(fn, x)
    assert work.runs == ["no", "no", "yes"]


def test_key_arguments_are_those_of_the_key():
    """Excluded, ``_``-named and connection-like arguments are not in it;
    defaults are."""
    seen = []

    @cachu.cache(ttl=300, exclude={"verbose"}, cache_if=lambda r, a: seen.append(a) or True)
    def report(user_id, region="eu", verbose=False, _trace=None):
        return user_id

    report(7, verbose=True, _trace="t")
    assert seen == [{"user_id": 7, "region": "eu"}]


def test_set_uses_the_two_argument_ttl():
    @cachu.cache(ttl=lambda r, a: 0 if a["x"] == "skip" else 300)
    def f(x):
        return x

    f.set("value", x="skip")
    f.set("value", x="keep")
    assert f.get(default=None, x="skip") is None
    assert f.get(x="keep") == "value"


@pytest.mark.parametrize("option", ["ttl", "cache_if", "validate"])
@pytest.mark.parametrize("bad", [lambda: 1, lambda a, b, c: 1])
def test_zero_or_three_required_arguments_refused_at_decoration(option, bad):
    with pytest.raises(TypeError, match=option):
        cachu.cache(**{option: bad})(lambda x: x)


@pytest.mark.parametrize(
    "flexible", [lambda *a: True, lambda r, extra=None: True, lambda r=None: True]
)
def test_callables_0_2_7_accepted_are_called_with_one_argument(flexible):
    @cachu.cache(ttl=300, cache_if=flexible)
    def f(x):
        return x

    assert f(1) == 1 and f(1) == 1
    assert cachu.cache_info(f).currsize == 1


def test_builtin_without_signature_is_one_argument():
    @cachu.cache(ttl=300, cache_if=bool)
    def f(x):
        return x

    f(0)
    f(0)
    f(1)
    assert cachu.cache_info(f).currsize == 1
