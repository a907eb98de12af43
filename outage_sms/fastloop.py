"""``asyncio.run`` on uvloop when it is installed, plain asyncio when it is not.

uvloop's event loop costs about half of asyncio's CPU per callback and per socket
operation; the dispatcher and the fake provider are bound by exactly that
(bench/results/dispatch.md). It is optional: nothing depends on its behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_fast"]

T = TypeVar("T")


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)  # type: ignore[no-any-return,unused-ignore]
