"""Ingress, the pure half: credentials, Twilio signatures (checked against the official
``twilio`` package), body parsing, and linking receipts to commands."""

# ruff: noqa: S106  (test credentials)

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from schemas import DeliveryOutcome, DeliveryStatus
from streams.ingress import (
    BadRequest,
    Credentials,
    inbound_from_json,
    inbound_from_twilio,
    link_for,
    linked_status,
    parse_form,
    parse_json_object,
    receipt_from_json,
    receipt_from_twilio,
    remember_link,
    status_query,
    twilio_signature,
    twilio_signature_valid,
)

NOW = datetime(2026, 11, 24, 20, 0, tzinfo=UTC)
PHONE = "+14155550177"
TOKEN = "12345678901234567890123456789012"  # noqa: S105
URL = "https://sms.example.com/v1/inbound/twilio"
FORM = {
    "MessageSid": "SM0123456789abcdef0123456789abcdef",
    "AccountSid": "AC0123456789abcdef0123456789abcdef",
    "From": PHONE,
    "To": "87654",
    "Body": "When will it be fixed?",
    "NumMedia": "0",
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- credentials -----------------------------------------------------------------------


def test_shared_secret() -> None:
    c = Credentials(secret="s3cret")
    assert c.configured
    assert c.authorized({"X-Outage-Sms-Key": "s3cret"})
    assert not c.authorized({"X-Outage-Sms-Key": "s3cre"})
    assert not c.authorized({"X-Outage-Sms-Key": ""})
    assert not c.authorized({})
    assert c.outgoing() == {"X-Outage-Sms-Key": "s3cret"}


def test_basic_credentials() -> None:
    c = Credentials(basic_user="genesys", basic_password="pw:with:colons")
    assert c.authorized({"Authorization": basic("genesys", "pw:with:colons")})
    assert not c.authorized({"Authorization": basic("genesys", "pw")})
    assert not c.authorized({"Authorization": basic("other", "pw:with:colons")})
    assert not c.authorized({"Authorization": "Basic !!!not-base64"})
    assert not c.authorized({"Authorization": "Bearer abc"})
    assert c.authorized(c.outgoing())


def test_either_form_passes_when_both_are_set() -> None:
    c = Credentials(secret="s", basic_user="u", basic_password="p")
    assert c.authorized({"X-Outage-Sms-Key": "s"})
    assert c.authorized({"Authorization": basic("u", "p")})


def test_nothing_configured_authorizes_nobody() -> None:
    c = Credentials()
    assert not c.configured and not c.authorized({"X-Outage-Sms-Key": ""})
    assert not Credentials(basic_user="u").configured


# --- Twilio signatures -------------------------------------------------------------------


def test_our_signature_is_twilios() -> None:
    official = RequestValidator(TOKEN).compute_signature(URL, FORM)
    assert twilio_signature(TOKEN, URL, {k: [v] for k, v in FORM.items()}) == official


def test_a_request_signed_by_twilios_validator_is_accepted() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, FORM)
    form = parse_form(urlencode(FORM).encode())
    assert twilio_signature_valid(TOKEN, URL, form, signature)
    # Proxies: the URL with its default port must also match, as Twilio's validator allows.
    assert twilio_signature_valid(
        TOKEN, "https://sms.example.com:443/v1/inbound/twilio", form, signature
    )


@pytest.mark.parametrize(
    "change",
    [
        {"Body": "STOP"},  # replayed with a changed body
        {"From": "+14155550199"},
        {"Extra": "x"},
    ],
)
def test_a_changed_body_is_rejected(change: dict[str, str]) -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, FORM)
    form = parse_form(urlencode({**FORM, **change}).encode())
    assert not twilio_signature_valid(TOKEN, URL, form, signature)


def test_forged_and_missing_signatures_are_rejected() -> None:
    form = parse_form(urlencode(FORM).encode())
    forged = RequestValidator("another-account-token").compute_signature(URL, FORM)
    assert not twilio_signature_valid(TOKEN, URL, form, forged)
    assert not twilio_signature_valid(TOKEN, URL, form, None)
    assert not twilio_signature_valid(TOKEN, URL, form, "")
    right = RequestValidator(TOKEN).compute_signature(URL, FORM)
    assert not twilio_signature_valid(TOKEN, URL + "?command_id=x", form, right), "URL signed"


def test_sha256_shared_key_signatures() -> None:
    signature = RequestValidator(TOKEN).compute_signature(URL, FORM, algorithm="HMAC_SHA256")
    form = parse_form(urlencode(FORM).encode())
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert twilio_signature_valid(TOKEN, URL, form, signature, settings)
    assert not twilio_signature_valid(TOKEN, URL, form, signature)  # read as SHA-1
    assert not twilio_signature_valid(TOKEN, URL, form, signature, "algorithm=HMAC_MD5")


def test_blank_values_are_signed_too() -> None:
    fields = {**FORM, "Body": ""}
    signature = RequestValidator(TOKEN).compute_signature(URL, fields)
    assert twilio_signature_valid(TOKEN, URL, parse_form(urlencode(fields).encode()), signature)


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"", "empty_body"), (b"{not json", "malformed_json"), (b"[1]", "not_an_object")],
)
def test_bad_json_bodies(body: bytes, code: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_json_object(body)
    assert err.value.status == 400 and err.value.code == code


def test_bad_forms() -> None:
    with pytest.raises(BadRequest) as err:
        parse_form(b"\xff\xfe")
    assert err.value.code == "malformed_form"
    with pytest.raises(BadRequest):
        parse_form("&".join(f"f{i}=1" for i in range(500)).encode())


def test_status_query() -> None:
    assert status_query({"phone": PHONE, "sender": ""}).sender is None
    q = status_query({"phone": PHONE, "sender": "87654", "unknown": 1})
    assert (q.phone, q.sender) == (PHONE, "87654")
    for bad, code in (
        ({}, "validation"),
        ({"phone": 14155550123}, "validation"),
        ({"phone": "4155550123"}, "invalid_phone"),
        ({"phone": PHONE, "sender": "12"}, "invalid_phone"),
    ):
        with pytest.raises(BadRequest) as err:
            status_query(bad)
        assert err.value.status == 422 and err.value.code == code


def test_inbound_from_genesys_json() -> None:
    body: dict[str, Any] = {"message_id": "m1", "from": PHONE, "to": "87654", "body": "STATUS"}
    sms = inbound_from_json(body, NOW)
    assert (sms.from_, sms.to, sms.body, sms.received_at) == (PHONE, "87654", "STATUS", NOW)
    at = inbound_from_json({**body, "received_at": "2026-11-24T19:00:00Z"}, NOW).received_at
    assert at == datetime(2026, 11, 24, 19, tzinfo=UTC)
    for change in (
        {"from": "not a phone"},
        {"body": 5},
        {"received_at": "2026-11-24T19:00:00"},  # naive
        {"message_id": ""},
        {"body": "x" * 2000},
    ):
        with pytest.raises(BadRequest) as err:
            inbound_from_json({**body, **change}, NOW)
        assert err.value.status == 422
        assert PHONE not in err.value.message


def test_inbound_from_twilio() -> None:
    sms = inbound_from_twilio({k: [v] for k, v in FORM.items()}, NOW)
    assert (sms.message_id, sms.from_, sms.to) == (FORM["MessageSid"], PHONE, "87654")
    with pytest.raises(BadRequest):
        inbound_from_twilio({"From": [PHONE], "To": ["87654"], "Body": ["x"]}, NOW)
    with pytest.raises(BadRequest):
        inbound_from_twilio({**{k: [v] for k, v in FORM.items()}, "From": [PHONE, PHONE]}, NOW)


# --- receipts ------------------------------------------------------------------------------


def twilio_receipt(status: str, **extra: str) -> dict[str, list[str]]:
    fields = {"MessageSid": "SM1", "MessageStatus": status, "To": PHONE, "From": "87654"}
    return {k: [v] for k, v in {**fields, **extra}.items()}


def test_twilio_receipts() -> None:
    r = receipt_from_twilio(twilio_receipt("undelivered", ErrorCode="30005"), None, NOW)
    assert r is not None and r.outcome is DeliveryOutcome.UNDELIVERED and r.error_code == "30005"
    assert r.provider == "twilio" and r.provider_message_id == "SM1" and r.command_id is None
    d = receipt_from_twilio(twilio_receipt("delivered"), "cmd-1", NOW)
    assert d is not None and d.outcome is DeliveryOutcome.DELIVERED and d.command_id == "cmd-1"
    assert receipt_from_twilio(twilio_receipt("sent"), None, NOW) is None
    with pytest.raises(BadRequest):
        receipt_from_twilio(twilio_receipt("exploded"), None, NOW)


def test_generic_receipts() -> None:
    body = {"provider": "genesys", "provider_message_id": "g-1", "to": PHONE, "status": "failed"}
    r = receipt_from_json({**body, "error_code": 4001, "error": "blocked"}, NOW)
    assert (
        r.outcome is DeliveryOutcome.UNDELIVERED and r.error_code == "4001" and r.error == "blocked"
    )
    assert receipt_from_json({**body, "at": "2026-11-24T19:00:00+00:00"}, NOW).at.hour == 19
    for change in (
        {"status": "sent"},
        {"error_code": True},
        {"at": "yesterday"},
        {"at": "2026-11-24T19:00:00"},
        {"to": "5550123"},
        {"provider_message_id": "x" * 200},
    ):
        with pytest.raises(BadRequest):
            receipt_from_json({**body, **change}, NOW)


def sent(
    pmid: str, command: str, outcome: DeliveryOutcome = DeliveryOutcome.SENT
) -> DeliveryStatus:
    return DeliveryStatus(
        command_id=command,
        outcome=outcome,
        kind="alert",
        outage_id="O1",
        outage_version=2,
        sender="87654",
        provider="genesys",
        provider_message_id=pmid,
        at=NOW,
    )


def test_links_remember_the_dispatchers_sent_records() -> None:
    state = remember_link(None, sent("g-1", "cmd-1"), 3)
    assert state is not None and state["p"] == 3
    link = link_for(state, "g-1")
    assert link is not None and link.command_id == "cmd-1" and link.outage_version == 2
    assert link_for(state, "g-2") is None
    assert remember_link(state, sent("g-1", "cmd-1"), 3) is None, "no change, no write"
    no_id = DeliveryStatus(command_id="c", outcome=DeliveryOutcome.SUPPRESSED, at=NOW)
    assert remember_link(state, no_id, 3) is None
    assert remember_link(state, sent("g-9", "cmd-9", DeliveryOutcome.DELIVERED), 3) is None


def test_links_keep_the_newest() -> None:
    state = None
    for i in range(5):
        state = remember_link(state, sent(f"g-{i}", f"cmd-{i}"), 0, keep=3) or state
    assert state is not None and list(state["m"]) == ["g-2", "g-3", "g-4"]


def test_linked_status() -> None:
    receipt = receipt_from_twilio(twilio_receipt("undelivered", ErrorCode="30003"), None, NOW)
    assert receipt is not None
    assert linked_status(receipt, None) is None
    link = link_for(remember_link(None, sent("SM1", "cmd-1"), 0), "SM1")
    status = linked_status(receipt, link)
    assert status is not None
    assert (status.command_id, status.outcome, status.error_code) == (
        "cmd-1",
        DeliveryOutcome.UNDELIVERED,
        "30003",
    )
    assert (status.kind, status.outage_id, status.sender) == ("alert", "O1", "87654")
    assert DeliveryStatus.from_bytes(status.to_bytes()) == status
    echoed = receipt_from_twilio(twilio_receipt("delivered"), "cmd-7", NOW)
    assert echoed is not None
    status = linked_status(echoed, None)
    assert status is not None and status.command_id == "cmd-7" and status.reason is None
