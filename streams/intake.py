"""Intake of input records: accept a valid record or say exactly why it is rejected.

Agents never parse bytes themselves: they call :func:`decode` and either handle the model
or send the :class:`Rejected` to the dead-letter topic, so bad input never crashes an agent
and is never silently dropped.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import orjson
from pydantic import ValidationError

from schemas import (
    CustomerRecord,
    DeadLetter,
    InboundSms,
    OutageEvent,
    Record,
    RejectReason,
    SendCommand,
)

__all__ = [
    "DLQ_VALUE_LIMIT",
    "Accepted",
    "Decoded",
    "Rejected",
    "Tombstone",
    "dead_letter",
    "decode_command",
    "decode_customer",
    "decode_inbound",
    "decode_outage",
]

M = TypeVar("M", bound=Record)

#: The most of an original value a dead letter carries (the rest is summarised by hash).
DLQ_VALUE_LIMIT = 64 * 1024

_PHONE_FIELDS = frozenset({"phone", "from", "to"})


@dataclass(frozen=True, slots=True)
class Accepted(Generic[M]):
    record: M


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null value on a compacted topic: delete what the key names."""

    key: str


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    error: str


Decoded = Accepted[M] | Tombstone | Rejected


def _key_text(key: bytes | None) -> str | Rejected:
    if key is None or key == b"":
        return Rejected(RejectReason.NULL_KEY, "record has no key")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(RejectReason.VALIDATION, "key is not UTF-8")


def _validate(model: type[M], value: bytes, max_bytes: int) -> M | Rejected:
    if len(value) > max_bytes:
        return Rejected(
            RejectReason.OVERSIZED, f"value is {len(value)} bytes, the limit is {max_bytes}"
        )
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejected(RejectReason.MALFORMED_JSON, f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Rejected(
            RejectReason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}"
        )
    version = obj.get("schema_version", 1)
    if version != 1:
        return Rejected(
            RejectReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {version!r} is not supported (this worker reads 1)",
        )
    try:
        # Strict JSON validation: "3" is not a version, "yes" is not consent.
        return model.model_validate_json(value, strict=True)
    except ValidationError as exc:
        return _explain(exc)


def _explain(exc: ValidationError) -> Rejected:
    """Name each offending field; a bad phone number gets its own reason for the metrics."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors]
    phone_only = all(e["loc"] and e["loc"][0] in _PHONE_FIELDS for e in errors)
    reason = RejectReason.INVALID_PHONE if phone_only else RejectReason.VALIDATION
    return Rejected(reason, "; ".join(parts))


def decode_outage(
    key: bytes | None, value: bytes | None, max_bytes: int
) -> Accepted[OutageEvent] | Rejected:
    """``outage.events``: key must be the outage id; outages are never tombstoned."""
    k = _key_text(key)
    if isinstance(k, Rejected):
        return k
    if value is None:
        return Rejected(RejectReason.VALIDATION, "outage events cannot be deleted (null value)")
    rec = _validate(OutageEvent, value, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    if rec.outage_id != k:
        return Rejected(RejectReason.KEY_MISMATCH, f"key {k!r} is not the outage_id")
    return Accepted(rec)


def decode_customer(
    key: bytes | None, value: bytes | None, max_bytes: int
) -> Decoded[CustomerRecord]:
    """``customer.regions``: key is the customer id; a null value deletes the customer."""
    k = _key_text(key)
    if isinstance(k, Rejected):
        return k
    if value is None:
        return Tombstone(k)
    rec = _validate(CustomerRecord, value, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    if rec.customer_id != k:
        return Rejected(RejectReason.KEY_MISMATCH, f"key {k!r} is not the customer_id")
    return Accepted(rec)


def decode_inbound(
    key: bytes | None, value: bytes | None, max_bytes: int
) -> Accepted[InboundSms] | Rejected:
    """``sms.inbound``: keyed by the customer's number so it lands beside their state."""
    k = _key_text(key)
    if isinstance(k, Rejected):
        return k
    if value is None:
        return Rejected(RejectReason.VALIDATION, "inbound messages cannot be deleted (null value)")
    rec = _validate(InboundSms, value, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    if rec.from_ != k:
        return Rejected(RejectReason.KEY_MISMATCH, "key is not the sender's E.164 number")
    return Accepted(rec)


def decode_command(
    key: bytes | None, value: bytes | None, max_bytes: int
) -> Accepted[SendCommand] | Rejected:
    """``sms.send-commands`` as the dispatcher reads it; the key is the sender number there."""
    if value is None:
        return Rejected(RejectReason.VALIDATION, "send commands cannot be deleted (null value)")
    rec = _validate(SendCommand, value, max_bytes)
    if isinstance(rec, Rejected):
        return rec
    return Accepted(rec)


def dead_letter(
    rejected: Rejected,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp: datetime | None,
    key: bytes | None,
    value: bytes | None,
    now: datetime,
) -> DeadLetter:
    """Wrap a rejection with the original bytes, truncated past :data:`DLQ_VALUE_LIMIT`."""
    size = len(value) if value is not None else 0
    truncated = size > DLQ_VALUE_LIMIT
    kept = value[:DLQ_VALUE_LIMIT] if value is not None else None
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        reason=rejected.reason,
        error=rejected.error[:2_000],
        key_b64=base64.b64encode(key[:1024]).decode() if key is not None else None,
        value_b64=base64.b64encode(kept).decode() if kept is not None else None,
        value_size=size,
        value_truncated=truncated,
        value_sha256=hashlib.sha256(value).hexdigest() if value is not None else None,
        rejected_at=now,
    )
