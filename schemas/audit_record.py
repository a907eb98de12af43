"""``sms.audit``: every decision the system made, with the facts its rule used."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ._base import Record, SchemaV1, UtcDatetime

__all__ = ["AuditRecord"]


class AuditRecord(Record):
    """``decision`` says what happened (targeted, suppressed, ...), ``reason`` says why."""

    schema_version: SchemaV1 = 1
    audit_id: str = Field(
        description="Deterministic, so a replay can be compared record by record."
    )
    decision: str
    reason: str | None = None
    phone: str | None = Field(default=None, description="Subject number (E.164).")
    outage_id: str | None = None
    outage_version: int | None = None
    command_id: str | None = None
    message_id: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    at: UtcDatetime = Field(description="Event time the decision was based on.")
