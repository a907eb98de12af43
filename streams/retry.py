"""Retry policy: exponential backoff with full jitter, capped, pure and seedable."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` counts every try, the first included; delays are in seconds."""

    attempts: int = 6
    base: float = 0.2
    cap: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base <= 0 or self.cap < self.base:
            raise ValueError("RetryPolicy needs attempts >= 1 and 0 < base <= cap")

    def should_retry(self, attempt: int) -> bool:
        """``attempt`` is the try that just failed, starting at 1."""
        return attempt < self.attempts

    def delay(self, attempt: int, rng: random.Random | None = None, floor: float = 0.0) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**(n-1))].

        ``floor`` is a server-given minimum such as ``Retry-After``; it wins over the jitter
        but is still capped, so one bad header cannot park a worker for an hour.
        """
        ceiling = min(self.cap, self.base * 2 ** (max(attempt, 1) - 1))
        jittered = (rng or random).uniform(0.0, ceiling)
        return min(max(jittered, floor), self.cap) if floor else jittered
