"""``customer.regions``: the CRM's view of a customer, compacted, keyed by ``customer_id``.

A null value (tombstone) deletes the customer.
"""

from __future__ import annotations

from pydantic import Field

from ._base import E164, IanaTimezone, Record, SchemaV1, UtcDatetime

__all__ = ["CustomerRecord"]


class CustomerRecord(Record):
    schema_version: SchemaV1 = 1
    customer_id: str = Field(min_length=1, max_length=128)
    phone: E164
    regions: list[str] = Field(max_length=1_000)
    sms_consent: bool = Field(description="SMS-specific consent for outage notifications.")
    language: str = Field(default="en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    timezone: IanaTimezone = Field(default=None, description="IANA zone; else from the number.")
    consent_recorded_at: UtcDatetime | None = Field(
        default=None, description="When consent was given or withdrawn, for the audit trail."
    )
