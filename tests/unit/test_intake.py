"""Intake decisions: accept, tombstone, or reject with the right reason."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import RejectReason
from streams.intake import (
    DLQ_VALUE_LIMIT,
    Accepted,
    Rejected,
    Tombstone,
    dead_letter,
    decode_customer,
    decode_inbound,
    decode_outage,
)

GOLDEN = Path(__file__).parent.parent / "golden"
LIMIT = 64 * 1024


def golden(stem: str, **over: object) -> bytes:
    obj = orjson.loads((GOLDEN / f"{stem}.json").read_bytes())
    obj.update(over)
    return orjson.dumps(obj)


def reason(decoded: object) -> RejectReason:
    assert isinstance(decoded, Rejected), decoded
    return decoded.reason


def test_good_records_are_accepted() -> None:
    assert isinstance(decode_outage(b"OUT-2026-0042", golden("outage.events"), LIMIT), Accepted)
    assert isinstance(decode_customer(b"CUST-1001", golden("customer.regions"), LIMIT), Accepted)
    assert isinstance(decode_inbound(b"+14155550101", golden("sms.inbound"), LIMIT), Accepted)


def test_customer_tombstone_is_a_deletion_not_an_error() -> None:
    assert decode_customer(b"CUST-1001", None, LIMIT) == Tombstone("CUST-1001")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (None, golden("outage.events"), RejectReason.NULL_KEY),
        (b"", golden("outage.events"), RejectReason.NULL_KEY),
        (b"\xff", golden("outage.events"), RejectReason.VALIDATION),
        (b"OUT-2026-0042", None, RejectReason.VALIDATION),
        (b"OUT-2026-0042", b"{", RejectReason.MALFORMED_JSON),
        (b"OUT-2026-0042", b'"a string"', RejectReason.NOT_AN_OBJECT),
        (b"OUT-2026-0042", golden("outage.events", version="3"), RejectReason.VALIDATION),
        (b"OUT-2026-0042", golden("outage.events", status="gone"), RejectReason.VALIDATION),
        (b"OUT-2026-0042", golden("outage.events", regions="R1"), RejectReason.VALIDATION),
        (b"OUT-2026-0042", golden("outage.events", regions=[]), RejectReason.VALIDATION),
        (
            b"OUT-2026-0042",
            golden("outage.events", schema_version=9),
            RejectReason.UNSUPPORTED_SCHEMA_VERSION,
        ),
        (b"OTHER", golden("outage.events"), RejectReason.KEY_MISMATCH),
        (b"OUT-2026-0042", b" " * (LIMIT + 1), RejectReason.OVERSIZED),
    ],
)
def test_outage_rejections(key: bytes | None, value: bytes | None, expected: RejectReason) -> None:
    assert reason(decode_outage(key, value, LIMIT)) == expected


def test_missing_field_names_the_field() -> None:
    obj = orjson.loads(golden("outage.events"))
    del obj["occurred_at"]
    rejected = decode_outage(b"OUT-2026-0042", orjson.dumps(obj), LIMIT)
    assert isinstance(rejected, Rejected)
    assert "occurred_at" in rejected.error


@pytest.mark.parametrize("field", ["from", "to"])
def test_inbound_invalid_phone_gets_its_own_reason(field: str) -> None:
    value = golden("sms.inbound", **{field: "+1555"})
    assert reason(decode_inbound(b"+14155550101", value, LIMIT)) == RejectReason.INVALID_PHONE


def test_inbound_key_must_be_the_sender() -> None:
    value = golden("sms.inbound")
    assert reason(decode_inbound(b"+14155550102", value, LIMIT)) == RejectReason.KEY_MISMATCH


def test_phone_error_mixed_with_other_errors_is_a_validation_error() -> None:
    value = golden("customer.regions", phone="+1", sms_consent="perhaps")
    assert reason(decode_customer(b"CUST-1001", value, LIMIT)) == RejectReason.VALIDATION


def test_dead_letter_keeps_original_bytes_and_truncates_huge_values() -> None:
    now = datetime(2026, 11, 22, tzinfo=UTC)
    value = b"x" * (DLQ_VALUE_LIMIT + 5)
    letter = dead_letter(
        Rejected(RejectReason.OVERSIZED, "too big"),
        topic="t",
        partition=1,
        offset=7,
        timestamp=None,
        key=b"k",
        value=value,
        now=now,
    )
    assert letter.value_truncated and letter.value_size == len(value)
    assert base64.b64decode(letter.value_b64 or "") == value[:DLQ_VALUE_LIMIT]
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert base64.b64decode(letter.key_b64 or "") == b"k"
    small = dead_letter(
        Rejected(RejectReason.MALFORMED_JSON, "x"),
        topic="t",
        partition=0,
        offset=0,
        timestamp=now,
        key=None,
        value=b"{",
        now=now,
    )
    assert not small.value_truncated and small.key_b64 is None
    assert base64.b64decode(small.value_b64 or "") == b"{"


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=40)))
def test_arbitrary_bytes_never_raise(value: bytes, key: bytes | None) -> None:
    for decode in (decode_outage, decode_customer, decode_inbound):
        result = decode(key, value, LIMIT)
        assert isinstance(result, (Accepted, Rejected, Tombstone))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "outage_id",
                "version",
                "status",
                "severity",
                "regions",
                "summary",
                "eta",
                "occurred_at",
                "schema_version",
            ]
        ),
        st.one_of(
            st.none(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.text(max_size=20),
            st.lists(st.text(max_size=5), max_size=3),
        ),
    )
)
def test_arbitrary_json_objects_never_raise(obj: dict[str, object]) -> None:
    result = decode_outage(b"K", orjson.dumps(obj), LIMIT)
    assert isinstance(result, (Accepted, Rejected))


def test_strings_are_never_coerced_into_booleans() -> None:
    value = golden("customer.regions", sms_consent="true")
    assert reason(decode_customer(b"CUST-1001", value, LIMIT)) == RejectReason.VALIDATION
