"""Silent wrong values made loud: 0.2.7's key rules are kept (keys stay
byte-identical), but two functions that share keys, and arguments left out of
the key because they look like connections, are warned about."""

import gc
import warnings

import cachu
import pytest

Collision = cachu.CacheKeyCollisionWarning


def test_warning_is_a_user_warning():
    assert issubclass(Collision, UserWarning)
    assert cachu.CacheKeyCollisionWarning is cachu._cachu.CacheKeyCollisionWarning


def test_same_name_in_two_modules_of_one_package_is_named(make_package):
    make_package("shopapp", {"users.py": "", "orders.py": ""})
    src = "import cachu\n\n@cachu.cache(ttl=300)\ndef get(n):\n    return ({kind!r}, n)\n"
    first = {"__name__": "shopapp.users"}
    exec(compile(src.format(kind="user"), "users.py", "exec"), first)
    second = {"__name__": "shopapp.orders"}
    with pytest.warns(Collision) as caught:
        exec(compile(src.format(kind="order"), "orders.py", "exec"), second)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "shopapp.users.get" in message and "shopapp.orders.get" in message
    assert "'get'" in message and "5m" in message and "'memory'" in message
    # The warning points at the decoration, not into cachu.
    assert caught[0].filename == "orders.py"
    # The keys are 0.2.7's: the two really share their entries.
    assert first["get"](1) == ("user", 1)
    assert second["get"](1) == ("user", 1)


def test_methods_of_two_classes_share_keys_and_warn():
    class Users:
        @cachu.cache(ttl=60)
        def get(self, n):
            return ("user", n)

    with pytest.warns(Collision, match=r"Orders\.get.*Users\.get"):

        class Orders:
            @cachu.cache(ttl=60)
            def get(self, n):
                return ("order", n)

    assert Users().get(1) == ("user", 1)
    assert Orders().get(1) == ("user", 1)


def _decorate(name, **opts):
    def fn(n):
        return n

    fn.__name__ = fn.__qualname__ = name
    return cachu.cache(**opts)(fn)


def test_no_warning_where_keys_cannot_meet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep = [_decorate("twin", ttl=300)]
        keep.append(_decorate("other", ttl=300))  # another name
        keep.append(_decorate("twin", ttl=3600))  # another ttl region
        keep.append(_decorate("twin", ttl=300, backend="null"))  # another backend
        keep.append(_decorate("twin", ttl=300, tag="users"))  # another tag
        keep.append(_decorate("twin", ttl=300, package="elsewhere"))  # another package
    assert len(keep) == 6


def test_the_same_function_decorated_again_is_not_a_collision():
    # A module reloaded, a factory's closure: the same module and qualname.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = _decorate("again", ttl=300)
        second = _decorate("again", ttl=300)
    assert first is not second


def test_a_function_that_is_gone_no_longer_counts():
    first = _decorate("fleeting", ttl=300)
    fn = first.__wrapped__

    # Another function of the same name, decorated while the first lives.
    def other(n):
        return n

    other.__name__ = "fleeting"
    with pytest.warns(Collision):
        cachu.cache(ttl=300)(other)
    del first, fn
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        def third(n):
            return n

        third.__name__ = "fleeting"
        # `other` is still alive: it is the one named now.
        with pytest.warns(Collision, match="other"):
            cachu.cache(ttl=300)(third)


def test_async_and_sync_twins_warn():
    def f(n):
        return n

    async def g(n):
        return n

    g.__name__ = "f"
    cachu.cache(ttl=300)(f)
    with pytest.warns(Collision):
        cachu.cache(ttl=300)(g)


# -- arguments left out because they look like connections ------------------------------


class Car:
    """Not a connection at all, but it has an `engine`."""

    def __init__(self, model):
        self.model = model
        self.engine = "electric" if model == "tesla" else "petrol"

    def __repr__(self):
        return f"Car({self.model!r})"


def test_connection_like_argument_warns_once_per_function_and_parameter(region_keys):
    @cachu.cache(ttl=300)
    def price(car, year=2020):
        return car.model

    with pytest.warns(Collision) as caught:
        assert price(Car("tesla")) == "tesla"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'car'" in message and "price" in message and "engine" in message
    assert 'exclude={"car"}' in message and 'keep_in_key={"car"}' in message
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Same key as 0.2.7: the car is not in it, so the fiat gets the tesla's price.
        assert price(Car("fiat")) == "tesla"
        assert price(car=Car("fiat"), year=2020) == "tesla"
    assert region_keys(300) == ["5m:price|year=2020"]

    # Another function, and another parameter of the same one, warn on their own.
    @cachu.cache(ttl=300)
    def rent(car, spare=None):
        return car.model

    with pytest.warns(Collision, match="'car' of .*rent"):
        rent(Car("fiat"))
    with pytest.warns(Collision, match="'spare' of .*rent"):
        rent(Car("fiat"), spare=Car("tesla"))


def test_exclude_silences_the_warning(region_keys):
    @cachu.cache(ttl=300, exclude={"car"})
    def price(car):
        return car.model

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert price(Car("tesla")) == "tesla"
        assert price(Car("fiat")) == "tesla"
    assert region_keys(300) == ["5m:price|"]


def test_keep_in_key_keeps_the_argument(region_keys):
    @cachu.cache(ttl=300, keep_in_key={"car"})
    def price(car):
        return car.model

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert price(Car("tesla")) == "tesla"
        assert price(Car("fiat")) == "fiat"
        assert price(Car("fiat")) == "fiat"
    assert region_keys(300) == ["5m:price|car=Car('fiat')", "5m:price|car=Car('tesla')"]


@pytest.mark.asyncio
async def test_keep_in_key_on_a_coroutine(region_keys):
    @cachu.async_cache(ttl=300, keep_in_key={"car"})
    async def price(car):
        return car.model

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await price(Car("tesla")) == "tesla"
        assert await price(Car("fiat")) == "fiat"


def test_extra_keyword_arguments_warn_once(region_keys):
    @cachu.cache(ttl=300)
    def lookup(n, **extra):
        return n

    with pytest.warns(Collision, match="'db'"):
        lookup(1, db=Car("tesla"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lookup(2, db=Car("fiat"))
    assert region_keys(300) == ["5m:lookup|n=1", "5m:lookup|n=2"]
