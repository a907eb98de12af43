"""``outage.events``: what monitoring publishes, keyed by ``outage_id``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import Record, SchemaV1, UtcDatetime, Version

__all__ = ["OutageEvent", "OutageSeverity", "OutageStatus"]


class OutageStatus(StrEnum):
    DETECTED = "detected"
    UPDATED = "updated"
    RESOLVED = "resolved"


class OutageSeverity(StrEnum):
    SERVICE = "service"
    #: Health and safety (gas leak, hurricane): the only severity that may bypass opt-outs.
    LIFE_SAFETY = "life_safety"


class OutageEvent(Record):
    """One version of an outage; a higher ``version`` supersedes every lower one."""

    schema_version: SchemaV1 = 1
    outage_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    version: Version = Field(description="Increases with every update of this outage.")
    status: OutageStatus
    # Required, no default: a life-safety event that forgot the field must be dead-lettered
    # (and fixed upstream), never silently downgraded to a service notice.
    severity: OutageSeverity
    regions: list[str] = Field(min_length=1, max_length=10_000)
    summary: str = Field(min_length=1, max_length=500, description="Short plain text.")
    eta: UtcDatetime | None = Field(default=None, description="Estimated restoration.")
    status_url: str | None = Field(default=None, max_length=200, pattern=r"^https://\S+$")
    occurred_at: UtcDatetime
