"""Fixes for faust-streaming faults that would lose input, applied per app (no global patch).

**Records that arrive while a worker recovers its tables are dropped** (faust-streaming
0.15.3; upstream https://github.com/faust-streaming/faust/issues/596, open). When table
recovery ends, ``Recovery.on_recovery_completed`` does, in this order:

1. resume the stream partitions (flow is already on: it was resumed to read changelogs);
2. ``await`` the seek of the stream partitions to their committed offsets (a round trip);
3. ``app.flow_control.resume()``, which *clears every agent's input queue*.

During the await in 2 the fetcher hands the agents whatever it had prefetched for the
stream partitions during recovery, and 3 throws away what the agents had not yet taken.
The fetcher's read position is already past those records, so they are never delivered
again (on a partition without a committed offset nothing seeks back at all), and as they
are never acknowledged either, Faust's offset commit stops at the first of them for good:
a hole in the input and a stalled partition. The wider the window in 2, the more is lost:
a few hundred records per partition on Tansu, whose offset fetch is slow; rarer on Apache
Kafka. ``tests/integration/test_recovery_faults.py`` reproduces it.

The fix keeps the stream partitions paused until the seek is done and the queues have been
cleared, then resumes them: nothing reaches an agent's queue before the clear, and the first
record delivered is the one at the committed offset. ``_resume_streams`` (the path taken
when an app has no tables) has the same order and gets the same fix.

**A fetch in flight when recovery ends drops the waiting input of every stream partition**
(faust-streaming 0.15.3, same symptom as above, another cause). Faust hands the consumer
thread its *live* set of active partitions for each fetch, and aiokafka filters what it
returns with ``if partitions and tp not in partitions``. At "Done reading from changelog
topics" recovery pauses the changelog partitions and the set becomes *empty* (the stream
partitions are still paused): a fetch waiting at that moment (up to a second) then returns
the buffered records of *every* assigned partition, Faust's ``getmany`` drops those of the
paused stream partitions, and aiokafka's position has moved past them. If that happens
after the seek to the committed offsets has reached a partition (the seek runs then, one
round trip per partition), the partition's waiting input is never delivered: the worker
reads on from where the dropped fetch ended, and Faust even counts the skipped offsets as
a gap it may commit over. Texts that were waiting at the restart are lost on whole
partitions, texts sent after it are processed. Observed in a worker's log (a probe on the
fetch): 13 ms after the seek began, one fetch returned 2,452 records of all 16
``sms.inbound`` partitions, from their committed offsets, with no partition active. The
fix, :func:`snapshot_fetches`, gives each fetch a copy of the set as it was when the fetch
began, so a fetch only ever returns partitions that were active then.

**A commit that fails across a rebalance is recorded as done** (faust-streaming 0.15.3:
``Consumer._commit_offsets`` updates ``_committed_offset`` whether or not the commit
succeeded). When the broker dies under a worker, the offset commit in flight is retried
until the broker is back, where the group has expired the member: it fails with
UnknownMemberId and Faust's ``_commit`` returns False. If that answer arrives after the
revoke has cleared the partitions' state (the revoke waits for the commit in flight), the
offsets the broker never stored stay in ``_committed_offset`` into the new generation:
``perform_seek`` overwrites only the partitions the broker has a commit for. The rewind of
uncommitted partitions (``_rewind_uncommitted``) then skips them as committed, and they
stay wherever a fetch dropped during the rebalance left the fetcher: a fetch begun just
before the revoke (its snapshot still has every stream partition active) returns the new
generation's first records, from the start of each partition, and Faust drops them as
paused. Everything up to that position, including input sent after the broker restart, is
never processed, and nothing is logged. Observed in the broker-restart test of
``tests/integration/test_crash_faults.py`` (1 run in 3 or 4 after the kill test) with a
probe: ``customer.regions[0]`` at committed 7 in Faust and nothing committed on the
broker, its offsets 0-13 returned 0.3 s after the rejoin to a fetch begun before the revoke
and dropped, no seek for it; only the one partition without a phantom commit (rewound to
0) was processed afterwards. In the runs that passed, the failed commit returned before
the revoke, whose clearing removed its offsets. The fix,
:meth:`SafeRecovery._forget_previous_generation`, clears that bookkeeping of the stream
partitions right before the seek, after any commit in flight, so every stream partition is
positioned by the seek or the rewind whatever a fetch dropped before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import faust
from faust.tables import TableManager
from faust.tables.recovery import Recovery

from .gc_passes import GcHold

__all__ = [
    "PATCHED_FAUST_VERSION",
    "DirectReader",
    "SafeRecovery",
    "SafeTableManager",
    "add_direct_reader",
    "direct_readers",
    "quiet_direct_partitions",
    "on_worker_ready",
    "recovery_gc",
    "snapshot_fetches",
]

log = logging.getLogger(__name__)

PATCHED_FAUST_VERSION = "0.15.3"
"""The faust-streaming release these overrides were written against (and copied from)."""


class SafeRecovery(Recovery):
    """Faust's ``Recovery`` with the stream partitions resumed only after the seek to the
    committed offsets and the clearing of the agents' queues (faust issue #596)."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        # Faust 0.15.3's body, reordered where marked.
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning(
                "Recovery rebalancing again app id %s param %s",
                self.app.consumer_generation_id,
                generation_id,
            )
            return
        await self._seek_then_resume(assignment)
        await cast(Any, self.app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        recovery_gc(self.app).release()
        self.log.info("Worker ready")
        _worker_ready(self.app)

    async def _resume_streams(self, generation_id: int = 0) -> None:
        # Faust 0.15.3's body, reordered where marked (the no-tables path).
        app = self.app
        await app.on_rebalance_complete.send()
        assignment = app.consumer.assignment()
        if self.app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        if not assignment:
            self.log.info("Resuming streams with empty assignment")
        await self._seek_then_resume(assignment)
        await cast(Any, app)._fetcher.maybe_start()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        app.on_rebalance_end()
        recovery_gc(app).release()
        self.log.info("Worker ready")
        _worker_ready(app)

    async def _seek_then_resume(self, assignment: set[Any]) -> None:
        """The reordered part: seek while the stream partitions are still paused, clear
        the queues (``flow_control.resume``), and only then let records through."""
        consumer = self.app.consumer
        streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        if assignment:
            await self._forget_previous_generation(streams)
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
            await self._rewind_uncommitted(streams)
        # Partitions a direct reader reads stay paused in Faust's consumer: the reader
        # starts where the seek left them (one whose position is unknown stays with Faust).
        readers = direct_readers(self.app)
        wanted = sorted(tp for tp in streams if any(tp.topic in r.topics for r in readers))
        positions: dict[Any, int] = {}
        for tp in wanted:
            offset = await consumer.position(tp)
            if offset is not None:
                positions[tp] = offset
        self.completed.set()
        self.log.info("Resuming flow...")
        self.app.flow_control.resume()  # clears the agents' queues: nothing is in them yet
        # No await between the clear and here: no record can slip in and be cleared.
        consumer.resume_partitions(streams - positions.keys())
        consumer.resume_flow()
        for reader in readers:
            mine = {tp: offset for tp, offset in positions.items() if tp.topic in reader.topics}
            await reader.start(mine)

    async def _forget_previous_generation(self, streams: set[Any]) -> None:
        """Drop Faust's commit bookkeeping of the stream partitions before the seek, so
        that what ``perform_seek`` leaves in ``_committed_offset`` is what the broker has.

        ``perform_seek`` only overwrites the partitions the broker has a commit for. A
        commit that failed across the rebalance (UnknownMemberId after the broker came
        back) still records its offsets as committed, and when it returns after the
        revoke cleared the partition's state, those never-committed offsets survive into
        the new generation (see the module docstring). Waits for a commit in flight first;
        nothing awaits between that and the clearing, and the cleared partitions have no
        acks left, so no commit can bring them back before the seek. Safe: the stream
        partitions are paused and everything from the committed offset on is delivered
        again, so no ack of this generation is dropped."""
        consumer = cast(Any, self.app.consumer)
        await consumer.maybe_wait_for_commit_to_finish()
        for tp in streams:
            consumer._committed_offset.pop(tp, None)
            consumer._acked.pop(tp, None)
            consumer._acked_index.pop(tp, None)
            consumer._gap.pop(tp, None)

    async def _rewind_uncommitted(self, streams: set[Any]) -> None:
        """Start a stream partition this group never committed where a new group starts.

        ``perform_seek`` leaves such a partition alone, at whatever position the fetcher
        reached while the flow was stopped for the rebalance: past records it fetched and
        Faust dropped (a worker killed during its first fan-out, before any commit, was
        restarted and never fanned that outage out)."""
        consumer = self.app.consumer
        committed = cast(Any, consumer)._committed_offset
        fresh = sorted(tp for tp in streams if committed.get(tp) is None)
        if not fresh or self.app.conf.consumer_auto_offset_reset != "earliest":
            return
        for tp, offset in (await consumer.earliest_offsets(*fresh)).items():
            await consumer.seek(tp, offset)


class DirectReader(Protocol):
    """Reads some stream topics itself on the partitions Faust assigns
    (:class:`topology.inbound_reader.InboundReader`)."""

    topics: frozenset[str]

    async def start(self, positions: Mapping[Any, int]) -> None: ...

    def allow(self) -> None: ...

    def halt(self) -> None: ...

    async def stop(self, commit: bool = True) -> None: ...


def recovery_gc(app: Any) -> GcHold:
    """Fewer GC passes from an assignment to "Worker ready" (``topology.gc_passes``)."""
    hold: GcHold = app.__dict__.setdefault("_outage_sms_recovery_gc", GcHold())
    return hold


def on_worker_ready(app: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` at the end of every recovery ("Worker ready"), partitions and
    tables in place: work for the new assignment that need not wait for its first record."""
    app.__dict__.setdefault("_outage_sms_ready", []).append(callback)


def _worker_ready(app: Any) -> None:
    for callback in app.__dict__.get("_outage_sms_ready", ()):
        callback()


def direct_readers(app: Any) -> list[DirectReader]:
    readers: list[DirectReader] = app.__dict__.setdefault("_outage_sms_direct_readers", [])
    return readers


def add_direct_reader(app: Any, reader: DirectReader) -> None:
    """Let ``reader`` read its topics on this worker's partitions from each recovery's end
    (``SafeRecovery``), stopping it, committed, when a revoke or a shutdown begins."""
    direct_readers(app).append(reader)

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def _revoked(*args: Any, **kwargs: Any) -> None:
        # Inside the revoke, before the group moves on: the commit still counts.
        await reader.stop(commit=True)


def quiet_direct_partitions(app: Any) -> None:
    """Leave the partitions a direct reader reads out of Faust's livelock check.

    Faust's consumer never fetches them past one held batch (they stay paused in it), so
    after ``stream_processing_timeout`` its check would log "Aiokafka stopped fetching"
    for each of them every few seconds, about a reader that is fine. Idempotent."""
    consumer = app.consumer
    if getattr(consumer, "_outage_sms_quiet_direct", False):
        return
    verify = consumer.verify_event_path

    def verify_event_path(now: float, tp: Any) -> None:
        if not any(tp.topic in r.topics for r in direct_readers(app)):
            verify(now, tp)

    consumer.verify_event_path = verify_event_path
    consumer._outage_sms_quiet_direct = True


def snapshot_fetches(consumer: Any) -> None:
    """Make ``consumer`` hand each fetch a copy of its active partitions (see the module
    docstring: with the live set, a fetch that outlives a pause returns the records of
    partitions paused meanwhile, and Faust drops them). Idempotent; this consumer only.

    Faust's ``_wait_next_records`` calls ``_getmany`` only with a non-empty set (it
    sleeps otherwise), so the copy is never empty when taken; a partition resumed during
    a fetch is fetched by the next one, a second later at most."""
    if getattr(consumer, "_outage_sms_snapshot_fetches", False):
        return
    getmany = consumer._getmany

    async def _getmany(active_partitions: set[Any] | None, timeout: float) -> Any:
        frozen = None if active_partitions is None else frozenset(active_partitions)
        return await getmany(active_partitions=frozen, timeout=timeout)

    consumer._getmany = _getmany
    consumer._outage_sms_snapshot_fetches = True


class SafeTableManager(TableManager):
    """Faust's ``TableManager`` recovering through :class:`SafeRecovery`, its app's
    consumer fetching through :func:`snapshot_fetches`.

    Pass it to ``faust.App(..., TableManager=SafeTableManager)``."""

    async def on_start(self) -> None:
        # The consumer has started (the app starts it before its tables) and its fetcher
        # has not: recovery starts it.
        snapshot_fetches(self.app.consumer)
        quiet_direct_partitions(self.app)
        await super().on_start()

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        # The assign step: the recovery that follows may start the direct readers (a
        # reader halted by a later revoke refuses a start from this one's recovery).
        for reader in direct_readers(self.app):
            reader.allow()
        # Until "Worker ready": the recovery builds the tables' state a record at a time.
        recovery_gc(self.app).hold()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Faust's first, synchronous step of a revoke (and of a shutdown): no new batch
        # from a direct reader; its revoke signal (or on_stop) then drains and commits.
        for reader in direct_readers(self.app):
            reader.halt()
        super().on_partitions_revoked(revoked)

    async def on_stop(self) -> None:
        # Shutdown: before the stores close, while Faust's consumer can still commit.
        for reader in direct_readers(self.app):
            await reader.stop(commit=True)
        recovery_gc(self.app).release()
        await super().on_stop()

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            if faust.__version__ != PATCHED_FAUST_VERSION:
                log.warning(
                    "faust-streaming %s, SafeRecovery was written for %s: check that "
                    "faust issue #596 is still open and the override still matches",
                    faust.__version__,
                    PATCHED_FAUST_VERSION,
                )
            self._recovery = SafeRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
