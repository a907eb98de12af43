"""The throughput wall as arithmetic: when may the next send go, and take it.

Two limits bind every send: the sender number's (messages or segments per second, and a
daily cap, from the sender pool) and the API client's (Genesys: about 300 requests a
minute per OAuth client). Each is a token bucket kept as one number, GCRA's "theoretical
arrival time" (``tat``: when the bucket would be full again), so its whole state fits in
a table value and moves with a sender when ownership moves.

Nothing here reads a clock or sleeps: ``now`` is an argument. It is epoch seconds (an
injected ``time.time``), because daily caps are calendar days; a clock that steps back
only makes the limiter wait longer, never send more.

The guarantee, checked by property tests: in any closed window of length ``t`` a bucket
lets through at most ``rate * t + max(burst, largest single take)`` units. A take larger
than the burst (a 3-segment text on a 1-segment burst) waits for a full bucket and then
goes into debt, so the long-run rate still holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from .errors import ConfigurationError, PermanentError
from .senders import Sender

__all__ = [
    "DAY",
    "Bucket",
    "ClientLimit",
    "DailyCap",
    "RateLimiter",
    "SenderLimit",
    "UnknownSender",
]

DAY = 86_400.0
#: Float slack when comparing a computed ready time with ``now`` (a nanosecond).
_EPS = 1e-9


class UnknownSender(PermanentError):
    """A command names a sender the pool no longer has: it cannot be sent as written."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket as GCRA: ``rate`` units/s, ``burst`` units, full when ``tat <= now``."""

    rate: float
    burst: float
    tat: float = -math.inf
    hold_until: float = -math.inf
    """Nothing goes before this (a provider's ``Retry-After``)."""

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)) or not self.burst >= 1:
            raise ConfigurationError(
                f"a rate limit needs rate > 0 and burst >= 1 (got {self.rate}, {self.burst})"
            )

    def ready_at(self, units: float, now: float) -> float:
        """The earliest time, not before ``now``, at which ``units`` may be taken."""
        if units <= 0:
            return max(now, self.hold_until)
        need = min(units, self.burst)
        return max(now, self.hold_until, self.tat + (need - self.burst) / self.rate)

    def take(self, units: float, now: float) -> Bucket:
        """Spend ``units`` at ``now``; the caller checked ``ready_at(units, now) <= now``."""
        if self.ready_at(units, now) > now + _EPS:
            raise ValueError("take() before ready_at(): the caller skipped the check")
        if units <= 0:
            return self
        return replace(self, tat=max(self.tat, now) + units / self.rate)

    def tokens(self, now: float) -> float:
        """Units available at ``now`` (negative while in debt after an oversize take)."""
        return self.burst - max(0.0, self.tat - now) * self.rate

    def hold(self, until: float) -> Bucket:
        return replace(self, hold_until=max(self.hold_until, until))


@dataclass(frozen=True, slots=True)
class DailyCap:
    """At most ``cap`` units per calendar day (UTC, shifted by ``offset`` seconds)."""

    cap: int
    offset: float = 0.0
    day: int = -1
    used: int = 0

    def _today(self, now: float) -> int:
        return math.floor((now + self.offset) / DAY)

    def ready_at(self, units: int, now: float) -> float:
        if units > self.cap:
            return math.inf
        day = self._today(now)
        used = self.used if day == self.day else 0
        if used + units <= self.cap:
            return now
        return (day + 1) * DAY - self.offset

    def take(self, units: int, now: float) -> DailyCap:
        day = self._today(now)
        used = self.used if day == self.day else 0
        return replace(self, day=day, used=used + units)


@dataclass(frozen=True, slots=True)
class SenderLimit:
    """One sender number's wall. ``per_segment``: the carrier counts segments, not texts."""

    sender_id: str
    rate: float
    burst: float = 1.0
    """Strict pacing by default: in any second at most ``rate`` (+ one message) go out."""
    per_segment: bool = True
    daily_cap: int | None = None

    @classmethod
    def from_sender(cls, sender: Sender, burst: float = 1.0) -> SenderLimit:
        return cls(sender.id, sender.rate, burst, sender.per_segment, sender.daily_cap)


@dataclass(frozen=True, slots=True)
class ClientLimit:
    """At most ``requests`` per ``window`` seconds for one API client, in any window.

    The refill rate is ``(requests - burst) / window``, so even a burst at the start of a
    window plus a full window of refill stays within the provider's count.
    """

    requests: int = 300
    window: float = 60.0
    burst: float = 10.0

    def bucket(self) -> Bucket:
        if self.requests <= self.burst:
            raise ConfigurationError("ClientLimit needs requests > burst")
        return Bucket((self.requests - self.burst) / self.window, self.burst)


class RateLimiter:
    """Every sender's bucket and daily cap, and the API client's bucket, in one place.

    Mutable holder of immutable bucket states; all decisions are pure functions of them
    and ``now``. One instance per process owns the senders it was given: a limit is only
    global when exactly one limiter owns each sender (see the dispatcher wiring).
    """

    def __init__(
        self,
        senders: Iterable[SenderLimit],
        client: ClientLimit | None = None,
        day_offset: float = 0.0,
    ) -> None:
        self.limits: dict[str, SenderLimit] = {s.sender_id: s for s in senders}
        self._buckets: dict[str, Bucket] = {
            sid: Bucket(s.rate, s.burst) for sid, s in self.limits.items()
        }
        self._caps: dict[str, DailyCap] = {
            sid: DailyCap(s.daily_cap, day_offset)
            for sid, s in self.limits.items()
            if s.daily_cap is not None
        }
        self._client: Bucket | None = client.bucket() if client is not None else None

    def _limit(self, sender_id: str) -> SenderLimit:
        try:
            return self.limits[sender_id]
        except KeyError:
            raise UnknownSender(f"no rate limit for sender {sender_id!r}") from None

    def units(self, sender_id: str, segments: int) -> int:
        """What one message costs on this sender: its segments, or 1."""
        return max(1, segments) if self._limit(sender_id).per_segment else 1

    def ready_at(self, sender_id: str, units: int, now: float) -> float:
        """When ``units`` may go on ``sender_id`` (inf: never, it exceeds the daily cap)."""
        self._limit(sender_id)
        at = self._buckets[sender_id].ready_at(units, now)
        cap = self._caps.get(sender_id)
        if cap is not None:
            day_ready = cap.ready_at(units, now)
            # A new day may still have to wait for the bucket.
            at = max(at, self._buckets[sender_id].ready_at(units, day_ready), day_ready)
        if self._client is not None:
            at = max(at, self._client.ready_at(1, now))
        return at

    def take(self, sender_id: str, units: int, now: float) -> None:
        """Spend one request of ``units`` now; raises ``ValueError`` if it is not ready."""
        if self.ready_at(sender_id, units, now) > now + _EPS:
            raise ValueError(f"sender {sender_id!r} is not ready for {units} units")
        self._buckets[sender_id] = self._buckets[sender_id].take(units, now)
        cap = self._caps.get(sender_id)
        if cap is not None:
            self._caps[sender_id] = cap.take(units, now)
        if self._client is not None:
            self._client = self._client.take(1, now)

    def hold(self, until: float, sender_id: str | None = None) -> None:
        """Send nothing before ``until``: on one sender, or (None) on the whole API client."""
        if sender_id is not None:
            self._limit(sender_id)
            self._buckets[sender_id] = self._buckets[sender_id].hold(until)
        elif self._client is not None:
            self._client = self._client.hold(until)
        else:
            for sid, bucket in self._buckets.items():
                self._buckets[sid] = bucket.hold(until)

    def bucket(self, sender_id: str) -> Bucket:
        self._limit(sender_id)
        return self._buckets[sender_id]

    def state(self, sender_id: str) -> dict[str, float | int]:
        """A sender's whole state as a table value, for handing it to its next owner."""
        b = self.bucket(sender_id)
        cap = self._caps.get(sender_id)
        return {
            "tat": b.tat,
            "hold_until": b.hold_until,
            "day": cap.day if cap else -1,
            "used": cap.used if cap else 0,
        }

    def restore(self, sender_id: str, state: Mapping[str, float | int]) -> None:
        """Adopt a previous owner's state (never loosening what this limiter has seen)."""
        b = self.bucket(sender_id)
        self._buckets[sender_id] = replace(
            b,
            tat=max(b.tat, float(state.get("tat", -math.inf))),
            hold_until=max(b.hold_until, float(state.get("hold_until", -math.inf))),
        )
        cap = self._caps.get(sender_id)
        if cap is not None and int(state.get("day", -1)) >= cap.day:
            day, used = int(state.get("day", -1)), int(state.get("used", 0))
            self._caps[sender_id] = replace(
                cap, day=day, used=max(used, cap.used if cap.day == day else 0)
            )
