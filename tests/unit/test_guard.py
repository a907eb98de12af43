"""Per-record error policy: transient failures retried, permanent ones dead-lettered."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from aiokafka.errors import KafkaConnectionError, RecordTooLargeError

from streams.errors import ConfigurationError, PermanentError, RetriableError
from streams.retry import RetryPolicy
from topology.guard import RetriesExhausted, is_retriable, process_guarded


async def _events(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


class _Recorder:
    def __init__(self, failures: dict[str, list[BaseException]]) -> None:
        self.failures = failures
        self.handled: list[str] = []
        self.dead: list[tuple[str, str]] = []
        self.sleeps: list[float] = []

    async def handle(self, event: str) -> None:
        pending = self.failures.get(event, [])
        if pending:
            raise pending.pop(0)
        self.handled.append(event)

    async def letter(self, event: str, exc: BaseException) -> None:
        self.dead.append((event, type(exc).__name__))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


@pytest.mark.parametrize(
    "exc",
    [RetriableError("x"), KafkaConnectionError(), ConnectionResetError(), TimeoutError()],
)
def test_transient_failures_are_retriable(exc: BaseException) -> None:
    assert is_retriable(exc)


@pytest.mark.parametrize(
    "exc",
    [PermanentError("x"), ConfigurationError("x"), ValueError(), KeyError(), RecordTooLargeError()],
)
def test_bugs_and_permanent_failures_are_not_retriable(exc: BaseException) -> None:
    assert not is_retriable(exc)


async def test_transient_failure_is_retried_then_processed_not_dead_lettered() -> None:
    rec = _Recorder({"b": [KafkaConnectionError(), TimeoutError()]})
    await process_guarded(
        _events("a", "b", "c"), rec.handle, rec.letter, RetryPolicy(), rec.sleep, random.Random(1)
    )
    assert rec.handled == ["a", "b", "c"]
    assert rec.dead == []
    assert len(rec.sleeps) == 2


async def test_permanent_failure_is_dead_lettered_and_the_stream_goes_on() -> None:
    rec = _Recorder({"b": [ValueError("bug")]})
    await process_guarded(_events("a", "b", "c"), rec.handle, rec.letter, RetryPolicy(), rec.sleep)
    assert rec.handled == ["a", "c"]
    assert rec.dead == [("b", "ValueError")]
    assert rec.sleeps == []


async def test_transient_failure_outlasting_the_policy_stops_without_dead_lettering() -> None:
    rec = _Recorder({"b": [TimeoutError()] * 10})
    with pytest.raises(RetriesExhausted):
        await process_guarded(
            _events("a", "b", "c"), rec.handle, rec.letter, RetryPolicy(attempts=3), rec.sleep
        )
    assert rec.handled == ["a"]
    assert rec.dead == []
    assert len(rec.sleeps) == 2


def test_backoff_grows_exponentially_within_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base=0.5, cap=4.0)
    rng = random.Random(7)
    for attempt in range(1, 10):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a constant


def test_server_given_floor_wins_but_is_capped() -> None:
    policy = RetryPolicy(base=0.1, cap=30.0)
    assert policy.delay(1, random.Random(0), floor=12.0) == 12.0
    assert policy.delay(1, random.Random(0), floor=3600.0) == 30.0


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"base": 0}, {"base": 2.0, "cap": 1.0}])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
