"""The topic contract: golden examples, JSON Schema export, wire format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

import schemas
from schemas import EXPORTED, JSON_DIR, CustomerRecord, InboundSms, OutageEvent, SendCommand

GOLDEN = Path(__file__).parent.parent / "golden"


@pytest.mark.parametrize("stem", sorted(EXPORTED))
def test_golden_example_round_trips_through_its_model(stem: str) -> None:
    raw = (GOLDEN / f"{stem}.json").read_bytes()
    model = EXPORTED[stem]
    record = model.from_bytes(raw)
    assert orjson.loads(record.to_bytes()) == orjson.loads(raw)


@pytest.mark.parametrize("stem", sorted(EXPORTED))
def test_golden_example_is_valid_against_the_exported_json_schema(stem: str) -> None:
    schema = json.loads((schemas.JSON_DIR / f"{stem}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(
        json.loads((GOLDEN / f"{stem}.json").read_text())
    )


def test_exported_json_schema_files_are_up_to_date() -> None:
    rendered = schemas.render_json_schemas()
    for name, text in rendered.items():
        path = schemas.JSON_DIR / name
        assert path.is_file(), f"{name} missing: run `outage-sms schemas export`"
        assert path.read_text() == text, f"{name} is stale: run `outage-sms schemas export`"
    on_disk = {p.name for p in schemas.JSON_DIR.glob("*.schema.json")}
    assert on_disk == set(rendered), "a schema file has no model: delete it or export again"


def test_unknown_fields_are_ignored_so_producers_can_add_fields() -> None:
    raw = orjson.loads((GOLDEN / "sms.inbound.json").read_bytes())
    raw["carrier"] = "T-Mobile"
    assert InboundSms.from_obj(raw).message_id == "SM-7f3a"


def test_timestamps_are_utc_with_z_on_the_wire() -> None:
    raw = orjson.loads((GOLDEN / "outage.events.json").read_bytes())
    raw["occurred_at"] = "2026-11-22T12:15:00-08:00"
    ev = OutageEvent.from_obj(raw)
    assert ev.occurred_at == datetime(2026, 11, 22, 20, 15, tzinfo=UTC)
    assert orjson.loads(ev.to_bytes())["occurred_at"] == "2026-11-22T20:15:00Z"


def test_naive_timestamps_are_rejected() -> None:
    raw = orjson.loads((GOLDEN / "outage.events.json").read_bytes())
    raw["occurred_at"] = "2026-11-22T20:15:00"
    with pytest.raises(ValidationError, match="timezone"):
        OutageEvent.from_obj(raw)


def test_aware_datetime_in_other_zone_is_normalised() -> None:
    raw = orjson.loads((GOLDEN / "sms.inbound.json").read_bytes())
    raw["received_at"] = datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    assert InboundSms.from_obj(raw).received_at.isoformat() == "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize("phone", ["+14155550101", "+447911123456", "+34612345678"])
def test_valid_e164_numbers_are_accepted(phone: str) -> None:
    raw = orjson.loads((GOLDEN / "customer.regions.json").read_bytes())
    raw["phone"] = phone
    assert CustomerRecord.from_obj(raw).phone == phone


@pytest.mark.parametrize(
    "phone", ["4155550101", "+1415555", "+1 (415) 555-0101x", "+999123", "", "+10000000000"]
)
def test_invalid_or_non_e164_numbers_are_rejected(phone: str) -> None:
    raw = orjson.loads((GOLDEN / "customer.regions.json").read_bytes())
    raw["phone"] = phone
    with pytest.raises(ValidationError):
        CustomerRecord.from_obj(raw)


def test_unknown_timezone_is_rejected() -> None:
    raw = orjson.loads((GOLDEN / "customer.regions.json").read_bytes())
    raw["timezone"] = "Mars/Olympus_Mons"
    with pytest.raises(ValidationError, match="time zone"):
        CustomerRecord.from_obj(raw)


def test_send_command_body_is_capped_at_genesys_sms_limit() -> None:
    raw = orjson.loads((GOLDEN / "sms.send-commands.json").read_bytes())
    raw["body"] = "x" * 766
    with pytest.raises(ValidationError):
        SendCommand.from_obj(raw)


def test_status_url_must_be_https() -> None:
    raw = orjson.loads((GOLDEN / "outage.events.json").read_bytes())
    raw["status_url"] = "http://status.example.com/o/42"
    with pytest.raises(ValidationError):
        OutageEvent.from_obj(raw)


def test_severity_is_required_so_a_life_safety_event_is_never_downgraded() -> None:
    golden = json.loads((GOLDEN / "outage.events.json").read_text())
    del golden["severity"]
    with pytest.raises(ValidationError, match="severity"):
        OutageEvent.from_bytes(json.dumps(golden))
    schema = json.loads((JSON_DIR / "outage.events.schema.json").read_text())
    assert "severity" in schema["required"]
    assert "default" not in schema["properties"]["severity"]


@pytest.mark.parametrize("severity", ["service", "life_safety"])
def test_both_severities_are_accepted(severity: str) -> None:
    golden = json.loads((GOLDEN / "outage.events.json").read_text())
    event = OutageEvent.from_bytes(json.dumps({**golden, "severity": severity}))
    assert event.severity == severity


@pytest.mark.parametrize("bad", [True, 1.0, "1", 2])
def test_schema_version_must_be_the_integer_one(bad: object) -> None:
    golden = json.loads((GOLDEN / "outage.events.json").read_text())
    with pytest.raises(ValidationError, match="schema_version"):
        OutageEvent.from_bytes(json.dumps({**golden, "schema_version": bad}))


def test_versions_beyond_int64_are_rejected() -> None:
    golden = json.loads((GOLDEN / "outage.events.json").read_text())
    with pytest.raises(ValidationError, match="version"):
        OutageEvent.from_bytes(json.dumps({**golden, "version": 2**63}))
    top = OutageEvent.from_bytes(json.dumps({**golden, "version": 2**63 - 1}))
    assert top.version == 2**63 - 1
    schema = json.loads((JSON_DIR / "outage.events.schema.json").read_text())
    assert schema["properties"]["version"]["maximum"] == 2**63 - 1


@pytest.mark.parametrize("sender", ["+14155550100", "87654", "123"])
def test_our_sender_may_be_a_number_or_a_short_code(sender: str) -> None:
    golden = json.loads((GOLDEN / "sms.inbound.json").read_text())
    assert InboundSms.from_bytes(json.dumps({**golden, "to": sender})).to == sender


@pytest.mark.parametrize("sender", ["12", "012345", "123456789", "+1"])
def test_malformed_sender_ids_are_rejected(sender: str) -> None:
    golden = json.loads((GOLDEN / "sms.inbound.json").read_text())
    with pytest.raises(ValidationError):
        InboundSms.from_bytes(json.dumps({**golden, "to": sender}))


def test_exported_schema_carries_phone_pattern_and_date_time_format() -> None:
    schema = json.loads((JSON_DIR / "customer.regions.schema.json").read_text())
    assert schema["properties"]["phone"]["pattern"].startswith("^\\+")
    created = json.loads((JSON_DIR / "sms.send-commands.schema.json").read_text())
    assert created["properties"]["created_at"]["format"] == "date-time"
