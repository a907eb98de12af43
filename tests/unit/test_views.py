"""The fan-out's views, built in the background from "Worker ready", without a broker.

The subscribers, opt-outs and fan-out memory are scanned a step at a time while the
agents go on updating the tables. An update that arrives mid-scan must win over the
(older) value the scan reads later, a fan-out's acknowledged chunks must reach the memory
being built, a rebalance must stop a scan for the old assignment, and the fan-out must
wait for the build in progress, not start a second one. (The worker on a real
broker: every fan-out test in ``tests/integration``.)
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from topology.views import SCAN_ATTEMPTS, LocalViews

A, B, C = "+14155550101", "+14155550102", "+14155550103"


def sub(partition: int, *regions: str) -> dict[str, Any]:
    return {
        "p": partition,
        "facts": {"line": "mobile", "textable": True, "country": "US", "timezone": None},
        "customers": {"C1": {"regions": list(regions), "sms_consent": True}},
    }


def opted(partition: int) -> dict[str, Any]:
    return {"p": partition, "all": True, "senders": []}


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()  # the build freezes what it made; the next test starts clean


def sources(
    subscribers: list[tuple[str, Any]],
    optouts: list[tuple[str, Any]] | None = None,
    meanwhile: dict[str, Any] | None = None,
    calls: list[int] | None = None,
    memory: list[tuple[str, Any]] | None = None,
) -> Any:
    """Table items as a scan reads them. ``meanwhile``: before the scan reads a key
    named there, run that callback: an agent's update arriving between two steps."""

    def scan(items: list[tuple[str, Any]]) -> Iterable[tuple[str, Any]]:
        for key, state in items:
            if meanwhile and key in meanwhile:
                meanwhile.pop(key)()
            yield key, state

    def make() -> tuple[
        Iterable[tuple[str, Any]], Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]
    ]:
        if calls is not None:
            calls.append(1)
        return scan(subscribers), scan(optouts or []), scan(memory or [])

    return make


def chunk(partition: int, outage: str, version: int, *phones: str) -> tuple[str, Any]:
    """A ``fanout_memory`` item: who in one chunk was told what."""
    sent = [[p, "alert"] for p in phones]
    key = f"{outage}|{partition}|{version}|{phones[0]}"
    return key, {"o": outage, "p": partition, "v": version, "s": "active", "e": None, "sent": sent}


def regions_of(views: LocalViews, partition: int, phone: str) -> set[str] | None:
    found = views.index_for(partition).subscribers.get(phone)
    return None if found is None else set(found.regions)


async def test_the_build_indexes_subscribers_optouts_and_what_each_number_was_told() -> None:
    views = LocalViews()
    await views.ensure_built(
        sources(
            [(A, sub(0, "R1")), (B, sub(1, "R2"))],
            [(A, opted(0))],
            memory=[chunk(0, "O1", 1, A)],
        )
    )
    assert views.built
    assert regions_of(views, 0, A) == {"R1"} and regions_of(views, 1, B) == {"R2"}
    assert views.optouts_for(0)[A].all_senders
    assert views.memory_for(0).told["O1"][A].version == 1
    assert A in views.memory_for(0).introduced


async def test_a_fanout_from_before_a_rebalance_writes_into_the_views_built_since() -> None:
    views = LocalViews()
    await views.ensure_built(sources([(A, sub(0, "R1"))]))
    began_with = views.memory_for(0)
    views.clear()  # a rebalance while that fan-out waits for the broker's acks
    views.start_building(
        sources(
            [(A, sub(0, "R1")), (B, sub(0, "R1"))],
            memory=[chunk(0, "O1", 1, A)],
            # Its next chunk is acknowledged while the scan reads the table (which may
            # or may not hold it yet).
            meanwhile={B: lambda: tell(views, began_with, B)},
        ),
        step=1,
    )
    await views.ensure_built(sources([]))
    tell(views, began_with, C)  # and one more after the build
    told = views.memory_for(0).told["O1"]
    assert set(told) == {A, B, C}
    assert views.memory_for(0) is not began_with


def tell(views: LocalViews, began_with: Any, phone: str) -> None:
    """What ``run_fanout`` does with an acknowledged chunk."""
    began_with.apply("O1", 1, "active", None, [(phone, "alert")])
    views.on_told(0, began_with, lambda m: m.apply("O1", 1, "active", None, [(phone, "alert")]))


async def test_a_chunk_is_not_folded_twice_into_the_memory_it_began_with() -> None:
    views = LocalViews()
    await views.ensure_built(sources([(A, sub(0, "R1"))]))
    folded: list[Any] = []
    views.on_told(0, views.memory_for(0), folded.append)
    assert folded == []


async def test_updates_arriving_mid_scan_win_over_the_older_values_it_reads_later() -> None:
    views = LocalViews()
    meanwhile = {
        # While the scan is at A: B moves to R9, C is deleted, A opts out again.
        B: lambda: (
            views.on_subscriber(0, B, sub(0, "R9")),
            views.on_subscriber(0, C, None),
            views.on_optout(0, A, None),
        ),
    }
    views.start_building(
        sources(
            [(A, sub(0, "R1")), (B, sub(0, "R1")), (C, sub(0, "R1"))],
            [(A, opted(0))],
            meanwhile,
        ),
        step=1,
    )
    await views.ensure_built(sources([]))
    assert not meanwhile, "the update ran mid-scan"
    assert regions_of(views, 0, A) == {"R1"}
    assert regions_of(views, 0, B) == {"R9"}
    assert regions_of(views, 0, C) is None
    assert A not in views.optouts_for(0)
    assert views.index_for(0).ordered("R1") == [A]


async def test_once_built_updates_apply_and_before_any_build_they_are_left_to_the_scan() -> None:
    views = LocalViews()
    views.on_subscriber(0, A, sub(0, "R1"))  # no build yet: the table is read later
    assert views.index == {}
    await views.ensure_built(sources([(B, sub(0, "R2"))]))
    views.on_subscriber(0, A, sub(0, "R3"))
    views.on_optout(0, B, opted(0))
    assert regions_of(views, 0, A) == {"R3"}
    assert views.optouts_for(0)[B].all_senders


async def test_a_rebalance_mid_scan_stops_it_and_the_next_build_reads_the_new_assignment() -> None:
    views = LocalViews()
    loop = asyncio.get_running_loop()
    old = sources(
        [(A, sub(0, "R1")), (B, sub(0, "R1")), (C, sub(0, "R1"))],
        # The revoke runs in another task: between two of the scan's steps.
        meanwhile={B: lambda: loop.call_soon(views.clear)},
    )
    views.start_building(old, step=1)
    stale = views._building
    assert stale is not None
    assert await stale is False
    assert views.index == {} and not views.built, "the stale scan wrote nothing after it"
    calls: list[int] = []
    await views.ensure_built(sources([(C, sub(1, "R2"))], calls=calls))
    assert calls == [1]
    assert regions_of(views, 0, A) is None, "nothing of the old assignment is kept"
    assert regions_of(views, 1, C) == {"R2"}
    assert views.built


async def test_the_fanout_waits_for_the_build_in_progress_rather_than_start_another() -> None:
    views = LocalViews()
    calls: list[int] = []
    both = sources([(A, sub(0, "R1")), (B, sub(0, "R1"))], calls=calls)
    views.start_building(both, step=1)
    views.start_building(both, step=1)  # a second "Worker ready" while it runs
    await views.ensure_built(both)
    assert calls == [1]
    assert views.index_for(0).ordered("R1") == [A, B]


def changing_store(
    attempts: list[int], fail_until: int, message: str = "dictionary changed size during iteration"
) -> Any:
    def make() -> tuple[
        Iterable[tuple[str, Any]], Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]
    ]:
        attempts.append(1)
        failing = len(attempts) < fail_until

        def scan() -> Iterator[tuple[str, Any]]:
            yield A, sub(0, "R1")
            if failing:
                raise RuntimeError(message)
            yield B, sub(0, "R1")

        return scan(), [], []

    return make


async def test_a_store_that_changes_whenever_the_scan_yields_is_scanned_last_without_steps() -> (
    None
):
    views = LocalViews()
    loop = asyncio.get_running_loop()
    attempts: list[int] = []

    def make() -> tuple[
        Iterable[tuple[str, Any]], Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]
    ]:
        attempts.append(1)
        written: list[bool] = []
        loop.call_soon(written.append, True)  # an agent's write, the moment the scan yields

        def scan() -> Iterator[tuple[str, Any]]:
            yield A, sub(0, "R1")
            if written:
                raise RuntimeError("dictionary changed size during iteration")
            yield B, sub(0, "R1")

        return scan(), [], []

    views.start_building(make, step=1)
    await views.ensure_built(make)
    assert len(attempts) == SCAN_ATTEMPTS
    assert views.index_for(0).ordered("R1") == [A, B]


async def test_any_other_error_fails_the_build_and_leaves_nothing_half_built() -> None:
    views = LocalViews()
    attempts: list[int] = []
    with pytest.raises(RuntimeError, match="something else"):
        await views.ensure_built(changing_store(attempts, 99, "something else"))
    assert len(attempts) == 1, "not retried"
    assert not views.built and views.index == {}
    views.on_subscriber(0, C, sub(0, "R1"))  # no build running: left to the next scan
    assert views.index == {}


async def test_a_failing_build_reaches_the_fanout() -> None:
    views = LocalViews()

    def broken() -> tuple[
        Iterable[tuple[str, Any]], Iterable[tuple[str, Any]], Iterable[tuple[str, Any]]
    ]:
        return [(A, {"customers": {}})], [], []  # no partition: a bug, not a race

    with pytest.raises(KeyError):
        await views.ensure_built(broken)
    assert not views.built
