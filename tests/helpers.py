"""Thread helpers shared by the test modules: they turn a hang into a
failure (a generous join timeout) rather than asserting any duration."""

import threading

JOIN_TIMEOUT = 30


def run_threads(targets, timeout=JOIN_TIMEOUT):
    """Run each target in its own thread, join them all, re-raise the first
    error."""
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guard(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "thread did not finish"
    if errors:
        raise errors[0]


def within(seconds, fn, *args, **kwargs):
    """Run ``fn`` in a thread; fail (instead of hanging) if it is still
    running after ``seconds``. Returns its result or raises its exception."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} still running after {seconds}s"
    if "error" in box:
        raise box["error"]
    return box["value"]
