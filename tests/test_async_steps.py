"""The steps the engine hands the async driver are the AsyncStep class's own
objects, one per step: the driver (``cachu._async``) tells them apart by
identity, so a step object that is equal but not the same would send a call
down the wrong branch."""

import asyncio

import cachu
from cachu import _cachu

Step = _cachu.AsyncStep
# In the enum's order: a step's number is its place here.
NAMES = ["Run", "LocalLock", "Blocking", "Native", "Refresh", "Done"]


def test_each_step_is_one_object_with_its_name_and_number():
    steps = [getattr(Step, name) for name in NAMES]
    assert len({id(s) for s in steps}) == len(NAMES)
    for number, (name, step) in enumerate(zip(NAMES, steps, strict=True)):
        assert getattr(Step, name) is step
        assert step == number


def test_a_memory_miss_is_walked_with_the_class_objects(tmp_path):
    cachu.configure(backend="memory", file_dir=str(tmp_path))

    async def user(x):
        return {"id": x}

    core = cachu.cache(ttl=300)(user)._cachu
    done, call = core._acall((7,), None, False)
    assert done is False
    try:
        assert call.step is Step.LocalLock
        assert call.step is Step.LocalLock  # a second read: the same object
        assert call.locked(False) is Step.Run
        assert call.ran({"id": 7}) is Step.Done
        assert call.step is Step.Done
        assert call.outcome() == {"id": 7}
    finally:
        call.close()
    # The stored value is served by the plain hit path now.
    assert core._acall((7,), None, False) == (True, {"id": 7})


def test_a_failed_run_and_a_file_step_are_class_objects_too(tmp_path):
    cachu.configure(backend="file", file_dir=str(tmp_path))

    async def boom(x):
        raise ValueError(x)

    core = cachu.cache(ttl=300, backend="file")(boom)._cachu
    done, call = core._acall((1,), None, False)
    assert done is False
    try:
        step = call.step
        assert any(step is getattr(Step, name) for name in NAMES)
        # Walk the call as the driver would, up to the function's error.
        for _ in range(10):
            if step is Step.Blocking:
                step = call.perform()
            elif step is Step.LocalLock:
                step = call.locked(False)
            elif step is Step.Run:
                step = call.failed(ValueError(1))
                break
        assert step is Step.Done
    finally:
        call.close()


def test_the_driver_runs_a_miss_then_serves_the_hit(tmp_path):
    cachu.configure(backend="memory", file_dir=str(tmp_path))
    runs = []

    @cachu.cache(ttl=300)
    async def user(x):
        runs.append(x)
        return {"id": x}

    async def twice():
        return await user(3), await user(3)

    assert asyncio.run(twice()) == ({"id": 3}, {"id": 3})
    assert runs == [3]
