"""Per-record error handling for agents: retry what is transient, dead-letter the rest.

Split out of the agents so the policy is tested without a broker. A record is either
processed, retried (transient failure), or dead-lettered with its reason; nothing is
dropped silently, and a transient failure that outlasts the retries stops the worker
without committing the record (it is processed again after the restart).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError

from streams.errors import PermanentError, RetriableError
from streams.retry import RetryPolicy

__all__ = ["RetriesExhausted", "is_retriable", "process_guarded"]

log = logging.getLogger(__name__)

E = TypeVar("E")


class RetriesExhausted(RetriableError):
    """A transient failure outlasted the retry policy; the worker must stop uncommitted."""


def is_retriable(exc: BaseException) -> bool:
    """Broker, network and timeout failures are transient; everything else is not."""
    if isinstance(exc, PermanentError):
        return False
    if isinstance(exc, RetriableError):
        return True
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in (
            "KafkaConnectionError",
            "KafkaTimeoutError",
            "RequestTimedOutError",
            "NodeNotReadyError",
        )
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))


async def process_guarded(
    events: AsyncIterator[E],
    handle: Callable[[E], Awaitable[None]],
    dead_letter: Callable[[E, BaseException], Awaitable[None]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> None:
    """Run ``handle`` per event; retry transient failures, dead-letter permanent ones.

    A bug (an unexpected exception) is treated as permanent for that record: the record is
    dead-lettered as ``processing_error`` with the exception, and the stream goes on.
    """
    async for event in events:
        attempt = 1
        while True:
            try:
                await handle(event)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_retriable(exc):
                    log.exception("record failed permanently; dead-lettering it")
                    await dead_letter(event, exc)
                    break
                if not policy.should_retry(attempt):
                    raise RetriesExhausted(
                        f"transient failure persisted over {attempt} attempts: {exc!r}"
                    ) from exc
                delay = policy.delay(attempt, rng)
                log.warning(
                    "transient failure (attempt %d), retrying in %.2fs: %r", attempt, delay, exc
                )
                await sleep(delay)
                attempt += 1
