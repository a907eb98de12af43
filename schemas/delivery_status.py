"""``sms.delivery-status``: the outcome of each send command, keyed by recipient number."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import Record, SchemaV1, UtcDatetime

__all__ = ["DeliveryOutcome", "DeliveryStatus"]


class DeliveryOutcome(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    EXPIRED = "expired"
    #: Later receipts from the carrier, linked to the command.
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"


class DeliveryStatus(Record):
    schema_version: SchemaV1 = 1
    command_id: str
    outcome: DeliveryOutcome
    reason: str | None = Field(default=None, description="Why suppressed or failed.")
    kind: str | None = None
    outage_id: str | None = None
    outage_version: int | None = None
    sender: str | None = None
    attempts: int = Field(default=0, ge=0)
    provider: str | None = None
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    segments: int | None = None
    at: UtcDatetime
