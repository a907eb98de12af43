"""Fewer cyclic-GC passes during bulk work that allocates millions of short-lived objects.

CPython's collector runs a pass every 700 net allocations. A fan-out of a million
recipients makes several million containers (command tuples, audit entries) that live
until their chunk is written: about 6% of its CPU went to passes that found no cycles
(``gc.callbacks`` timing of the offline fan-out). The replay, which keeps its state, lost
a fifth. Cycles are still collected, a hundred times less often.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["BULK_THRESHOLD", "GcHold", "fewer_gc_passes"]

BULK_THRESHOLD = (100_000, 50, 100)

_holders = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Raise the collector's threshold while any holder is inside (fan-outs of several
    partitions can overlap), and restore the previous one when the last leaves."""
    global _holders, _saved
    if _holders == 0:
        _saved = gc.get_threshold()
        gc.set_threshold(*BULK_THRESHOLD)
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None


class GcHold:
    """:func:`fewer_gc_passes` from one callback to another, for work that is not one
    block of code: a worker's table recovery runs from Faust's assign step to its
    "Worker ready". At a million customers, full passes there took 21-22 s of a new
    worker's 5.5-minute recovery (each rescanning everything recovered so far, nothing to
    collect). ``hold`` and ``release`` are idempotent, so a recovery that a rebalance
    restarts holds once, and a release without a hold is harmless."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None

    @property
    def held(self) -> bool:
        return self._stack is not None

    def hold(self) -> None:
        if self._stack is None:
            stack = contextlib.ExitStack()
            stack.enter_context(fewer_gc_passes())
            self._stack = stack

    def release(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
