"""A call whose key building runs code that reconfigures the package and
calls the same cached function again (an argument's ``repr``): the function's
configuration is re-read without waiting on itself, and both calls give the
right results under the right keys."""

import threading

import cachu
from helpers import run_threads, within


def test_a_repr_that_reconfigures_and_calls_back_neither_hangs_nor_mixes_keys():
    runs = []

    @cachu.cache(ttl=60, backend="memory")
    def double(x):
        runs.append(repr(x))
        return 2 * getattr(x, "n", x)

    class Arg:
        n = 21

        def __repr__(self):
            # Runs while the outer call builds its key.
            cachu.configure(key_prefix="changed:")
            assert double(5) == 10
            return "Arg(21)"

    assert within(20, double, Arg()) == 42
    # The nested call ran once, then hits under the new prefix.
    assert within(20, double, 5) == 10
    assert runs.count("5") == 1
    assert any(
        k.startswith("changed:") or ":changed:" in k
        for k in cachu.get_backend(backend="memory", ttl=60).keys()
    )


def test_threads_calling_while_another_reconfigures_all_get_their_answers():
    @cachu.cache(ttl=60, backend="memory")
    def square(x):
        return x * x

    stop = threading.Event()

    def reconfigure():
        i = 0
        while not stop.is_set():
            cachu.configure(key_prefix=f"round{i % 3}:")
            i += 1

    def caller():
        for n in range(3000):
            assert square(n % 50) == (n % 50) ** 2

    flipper = threading.Thread(target=reconfigure)
    flipper.start()
    try:
        run_threads([caller] * 4)
    finally:
        stop.set()
        flipper.join(20)
    assert not flipper.is_alive()
