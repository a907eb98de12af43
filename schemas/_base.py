"""Shared building blocks of the topic contract.

Every record on a topic is a frozen pydantic model with a ``schema_version``. Changes are
additive only, so readers ignore fields they do not know (``extra="ignore"``) and an old
consumer keeps working when a producer adds one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from ._phone import analyse_number

__all__ = [
    "E164",
    "MAX_INT64",
    "IanaTimezone",
    "Record",
    "SchemaV1",
    "SenderId",
    "UtcDatetime",
    "Version",
    "format_utc",
    "parse_e164",
    "parse_sender",
]

#: Kafka-side consumers in Java and Go read versions as signed 64-bit integers.
MAX_INT64 = 2**63 - 1


def _exact_int(value: Any) -> Any:
    # Literal[1] would accept True and 1.0 (they compare equal to 1): a producer that sends
    # them has a bug worth hearing about.
    if type(value) is not int:
        raise ValueError("schema_version must be the integer 1")
    return value


SchemaV1 = Annotated[Literal[1], BeforeValidator(_exact_int)]
"""Version 1 of a topic's schema; additive changes keep it, breaking ones bump it."""


def format_utc(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix, the one timestamp form on every topic."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (ISO-8601 with Z or an offset)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[
    datetime,
    AfterValidator(_require_aware),
    PlainSerializer(format_utc, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A timezone-aware timestamp, normalised to UTC; naive timestamps are rejected."""


_E164_SYNTAX = re.compile(r"\+[1-9][0-9]{6,14}")


def parse_e164(value: str) -> str:
    """Validate a phone number already written in E.164 and return its canonical form.

    Numbers must arrive in E.164 (``+`` and country code): guessing a region for a local
    number would text the wrong person.
    """
    if not isinstance(value, str) or not _E164_SYNTAX.fullmatch(value):
        raise ValueError("phone number must be in E.164 form, e.g. +14155550123")
    found = analyse_number(value)  # memoised: a number seen before costs a look-up
    if found.parse_error is not None:
        raise ValueError(f"not a phone number: {found.parse_error}")
    if found.e164 is None:
        raise ValueError("not a valid phone number for its country")
    return found.e164


E164 = Annotated[
    str,
    AfterValidator(parse_e164),
    WithJsonSchema({"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"}),
]

_SHORT_CODE = re.compile(r"[1-9][0-9]{2,7}")


def parse_sender(value: str) -> str:
    """One of our sender ids: an E.164 long code / toll-free number, or a short code."""
    if isinstance(value, str) and _SHORT_CODE.fullmatch(value):
        return value
    return parse_e164(value)


SenderId = Annotated[
    str,
    AfterValidator(parse_sender),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\+[1-9][0-9]{6,14}|[1-9][0-9]{2,7})$",
            "description": "E.164 number, or a 3-8 digit short code.",
        }
    ),
]

Version = Annotated[int, Field(ge=1, le=MAX_INT64)]


def _check_zone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


IanaTimezone = Annotated[str | None, AfterValidator(_check_zone)]


class Record(BaseModel):
    """Base of every topic model: immutable, tolerant of unknown fields, orjson on the wire."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        """Strict: a string is never coerced into a number or a boolean."""
        return cls.model_validate_json(data, strict=True)

    @classmethod
    def from_obj(cls, obj: Any) -> Self:
        return cls.model_validate(obj)
