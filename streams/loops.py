"""Loop protection: stop automated replies from ping-ponging with an auto-responder.

Two bots answering each other burn credit in minutes (Twilio fails messages after 30
replies in 30 s between two numbers). A number goes into a cool-down, in which no
automated reply goes out, when it sends more than ``max_inbound`` texts in ``window``,
repeats the same body ``max_repeats`` times in ``repeat_window``, or echoes our own texts
back (RFC 3834: never auto-reply to auto-generated messages). On top, automated replies
to one number are capped per ``reply_window`` whatever the cause. Opt-outs are not
replies: the caller honours STOP whatever this module says.

The windows are sliding windows kept explicitly in one changelog-backed table value per
number (``GuardState``), not a Faust windowed table: windowed changelogs
(``compact,delete``) are where Faust's recovery bugs live (../shared/ARCHITECTURE.md),
and a loop that resumes after a restart must still be caught. Times are event times
(``received_at``), so a replay reaches the same verdicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = ["GuardState", "LoopReason", "LoopRules", "LoopVerdict", "observe", "record_reply"]


class LoopReason(StrEnum):
    RATE = "loop_rate"
    """More inbound texts in the window than a person writes."""
    REPEAT = "loop_repeat"
    """The same body again and again."""
    ECHO = "loop_echo"
    """Our own text came back: an auto-responder is quoting us."""
    COOLDOWN = "loop_cooldown"
    """Still inside a cool-down started earlier."""
    REPLY_CAP = "reply_rate_limited"
    """Too many automated replies to this number in the reply window."""


@dataclass(frozen=True, slots=True)
class LoopRules:
    max_inbound: int = 10
    """More than this many texts in ``window`` is a loop (Twilio's wall is 30 in 30 s)."""
    window: timedelta = timedelta(seconds=60)
    max_repeats: int = 3
    """This many identical bodies within ``repeat_window`` is a loop."""
    repeat_window: timedelta = timedelta(minutes=5)
    cooldown: timedelta = timedelta(minutes=30)
    max_replies: int = 6
    """Automated replies to one number per ``reply_window``."""
    reply_window: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class LoopVerdict:
    reason: LoopReason
    started: bool
    """True when this message started (or extended) the cool-down, for the audit."""
    until: float


GuardState = dict[str, Any]
"""``{"p": partition, "in": [ts], "bodies": [[digest, ts]], "out": [ts], "until": ts|None,
"ids": [recent message ids]}``
plus keys of the reply rules (``"menu"``: when the keyword menu last went out); timestamps
are epoch seconds."""


def _digest(normalized_body: str) -> str:
    return hashlib.blake2b(normalized_body.encode(), digest_size=8).hexdigest()


def _recent(times: Iterable[float], since: float) -> list[float]:
    return [t for t in times if t > since]


def observe(
    state: GuardState | None,
    partition: int,
    message_id: str,
    normalized_body: str,
    echo: bool,
    now: datetime,
    rules: LoopRules,
) -> tuple[GuardState, LoopVerdict | None]:
    """Fold one inbound text in; a verdict when automated replies must stay silent."""
    s = state or {}
    t = now.timestamp()
    if message_id in (s.get("ids") or ()):
        # The same text redelivered (a crash before the offset commit): count it once.
        until = s.get("until")
        if until is not None and until > t:
            return s, LoopVerdict(LoopReason.COOLDOWN, False, until)
        return s, None
    inbound = [*_recent(s.get("in") or (), t - rules.window.total_seconds()), t]
    digest = _digest(normalized_body)
    horizon = t - rules.repeat_window.total_seconds()
    bodies = [[d, ts] for d, ts in (s.get("bodies") or ()) if ts > horizon]
    bodies.append([digest, t])
    until = s.get("until")
    if until is not None and until <= t:
        until = None

    reason: LoopReason | None = None
    if echo:
        reason = LoopReason.ECHO
    elif len(inbound) > rules.max_inbound:
        reason = LoopReason.RATE
    elif sum(1 for d, _ in bodies if d == digest) >= rules.max_repeats:
        reason = LoopReason.REPEAT

    verdict: LoopVerdict | None = None
    if reason is not None:
        until = t + rules.cooldown.total_seconds()
        verdict = LoopVerdict(reason, True, until)
    elif until is not None:
        verdict = LoopVerdict(LoopReason.COOLDOWN, False, until)

    # Bounded state: a flood keeps at most the window's worth of entries.
    cap = max(rules.max_inbound, rules.max_repeats) + 1
    new_state: GuardState = {
        **s,  # keys other rules keep here (the reply module's "menu") pass through
        "p": partition,
        "in": inbound[-cap:],
        "bodies": bodies[-cap:],
        "out": _recent(s.get("out") or (), t - rules.reply_window.total_seconds()),
        "until": until,
        "ids": [*(s.get("ids") or ()), message_id][-cap:],
    }
    return new_state, verdict


def record_reply(
    state: GuardState, now: datetime, rules: LoopRules
) -> tuple[GuardState, LoopVerdict | None]:
    """Count one automated reply, or refuse it when the per-number cap is reached."""
    t = now.timestamp()
    out = _recent(state.get("out") or (), t - rules.reply_window.total_seconds())
    if len(out) >= rules.max_replies:
        until = t + rules.cooldown.total_seconds()
        return {**state, "out": out, "until": until}, LoopVerdict(LoopReason.REPLY_CAP, True, until)
    return {**state, "out": [*out, t]}, None
