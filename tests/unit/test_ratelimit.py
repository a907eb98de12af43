"""The throughput wall: buckets, daily caps, the API client's budget, holds, handover.

The property tests state the guarantee carriers care about: over any schedule of sends,
in any window of length t, a bucket lets through at most rate * t + burst units.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import ConfigurationError
from streams.ratelimit import (
    DAY,
    Bucket,
    ClientLimit,
    DailyCap,
    RateLimiter,
    SenderLimit,
    UnknownSender,
)
from streams.senders import Sender, SenderType

T0 = 1_700_000_000.0  # an epoch second, like the injected clock gives
TOL = 1e-6


def max_in_window(sends: list[tuple[float, float]], t: float) -> float:
    """The most units taken in any closed window [a, a + t] (a at a send, the worst case)."""
    best = 0.0
    for i, (start, _) in enumerate(sends):
        total = sum(u for at, u in sends[i:] if at <= start + t)
        best = max(best, total)
    return best


# --- Bucket ---------------------------------------------------------------------------


def test_a_fresh_bucket_allows_its_burst_at_once_then_paces() -> None:
    b = Bucket(rate=2.0, burst=3.0)
    for _ in range(3):
        assert b.ready_at(1, T0) == T0
        b = b.take(1, T0)
    assert b.ready_at(1, T0) == pytest.approx(T0 + 0.5)
    assert b.tokens(T0) == pytest.approx(0.0)


def test_strict_pacing_with_burst_one() -> None:
    b = Bucket(rate=100.0, burst=1.0)
    now = T0
    times = []
    for _ in range(5):
        now = b.ready_at(1, now)
        times.append(now)
        b = b.take(1, now)
    gaps = [b2 - a for a, b2 in zip(times, times[1:], strict=False)]
    assert gaps == pytest.approx([0.01] * 4)


def test_ready_at_is_never_before_now() -> None:
    b = Bucket(rate=1.0, burst=1.0).take(1, T0)
    assert b.ready_at(1, T0 + 5) == T0 + 5


def test_take_before_ready_is_a_bug_not_a_send() -> None:
    b = Bucket(rate=1.0, burst=1.0).take(1, T0)
    with pytest.raises(ValueError, match="ready_at"):
        b.take(1, T0 + 0.5)


def test_oversize_take_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    b = Bucket(rate=1.0, burst=1.0)
    assert b.ready_at(3, T0) == T0
    b = b.take(3, T0)
    assert b.tokens(T0) == pytest.approx(-2.0)
    assert b.ready_at(1, T0) == pytest.approx(T0 + 3.0)
    assert b.ready_at(3, T0) == pytest.approx(T0 + 3.0)


def test_zero_units_are_free_but_respect_a_hold() -> None:
    b = Bucket(rate=1.0, burst=1.0).take(1, T0)
    assert b.ready_at(0, T0) == T0
    assert b.take(0, T0) is b
    assert b.hold(T0 + 7).ready_at(0, T0) == T0 + 7


def test_a_hold_never_shortens() -> None:
    b = Bucket(rate=10.0, burst=5.0).hold(T0 + 10).hold(T0 + 3)
    assert b.hold_until == T0 + 10
    assert b.ready_at(1, T0) == T0 + 10
    assert b.ready_at(1, T0 + 11) == T0 + 11


def test_a_clock_stepping_back_never_sends_more() -> None:
    b = Bucket(rate=1.0, burst=1.0).take(1, T0)
    assert b.ready_at(1, T0 - 100) == pytest.approx(T0 + 1)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 1.0), (math.inf, 1.0), (1, 0.5)])
def test_bucket_rejects_nonsense(rate: float, burst: float) -> None:
    with pytest.raises(ConfigurationError):
        Bucket(rate, burst)


# --- property: never more than rate * t + burst in any window --------------------------

rates = st.floats(min_value=0.05, max_value=500.0, allow_nan=False)
bursts = st.integers(min_value=1, max_value=20)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[float, int, list[tuple[float, int, bool]]]:
    rate = draw(rates)
    burst = draw(bursts)
    steps = draw(
        st.lists(
            st.tuples(
                st.floats(min_value=0.0, max_value=5.0 / rate, allow_nan=False),
                st.integers(min_value=1, max_value=burst),
                st.booleans(),  # True: wait until ready; False: give up if not ready now
            ),
            min_size=1,
            max_size=60,
        )
    )
    return rate, burst, steps


def run(bucket: Bucket, steps: list[tuple[float, int, bool]]) -> list[tuple[float, float]]:
    now, sends = T0, []
    for gap, units, wait in steps:
        now += gap
        ready = bucket.ready_at(units, now)
        if ready > now and not wait:
            continue
        now = ready
        bucket = bucket.take(units, now)
        sends.append((now, float(units)))
    return sends


@settings(max_examples=300, deadline=None)
@given(schedules(), st.floats(min_value=0.0, max_value=30.0, allow_nan=False))
def test_no_window_ever_holds_more_than_rate_t_plus_burst(
    schedule: tuple[float, int, list[tuple[float, int, bool]]], t: float
) -> None:
    rate, burst, steps = schedule
    sends = run(Bucket(rate, float(burst)), steps)
    assert max_in_window(sends, t) <= rate * t + burst + TOL


@settings(max_examples=200, deadline=None)
@given(schedules(), st.integers(min_value=1, max_value=10))
def test_oversize_takes_still_bounded_by_the_largest_take(
    schedule: tuple[float, int, list[tuple[float, int, bool]]], extra: int
) -> None:
    rate, burst, steps = schedule
    steps = [(gap, units + extra, wait) for gap, units, wait in steps]
    sends = run(Bucket(rate, float(burst)), steps)
    largest = max((u for _, u in sends), default=0.0)
    for t in (0.0, 1.0 / rate, 1.0, 10.0):
        assert max_in_window(sends, t) <= rate * t + max(burst, largest) + TOL


@settings(max_examples=100, deadline=None)
@given(rates, bursts, st.integers(min_value=5, max_value=200))
def test_under_backlog_the_bucket_runs_at_its_rate(rate: float, burst: int, n: int) -> None:
    """Always waiting for ready_at: n sends take (n - burst) / rate, not longer."""
    b, now = Bucket(rate, float(burst)), T0
    for _ in range(n):
        now = b.ready_at(1, now)
        b = b.take(1, now)
    # Epoch seconds in a double resolve to ~0.24 us: allow that per send.
    assert now - T0 == pytest.approx(max(0, n - burst) / rate, abs=n * 5e-7)


# --- daily caps --------------------------------------------------------------------------


def test_daily_cap_resets_at_the_next_utc_day() -> None:
    day_start = math.floor(T0 / DAY) * DAY
    cap = DailyCap(3)
    for _ in range(3):
        assert cap.ready_at(1, T0) == T0
        cap = cap.take(1, T0)
    assert cap.ready_at(1, T0) == day_start + DAY
    assert cap.ready_at(1, day_start + DAY) == day_start + DAY
    assert cap.take(1, day_start + DAY).used == 1


def test_daily_cap_day_boundary_honours_an_offset() -> None:
    offset = 8 * 3600.0  # a day that starts at 16:00 UTC
    cap = DailyCap(1, offset).take(1, T0)
    next_day = (math.floor((T0 + offset) / DAY) + 1) * DAY - offset
    assert cap.ready_at(1, T0) == next_day


def test_a_message_larger_than_the_daily_cap_never_goes() -> None:
    assert DailyCap(2).ready_at(3, T0) == math.inf


# --- the limiter ---------------------------------------------------------------------------


def limiter(client: ClientLimit | None = None, **extra: object) -> RateLimiter:
    return RateLimiter(
        [
            SenderLimit("+14155550100", rate=1.0),
            SenderLimit("87654", rate=100.0, per_segment=False, **extra),  # type: ignore[arg-type]
        ],
        client,
    )


def test_units_count_segments_only_where_the_carrier_does() -> None:
    lim = limiter()
    assert lim.units("+14155550100", 3) == 3
    assert lim.units("87654", 3) == 1
    assert lim.units("+14155550100", 0) == 1


def test_senders_are_independent() -> None:
    lim = limiter()
    lim.take("+14155550100", 1, T0)
    assert lim.ready_at("+14155550100", 1, T0) == pytest.approx(T0 + 1)
    assert lim.ready_at("87654", 1, T0) == T0


def test_unknown_sender_is_a_permanent_error() -> None:
    with pytest.raises(UnknownSender):
        limiter().ready_at("+19999999999", 1, T0)
    with pytest.raises(UnknownSender):
        limiter().units("+19999999999", 1)


def test_take_refuses_when_not_ready() -> None:
    lim = limiter()
    lim.take("+14155550100", 1, T0)
    with pytest.raises(ValueError, match="not ready"):
        lim.take("+14155550100", 1, T0 + 0.1)


def test_the_api_client_budget_binds_across_senders() -> None:
    client = ClientLimit(requests=12, window=60.0, burst=2.0)  # refills 10 a minute
    lim = RateLimiter([SenderLimit(f"s{i}", rate=1000.0) for i in range(5)], client)
    lim.take("s0", 1, T0)
    lim.take("s1", 1, T0)
    assert lim.ready_at("s2", 1, T0) == pytest.approx(T0 + 6.0)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=11, max_value=600),
    st.integers(min_value=1, max_value=10),
    st.lists(st.floats(min_value=0.0, max_value=2.0, allow_nan=False), min_size=1, max_size=300),
)
def test_client_limit_holds_in_every_window(requests: int, burst: int, gaps: list[float]) -> None:
    """Whatever the pattern, no 60 s window holds more than the provider's count."""
    lim = RateLimiter([SenderLimit("s", rate=1e6, burst=1e6)], ClientLimit(requests, 60.0, burst))
    now, sends = T0, []
    for gap in gaps:
        now = lim.ready_at("s", 1, now + gap)
        lim.take("s", 1, now)
        sends.append((now, 1.0))
    assert max_in_window(sends, 60.0) <= requests + TOL


def test_client_limit_needs_room_above_its_burst() -> None:
    with pytest.raises(ConfigurationError):
        ClientLimit(requests=5, burst=5).bucket()


def test_daily_cap_in_the_limiter_waits_for_tomorrow_and_the_bucket() -> None:
    lim = RateLimiter([SenderLimit("s", rate=1.0, daily_cap=2)])
    lim.take("s", 1, T0)
    lim.take("s", 1, T0 + 1)
    tomorrow = (math.floor(T0 / DAY) + 1) * DAY
    assert lim.ready_at("s", 1, T0 + 2) == tomorrow
    lim.take("s", 1, tomorrow)
    assert lim.ready_at("s", 1, tomorrow) == pytest.approx(tomorrow + 1)


def test_hold_one_sender_or_the_whole_client() -> None:
    lim = limiter(ClientLimit())
    lim.hold(T0 + 5, "87654")
    assert lim.ready_at("87654", 1, T0) == T0 + 5
    assert lim.ready_at("+14155550100", 1, T0) == T0
    lim.hold(T0 + 9)
    assert lim.ready_at("+14155550100", 1, T0) == T0 + 9


def test_hold_without_a_client_limit_holds_every_sender() -> None:
    lim = limiter()
    lim.hold(T0 + 4)
    assert lim.ready_at("+14155550100", 1, T0) == T0 + 4
    assert lim.ready_at("87654", 1, T0) == T0 + 4


def test_state_hands_a_sender_to_its_next_owner_without_a_fresh_burst() -> None:
    old = RateLimiter([SenderLimit("s", rate=1.0, burst=5.0, daily_cap=10)])
    for i in range(5):
        old.take("s", 1, T0 + i * 0.01)
    new = RateLimiter([SenderLimit("s", rate=1.0, burst=5.0, daily_cap=10)])
    new.restore("s", old.state("s"))
    assert new.ready_at("s", 1, T0 + 0.05) == old.ready_at("s", 1, T0 + 0.05)
    assert new.state("s")["used"] == 5
    # Restoring an older state never loosens what the new owner has already spent.
    new.take("s", 1, new.ready_at("s", 1, T0))
    before = new.ready_at("s", 1, T0)
    new.restore("s", {"tat": T0 - 100, "hold_until": -math.inf, "day": -1, "used": 0})
    assert new.ready_at("s", 1, T0) == before


def test_from_sender_reads_the_pool() -> None:
    s = Sender("+14155550100", SenderType.TEN_DLC, 4.0, frozenset({"US"}), daily_cap=2000)
    lim = SenderLimit.from_sender(s)
    assert (lim.rate, lim.burst, lim.per_segment, lim.daily_cap) == (4.0, 1.0, True, 2000)
