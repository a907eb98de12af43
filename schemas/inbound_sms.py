"""``sms.inbound``: a text a customer sent us, keyed by the customer's number."""

from __future__ import annotations

from pydantic import Field

from ._base import E164, Record, SchemaV1, SenderId, UtcDatetime

__all__ = ["InboundSms"]


class InboundSms(Record):
    schema_version: SchemaV1 = 1
    message_id: str = Field(min_length=1, max_length=128)
    from_: E164 = Field(alias="from", description="The customer's number.")
    to: SenderId = Field(description="Our sender (number or short code) the customer wrote to.")
    body: str = Field(max_length=1_600)
    received_at: UtcDatetime
