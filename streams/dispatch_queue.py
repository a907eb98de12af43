"""The dispatcher's bookkeeping: per-sender queues, and which offsets are safe to commit.

A dispatch partition interleaves several senders. Processed in offset order, a long code
at 1 message/s would hold a short code at 100/s behind it, so each sender gets its own
queue and its own pace, and the partition's committed offset is the lowest offset not yet
finished (everything below it has a terminal outcome on the broker). Commands waiting for
``not_before`` or a retry sit in a time-ordered heap beside the queue and keep their
offsets open, so a crash re-reads them (the ledger then says what already happened).

Pure: no clock, no I/O; times are epoch seconds passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from schemas import SendCommand

from .dispatch import Attempts

__all__ = [
    "DONE",
    "OUTCOME",
    "RETRY",
    "SENDING",
    "Duplicate",
    "Fresh",
    "Interrupted",
    "Item",
    "LedgerVerdict",
    "OffsetTracker",
    "Republish",
    "SenderQueue",
    "ledger_entry",
    "ledger_verdict",
]

_seq = itertools.count()


@dataclass(slots=True)
class Item:
    """One command in flight through the dispatcher, where it came from, its tries so far."""

    partition: int
    offset: int
    cmd: SendCommand
    attempts: Attempts = field(default_factory=Attempts)
    intent: bool = False
    """The ledger says ``sending`` for this try (written before the rate wait)."""
    introduces: bool = False
    """It carries the first-message opt-out footer (``streams.first_contact``)."""


class SenderQueue:
    """FIFO of new commands plus a heap of commands due later (deferred or retrying).

    Due items go first: a retry has waited its turn already, and a quiet-hours deferral
    was due before anything that arrived since.
    """

    def __init__(self, sender: str, partition: int) -> None:
        self.sender = sender
        self.partition = partition
        self._fifo: deque[Item] = deque()
        self._later: list[tuple[float, int, Item]] = []

    def __len__(self) -> int:
        return len(self._fifo) + len(self._later)

    @property
    def waiting(self) -> int:
        """Items held for a time (``not_before``, retry), not ready to go."""
        return len(self._later)

    def push(self, item: Item) -> None:
        self._fifo.append(item)

    def push_later(self, item: Item, due: float) -> None:
        heapq.heappush(self._later, (due, next(_seq), item))

    def peek(self, now: float) -> Item | None:
        """The next item to consider at ``now``, or None (then see ``next_due``)."""
        if self._later and self._later[0][0] <= now:
            return self._later[0][2]
        return self._fifo[0] if self._fifo else None

    def pop(self, item: Item) -> None:
        """Remove ``item``, which ``peek`` just returned."""
        if self._later and self._later[0][2] is item:
            heapq.heappop(self._later)
        elif self._fifo and self._fifo[0] is item:
            self._fifo.popleft()
        else:
            raise ValueError("pop() of an item peek() did not return")

    def upcoming(self, now: float, n: int) -> list[Item]:
        """The next ``n`` items in the order ``peek``/``pop`` would give them at ``now``
        if nothing arrives meanwhile (the dispatcher writes their intents ahead)."""
        if n <= 0:
            return []
        due = [i for t, _, i in heapq.nsmallest(n, self._later) if t <= now]
        return [*due, *itertools.islice(self._fifo, max(0, n - len(due)))]

    def next_due(self) -> float | None:
        return self._later[0][0] if self._later else None

    def items(self) -> list[Item]:
        return [*self._fifo, *(i for _, _, i in self._later)]


class OffsetTracker:
    """Per partition: offsets read but not finished; commit up to the lowest of them."""

    def __init__(self) -> None:
        self._open: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}

    def seen(self, partition: int, offset: int) -> None:
        self._open.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def done(self, partition: int, offset: int) -> None:
        opened = self._open.get(partition)
        if opened is not None:
            opened.discard(offset)

    def open(self, partition: int) -> int:
        return len(self._open.get(partition, ()))

    def committable(self, partition: int) -> int | None:
        """The offset to commit (the next to read after a restart); None: nothing read."""
        if partition not in self._next:
            return None
        opened = self._open.get(partition)
        return min(opened) if opened else self._next[partition]

    def forget(self, partition: int) -> None:
        self._open.pop(partition, None)
        self._next.pop(partition, None)

    def partitions(self) -> list[int]:
        return sorted(self._next)


# The ledger: command_id -> what the dispatcher last did with it (a compacted topic).
SENDING = "sending"
"""A request may be on its way: after a crash, do not send again (at most once)."""
RETRY = "retry"
"""The last try failed without reaching the customer: sending again is safe."""
OUTCOME = "outcome"
"""Terminal; ``status`` holds the delivery-status record, which may not be published yet."""
DONE = "done"
"""Terminal, and its delivery-status record is on the broker."""


@dataclass(frozen=True, slots=True)
class Fresh:
    """Never seen, or safe to (re)send with the attempts counted so far."""

    attempts: Attempts = Attempts()


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A request was in flight when the last owner stopped: its outcome is unknown."""

    attempts: int


@dataclass(frozen=True, slots=True)
class Republish:
    """Decided, but the status may not have reached the broker before a crash: publish
    the same status again (identical bytes) so none is missing."""

    status: bytes


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Another record of a command that already has its terminal status."""

    outcome: str | None


LedgerVerdict = Fresh | Interrupted | Republish | Duplicate


def ledger_entry(
    state: str,
    partition: int,
    offset: int,
    attempts: Attempts,
    status: bytes | None = None,
    outcome: str | None = None,
) -> dict[str, object]:
    entry: dict[str, object] = {
        "s": state,
        "p": partition,
        "o": offset,
        "a": [attempts.sent, attempts.transient, attempts.throttled],
    }
    if status is not None:
        entry["status"] = status.decode()
    if outcome is not None:
        entry["outcome"] = outcome
    return entry


def ledger_verdict(entry: object) -> LedgerVerdict:
    """What a ledger entry means for a command read again (after a restart, a replay)."""
    if not isinstance(entry, dict):
        return Fresh()
    a = entry.get("a") or [0, 0, 0]
    attempts = Attempts(*(int(x) for x in a[:3])) if isinstance(a, list) else Attempts()
    state = entry.get("s")
    status = entry.get("status")
    if state == OUTCOME and isinstance(status, str):
        return Republish(status.encode())
    if state in (DONE, OUTCOME):
        outcome = entry.get("outcome")
        return Duplicate(outcome if isinstance(outcome, str) else None)
    if state == SENDING:
        return Interrupted(attempts.sent)
    return Fresh(attempts)
