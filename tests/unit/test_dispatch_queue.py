"""Per-sender queues, the commit point, and what a ledger entry means after a restart."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas import SendCommand
from streams.dispatch import Attempts
from streams.dispatch_queue import (
    DONE,
    OUTCOME,
    RETRY,
    SENDING,
    Duplicate,
    Fresh,
    Interrupted,
    Item,
    OffsetTracker,
    Republish,
    SenderQueue,
    ledger_entry,
    ledger_verdict,
)


def item(offset: int, partition: int = 0) -> Item:
    cmd = SendCommand.model_validate(
        {
            "command_id": f"c{offset}",
            "kind": "alert",
            "from": "87654",
            "to": "+14155550100",
            "body": "hi",
            "encoding": "gsm7",
            "segments": 1,
            "created_at": datetime(2026, 11, 24, tzinfo=UTC),
        }
    )
    return Item(partition, offset, cmd)


def test_due_items_go_before_new_ones_and_in_time_order() -> None:
    q = SenderQueue("87654", 0)
    a, b, c, d = item(1), item(2), item(3), item(4)
    q.push(a)
    q.push(b)
    q.push_later(c, due=20.0)
    q.push_later(d, due=10.0)
    assert len(q) == 4 and q.waiting == 2
    assert q.peek(5.0) is a
    q.pop(a)
    assert q.peek(15.0) is d  # due, and earlier than c
    q.pop(d)
    assert q.peek(15.0) is b
    q.pop(b)
    assert q.peek(15.0) is None
    assert q.next_due() == 20.0
    assert q.peek(20.0) is c


def test_pop_refuses_an_item_that_is_not_next() -> None:
    q = SenderQueue("87654", 0)
    a, b = item(1), item(2)
    q.push(a)
    q.push(b)
    with pytest.raises(ValueError, match="peek"):
        q.pop(b)


def test_commit_point_is_the_lowest_unfinished_offset() -> None:
    t = OffsetTracker()
    assert t.committable(0) is None
    for o in (5, 6, 7):
        t.seen(0, o)
    t.done(0, 6)
    assert t.committable(0) == 5  # 5 is still open: a restart must re-read it
    t.done(0, 5)
    assert t.committable(0) == 7
    t.done(0, 7)
    assert t.committable(0) == 8  # everything read is finished
    assert t.open(0) == 0
    t.forget(0)
    assert t.committable(0) is None and t.partitions() == []


def test_partitions_are_tracked_apart() -> None:
    t = OffsetTracker()
    t.seen(0, 3)
    t.seen(1, 9)
    t.done(1, 9)
    assert (t.committable(0), t.committable(1)) == (3, 10)


def test_ledger_verdicts() -> None:
    a = Attempts(2, 1, 1)
    assert ledger_verdict(None) == Fresh()
    assert ledger_verdict("garbage") == Fresh()
    assert ledger_verdict(ledger_entry(RETRY, 0, 1, a)) == Fresh(a)
    # A request may have left: never send again.
    assert ledger_verdict(ledger_entry(SENDING, 0, 1, a)) == Interrupted(2)
    # Decided, status maybe not published: publish the same bytes again.
    outcome = ledger_entry(OUTCOME, 0, 1, a, b'{"outcome":"sent"}', "sent")
    assert ledger_verdict(outcome) == Republish(b'{"outcome":"sent"}')
    # Published: any further record of the command is a duplicate.
    assert ledger_verdict(ledger_entry(DONE, 0, 1, a, None, "sent")) == Duplicate("sent")


def test_upcoming_lists_the_next_items_in_the_order_they_will_go() -> None:
    q = SenderQueue("s", 0)
    fresh = [item(i) for i in range(4)]
    for one in fresh:
        q.push(one)
    due, later = item(10), item(11)
    q.push_later(due, 5.0)
    q.push_later(later, 50.0)
    assert q.upcoming(10.0, 3) == [due, fresh[0], fresh[1]]
    assert q.upcoming(10.0, 0) == []
    assert q.upcoming(100.0, 10) == [due, later, *fresh]
    assert q.upcoming(10.0, 1) == [q.peek(10.0)]
