"""``<input>.dlq``: a record we could not accept, with its original bytes and the reason."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import Record, SchemaV1, UtcDatetime

__all__ = ["DeadLetter", "RejectReason"]


class RejectReason(StrEnum):
    NULL_KEY = "null_key"
    KEY_MISMATCH = "key_mismatch"
    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    VALIDATION = "validation"
    INVALID_PHONE = "invalid_phone"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    FORBIDDEN_CONTENT = "forbidden_content"
    #: A bug of ours, not the record's fault: kept here so the stream moves on and nothing
    #: is lost; replay it from the DLQ once fixed.
    PROCESSING_ERROR = "processing_error"


class DeadLetter(Record):
    """Original bytes are base64 (JSON cannot carry raw bytes); huge values are truncated."""

    schema_version: SchemaV1 = 1
    source_topic: str
    partition: int
    offset: int
    timestamp: UtcDatetime | None = None
    reason: RejectReason
    error: str = Field(description="Human-readable detail naming the offending field.")
    key_b64: str | None = None
    value_b64: str | None = None
    value_size: int = Field(description="Size of the original value in bytes.")
    value_truncated: bool = False
    value_sha256: str | None = None
    rejected_at: UtcDatetime
