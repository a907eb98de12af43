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


#: Subscribers indexed between two yields to the event loop during a background build:
#: about 0.1-0.2 s of the loop at a time here, so texts and CRM updates keep flowing.
BUILD_STEP = 5_000


class LocalViews:
    """The fan-out's views of this worker's partitions.

    Built after every rebalance in two stages. The subscribers and opt-outs (a million
    numbers take about 30 s here) are built in the background from "Worker ready", a
    step of ``BUILD_STEP`` numbers at a time, so the first outage after a start does not
    wait for them and the loop is never held for the whole build. Updates that arrive
    meanwhile are applied at once and the scan skips those numbers: the store's iterator
    may hold an older value. The fan-out memory is folded in by the fan-out itself
    (``ensure_built``): only a fan-out writes it, so no fan-out can write it meanwhile.
    """

    def __init__(self) -> None:
        self.index: dict[int, PartitionIndex] = {}
        self.memory: dict[int, OutageMemory] = {}
        self.optouts: dict[int, dict[str, OptOut]] = {}
        self.built = False
        self.live = False
        """Subscribers and opt-outs complete: updates apply directly."""
        self._generation = 0
        self._building: asyncio.Task[bool] | None = None
        self._changed_subscribers: set[str] | None = None
        self._changed_optouts: set[str] | None = None

    def clear(self) -> None:
        """After a rebalance: partitions may have moved, rebuild on next use. A build
        running for the old assignment stops at its next step."""
        self.index.clear()
        self.memory.clear()
        self.optouts.clear()
        self.built = self.live = False
        self._generation += 1
        self._building = None
        self._changed_subscribers = self._changed_optouts = None

    def start_building(self, sources: Sources, step: int = BUILD_STEP) -> None:
        """Build the subscribers and opt-outs in the background, unless done or running."""
        if self.live or (self._building is not None and not self._building.done()):
            return
        task = self._building = asyncio.ensure_future(self._build_live(sources, step))
        task.add_done_callback(_log_failure)

    async def ensure_built(
        self, sources: Sources, memory: Callable[[], Iterable[tuple[str, Any]]]
    ) -> None:
        """Everything the fan-out reads, waiting for (or starting) the background build."""
        while not self.live:
            self.start_building(sources)
            if self._building is not None:
                await asyncio.shield(self._building)
        if not self.built:
            start = time.perf_counter()
            chunks = 0
            for _key, chunk in memory():
                if chunk:
                    chunks += 1
                    self.memory_for(int(chunk["p"])).apply(
                        chunk["o"], chunk["v"], chunk["s"], chunk["e"], chunk["sent"]
                    )
            self.built = True
            log.info(
                "fan-out memory folded in: %d chunks in %.2fs", chunks, time.perf_counter() - start
            )

    async def _build_live(self, sources: Sources, step: int) -> bool:
        """True once built; False when a rebalance made this build stale."""
        generation = self._generation
        start = time.perf_counter()
        self.index.clear()
        self.optouts.clear()
        changed_subscribers = self._changed_subscribers = set()
        changed_optouts = self._changed_optouts = set()
        subscribers, optouts = sources()
        n = 0
        # The build makes a million long-lived objects: with the default thresholds each
        # full GC pass rescanned all built so far (at a million numbers, 14 passes of
        # 0.1-1.35 s, a fifth of the build, with nothing to collect).
        with fewer_gc_passes():
            try:
                for phone, state in subscribers:
                    if state and phone not in changed_subscribers:
                        self.index_for(int(state["p"])).upsert(subscriber_from_state(phone, state))
                        n += 1
                        if n % step == 0:
                            await asyncio.sleep(0)
                            if self._generation != generation:
                                return False
            except RuntimeError as exc:
                # The store's set of partitions changed under the scan (a rebalance whose
                # revoke signal has not reached ``clear`` yet): stale, like any other.
                log.info("fan-out views: build restarted, the store changed: %s", exc)
                return False
            for index in self.index.values():
                index.prepare()
            for phone, state in optouts:
                opt = optout_from_state(state)
                if opt is not None and phone not in changed_optouts:
                    self.optouts.setdefault(int(state["p"]), {})[phone] = opt
            self.live = True
            self._changed_subscribers = self._changed_optouts = None
            # Nor should later passes re-scan them during a fan-out's allocations.
            gc.freeze()
        log.info(
            "fan-out views rebuilt: %d numbers in %d partitions in %.2fs",
            n,
            len(self.index),
            time.perf_counter() - start,
        )
        return True

    def index_for(self, partition: int) -> PartitionIndex:
        return self.index.setdefault(partition, PartitionIndex())

    def memory_for(self, partition: int) -> OutageMemory:
        return self.memory.setdefault(partition, OutageMemory())

    def optouts_for(self, partition: int) -> dict[str, OptOut]:
        return self.optouts.setdefault(partition, {})

    def on_subscriber(self, partition: int, phone: str, state: Any) -> None:
        if not self.live:
            if self._changed_subscribers is None:
                return  # no build running: the next one reads the table
            self._changed_subscribers.add(phone)
        if state:
            self.index_for(partition).upsert(subscriber_from_state(phone, state))
        else:
            self.index_for(partition).remove(phone)

    def on_optout(self, partition: int, phone: str, state: Any) -> None:
        if not self.live:
            if self._changed_optouts is None:
                return
            self._changed_optouts.add(phone)
        opt = optout_from_state(state)
        views = self.optouts_for(partition)
        if opt is None:
            views.pop(phone, None)
        else:
            views[phone] = opt


Sources = Callable[[], tuple[Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]]]
"""Called when a build starts: (subscribers, opt-outs) table items, read as it goes."""


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
