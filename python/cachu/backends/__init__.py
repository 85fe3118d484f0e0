"""Backend objects and the miss sentinel."""

from cachu._cachu import NO_VALUE, Backend

__all__ = ["Backend", "NO_VALUE"]
