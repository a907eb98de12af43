"""Records that arrive while a restarted worker recovers its tables are all processed.

faust-streaming 0.15.3 resumes the input partitions before it seeks them to the committed
offsets, and clears the agents' queues after: records fetched in between are thrown away and
never fetched again, and the offset commit stops at the first of them for good
(https://github.com/faust-streaming/faust/issues/596; ``topology.faust_patches`` fixes
it). In production input arrives whenever it arrives, so a restart or a rebalance must not
drop any: this test restarts a worker whose recovery takes seconds, with a backlog waiting
and texts arriving throughout, and counts.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from outage_sms.admin import ensure_topics
from tests.kafka_helpers import (
    SteadyProducer,
    TopicReader,
    WorkerProcess,
    await_committed,
    preload_partitions,
    produce,
)
from topology.settings import Settings
from topology.topics import Role, TopicRegistry
from topology.views import phone_partition

pytestmark = pytest.mark.integration

PRELOADED = 30_000
"""Subscribers written straight to the changelog: seconds of table recovery per start."""
BEFORE = 200
"""Texts the first worker processes and commits: the restart has offsets to seek back to."""
BACKLOG = 2_000
"""Texts that arrive while no worker runs: waiting, and prefetched during the recovery."""
RESTARTS = 2
RATE = 100.0
"""Texts a second produced across the restart, from before the start until after ready."""
ENV = {
    "OUTAGE_SMS_LOG_LEVEL": "INFO",  # "Worker ready" is logged at INFO
    # The inbound path under test, when the caller chose one (settings_env passes only
    # the settings it knows, so OUTAGE_SMS_REPLIES_BATCH would not reach the worker).
    **{k: v for k, v in os.environ.items() if k == "OUTAGE_SMS_REPLIES_BATCH"},
}
FACTS = {"line": "fixed_line_or_mobile", "textable": True, "country": "US", "timezone": None}


def customer_phone(i: int) -> str:
    """Valid NANP numbers: exchanges 200-299 of area code 415, 10,000 lines each."""
    return f"+1415{200 + i // 10_000:03d}{i % 10_000:04d}"


def text(i: int) -> tuple[bytes, bytes]:
    """The i-th inbound text: a status question from the i-th customer (one text each)."""
    number = customer_phone(i)
    value = {
        "schema_version": 1,
        "message_id": f"m{i:06d}",
        "from": number,
        "to": "87654",
        "body": "STATUS",
        "received_at": "2026-11-24T20:00:00Z",
    }
    return number.encode(), orjson.dumps(value)


def subscriber_state(partitions: int) -> Iterator[tuple[int, bytes, bytes]]:
    """The ``subscribers`` table's changelog records of PRELOADED customers."""
    for i in range(PRELOADED):
        number = customer_phone(i)
        p = phone_partition(number.encode(), partitions)
        cid = f"C{i:07d}"
        customer = {"customer_id": cid, "phone": number, "regions": ["R1"], "sms_consent": True}
        value = {"p": p, "facts": FACTS, "customers": {cid: customer}}
        yield p, orjson.dumps(number), orjson.dumps(value)


async def test_records_arriving_during_table_recovery_are_all_processed(
    settings: Settings, tmp_path: Path, read: Callable[[Role], TopicReader]
) -> None:
    # More partitions, a longer seek to the committed offsets: a wider window for the fault.
    s = settings.model_copy(update={"partitions": 16})
    bootstrap = s.bootstrap_servers or ""
    await ensure_topics(s)
    reg = TopicRegistry(s)
    inbound = reg[Role.INBOUND].name
    await preload_partitions(
        bootstrap,
        reg[Role.SUBSCRIBERS_CHANGELOG].name,
        subscriber_state(s.partitions),
        one_per_batch=s.broker_kind == "tansu",
    )
    # Every text writes its number's loop-protection state (``reply_guard``): one key per
    # processed text, as each customer texts once.
    guard = read(Role.REPLY_GUARD_CHANGELOG)
    first = WorkerProcess(s, tmp_path / "worker-1.log", env=ENV).start()
    try:
        await first.log_contains("Worker ready", timeout=120)
        await produce(bootstrap, inbound, [text(i) for i in range(BEFORE)])
        await guard.until(lambda r: len(r.table()) == BEFORE, what="the first texts")
        await await_committed(bootstrap, s.faust_id, [inbound])
    finally:
        first.stop_cleanly()

    # Each restart is one roll of a race (how long the seek takes against when the fetcher
    # next wakes), so restart more than once: every restart must lose nothing.
    sent = BEFORE
    for restart in range(1, RESTARTS + 1):
        sent = await _restart_under_load(s, tmp_path, guard, restart, sent)


async def _restart_under_load(
    s: Settings, tmp_path: Path, guard: TopicReader, restart: int, sent: int
) -> int:
    """Texts wait while no worker runs and keep arriving while one starts, recovers and
    runs; returns how many were sent in all, once every one of them is processed."""
    bootstrap = s.bootstrap_servers or ""
    inbound = TopicRegistry(s)[Role.INBOUND].name
    backlog = [text(sent + i) for i in range(BACKLOG)]
    await preload_partitions(
        bootstrap, inbound, ((phone_partition(k, s.partitions), k, v) for k, v in backlog)
    )
    first_steady = sent + BACKLOG
    steady = SteadyProducer(bootstrap, inbound, lambda i: text(first_steady + i), rate=RATE)
    steady.start()
    worker = WorkerProcess(s, tmp_path / f"worker-{restart + 1}.log", env=ENV)
    try:
        await _produce_for(steady, 1.0)
        started = time.monotonic()
        worker.start()
        await worker.log_contains("Restoring state from changelog topics", timeout=120)
        restoring = time.monotonic()
        await worker.log_contains("Worker ready", timeout=120)
        ready = time.monotonic()
        await _produce_for(steady, 2.0)
        arrived = await steady.stop()
        total = first_steady + len(arrived)
        want = {customer_phone(i) for i in range(total)}
        try:
            await guard.until(
                lambda r: set(r.table()) >= want, timeout=90, what=f"all {total} texts processed"
            )
        except AssertionError:
            pass  # counted and reported below
        got = set(guard.table())
        missing = want - got
        counts = {
            "restart": restart,
            "preloaded_subscribers": PRELOADED,
            "texts_before_restart": sent,
            "texts_waiting_at_restart": BACKLOG,
            "texts_while_starting": steady.sent_between(started, restoring),
            "texts_while_recovering": steady.sent_between(restoring, ready),
            "texts_after_ready": steady.sent_between(ready, time.monotonic()),
            "recovery_seconds": round(ready - restoring, 1),
            "texts_sent": total,
            "texts_processed": len(got & want),
            "missing": len(missing),
            "missing_by_partition": _by_partition(missing, s.partitions),
        }
        print(f"\nrecovery fault test: {counts}")
        assert counts["texts_while_recovering"] > 0, "no text arrived during the recovery"
        assert not missing, f"{len(missing)} texts never processed: {counts}"
        assert got == want, f"processed texts nobody sent: {sorted(got - want)[:5]}"
        # All processed must also mean all committed: a lost record stalls the commit.
        await await_committed(bootstrap, s.faust_id, [inbound], timeout=30)
    finally:
        await steady.stop()
        worker.stop_cleanly()
    return total


async def _produce_for(steady: SteadyProducer, seconds: float) -> None:
    """Let ``steady`` produce for ``seconds``, failing at once if it stopped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if steady.done():
            await steady.stop()  # raises what stopped it
            raise AssertionError("the producer stopped early")
        await asyncio.sleep(0.1)


def _by_partition(numbers: set[str], partitions: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for n in numbers:
        p = phone_partition(n.encode(), partitions)
        counts[p] = counts.get(p, 0) + 1
    return dict(sorted(counts.items()))
