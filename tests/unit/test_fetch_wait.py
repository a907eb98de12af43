"""The worker's consumer waits 50 ms for an empty fetch on Tansu once its tables are
recovered, Faust's 1500 during a rebalance and recovery, and on Apache Kafka."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from topology.fetch_wait import FAUST_FETCH_WAIT_MS, fast_fetch_when_ready, set_fetch_wait
from topology.settings import Settings


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"broker_kind": "tansu"}, 50),
        ({"broker_kind": "kafka"}, None),
        ({"broker_kind": "kafka", "consumer_fetch_wait_ms": 200}, 200),
        ({"broker_kind": "tansu", "consumer_fetch_wait_ms": 1500}, 1500),
    ],
)
def test_the_fetch_wait_follows_the_broker_unless_configured(
    over: dict[str, Any], expected: int | None
) -> None:
    assert Settings(**over).fetch_wait_ms() == expected


class _Signal:
    def __init__(self) -> None:
        self.receivers: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.receivers.append(fn)
        return fn

    async def send(self, *args: Any) -> None:
        for fn in self.receivers:
            await fn(self, *args, signal=self)


def _app() -> Any:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=FAUST_FETCH_WAIT_MS)
    consumer = SimpleNamespace(_fetch_max_wait_ms=FAUST_FETCH_WAIT_MS, _fetcher=fetcher)
    return SimpleNamespace(
        consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)),
        on_rebalance_complete=_Signal(),
        on_partitions_revoked=_Signal(),
    )


def _waits(app: Any) -> tuple[int, int]:
    c = app.consumer._thread._consumer
    return c._fetch_max_wait_ms, c._fetcher._fetch_max_wait_ms


async def test_short_only_between_a_completed_recovery_and_the_next_revoke() -> None:
    app = _app()
    fast_fetch_when_ready(app, 50)
    assert _waits(app) == (1500, 1500)  # the first recovery reads with Faust's wait
    await app.on_rebalance_complete.send()
    assert _waits(app) == (50, 50)
    await app.on_partitions_revoked.send(set())
    assert _waits(app) == (1500, 1500)
    await app.on_rebalance_complete.send()
    assert _waits(app) == (50, 50)


def test_no_consumer_yet_is_not_an_error() -> None:
    app = SimpleNamespace(consumer=SimpleNamespace())
    assert set_fetch_wait(app, 50) is False
