"""Input records for integration tests, as producers would write them (key, value)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

__all__ = ["NOON_LA", "SHORT", "customer", "outage", "text"]

NOON_LA = "2026-11-24T20:00:00Z"
"""Noon in Los Angeles: outside quiet hours for the customers below."""
SHORT = "87654"
"""The default pool's short code: the sender the fan-out uses for US numbers."""
_ids = itertools.count()


def customer(cid: str, phone: str, regions: list[str], **over: Any) -> tuple[bytes, bytes]:
    """A consenting English-speaking customer in Los Angeles (``customer.regions``)."""
    rec = {
        "schema_version": 1,
        "customer_id": cid,
        "phone": phone,
        "regions": regions,
        "sms_consent": True,
        "language": "en",
        "timezone": "America/Los_Angeles",
        **over,
    }
    return cid.encode(), orjson.dumps(rec)


def outage(oid: str, version: int, **over: Any) -> tuple[bytes, bytes]:
    """A service outage in R1 detected at noon in Los Angeles (``outage.events``)."""
    rec = {
        "schema_version": 1,
        "outage_id": oid,
        "version": version,
        "status": "detected",
        "severity": "service",
        "regions": ["R1"],
        "summary": "Storm damage on Main St",
        "eta": "2026-11-24T23:30:00Z",  # 3:30 PM in Los Angeles
        "status_url": "https://status.example.com/o/1",
        "occurred_at": NOON_LA,
        **over,
    }
    return oid.encode(), orjson.dumps(rec)


def text(phone: str, body: str, at: str = NOON_LA, to: str = SHORT) -> tuple[bytes, bytes]:
    """An inbound text from ``phone`` (``sms.inbound``), with a fresh message id."""
    rec = {
        "schema_version": 1,
        "message_id": f"in-{next(_ids)}",
        "from": phone,
        "to": to,
        "body": body,
        "received_at": at,
    }
    return phone.encode(), orjson.dumps(rec)
