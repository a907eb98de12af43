"""``sms.audit``: every decision the system made, with the facts its rule used."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from pydantic import Field

from ._base import Record, SchemaV1, UtcDatetime

__all__ = ["AuditDraft", "AuditRecord"]


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


class AuditDraft(NamedTuple):
    """An audit record built on a hot path, without pydantic's validation.

    The inbound agent writes two or three audit records per text; building and dumping
    each through :class:`AuditRecord` cost about 18 microseconds, this about 5 (a named
    tuple: a frozen dataclass's ``__init__`` alone costs several). The caller guarantees
    what the model would check (``at`` is already ``format_utc``'s form, ``facts`` holds
    only JSON values with string keys), and :meth:`to_bytes` writes the bytes
    ``AuditRecord.to_bytes()`` would (pinned by ``tests/unit/test_audit_draft.py`` and by
    every audit of ``tests/unit/test_replies.py``).
    """

    audit_id: str
    decision: str
    at: str
    """``format_utc`` of the decision's event time."""
    facts: dict[str, Any]
    reason: str | None = None
    phone: str | None = None
    outage_id: str | None = None
    outage_version: int | None = None
    command_id: str | None = None
    message_id: str | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "schema_version": 1,
                "audit_id": self.audit_id,
                "decision": self.decision,
                "reason": self.reason,
                "phone": self.phone,
                "outage_id": self.outage_id,
                "outage_version": self.outage_version,
                "command_id": self.command_id,
                "message_id": self.message_id,
                "facts": self.facts,
                "at": self.at,
            }
        )
