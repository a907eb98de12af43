"""How long the worker's Kafka consumer lets the broker hold an empty fetch.

Faust creates its consumer with ``fetch_max_wait_ms=1500``, fixed. Apache Kafka answers a
waiting fetch as soon as a record arrives, so there the wait costs nothing but idle
polls. Tansu does not: a fetch waits its full time however soon a record arrives, so every
Faust hop took up to 1.5 s (750 ms on average: the outage-to-command p50 of about 1.5 s
on Tansu in ``bench/results``, two hops). Measured with a bare aiokafka consumer on Tansu,
one record at a time at random moments: 14-1,428 ms with 1,500 ms, 5-36 ms with 50 ms.
The price on Tansu: an idle worker polls 20 times a second, about 7% of a core instead
of 1% (measured over 20 s).

But not while the tables recover: with 50 ms from the start, a new worker on Tansu read
its changelogs a few records at a time and was not ready after 400 s for 200,000
customers (65 s with 1,500 ms; a bare consumer reading 320,000 records was as fast with
either wait, so it is Faust's recovery reading beside paused partitions that suffers:
not investigated further). So :func:`fast_fetch_when_ready` keeps Faust's wait through
every rebalance and recovery and shortens it once recovery is complete (Faust's
``on_rebalance_complete``), back to Faust's at the next revoke. aiokafka's fetcher reads
the value for every fetch request it builds, so it can change while the consumer runs
(in Faust's consumer thread: one int attribute, set whole).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAUST_FETCH_WAIT_MS", "fast_fetch_when_ready", "set_fetch_wait"]

FAUST_FETCH_WAIT_MS = 1500
"""What faust-streaming 0.15.3 gives its worker consumer."""


def set_fetch_wait(app: Any, ms: int) -> bool:
    """The running worker consumer of ``app`` waits ``ms`` at most; False if none yet."""
    consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    if consumer is None:
        return False
    consumer._fetch_max_wait_ms = ms
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = ms
    return True


def fast_fetch_when_ready(app: Any, ms: int) -> None:
    """``ms`` between the end of a recovery and the next revoke; Faust's wait otherwise."""

    @app.on_rebalance_complete.connect  # type: ignore[untyped-decorator]
    async def _ready(*args: Any, **kwargs: Any) -> None:
        set_fetch_wait(app, ms)

    @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
    async def _rebalancing(*args: Any, **kwargs: Any) -> None:
        set_fetch_wait(app, FAUST_FETCH_WAIT_MS)
