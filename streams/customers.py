"""Re-keying customers by phone number, and the per-phone subscriber state.

The CRM keys customers by ``customer_id``; every compliance fact belongs to a phone
number. Stage one keeps ``customer_id -> phone`` and emits changes keyed by phone (a
retraction for the old number when it changes); stage two folds them into
``phone -> {customer_id: record}``, since several accounts can share a number.
Both are ``(state, event) -> (new_state, outputs)`` functions.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas import CustomerRecord

from .phones import phone_facts

__all__ = [
    "PhoneChange",
    "apply_phone_change",
    "apply_subscriber_change",
    "decode_phone_change",
    "rekey_customer",
]

PhoneChange = tuple[str, bytes]
"""(phone, envelope bytes) for the internal by-phone topic."""


def _envelope(customer_id: str, record: CustomerRecord | None) -> bytes:
    body = record.model_dump(mode="json", by_alias=True) if record is not None else None
    return orjson.dumps({"customer_id": customer_id, "customer": body})


def rekey_customer(
    old_phone: str | None, customer_id: str, record: CustomerRecord | None
) -> tuple[str | None, list[PhoneChange]]:
    """New ``customer_id -> phone`` state, and the by-phone changes to emit.

    ``record`` None is a deletion (tombstone). A phone change retracts the customer from
    the old number first, so the old number stops receiving.
    """
    out: list[PhoneChange] = []
    if old_phone is not None and (record is None or record.phone != old_phone):
        out.append((old_phone, _envelope(customer_id, None)))
    if record is None:
        return None, out
    out.append((record.phone, _envelope(customer_id, record)))
    return record.phone, out


def decode_phone_change(envelope: bytes) -> tuple[str, dict[str, Any] | None]:
    obj = orjson.loads(envelope)
    return str(obj["customer_id"]), obj["customer"]


def apply_phone_change(
    current: dict[str, Any] | None, customer_id: str, customer: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Fold one change into ``{customer_id: record}``; None when nobody is left."""
    state = dict(current or {})
    if customer is None:
        state.pop(customer_id, None)
    else:
        state[customer_id] = customer
    return state or None


def apply_subscriber_change(
    current: dict[str, Any] | None,
    phone: str,
    partition: int,
    customer_id: str,
    customer: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The subscriber table value: ``{"p", "facts", "customers"}``; None when nobody is left.

    ``facts`` (line type, country, the number's zone) are computed once per number here, at
    CRM rate, because the fan-out cannot afford ``phonenumbers`` per recipient. ``p`` is
    the partition, so the per-partition fan-out index can be rebuilt from the table alone.
    """
    customers = apply_phone_change((current or {}).get("customers"), customer_id, customer)
    if customers is None:
        return None
    facts = (current or {}).get("facts")
    if facts is None:
        f = phone_facts(phone)
        facts = {
            "line": f.line,
            "textable": f.textable,
            "country": f.country,
            "timezone": f.timezone,
        }
    return {"p": partition, "facts": facts, "customers": customers}
