"""``sms.send-commands``: one message to send, keyed by the recipient's number."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import E164, Record, SchemaV1, SenderId, UtcDatetime, Version
from .outage_event import OutageSeverity

__all__ = ["Encoding", "MessageKind", "SendCommand"]


class MessageKind(StrEnum):
    ALERT = "alert"
    UPDATE = "update"
    RESTORED = "restored"
    REPLY = "reply"
    HELP = "help"
    CONFIRMATION = "confirmation"


class Encoding(StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


class SendCommand(Record):
    """``command_id`` derives from (outage id, version, phone), so replays reproduce it."""

    schema_version: SchemaV1 = 1
    command_id: str = Field(min_length=1, max_length=128)
    kind: MessageKind
    outage_id: str | None = None
    outage_version: Version | None = None
    from_: SenderId = Field(alias="from", description="Our sender number or short code.")
    to: E164
    body: str = Field(min_length=1, max_length=765)
    encoding: Encoding
    segments: int = Field(ge=1, le=10)
    created_at: UtcDatetime
    not_before: UtcDatetime | None = Field(default=None, description="Quiet-hours deferral.")
    expires_at: UtcDatetime | None = None
    life_safety_bypass: bool = Field(
        default=False, description="True only when a life-safety outage overrides an opt-out."
    )
    language: str = "en"
    outage_severity: OutageSeverity | None = Field(
        default=None,
        description=(
            "The outage's severity as this text states it. With outage_eta, what the "
            "dispatcher compares with the outage's latest version: a queued text is stale "
            "only when a newer version differs enough to earn a text of its own."
        ),
    )
    outage_eta: UtcDatetime | None = Field(
        default=None, description="The ETA this text states (outage texts only)."
    )
