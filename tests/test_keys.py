"""Cache key strings must be byte-identical to the reference package.

Keys are observed through the memory backend of the test module's package
(``region_keys`` fixture) after decorated calls.
"""

import sqlite3

import cachu
import pytest

# --- basic shape, prefix, tags -------------------------------------------------


def test_key_plain(region_keys):
    @cachu.cache(ttl=300)
    def get_user(user_id):
        return {"id": user_id}

    get_user(123)
    assert region_keys(300) == ["5m:get_user|user_id=123"]


def test_key_with_key_prefix(region_keys):
    cachu.configure(key_prefix="v1:")

    @cachu.cache(ttl=300)
    def get_user(user_id):
        return {"id": user_id}

    get_user(123)
    assert region_keys(300) == ["5m:v1:get_user|user_id=123"]


def test_key_prefix_read_at_call_time(region_keys):
    """A configure() after decoration still applies to later calls."""

    @cachu.cache(ttl=300)
    def late_prefix(user_id):
        return user_id

    cachu.configure(key_prefix="late:")
    late_prefix(1)
    assert region_keys(300) == ["5m:late:late_prefix|user_id=1"]


def test_key_with_tag(region_keys):
    @cachu.cache(ttl=300, tag="users")
    def get_user(user_id):
        return {"id": user_id}

    get_user(123)
    assert region_keys(300) == ["5m:get_user||users||user_id=123"]


def test_key_with_tag_and_prefix(region_keys):
    cachu.configure(key_prefix="app:")

    @cachu.cache(ttl=300, tag="users")
    def get_user(user_id):
        return {"id": user_id}

    get_user(7)
    assert region_keys(300) == ["5m:app:get_user||users||user_id=7"]


@pytest.mark.parametrize(
    ("tag", "normalised"),
    [
        ("users", "|users|"),
        ("user|admin", "|user.admin|"),
        ("|users|", "|users|"),
        ("||a|b||", "|a.b|"),
        ("a.b", "|a.b|"),
        ("x|y|z", "|x.y.z|"),
    ],
)
def test_tag_normalisation(region_keys, tag, normalised):
    @cachu.cache(ttl=300, tag=tag)
    def tagged_fn(x):
        return x

    tagged_fn(1)
    assert region_keys(300) == [f"5m:tagged_fn|{normalised}|x=1"]


def test_empty_tag_is_no_tag(region_keys):
    @cachu.cache(ttl=300, tag="")
    def untagged_fn(x):
        return x

    untagged_fn(1)
    assert region_keys(300) == ["5m:untagged_fn|x=1"]


def test_key_no_parameters(region_keys):
    @cachu.cache(ttl=300)
    def no_params():
        return 42

    no_params()
    assert region_keys(300) == ["5m:no_params|"]


# --- binding: defaults, varargs, kwargs, keyword-only ---------------------------


def test_defaults_are_filled(region_keys):
    @cachu.cache(ttl=300)
    def with_defaults(a, b=2, c="x"):
        return a

    with_defaults(1)
    assert region_keys(300) == ["5m:with_defaults|a=1 b=2 c='x'"]


def test_positional_and_keyword_calls_share_a_key(region_keys):
    calls = []

    @cachu.cache(ttl=300)
    def shared_key(a, b=2):
        calls.append((a, b))
        return a + b

    assert shared_key(1) == 3
    assert shared_key(a=1) == 3
    assert shared_key(1, 2) == 3
    assert shared_key(b=2, a=1) == 3
    assert calls == [(1, 2)]
    assert region_keys(300) == ["5m:shared_key|a=1 b=2"]


def test_varargs(region_keys):
    @cachu.cache(ttl=300)
    def with_varargs(a, *args):
        return a

    with_varargs(1, 2, "three")
    assert region_keys(300) == ["5m:with_varargs|a=1 vararg1=2 vararg2='three'"]


def test_varargs_sort_as_strings(region_keys):
    @cachu.cache(ttl=300)
    def many_varargs(*args):
        return len(args)

    many_varargs(*range(1, 12))
    expected = " ".join(f"vararg{i}={i}" for i in sorted(range(1, 12), key=lambda n: f"vararg{n}"))
    assert expected.startswith("vararg1=1 vararg10=10 vararg11=11 vararg2=2")
    assert region_keys(300) == [f"5m:many_varargs|{expected}"]


def test_kwargs(region_keys):
    @cachu.cache(ttl=300)
    def with_kwargs(a, **kw):
        return a

    with_kwargs(1, z=3, b="two")
    assert region_keys(300) == ["5m:with_kwargs|a=1 b='two' z=3"]


def test_keyword_only_not_passed_is_absent(region_keys):
    @cachu.cache(ttl=300)
    def kwonly(a, *, mode="fast"):
        return mode

    kwonly(1)
    assert region_keys(300) == ["5m:kwonly|a=1"]


def test_keyword_only_passed_is_present(region_keys):
    @cachu.cache(ttl=300)
    def kwonly_passed(a, *, mode="fast"):
        return mode

    kwonly_passed(1, mode="fast")
    kwonly_passed(1, mode="slow")
    assert region_keys(300) == [
        "5m:kwonly_passed|a=1 mode='fast'",
        "5m:kwonly_passed|a=1 mode='slow'",
    ]


def test_keyword_only_required(region_keys):
    @cachu.cache(ttl=300)
    def kwonly_required(*, name):
        return name

    kwonly_required(name="n")
    assert region_keys(300) == ["5m:kwonly_required|name='n'"]


def test_full_signature(region_keys):
    @cachu.cache(ttl=300)
    def everything(a, b=2, *args, c, d=4, **kw):
        return a

    everything(1, 5, 6, 7, c=3, z=9)
    assert region_keys(300) == [
        "5m:everything|a=1 b=5 c=3 vararg1=6 vararg2=7 z=9",
    ]


def test_positional_only_parameters(region_keys):
    @cachu.cache(ttl=300)
    def posonly(a, /, b, c=3):
        return a

    posonly(1, 2)
    assert region_keys(300) == ["5m:posonly|a=1 b=2 c=3"]


def test_lambda_name(region_keys):
    anonymous = cachu.cache(ttl=300)(lambda x: x)
    anonymous(1)
    assert region_keys(300) == ["5m:<lambda>|x=1"]


def test_parameters_sorted_by_name(region_keys):
    @cachu.cache(ttl=300)
    def unsorted_params(zeta, alpha, mid, Beta):
        return zeta

    unsorted_params(1, 2, 3, 4)
    assert region_keys(300) == ["5m:unsorted_params|Beta=4 alpha=2 mid=3 zeta=1"]


# --- exclusions -----------------------------------------------------------------


def test_exclude(region_keys):
    calls = []

    @cachu.cache(ttl=300, exclude={"logger", "context"})
    def process(logger, context, user_id, data):
        calls.append(user_id)
        return data

    process("log1", {"ctx": 1}, 123, "test")
    process("log2", {"ctx": 2}, 123, "test")
    assert calls == [123]
    assert region_keys(300) == ["5m:process|data='test' user_id=123"]


@pytest.mark.parametrize(
    "exclude", [["logger"], ("logger",), frozenset({"logger"})], ids=["list", "tuple", "frozenset"]
)
def test_exclude_any_collection(region_keys, exclude):
    @cachu.cache(ttl=300, exclude=exclude)
    def exclude_coll(logger, x):
        return x

    exclude_coll("l1", 1)
    exclude_coll("l2", 1)
    assert region_keys(300) == ["5m:exclude_coll|x=1"]


def test_exclude_keyword_argument(region_keys):
    @cachu.cache(ttl=300, exclude={"trace"})
    def exclude_kw(x, **kw):
        return x

    exclude_kw(1, trace="abc", keep=2)
    assert region_keys(300) == ["5m:exclude_kw|keep=2 x=1"]


def test_underscore_names_excluded(region_keys):
    @cachu.cache(ttl=300)
    def underscored(a, _private=None, **kw):
        return a

    underscored(1, _private="p", _other=3, public=4)
    assert region_keys(300) == ["5m:underscored|a=1 public=4"]


def test_underscore_excluded_values_share_entry():
    calls = []

    @cachu.cache(ttl=300)
    def under_shared(a, _hint=None):
        calls.append(_hint)
        return a

    under_shared(1, _hint="x")
    under_shared(1, _hint="y")
    assert calls == ["x"]


class FakeConnection:
    pass


class MyEngine:
    pass


class HasEngine:
    engine = "sqlite://"


class HasDialect:
    def __init__(self):
        self.dialect = "postgresql"


class HasDriverConnection:
    @property
    def driver_connection(self):
        return object()


class my_psycopg_cursor:
    pass


class pyodbc_handle:
    pass


@pytest.mark.filterwarnings(
    "ignore::cachu.CacheKeyCollisionWarning"
)  # tested in test_collisions.py
@pytest.mark.parametrize(
    "factory",
    [
        FakeConnection,
        MyEngine,
        HasEngine,
        HasDialect,
        HasDriverConnection,
        my_psycopg_cursor,
        pyodbc_handle,
    ],
    ids=lambda f: f.__name__,
)
def test_connection_like_values_excluded(region_keys, factory):
    calls = []

    @cachu.cache(ttl=300)
    def with_conn(conn, user_id):
        calls.append(conn)
        return user_id

    with_conn(factory(), 1)
    with_conn(factory(), 1)
    with_conn(conn=factory(), user_id=1)
    assert len(calls) == 1
    assert region_keys(300) == ["5m:with_conn|user_id=1"]


@pytest.mark.filterwarnings(
    "ignore::cachu.CacheKeyCollisionWarning"
)  # tested in test_collisions.py
def test_sqlite3_connection_excluded(region_keys):
    conn = sqlite3.connect(":memory:")
    try:

        @cachu.cache(ttl=300)
        def query_user(db, user_id):
            return db.execute("SELECT ?", (user_id,)).fetchone()[0]

        assert query_user(conn, 5) == 5
        assert query_user(conn, 5) == 5
        assert region_keys(300) == ["5m:query_user|user_id=5"]
    finally:
        conn.close()


@pytest.mark.filterwarnings(
    "ignore::cachu.CacheKeyCollisionWarning"
)  # tested in test_collisions.py
def test_connection_like_vararg_excluded(region_keys):
    @cachu.cache(ttl=300)
    def conn_vararg(a, *rest):
        return a

    conn_vararg(1, FakeConnection(), 2)
    assert region_keys(300) == ["5m:conn_vararg|a=1 vararg2=2"]


def test_ordinary_objects_not_excluded(region_keys):
    class Plain:
        def __repr__(self):
            return "Plain()"

    @cachu.cache(ttl=300)
    def plain_obj(o):
        return 1

    plain_obj(Plain())
    assert region_keys(300) == ["5m:plain_obj|o=Plain()"]


# --- methods --------------------------------------------------------------------


def test_instance_method_key_excludes_self(region_keys):
    class Repo:
        def __init__(self, db):
            self.db = db

        @cachu.cache(ttl=300)
        def get_item(self, item_id):
            return (self.db, item_id)

    Repo("a").get_item(1)
    assert region_keys(300) == ["5m:get_item|item_id=1"]


def test_classmethod_key_excludes_cls(region_keys):
    class Factory:
        @classmethod
        @cachu.cache(ttl=300)
        def build(cls, n):
            return n

    Factory.build(2)
    assert region_keys(300) == ["5m:build|n=2"]


def test_staticmethod_key(region_keys):
    class Util:
        @staticmethod
        @cachu.cache(ttl=300)
        def helper(n, flag=True):
            return n

    Util.helper(3)
    assert region_keys(300) == ["5m:helper|flag=True n=3"]


# --- repr of values ---------------------------------------------------------------


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a", "'a'"),
        ("", "''"),
        ("it's", '"it\'s"'),
        ('say "hi"', "'say \"hi\"'"),
        ("both ' and \"", "'both \\' and \"'"),
        ("café", "'café'"),
        ("😀", "'😀'"),
        ("a\nb", "'a\\nb'"),
        ("tab\there", "'tab\\there'"),
        ("nul\x00", "'nul\\x00'"),
        ("back\\slash", "'back\\\\slash'"),
        ("pipe|in|it", "'pipe|in|it'"),
        (0, "0"),
        (-5, "-5"),
        (10**30, "1000000000000000000000000000000"),
        (True, "True"),
        (False, "False"),
        (None, "None"),
        (1.5, "1.5"),
        (2.0, "2.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-7, "1e-07"),
        (1e16, "1e+16"),
        (-0.0, "-0.0"),
        (float("inf"), "inf"),
        (b"x\x00", "b'x\\x00'"),
        ((), "()"),
        ((1,), "(1,)"),
        ((1, "a", None), "(1, 'a', None)"),
        ([1, [2, 3]], "[1, [2, 3]]"),
        ({}, "{}"),
        ({"b": 1, "a": (2,)}, "{'b': 1, 'a': (2,)}"),
        ({"n": {"x": [None, 1.5]}}, "{'n': {'x': [None, 1.5]}}"),
        (frozenset({3}), "frozenset({3})"),
        (Point(1, 2), "Point(1, 2)"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) or len(v) < 20 else None,
)
def test_value_repr(region_keys, value, text):
    @cachu.cache(ttl=300)
    def repr_probe(v):
        return 1

    repr_probe(value)
    assert region_keys(300) == [f"5m:repr_probe|v={text}"]


# --- regions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "region"),
    [
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (119, "1m"),
        (300, "5m"),
        (3599, "59m"),
        (3600, "1h"),
        (86399, "23h"),
        (86400, "1d"),
        (172800, "2d"),
    ],
)
def test_region_names(region_keys, ttl, region):
    @cachu.cache(ttl=ttl)
    def region_probe(x):
        return x

    region_probe(1)
    assert region_keys(ttl) == [f"{region}:region_probe|x=1"]


def test_callable_ttl_region(region_keys):
    @cachu.cache(ttl=lambda result: 300)
    def dyn_region(x):
        return x

    dyn_region(1)
    assert region_keys(-1) == ["-1s:dyn_region|x=1"]
    assert region_keys(300) == []


def test_regions_are_separate(region_keys):
    @cachu.cache(ttl=60)
    def short_lived(x):
        return x

    @cachu.cache(ttl=3600)
    def long_lived(x):
        return x

    short_lived(1)
    long_lived(1)
    assert region_keys(60) == ["1m:short_lived|x=1"]
    assert region_keys(3600) == ["1h:long_lived|x=1"]


def test_helpers_build_the_same_key(region_keys):
    cachu.configure(key_prefix="p:")

    @cachu.cache(ttl=300, tag="t")
    def helper_key(a, b=2):
        return a * 10 + b

    helper_key.set("stored", a=1)
    assert region_keys(300) == ["5m:p:helper_key||t||a=1 b=2"]
    assert helper_key(1) == "stored"
