"""Per-partition in-memory views the fan-out reads, derived from changelog-backed tables.

The tables (subscribers, fan-out memory, opt-outs) are the durable state, recovered by
Faust. These views are indexes over them in the shape a million-recipient loop needs
(no store reads, no JSON decoding per recipient). They are rebuilt from the tables with
one scan after every rebalance, and kept current by the agents that write the tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from streams.fanout import OptOut, OutageMemory, PartitionIndex, subscriber_from_state
from streams.murmur import kafka_partition
from streams.replies import AreaOutage, area_outage_from_state

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


class LocalViews:
    def __init__(self) -> None:
        self.index: dict[int, PartitionIndex] = {}
        self.memory: dict[int, OutageMemory] = {}
        self.optouts: dict[int, dict[str, OptOut]] = {}
        self.built = False

    def clear(self) -> None:
        """After a rebalance: partitions may have moved, rebuild on next use."""
        self.index.clear()
        self.memory.clear()
        self.optouts.clear()
        self.built = False

    def build(
        self,
        subscribers: Iterable[tuple[str, Any]],
        memory: Iterable[tuple[str, Any]],
        optouts: Iterable[tuple[str, Any]],
    ) -> None:
        start = time.perf_counter()
        self.clear()
        n = 0
        for phone, state in subscribers:
            if state:
                self.on_subscriber(int(state["p"]), phone, state, force=True)
                n += 1
        for index in self.index.values():
            index.prepare()
        for _key, chunk in memory:
            if chunk:
                self.memory_for(int(chunk["p"])).apply(
                    chunk["o"], chunk["v"], chunk["s"], chunk["e"], chunk["sent"]
                )
        for phone, state in optouts:
            opt = optout_from_state(state)
            if opt is not None:
                self.optouts.setdefault(int(state["p"]), {})[phone] = opt
        self.built = True
        log.info(
            "fan-out views rebuilt: %d numbers in %d partitions in %.2fs",
            n,
            len(self.index),
            time.perf_counter() - start,
        )

    def index_for(self, partition: int) -> PartitionIndex:
        return self.index.setdefault(partition, PartitionIndex())

    def memory_for(self, partition: int) -> OutageMemory:
        return self.memory.setdefault(partition, OutageMemory())

    def optouts_for(self, partition: int) -> dict[str, OptOut]:
        return self.optouts.setdefault(partition, {})

    def on_subscriber(self, partition: int, phone: str, state: Any, force: bool = False) -> None:
        if not (self.built or force):
            return
        if state:
            self.index_for(partition).upsert(subscriber_from_state(phone, state))
        else:
            self.index_for(partition).remove(phone)

    def on_optout(self, partition: int, phone: str, state: Any) -> None:
        if not self.built:
            return
        opt = optout_from_state(state)
        views = self.optouts_for(partition)
        if opt is None:
            views.pop(phone, None)
        else:
            views[phone] = opt


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
