"""Loop protection rules: rate, repeats, echoes, cool-down and the reply cap."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from streams.loops import LoopReason, LoopRules, observe, record_reply

IDS = (f"m{i}" for i in itertools.count())
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RULES = LoopRules(
    max_inbound=5,
    window=timedelta(seconds=60),
    max_repeats=3,
    repeat_window=timedelta(minutes=5),
    cooldown=timedelta(minutes=30),
    max_replies=4,
    reply_window=timedelta(hours=1),
)


def test_a_person_writing_now_and_then_is_never_a_loop() -> None:
    state = None
    for i in range(20):
        state, verdict = observe(
            state, 0, next(IDS), f"question {i}", False, T0 + timedelta(minutes=i), RULES
        )
        assert verdict is None


def test_more_than_max_inbound_in_the_window_starts_a_cooldown() -> None:
    state = None
    verdicts = []
    for i in range(6):
        state, v = observe(state, 0, next(IDS), f"msg {i}", False, T0 + timedelta(seconds=i), RULES)
        verdicts.append(v)
    assert verdicts[:5] == [None] * 5
    last = verdicts[5]
    assert last is not None and last.reason is LoopReason.RATE and last.started
    assert last.until == (T0 + timedelta(seconds=5) + RULES.cooldown).timestamp()


def test_the_window_slides() -> None:
    state = None
    for i in range(5):
        state, _ = observe(state, 0, next(IDS), f"m{i}", False, T0 + timedelta(seconds=i), RULES)
    # 61 s after the first, only four are still inside the window: this is the fifth.
    state, v = observe(state, 0, next(IDS), "late", False, T0 + timedelta(seconds=61), RULES)
    assert v is None


def test_the_same_body_repeated_is_a_loop() -> None:
    state = None
    state, v1 = observe(state, 0, next(IDS), "auto reply: away", False, T0, RULES)
    state, v2 = observe(
        state, 0, next(IDS), "auto reply: away", False, T0 + timedelta(minutes=1), RULES
    )
    state, v3 = observe(
        state, 0, next(IDS), "auto reply: away", False, T0 + timedelta(minutes=2), RULES
    )
    assert v1 is None and v2 is None
    assert v3 is not None and v3.reason is LoopReason.REPEAT


def test_repeats_outside_the_repeat_window_are_fine() -> None:
    state = None
    for i in range(5):
        state, v = observe(
            state, 0, next(IDS), "status", False, T0 + timedelta(minutes=6 * i), RULES
        )
        assert v is None


def test_an_echo_starts_a_cooldown_at_once() -> None:
    _, v = observe(None, 0, next(IDS), "outage alerts: outage in your area", True, T0, RULES)
    assert v is not None and v.reason is LoopReason.ECHO and v.started


def test_cooldown_holds_then_ends() -> None:
    state, v = observe(None, 0, next(IDS), "x", True, T0, RULES)
    assert v is not None
    state, v = observe(
        state, 0, next(IDS), "a real question", False, T0 + timedelta(minutes=29), RULES
    )
    assert v is not None and v.reason is LoopReason.COOLDOWN and not v.started
    state, v = observe(state, 0, next(IDS), "another", False, T0 + timedelta(minutes=31), RULES)
    assert v is None
    assert state["until"] is None


def test_a_loop_continuing_in_cooldown_extends_it() -> None:
    state, v = observe(None, 0, next(IDS), "echo", True, T0, RULES)
    first_until = v.until if v else 0
    state, v = observe(state, 0, next(IDS), "echo", True, T0 + timedelta(minutes=20), RULES)
    assert v is not None and v.started and v.until > first_until


def test_reply_cap() -> None:
    state, _ = observe(None, 0, next(IDS), "q", False, T0, RULES)
    for i in range(4):
        state, v = record_reply(state, T0 + timedelta(minutes=i), RULES)
        assert v is None
    state, v = record_reply(state, T0 + timedelta(minutes=5), RULES)
    assert v is not None and v.reason is LoopReason.REPLY_CAP
    # The cap started a cool-down: the next text is silent too.
    _, v = observe(state, 0, next(IDS), "q2", False, T0 + timedelta(minutes=6), RULES)
    assert v is not None and v.reason is LoopReason.COOLDOWN
    # An hour later the replies have aged out of the window.
    state, v = record_reply(state, T0 + timedelta(hours=2), RULES)
    assert v is None and len(state["out"]) == 1


def test_state_stays_bounded_under_a_flood() -> None:
    state = None
    for i in range(1_000):
        state, _ = observe(
            state, 3, next(IDS), "flood", False, T0 + timedelta(milliseconds=i), RULES
        )
    assert state is not None
    assert len(state["in"]) <= RULES.max_inbound + 1
    assert len(state["bodies"]) <= RULES.max_inbound + 1
    assert state["p"] == 3


@given(st.lists(st.integers(min_value=0, max_value=3_600), min_size=1, max_size=60))
def test_never_more_replies_than_the_cap_in_any_reply_window(offsets: list[int]) -> None:
    state, _ = observe(None, 0, next(IDS), "q", False, T0, RULES)
    sent: list[float] = []
    for off in sorted(offsets):
        now = T0 + timedelta(seconds=off)
        state, v = record_reply(state, now, RULES)
        if v is None:
            sent.append(now.timestamp())
    window = RULES.reply_window.total_seconds()
    for t in sent:
        assert sum(1 for u in sent if t - window < u <= t) <= RULES.max_replies
