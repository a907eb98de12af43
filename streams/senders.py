"""The sender pool: which number texts whom, and how long the throughput wall makes it take.

Each recipient keeps one sender (a stable hash of the number picks among the senders
that serve the recipient's country): customers see one consistent number, and an opt-out
scoped to that sender keeps meaning what the customer meant. A sender that is not
registered and active is never chosen: carriers block unregistered traffic.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from schemas import parse_sender

from .errors import ConfigurationError

__all__ = [
    "PoolFindings",
    "Projection",
    "Sender",
    "SenderPool",
    "SenderStatus",
    "SenderType",
    "check_pool",
    "parse_pool",
]


class SenderType(StrEnum):
    LONG_CODE = "long_code"
    TEN_DLC = "10dlc"
    TOLL_FREE = "toll_free"
    SHORT_CODE = "short_code"
    ALPHANUMERIC = "alphanumeric"


class SenderStatus(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    type: SenderType
    rate: float
    """Messages (or segments, see ``per_segment``) per second the carrier allows."""
    countries: frozenset[str]
    status: SenderStatus = SenderStatus.ACTIVE
    per_segment: bool = True
    """Most providers count segments, not messages, against the rate."""
    daily_cap: int | None = None

    @property
    def usable(self) -> bool:
        return self.status is SenderStatus.ACTIVE and self.rate > 0


@dataclass(frozen=True, slots=True)
class Projection:
    """How long the queued messages take at the pool's rates."""

    seconds: float
    by_sender: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        hours, rest = divmod(int(math.ceil(self.seconds)), 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class SenderPool:
    def __init__(self, senders: Iterable[Sender]) -> None:
        self.senders: tuple[Sender, ...] = tuple(senders)
        ids = [s.id for s in self.senders]
        if len(ids) != len(set(ids)):
            raise ConfigurationError("OUTAGE_SMS_SENDERS lists a sender id twice")
        self.by_id: dict[str, Sender] = {s.id: s for s in self.senders}
        usable = sorted((s for s in self.senders if s.usable), key=lambda s: s.id)
        self._for_country: dict[str, tuple[Sender, ...]] = {}
        for s in usable:
            for c in s.countries:
                self._for_country[c] = (*self._for_country.get(c, ()), s)
        self.sole: dict[str | None, Sender] = {
            c: senders[0] for c, senders in self._for_country.items() if len(senders) == 1
        }
        """Country -> its only usable sender: ``choose``'s answer for every number there,
        looked up without a call (the fan-out asks a million times)."""

    def choose(self, phone: str, country: str | None) -> Sender | None:
        """The sticky sender for ``phone``; None when no usable sender serves its country."""
        candidates = self._for_country.get(country or "", ())
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        # Rendezvous hashing: adding or removing a sender moves only the numbers that go to
        # (or came from) that sender, so a sender-scoped opt-out keeps its meaning.
        key = phone.encode()
        return max(candidates, key=lambda s: zlib.crc32(key + s.id.encode()))

    def project(self, work: Mapping[str, int], share: float = 1.0) -> Projection:
        """Time to drain ``work`` (sender id -> messages or segments) at ``share`` of each rate.

        A partition of the fan-out sees ``1/partitions`` of the recipients and, under a
        uniform hash, gets that share of each sender's rate: its projection equals the
        whole fan-out's.
        """
        per = {
            sid: n / (self.by_id[sid].rate * share) if self.by_id[sid].rate > 0 else math.inf
            for sid, n in work.items()
            if n
        }
        return Projection(max(per.values(), default=0.0), per)


_TYPE_DEFAULT_RATE = {
    SenderType.LONG_CODE: 1.0,
    SenderType.TEN_DLC: 4.0,
    SenderType.TOLL_FREE: 3.0,
    SenderType.SHORT_CODE: 100.0,
    SenderType.ALPHANUMERIC: 10.0,
}


def parse_pool(text: str) -> SenderPool:
    """``OUTAGE_SMS_SENDERS``: a JSON list of senders, e.g.
    ``[{"id": "87654", "type": "short_code", "rate": 100, "countries": ["US"]}]``.
    """
    try:
        raw: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"OUTAGE_SMS_SENDERS is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise ConfigurationError("OUTAGE_SMS_SENDERS must be a non-empty JSON list of senders")
    senders = []
    for i, item in enumerate(raw):
        try:
            kind = SenderType(item["type"])
            if not isinstance(item["countries"], list) or not item["countries"]:
                raise ValueError('countries must be a non-empty JSON list, e.g. ["US"]')
            senders.append(
                Sender(
                    id=str(item["id"]),
                    type=kind,
                    rate=float(item.get("rate", _TYPE_DEFAULT_RATE[kind])),
                    countries=frozenset(str(c).upper() for c in item["countries"]),
                    status=SenderStatus(item.get("status", "active")),
                    per_segment=bool(item.get("per_segment", True)),
                    daily_cap=item.get("daily_cap"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"OUTAGE_SMS_SENDERS entry {i} is invalid ({exc!r}); each needs id, type "
                f"({', '.join(t.value for t in SenderType)}), countries, and optionally "
                "rate, status, per_segment, daily_cap"
            ) from None
    return SenderPool(senders)


@dataclass(frozen=True, slots=True)
class PoolFindings:
    """What a process about to use the pool should refuse (errors) or say (warnings)."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]


def check_pool(pool: SenderPool) -> PoolFindings:
    """Start-up checks of ``OUTAGE_SMS_SENDERS`` beyond its syntax, each naming the fix.

    Errors: no usable sender at all (every recipient would be audited ``no_sender`` and
    never texted), or a usable sender whose id the ``sms.send-commands`` contract cannot
    carry (every command from it would be refused). Warnings: a sender that is not
    active or has no rate is never used, and a country only such senders serve gets no
    texts.
    """
    errors: list[str] = []
    warnings: list[str] = []
    for s in pool.senders:
        if s.status is not SenderStatus.ACTIVE:
            warnings.append(
                f"sender {s.id} ({s.type.value}) is {s.status.value}: it is never used; "
                'set "status": "active" in OUTAGE_SMS_SENDERS once the carrier has '
                "registered it"
            )
        elif s.rate <= 0:
            warnings.append(
                f"sender {s.id} has rate {s.rate:g}: it is never used; give its carrier "
                "rate (messages per second) in OUTAGE_SMS_SENDERS"
            )
        if not s.usable:
            continue
        try:
            canonical = parse_sender(s.id)
        except ValueError:
            errors.append(
                f"sender id {s.id!r} is neither an E.164 number (+14155550123) nor a 3-8 digit "
                "short code: sms.send-commands cannot carry it, so every text from it would "
                "be refused; fix its id in OUTAGE_SMS_SENDERS"
            )
            continue
        if canonical != s.id:
            errors.append(
                f"sender id {s.id!r} is not in canonical E.164 form: write it as "
                f"{canonical!r} in OUTAGE_SMS_SENDERS (opt-outs and receipts are keyed by it)"
            )
    usable = [s for s in pool.senders if s.usable]
    if not usable:
        listed = ", ".join(f"{s.id} ({s.status.value})" for s in pool.senders)
        errors.append(
            f"OUTAGE_SMS_SENDERS has no active sender with a rate ({listed}): nothing could "
            'ever be sent; mark a registered sender "status": "active"'
        )
    else:
        served = {c for s in usable for c in s.countries}
        for country in sorted({c for s in pool.senders for c in s.countries} - served):
            warnings.append(
                f"no active sender serves {country}: its customers are audited no_sender and "
                f"get no texts until a sender for {country} is active in OUTAGE_SMS_SENDERS"
            )
    return PoolFindings(tuple(errors), tuple(warnings))
