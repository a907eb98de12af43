"""Planning the throughput wall: how long texting a region takes, and what senders buy.

Each number sticks to one sender (rendezvous hashing in :class:`SenderPool`), so the
recipients of a country split evenly across the usable senders serving it, and the
slowest of them sets the pace: a 1 msg/s long code beside a 100 msg/s short code takes
half the recipients and makes the whole notification about 50 times slower. A second
wall is the provider's API limit per OAuth client (Genesys: about 300 requests a minute),
shared by everything one dispatcher sends. This module answers with numbers, before an
outage, so an operator can buy senders instead of discovering the wall during one.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .phones import phone_facts
from .senders import Sender, SenderPool, SenderType

__all__ = [
    "Plan",
    "RegionCount",
    "SenderLoad",
    "WhatIf",
    "count_region",
    "format_duration",
    "plan_notification",
    "suggestions",
    "typical_rate",
]

#: Rates used for a sender type the pool does not have yet (FACTS.md, "typical rate").
TYPICAL_RATE = {
    SenderType.SHORT_CODE: 100.0,
    SenderType.TOLL_FREE: 3.0,
    SenderType.TEN_DLC: 4.0,
    SenderType.LONG_CODE: 1.0,
    SenderType.ALPHANUMERIC: 10.0,
}


@dataclass(frozen=True, slots=True)
class SenderLoad:
    sender: Sender
    recipients: float
    units: float
    """Messages, or segments for a sender whose rate counts segments."""
    seconds: float
    over_daily_cap: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    recipients: Mapping[str, int]
    """Country -> recipients to text."""
    loads: tuple[SenderLoad, ...]
    unserved: Mapping[str, int]
    """Country -> recipients no usable sender serves (they get nothing: ``no_sender``)."""
    client_seconds: float
    """Time the provider's per-client request limit alone imposes (0 when not limited)."""

    @property
    def sender_seconds(self) -> float:
        return max((load.seconds for load in self.loads), default=0.0)

    @property
    def seconds(self) -> float:
        return max(self.sender_seconds, self.client_seconds)

    @property
    def bottleneck(self) -> str:
        if not self.loads:
            return "nothing to send"
        if self.client_seconds > self.sender_seconds:
            return "the provider's API limit per OAuth client"
        slowest = max(self.loads, key=lambda load: load.seconds)
        return f"sender {slowest.sender.id} ({slowest.sender.type.value})"

    def by_type(self) -> dict[SenderType, tuple[int, float, float]]:
        """Sender type -> (senders, recipients, seconds until its last sender finishes)."""
        out: dict[SenderType, tuple[int, float, float]] = {}
        for load in self.loads:
            n, r, s = out.get(load.sender.type, (0, 0.0, 0.0))
            out[load.sender.type] = (n + 1, r + load.recipients, max(s, load.seconds))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "recipients": dict(self.recipients),
            "unserved": dict(self.unserved),
            "seconds": _finite(self.seconds),
            "sender_seconds": _finite(self.sender_seconds),
            "client_seconds": _finite(self.client_seconds),
            "bottleneck": self.bottleneck,
            "senders": [
                {
                    "id": load.sender.id,
                    "type": load.sender.type.value,
                    "rate": load.sender.rate,
                    "recipients": round(load.recipients, 1),
                    "units": round(load.units, 1),
                    "seconds": _finite(load.seconds),
                    "over_daily_cap": load.over_daily_cap,
                }
                for load in self.loads
            ],
            "by_type": {
                t.value: {"senders": n, "recipients": round(r, 1), "seconds": _finite(s)}
                for t, (n, r, s) in self.by_type().items()
            },
        }


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else round(x, 1)


@dataclass(frozen=True, slots=True)
class WhatIf:
    change: str
    before: float
    after: float

    def describe(self) -> str:
        return f"{self.change}: {format_duration(self.before)} -> {format_duration(self.after)}"


def format_duration(seconds: float) -> str:
    """``41m``, ``1h05m``, ``28h``, ``3d04h``: precise enough to decide, short to read."""
    if math.isinf(seconds):
        return "never"
    s = int(math.ceil(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m}m{r:02d}s" if m < 10 and r else f"{m}m"
    h, rest = divmod(s, 3600)
    if h < 24:
        return f"{h}h{rest // 60:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def plan_notification(
    recipients: Mapping[str, int],
    pool: SenderPool,
    *,
    segments: int = 1,
    share: float = 1.0,
    client_requests_per_minute: float | None = None,
    dispatchers: int = 1,
) -> Plan:
    """Project texting ``recipients`` (country -> count) through ``pool``.

    ``share`` is the fraction of each rate the dispatcher paces at
    (``OUTAGE_SMS_SENDER_RATE_SHARE``); ``client_requests_per_minute`` the request limit
    of each dispatcher's OAuth client, ``dispatchers`` how many run with their own client.
    """
    per_sender: dict[str, float] = defaultdict(float)
    unserved: Counter[str] = Counter()
    usable = sorted((s for s in pool.senders if s.usable), key=lambda s: s.id)
    for country, n in recipients.items():
        if n <= 0:
            continue
        serving = [s for s in usable if country.upper() in s.countries]
        if not serving:
            unserved[country] += n
            continue
        for s in serving:  # a uniform hash: an even split
            per_sender[s.id] += n / len(serving)
    loads = []
    for s in usable:
        r = per_sender.get(s.id, 0.0)
        if r <= 0:
            continue
        units = r * segments if s.per_segment else r
        seconds = units / (s.rate * share)
        over = s.daily_cap is not None and units > s.daily_cap
        if over and s.daily_cap:
            # Sent at the rate until the cap, then waiting for the next day, and so on.
            days = math.ceil(units / s.daily_cap) - 1
            seconds = max(seconds, days * 86_400 + (units - days * s.daily_cap) / (s.rate * share))
        loads.append(SenderLoad(s, r, units, seconds, over))
    total = sum(per_sender.values())
    client_seconds = 0.0
    if client_requests_per_minute and total:
        client_seconds = total / (client_requests_per_minute / 60.0 * max(1, dispatchers))
    return Plan(dict(recipients), tuple(loads), dict(unserved), client_seconds)


def typical_rate(pool: SenderPool, kind: SenderType) -> float:
    """The rate a new sender of ``kind`` would likely get: the pool's best of that type,
    else the typical rate from FACTS.md."""
    rates = [s.rate for s in pool.senders if s.type is kind and s.usable]
    return max(rates) if rates else TYPICAL_RATE[kind]


def suggestions(
    recipients: Mapping[str, int],
    pool: SenderPool,
    *,
    segments: int = 1,
    share: float = 1.0,
    client_requests_per_minute: float | None = None,
    dispatchers: int = 1,
) -> list[WhatIf]:
    """What adding (or retiring) senders would change, most useful first."""
    kw: dict[str, Any] = {
        "segments": segments,
        "share": share,
        "client_requests_per_minute": client_requests_per_minute,
        "dispatchers": dispatchers,
    }
    base = plan_notification(recipients, pool, **kw)
    countries = sorted(c.upper() for c, n in recipients.items() if n > 0)
    if not countries:
        return []
    out: list[WhatIf] = []
    for kind in (SenderType.SHORT_CODE, SenderType.TOLL_FREE, SenderType.TEN_DLC):
        rate = typical_rate(pool, kind)
        for n in (1, 2):
            extra = [
                Sender(f"new-{kind.value}-{i}", kind, rate, frozenset(countries)) for i in range(n)
            ]
            after = plan_notification(recipients, SenderPool([*pool.senders, *extra]), **kw)
            out.append(
                WhatIf(
                    f"+{n} {kind.value.replace('_', ' ')} at {rate:g}/s",
                    base.seconds,
                    after.seconds,
                )
            )
    # A slow sender in a fast pool holds its share of the numbers back: show retiring it.
    if len(base.loads) > 1:
        slowest = max(base.loads, key=lambda load: load.seconds)
        others = [s for s in pool.senders if s.id != slowest.sender.id]
        after = plan_notification(recipients, SenderPool(others), **kw)
        if not after.unserved and after.seconds < base.seconds:
            out.append(
                WhatIf(
                    f"without {slowest.sender.type.value.replace('_', ' ')} "
                    f"{slowest.sender.id} (its numbers move to the others)",
                    base.seconds,
                    after.seconds,
                )
            )
    if client_requests_per_minute and base.client_seconds >= base.sender_seconds:
        more = plan_notification(recipients, pool, **{**kw, "dispatchers": dispatchers + 1})
        out.append(
            WhatIf(
                f"+1 dispatcher with its own OAuth client ({client_requests_per_minute:g} "
                "requests/min)",
                base.seconds,
                more.seconds,
            )
        )
    return out


@dataclass
class RegionCount:
    """Who a region's outage would text, from the ``customer.regions`` topic."""

    region: str
    customers: int = 0
    recipients: Counter[str] = field(default_factory=Counter)
    """Country -> consenting, textable numbers."""
    no_consent: int = 0
    not_textable: int = 0

    @property
    def total(self) -> int:
        return sum(self.recipients.values())


def count_region(
    records: Iterable[tuple[Any, Mapping[str, Any] | None]], region: str
) -> RegionCount:
    """Fold ``customer.regions`` (key, decoded value or None for a tombstone), in offset
    order, into the region's recipients: the latest record per customer, one text per
    number (a number shared by customers is texted once, if any of them consents)."""
    latest: dict[Any, Mapping[str, Any]] = {}
    for key, value in records:
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
    numbers: dict[str, bool] = {}
    count = RegionCount(region)
    for value in latest.values():
        if region not in (value.get("regions") or ()):
            continue
        count.customers += 1
        phone = str(value.get("phone"))
        numbers[phone] = numbers.get(phone, False) or value.get("sms_consent") is True
    for phone, consent in numbers.items():
        facts = phone_facts(phone)
        if not facts.textable:
            count.not_textable += 1
        elif not consent:
            count.no_consent += 1
        else:
            count.recipients[facts.country or "?"] += 1
    return count
