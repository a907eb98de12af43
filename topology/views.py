"""Per-partition in-memory views the fan-out reads, derived from changelog-backed tables.

The tables (subscribers, fan-out memory, opt-outs) are the durable state, recovered by
Faust. These views are indexes over them in the shape a million-recipient loop needs
(no store reads, no JSON decoding per recipient). They are rebuilt from the tables with
one scan after every rebalance, and kept current by the agents that write the tables.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from streams.fanout import OptOut, OutageMemory, PartitionIndex, subscriber_from_state
from streams.murmur import kafka_partition
from streams.replies import AreaOutage, area_outage_from_state

from .gc_passes import fewer_gc_passes

__all__ = [
    "AreaViews",
    "LocalViews",
    "area_key",
    "memory_key",
    "optout_from_state",
    "phone_partition",
]

log = logging.getLogger(__name__)


def memory_key(outage_id: str, partition: int, version: int, first_phone: str) -> str:
    """Key of one persisted chunk of "who was told what"; deterministic for replays."""
    return f"{outage_id}|{partition}|{version}|{first_phone}"


def phone_partition(key: bytes, partitions: int) -> int:
    """Where Kafka's default partitioner (murmur2, Java's and aiokafka's) puts a key: the
    partition of every phone-keyed topic and table of that number."""
    return kafka_partition(key, partitions)


def area_key(outage_id: str, partition: int) -> str:
    """Key of a partition's copy of an outage's latest version (``area_outages`` table)."""
    return f"{outage_id}|{partition}"


def optout_from_state(state: Any) -> OptOut | None:
    if not state:
        return None
    senders = frozenset(state.get("senders") or ())
    everyone = bool(state.get("all"))
    return OptOut(everyone, senders) if everyone or senders else None


#: Subscribers indexed (or fan-out memory chunks folded in) between two yields to the
#: event loop during a background build: about 0.1-0.2 s of the loop at a time here, so
#: texts and CRM updates keep flowing.
BUILD_STEP = 5_000
MEMORY_STEP = 50
#: Scans a build makes when the store keeps changing under them; the last takes no steps.
SCAN_ATTEMPTS = 3


class LocalViews:
    """The fan-out's views of this worker's partitions.

    Built after every rebalance, in the background from "Worker ready" (a million numbers
    take about 30 s here), a step at a time, so the first outage after a start does not
    wait for them and the loop is never held for the whole build. An outage that arrives
    during the build waits for it (``ensure_built``). Updates that arrive meanwhile are
    applied at once: the scan skips numbers updated since it began (the store's iterator
    may hold older values), and a fan-out's acknowledged chunks go into the memory being
    built (folding a chunk twice changes nothing).
    """

    def __init__(self) -> None:
        self.index: dict[int, PartitionIndex] = {}
        self.memory: dict[int, OutageMemory] = {}
        self.optouts: dict[int, dict[str, OptOut]] = {}
        self.built = False
        self._generation = 0
        self._building: asyncio.Task[bool] | None = None
        self._changed_subscribers: set[str] | None = None
        """Numbers updated since the scan began; None when no scan is running."""
        self._changed_optouts: set[str] | None = None

    def clear(self) -> None:
        """After a rebalance (partitions may have moved; the next "Worker ready" or
        outage builds again) or at shutdown. A build running stops at its next step."""
        self._reset()
        self._generation += 1
        self._building = None

    def _reset(self) -> None:
        """Empty views, not built, no scan taking updates."""
        self.index.clear()
        self.memory.clear()
        self.optouts.clear()
        self.built = False
        self._changed_subscribers = self._changed_optouts = None

    def start_building(self, sources: Sources, step: int = BUILD_STEP) -> None:
        """Build in the background, unless built or building."""
        if self.built or (self._building is not None and not self._building.done()):
            return
        task = self._building = asyncio.ensure_future(self._build(sources, step))
        task.add_done_callback(_log_failure)

    async def ensure_built(self, sources: Sources) -> None:
        """Wait for the build in progress, or start one (a failed build raises here)."""
        while not self.built:
            self.start_building(sources)
            if self._building is not None:
                await asyncio.shield(self._building)

    async def _build(self, sources: Sources, step: int) -> bool:
        """True once built; False when a rebalance (or shutdown) made this build stale.

        A scan the store changed under (its dict of partitions, or a ``memory://`` table
        written between two steps) starts again; the last attempt takes no steps, so
        nothing can change under it."""
        generation = self._generation
        for attempt in range(1, SCAN_ATTEMPTS + 1):
            try:
                last = attempt == SCAN_ATTEMPTS
                return await self._scan(sources, step if not last else 0, generation)
            except RuntimeError as exc:
                if "changed size during iteration" not in str(exc):
                    raise
                log.info("fan-out views: the store changed under the scan (attempt %d)", attempt)
            finally:
                if not self.built and self._generation == generation:
                    self._reset()  # failed or starting again: nothing half built stays
        raise AssertionError("unreachable: the last attempt takes no steps")  # pragma: no cover

    async def _scan(self, sources: Sources, step: int, generation: int) -> bool:
        start = time.perf_counter()
        self._reset()
        changed_subscribers = self._changed_subscribers = set()
        changed_optouts = self._changed_optouts = set()
        subscribers, optouts, memory = sources()
        n = chunks = 0

        async def still(count: int, every: int) -> bool:
            """At every ``every``-th item: yield to the loop; False once stale."""
            if not every or count % every:
                return True
            await asyncio.sleep(0)
            return self._generation == generation

        # The build makes a million long-lived objects: with the default thresholds each
        # full GC pass rescanned all built so far (at a million numbers, 14 passes of
        # 0.1-1.35 s, a fifth of the build, with nothing to collect).
        with fewer_gc_passes():
            for phone, state in subscribers:
                if state and phone not in changed_subscribers:
                    self.index_for(int(state["p"])).upsert(subscriber_from_state(phone, state))
                    n += 1
                    if not await still(n, step):
                        return False
            for i, index in enumerate(list(self.index.values()), start=1):
                index.prepare()  # sorts a partition's numbers: about 0.1 s per 125,000
                if not await still(i, 1 if step else 0):
                    return False
            for i, (phone, state) in enumerate(optouts, start=1):
                opt = optout_from_state(state)
                if opt is not None and phone not in changed_optouts:
                    self.optouts.setdefault(int(state["p"]), {})[phone] = opt
                if not await still(i, step):
                    return False
            for _key, chunk in memory:
                if chunk:
                    self.memory_for(int(chunk["p"])).apply(
                        chunk["o"], chunk["v"], chunk["s"], chunk["e"], chunk["sent"]
                    )
                    chunks += 1
                    if not await still(chunks, MEMORY_STEP if step else 0):
                        return False
            self.built = True
            self._changed_subscribers = self._changed_optouts = None
            # Nor should later passes re-scan them during a fan-out's allocations. (Still
            # under the raised thresholds: no pass over the young generations first, so
            # any cyclic garbage in them is frozen too; session 11's notes.)
            gc.freeze()
        log.info(
            "fan-out views rebuilt: %d numbers in %d partitions, %d memory chunks, in %.2fs",
            n,
            len(self.index),
            chunks,
            time.perf_counter() - start,
        )
        return True

    @property
    def _scanning(self) -> bool:
        return self._changed_subscribers is not None

    def index_for(self, partition: int) -> PartitionIndex:
        return self.index.setdefault(partition, PartitionIndex())

    def memory_for(self, partition: int) -> OutageMemory:
        return self.memory.setdefault(partition, OutageMemory())

    def optouts_for(self, partition: int) -> dict[str, OptOut]:
        return self.optouts.setdefault(partition, {})

    def on_subscriber(self, partition: int, phone: str, state: Any) -> None:
        if not self.built:
            if self._changed_subscribers is None:
                return  # no build running: the next one reads the table
            self._changed_subscribers.add(phone)
        if state:
            self.index_for(partition).upsert(subscriber_from_state(phone, state))
        else:
            self.index_for(partition).remove(phone)

    def on_optout(self, partition: int, phone: str, state: Any) -> None:
        if not self.built:
            if self._changed_optouts is None:
                return
            self._changed_optouts.add(phone)
        opt = optout_from_state(state)
        views = self.optouts_for(partition)
        if opt is None:
            views.pop(phone, None)
        else:
            views[phone] = opt

    def on_told(
        self, partition: int, applied_to: OutageMemory, fold: Callable[[OutageMemory], None]
    ) -> None:
        """A fan-out's acknowledged chunk, already folded into ``applied_to`` (the memory
        it began with): also into the memory of views built or building since. Defensive:
        Faust's revoke waits for the event in hand (``stream_wait_empty``) before the
        views are cleared, unless that wait gives up; then a fan-out from before the
        rebalance may still be writing while the next build reads."""
        if not (self.built or self._scanning):
            return
        current = self.memory_for(partition)
        if current is not applied_to:
            fold(current)


Sources = Callable[
    [],
    tuple[Iterable[tuple[str, Any]], Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]],
]
"""Called when a build starts: the subscribers, opt-outs and fan-out memory table items,
read as the build goes."""


def _log_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("fan-out views: background build failed", exc_info=task.exception())


class AreaViews:
    """Per partition: outage id -> latest ``AreaOutage``, for the status bot.

    Every partition of the fan-out topic receives every outage, so a partition's status
    bot answers from its own copy (``area_outages`` table) instead of reading the outages
    table, which is keyed by outage id and lives on other partitions. Small (one entry per
    outage), so it is built apart from the million-number fan-out views.
    """

    def __init__(self) -> None:
        self.by_partition: dict[int, dict[str, AreaOutage]] = {}
        self.built = False

    def clear(self) -> None:
        self.by_partition.clear()
        self.built = False

    def build(self, states: Iterable[tuple[str, Any]]) -> None:
        self.clear()
        for _key, state in states:
            if state:
                self.put(int(state["p"]), area_outage_from_state(state))
        self.built = True

    def put(self, partition: int, outage: AreaOutage) -> None:
        self.by_partition.setdefault(partition, {})[outage.outage_id] = outage

    def outages_for(self, partition: int) -> list[AreaOutage]:
        return list(self.by_partition.get(partition, {}).values())
