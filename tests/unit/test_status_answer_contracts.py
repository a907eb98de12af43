"""The shipped contracts match the code: Genesys Data Action schemas and docs/openapi.json
describe exactly what the endpoints read and answer."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from streams.fanout import Customer, Subscriber
from streams.ingress import inbound_from_json, status_query
from streams.replies import AreaOutage, ReplyRules
from streams.reply_texts import ReplyTexts
from streams.status_answer import StatusAnswer, answer_status
from topology.web import PATHS

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
PHONE = "+14155550123"


def action(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "contracts" / "genesys" / name).read_text()))


STATUS = action("outage-status.data-action.json")
INBOUND = action("inbound-message.data-action.json")
OPENAPI = json.loads((ROOT / "docs" / "openapi.json").read_text())


def answers() -> list[StatusAnswer]:
    texts, rules = ReplyTexts("Outage Alerts", "call 800"), ReplyRules()
    sub = Subscriber(
        PHONE, (Customer("C1", frozenset({"R1"}), True, "en", None),), "mobile", True, "US", None
    )
    out = AreaOutage("O1", 1, "detected", frozenset({"R1"}), NOW + timedelta(hours=2), None, NOW)
    return [
        answer_status("87654", sub, None, [out], texts, rules, NOW),
        answer_status(None, sub, None, [], texts, rules, NOW),
        answer_status(None, None, {"all": True, "senders": []}, [out], texts, rules, NOW),
    ]


@pytest.mark.parametrize("doc", [STATUS, INBOUND])
def test_genesys_actions_have_the_export_shape(doc: dict[str, Any]) -> None:
    assert doc["integrationType"] == "custom-rest-actions" and doc["actionType"] == "custom"
    request = doc["config"]["request"]
    assert request["requestType"] == "POST" and request["requestTemplate"] == "${input.rawRequest}"
    assert request["requestUrlTemplate"].endswith(
        PATHS["status"] if doc is STATUS else PATHS["inbound"]
    )
    for schema in (
        doc["contract"]["input"]["inputSchema"],
        doc["contract"]["output"]["successSchema"],
    ):
        jsonschema.Draft4Validator.check_schema(schema)
        assert schema["type"] == "object"
        assert "$ref" not in json.dumps(schema), "Genesys contracts do not support $ref"
    for name, prop in doc["contract"]["input"]["inputSchema"]["properties"].items():
        assert prop["type"] in ("string", "integer", "number", "boolean"), name  # flat only


def test_status_output_contract_is_the_answer() -> None:
    success = STATUS["contract"]["output"]["successSchema"]
    names = {f.name for f in fields(StatusAnswer)}
    assert set(success["properties"]) == names == set(success["required"])
    assert set(OPENAPI["components"]["schemas"]["StatusAnswer"]["properties"]) == names
    for answer in answers():
        body = answer.to_json()
        jsonschema.Draft4Validator(success).validate(body)
        jsonschema.Draft202012Validator(OPENAPI["components"]["schemas"]["StatusAnswer"]).validate(
            body
        )


def test_status_input_contract_is_what_the_endpoint_reads() -> None:
    schema = STATUS["contract"]["input"]["inputSchema"]
    example = {"phone": PHONE, "sender": "87654"}
    jsonschema.Draft4Validator(schema).validate(example)
    assert set(schema["properties"]) == set(example)
    assert status_query(example).phone == PHONE


def test_inbound_input_contract_is_what_the_endpoint_reads() -> None:
    schema = INBOUND["contract"]["input"]["inputSchema"]
    example = {"message_id": "c-1", "from": PHONE, "to": "87654", "body": "STATUS"}
    jsonschema.Draft4Validator(schema).validate(example)
    assert set(schema["required"]) == set(example)
    assert set(schema["properties"]) == {*example, "received_at"}
    assert inbound_from_json(example, NOW).from_ == PHONE


def test_openapi_documents_every_endpoint() -> None:
    assert set(OPENAPI["paths"]) == set(PATHS.values())
    assert OPENAPI["paths"]["/health"]["get"]["security"] == []
    for path, ops in OPENAPI["paths"].items():
        for op in ops.values():
            if path != "/health":
                assert op.get("security", OPENAPI["security"]), path
