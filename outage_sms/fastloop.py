"""uvloop's event loop when it is installed, plain asyncio's when it is not.

uvloop's event loop costs about half of asyncio's CPU per callback and per socket
operation; the dispatcher and the fake provider are bound by exactly that
(bench/results/dispatch.md). The worker runs on it too: a 300,000-customer fan-out on
Kafka, in alternated pairs, 69,402 / 81,110 commands/s against 60,523 / 73,144 on asyncio's
loop, and a new worker's recovery 86-101 s against 104-108 s (bench/results/latest.md).
It is optional: nothing depends on its behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_fast", "use_fast_loops"]

T = TypeVar("T")


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)  # type: ignore[no-any-return,unused-ignore]


def use_fast_loops() -> bool:
    """uvloop for every event loop this process makes from now on: the worker's, and the
    one Faust's consumer thread makes for itself (the benchmark measured both on it)."""
    try:
        import uvloop  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
