"""The broker-free parts of the batched replies path (topology.replies_batch)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
from faust.serializers import codecs

from streams.reply_texts import ReplyTexts
from topology.faust_patches import snapshot_fetches
from topology.replies_batch import table_key


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"p": 3, "all": False, "senders": ["87654"], "history": [{"at": "2026-11-24T20:00:00Z"}]},
        {"seen": [[1764014400.5, "m-1", "stop"]], "out": [1764014400.5], "menu": None},
    ],
)
def test_changelog_records_are_what_faust_writes(value: object) -> None:
    # RocksDB looks a key up byte for byte: it must be Faust's exact key; values are read
    # back as JSON (by Faust's recovery, table.get and the dispatcher's changelog view).
    assert table_key("+14155550111") == codecs.dumps("json", "+14155550111")
    assert json.loads(orjson.dumps(value)) == json.loads(codecs.dumps("json", value))


def test_remembered_reply_texts_are_the_texts_fitted_afresh() -> None:
    warm = ReplyTexts("Acme Power", "1-800-555-0100")

    def fresh() -> ReplyTexts:
        return ReplyTexts("Acme Power", "1-800-555-0100")

    for _ in range(2):  # the second round is answered from what ``warm`` remembered
        for lang in ("en", "es", "fr"):
            assert warm.help(lang) == fresh().help(lang)
            assert warm.opted_out(lang, True) == fresh().opted_out(lang, True)
            assert warm.opted_in(lang) == fresh().opted_in(lang)
            assert warm.unknown_number(lang) == fresh().unknown_number(lang)
            assert warm.ongoing(lang, 2, "9:30 PM", "https://x.example/s") == fresh().ongoing(
                lang, 2, "9:30 PM", "https://x.example/s"
            )


def test_remembered_reply_texts_stay_bounded() -> None:
    texts = ReplyTexts("Acme Power", "1-800-555-0100")
    texts.MAX_REMEMBERED = 3
    for minute in range(10):
        texts.ongoing("en", 1, f"9:{minute:02d} PM", None)
    assert len(texts._fitted) == 3


async def test_a_fetch_in_flight_keeps_the_partitions_active_when_it_began() -> None:
    # faust#596's other half (topology.faust_patches): recovery pauses the changelog
    # partitions while a fetch waits; with Faust's live set, aiokafka then sees an empty
    # set, returns every partition's records, and Faust drops the paused stream
    # partitions' input. With the snapshot the fetch still asks for what was active.
    asked: list[Any] = []
    waiting = asyncio.Event()
    release = asyncio.Event()

    class Consumer:
        async def _getmany(self, active_partitions: Any, timeout: float) -> dict[Any, Any]:
            waiting.set()
            await release.wait()
            asked.append(set(active_partitions) if active_partitions is not None else None)
            return {}

    consumer = Consumer()
    snapshot_fetches(consumer)
    snapshot_fetches(consumer)  # idempotent: one wrapper, not two
    active = {("c-changelog", 0), ("c-changelog", 1)}
    fetch = asyncio.ensure_future(consumer._getmany(active_partitions=active, timeout=1.0))
    await waiting.wait()
    active.clear()  # recovery done: the changelog partitions are paused, none is active
    release.set()
    await fetch
    await consumer._getmany(active_partitions=None, timeout=1.0)  # client-only: no filter
    assert asked == [{("c-changelog", 0), ("c-changelog", 1)}, None]
