"""``fn.clear(**partial)``: remove the entries of one decorated function
whose key holds the given arguments, whatever its other arguments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cachu import _cachu, _regions
from cachu._cachu import glob_escape
from cachu.config import get_config


class PartialClear:
    """What a decorated function's ``clear`` needs to know about it."""

    def __init__(
        self,
        package: str | None,
        backend: str,
        region_ttl: int,
        name: str,
        tag: str,
        exclude: list[str],
        keep_in_key: list[str],
    ) -> None:
        self.package = package
        self.backend = backend
        self.region_ttl = region_ttl
        # `name|` or `name||tag||`: where a key's arguments start.
        self.base_head = _cachu.base_head(name, tag)
        self.exclude = exclude
        self.keep_in_key = keep_in_key

    def __call__(self, _global: bool = False, **partial: Any) -> int:
        """Remove every entry whose arguments include ``partial`` (all the
        function's entries when none is given); ``_global=True`` matches
        entries under any ``key_prefix``. Returns how many were removed."""
        plan = self._plan(_global, partial)
        if plan is None:
            return 0
        inst, pattern, holds = plan
        if holds is None:
            return inst.clear(pattern)  # type: ignore[no-any-return]
        removed = 0
        for key in [k for k in inst.keys(pattern) if holds(k)]:
            inst.delete(key)
            removed += 1
        return removed

    async def aclear(self, _global: bool = False, **partial: Any) -> int:
        """Awaitable ``__call__`` (for a coroutine function's ``clear``)."""
        plan = self._plan(_global, partial)
        if plan is None:
            return 0
        inst, pattern, holds = plan
        if holds is None:
            return await inst.aclear(pattern)
        removed = 0
        for key in [k async for k in inst.akeys(pattern) if holds(k)]:
            await inst.adelete(key)
            removed += 1
        return removed

    def _plan(
        self, _global: bool, partial: dict[str, Any]
    ) -> tuple[Any, str, Callable[[str], bool] | None] | None:
        """The region's instance, the glob of the candidate keys, and the
        exact test a candidate must pass (None: every candidate goes); None
        when the region holds nothing."""
        inst = _regions.clearable(self.package, self.backend, self.region_ttl)
        if inst is None:
            return None
        region = f"{_cachu.region_name(self.region_ttl)}:"
        key_prefix = None if _global else get_config(self.package).key_prefix
        prefix = "*" if key_prefix is None else glob_escape(key_prefix)
        head = region + prefix + glob_escape(self.base_head)
        pairs = _cachu.key_pairs(partial, self.exclude, self.keep_in_key)
        if not pairs:
            return inst, head + "*", None
        # The glob narrows the candidates (in Redis, server side); an exact
        # test then keeps only keys where each pair is a whole argument, so
        # `id=1` matches neither `id=12` nor `uid=1`.
        pattern = head + "*" + "*".join(glob_escape(f"{k}={v}") for k, v in pairs) + "*"
        return inst, pattern, lambda key: self._holds(key, pairs, len(region), key_prefix)

    def _holds(
        self, key: str, pairs: list[tuple[str, str]], start: int, key_prefix: str | None
    ) -> bool:
        if key_prefix is None:  # any prefix: the first `name|` after the region
            at = key.find(self.base_head, start)
        else:
            at = start + len(key_prefix)
        if at < 0 or not key.startswith(self.base_head, at):
            return False
        args = key[at + len(self.base_head) :]
        return all(_holds_argument(args, name, value) for name, value in pairs)


def _holds_argument(args: str, name: str, value: str) -> bool:
    """Whether a key's arguments (``a=1 b='x'``, sorted by name) give
    ``name`` the value ``value`` (a repr). The argument is the first
    ``name=`` that starts the text or follows a space: a later one can only
    be inside its own value (`a='x a=1'`). Only an argument sorted before it
    whose value's repr holds `` name=`` could mislead this test."""
    head = name + "="
    if args.startswith(head):
        at = 0
    else:
        at = args.find(" " + head) + 1
        if at == 0:
            return False
    start = at + len(head)
    end = start + len(value)
    return args.startswith(value, start) and (end == len(args) or args[end] == " ")


def async_clear(clear: PartialClear) -> Callable[..., Awaitable[int]]:
    """The awaitable ``clear`` of a coroutine function."""

    async def aclear(_global: bool = False, **partial: Any) -> int:
        return await clear.aclear(_global, **partial)

    aclear.__doc__ = PartialClear.__call__.__doc__
    return aclear
