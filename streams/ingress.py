"""HTTP ingress, the pure half: who may call, what a body must hold, what goes to Kafka.

The worker's web server (``topology.web``) reads at most a configured number of bytes,
then calls these functions; nothing is published until they return a valid record, so a
bad request gets a clear 4xx and never reaches a topic. Three ways to prove who calls:

- a shared secret in a header, or HTTP Basic credentials (what Genesys web-services Data
  Actions can send), compared in constant time (``hmac.compare_digest``);
- Twilio's ``X-Twilio-Signature``: HMAC of the full URL Twilio called plus the sorted form
  parameters, keyed by the auth token (HMAC-SHA1; HMAC-SHA256 when Twilio's
  ``X-Twilio-Webhooks-Signature-Settings`` header says so), as Twilio's own validator does.

Delivery receipts name the provider's message id; ``sms.delivery-status`` records name
our ``command_id``. The link between them is the dispatcher's own ``sent`` record (keyed
by recipient phone, carrying both ids), remembered per phone in a table
(:func:`remember_link`); a provider that echoes our command id (a ``command_id`` field,
or a ``command_id`` query parameter on a Twilio status-callback URL, which the signature
covers) needs no look-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import orjson
from pydantic import ValidationError

from schemas import (
    DeliveryOutcome,
    DeliveryStatus,
    InboundSms,
    format_utc,
    parse_e164,
    parse_sender,
)

__all__ = [
    "BadRequest",
    "Credentials",
    "Link",
    "LinkState",
    "Receipt",
    "StatusQuery",
    "inbound_from_json",
    "inbound_from_twilio",
    "link_for",
    "linked_status",
    "parse_form",
    "parse_json_object",
    "receipt_from_json",
    "receipt_from_twilio",
    "remember_link",
    "status_query",
    "twilio_signature",
    "twilio_signature_valid",
]

#: Form fields a body may carry; Twilio sends about 20.
MAX_FORM_FIELDS = 100
#: Receipts a phone's link table entry keeps: enough for a day of replies and updates.
DEFAULT_LINKS_KEPT = 50


class BadRequest(Exception):
    """A request we refuse; ``status`` is the HTTP status, ``code`` a stable token."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


# --- authentication ------------------------------------------------------------------


def _same(given: str | None, expected: str) -> bool:
    """Constant time in the length of ``expected``, whatever ``given`` is."""
    return hmac.compare_digest((given or "").encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Credentials:
    """What callers other than Twilio must present: either form passes."""

    secret: str | None = None
    secret_header: str = "X-Outage-Sms-Key"  # noqa: S105  (a header name, not a secret)
    basic_user: str | None = None
    basic_password: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.secret) or bool(self.basic_user and self.basic_password)

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """``headers`` should be case-insensitive (aiohttp's are)."""
        ok = False
        if self.secret:
            ok |= _same(headers.get(self.secret_header), self.secret)
        if self.basic_user and self.basic_password:
            ok |= self._basic(headers.get("Authorization"))
        return ok

    def _basic(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        user, password = "", ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
        # Both compared every time: no early exit that tells a right user from a wrong one.
        user_ok = _same(user, self.basic_user or "")
        password_ok = _same(password, self.basic_password or "")
        return user_ok and password_ok

    def outgoing(self) -> dict[str, str]:
        """Headers a worker sends when it forwards a request to another worker."""
        if self.secret:
            return {self.secret_header: self.secret}
        if self.basic_user and self.basic_password:
            raw = f"{self.basic_user}:{self.basic_password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}


_ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def _algorithm(settings_header: str | None) -> str:
    """Twilio's ``key=...,algorithm=HMAC_SHA256``; absent means the legacy HMAC-SHA1."""
    for part in (settings_header or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def twilio_signature(
    token: str, url: str, params: Mapping[str, Sequence[str]], algorithm: str = "HMAC_SHA1"
) -> str:
    """Base64 HMAC of the URL followed by every ``name + value``, names and values sorted."""
    data = url
    for name in sorted(params):
        for value in sorted(set(params[name])):
            data += name + value
    mac = hmac.new(token.encode(), data.encode(), _ALGORITHMS[algorithm])
    return base64.b64encode(mac.digest()).decode()


def _port_variants(url: str) -> list[str]:
    """The URL as called, without and with its default port: proxies differ, as Twilio's
    validator allows."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    default = 443 if parts.scheme == "https" else 80
    without = urlunsplit(parts._replace(netloc=host))
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{parts.port or default}"))
    return list(dict.fromkeys([url, without, with_port]))


def twilio_signature_valid(
    token: str,
    url: str,
    params: Mapping[str, Sequence[str]],
    signature: str | None,
    settings_header: str | None = None,
) -> bool:
    """Whether ``signature`` is Twilio's for exactly this URL and these parameters."""
    if not signature or not token:
        return False
    algorithm = _algorithm(settings_header)
    if algorithm not in _ALGORITHMS:
        return False
    ok = False
    for candidate in _port_variants(url):
        ok |= hmac.compare_digest(
            twilio_signature(token, candidate, params, algorithm).encode(), signature.encode()
        )
    return ok


# --- bodies ----------------------------------------------------------------------------


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest(400, "empty_body", "request body is empty: send a JSON object")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, "malformed_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest(400, "not_an_object", "body must be a JSON object")
    return obj


def parse_form(body: bytes) -> dict[str, list[str]]:
    """``application/x-www-form-urlencoded`` -> name -> values (blank values kept: Twilio
    signs them too)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "malformed_form", "form body is not UTF-8") from None
    try:
        return parse_qs(
            text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS, errors="strict"
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "malformed_form", f"form body could not be parsed: {exc}") from None


def _errors(exc: ValidationError) -> str:
    """Field names and messages, never the values (they may be phone numbers)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )


def _text(obj: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    """A string field; Architect sends unset strings as empty, so empty means absent."""
    value = obj.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(422, "validation", f"{name}: field required")
        return None
    if not isinstance(value, str):
        raise BadRequest(422, "validation", f"{name}: must be a string")
    return value


def _one(form: Mapping[str, Sequence[str]], name: str, *, required: bool = True) -> str | None:
    values = form.get(name) or []
    if len(values) > 1:
        raise BadRequest(422, "validation", f"{name}: given more than once")
    value = values[0] if values else ""
    if not value:
        if required:
            raise BadRequest(422, "validation", f"{name}: field required")
        return None
    return value


def _phone(value: str, name: str) -> str:
    try:
        return parse_e164(value)
    except ValueError as exc:
        raise BadRequest(422, "invalid_phone", f"{name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class StatusQuery:
    phone: str
    sender: str | None


def status_query(obj: Mapping[str, Any]) -> StatusQuery:
    """``{"phone": E.164, "sender": optional number or short code}``."""
    phone = _phone(_text(obj, "phone") or "", "phone")
    sender = _text(obj, "sender", required=False)
    if sender is not None:
        try:
            sender = parse_sender(sender)
        except ValueError as exc:
            raise BadRequest(422, "invalid_phone", f"sender: {exc}") from None
    return StatusQuery(phone, sender)


def _inbound(fields: dict[str, Any]) -> InboundSms:
    try:
        return InboundSms.from_bytes(orjson.dumps(fields))
    except ValidationError as exc:
        raise BadRequest(422, "validation", _errors(exc)) from None


def inbound_from_json(obj: Mapping[str, Any], now: datetime) -> InboundSms:
    """A Genesys Data Action's inbound text: ``message_id``, ``from``, ``to``, ``body``,
    optional ``received_at`` (ISO-8601 with a zone; default: when we got it)."""
    received = _text(obj, "received_at", required=False)
    body = obj.get("body")
    if not isinstance(body, str):
        raise BadRequest(422, "validation", "body: must be a string")
    return _inbound(
        {
            "schema_version": 1,
            "message_id": _text(obj, "message_id"),
            "from": _text(obj, "from"),
            "to": _text(obj, "to"),
            "body": body,
            "received_at": received or format_utc(now),
        }
    )


def inbound_from_twilio(form: Mapping[str, Sequence[str]], now: datetime) -> InboundSms:
    """Twilio's incoming-message webhook: ``MessageSid``, ``From``, ``To``, ``Body``."""
    return _inbound(
        {
            "schema_version": 1,
            "message_id": _one(form, "MessageSid"),
            "from": _one(form, "From"),
            "to": _one(form, "To"),
            "body": _one(form, "Body", required=False) or "",
            "received_at": format_utc(now),
        }
    )


# --- receipts ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A carrier's final word on one message, before it is linked to our command."""

    phone: str
    provider: str
    provider_message_id: str
    outcome: DeliveryOutcome
    error_code: str | None
    error: str | None
    command_id: str | None
    at: datetime


#: Twilio ``MessageStatus`` -> outcome; other statuses (queued, sending, sent, ...) are
#: progress, not the carrier's final word, and are acknowledged without a record.
_TWILIO_FINAL = {
    "delivered": DeliveryOutcome.DELIVERED,
    "undelivered": DeliveryOutcome.UNDELIVERED,
    "failed": DeliveryOutcome.UNDELIVERED,
}
_JSON_FINAL = {
    "delivered": DeliveryOutcome.DELIVERED,
    "undelivered": DeliveryOutcome.UNDELIVERED,
    "failed": DeliveryOutcome.UNDELIVERED,
}
_TWILIO_PROGRESS = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "receiving", "received", "read"}
)


def _id(value: str | None, name: str) -> str | None:
    if value is not None and (len(value) > 128 or not value.isprintable()):
        raise BadRequest(422, "validation", f"{name}: at most 128 printable characters")
    return value


def receipt_from_twilio(
    form: Mapping[str, Sequence[str]], command_id: str | None, now: datetime
) -> Receipt | None:
    """Twilio's status callback; ``command_id`` from the callback URL's query, if set.
    None for a progress status (nothing to publish)."""
    status = (_one(form, "MessageStatus") or "").lower()
    sid = _id(_one(form, "MessageSid"), "MessageSid")
    to = _phone(_one(form, "To") or "", "To")
    if status in _TWILIO_PROGRESS:
        return None
    outcome = _TWILIO_FINAL.get(status)
    if outcome is None:
        raise BadRequest(422, "validation", f"MessageStatus: unknown status {status!r}")
    code = _id(_one(form, "ErrorCode", required=False), "ErrorCode")
    return Receipt(
        phone=to,
        provider="twilio",
        provider_message_id=sid or "",
        outcome=outcome,
        error_code=code,
        error=_id(_one(form, "ErrorMessage", required=False), "ErrorMessage"),
        command_id=_id(command_id or None, "command_id"),
        at=now,
    )


def receipt_from_json(obj: Mapping[str, Any], now: datetime) -> Receipt:
    """The generic form: ``provider``, ``provider_message_id``, ``to``, ``status``
    (delivered | undelivered | failed), optional ``error_code``, ``error``,
    ``command_id``, ``at``."""
    status = (_text(obj, "status") or "").lower()
    outcome = _JSON_FINAL.get(status)
    if outcome is None:
        raise BadRequest(422, "validation", "status: must be one of delivered, undelivered, failed")
    code = obj.get("error_code")
    if isinstance(code, bool) or (code is not None and not isinstance(code, str | int)):
        raise BadRequest(422, "validation", "error_code: must be a string or an integer")
    at = _text(obj, "at", required=False)
    when = now
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise BadRequest(422, "validation", "at: not an ISO-8601 timestamp") from None
        if when.tzinfo is None:
            raise BadRequest(422, "validation", "at: timestamp must carry a timezone")
    return Receipt(
        phone=_phone(_text(obj, "to") or "", "to"),
        provider=_id(_text(obj, "provider"), "provider") or "",
        provider_message_id=_id(_text(obj, "provider_message_id"), "provider_message_id") or "",
        outcome=outcome,
        error_code=_id(None if code in (None, "") else str(code), "error_code"),
        error=(_text(obj, "error", required=False) or "")[:500] or None,
        command_id=_id(_text(obj, "command_id", required=False), "command_id"),
        at=when,
    )


LinkState = dict[str, Any]
"""The ``receipt_links`` table value: ``{"p": partition, "m": {provider_message_id:
[command_id, kind, outage_id, outage_version, sender]}}``, oldest first."""


@dataclass(frozen=True, slots=True)
class Link:
    command_id: str
    kind: str | None
    outage_id: str | None
    outage_version: int | None
    sender: str | None


def remember_link(
    state: LinkState | None, status: DeliveryStatus, partition: int, keep: int = DEFAULT_LINKS_KEPT
) -> LinkState | None:
    """The new table value after one ``sms.delivery-status`` record, or None when it teaches
    nothing (no provider id, or a receipt: those are what the links are for)."""
    if not status.provider_message_id or status.outcome in (
        DeliveryOutcome.DELIVERED,
        DeliveryOutcome.UNDELIVERED,
    ):
        return None
    entry = [
        status.command_id,
        status.kind,
        status.outage_id,
        status.outage_version,
        status.sender,
    ]
    links: dict[str, Any] = dict((state or {}).get("m") or {})
    if links.get(status.provider_message_id) == entry:
        return None
    links.pop(status.provider_message_id, None)
    links[status.provider_message_id] = entry
    while len(links) > keep:
        links.pop(next(iter(links)))
    return {"p": partition, "m": links}


def link_for(state: LinkState | None, provider_message_id: str) -> Link | None:
    entry = ((state or {}).get("m") or {}).get(provider_message_id)
    if not entry:
        return None
    command_id, kind, outage_id, version, sender = entry
    return Link(str(command_id), kind, outage_id, version, sender)


def linked_status(receipt: Receipt, link: Link | None) -> DeliveryStatus | None:
    """The ``sms.delivery-status`` record of a receipt, or None when no command is known."""
    command_id = receipt.command_id or (link.command_id if link else None)
    if command_id is None:
        return None
    undelivered = receipt.outcome is DeliveryOutcome.UNDELIVERED
    return DeliveryStatus(
        command_id=command_id,
        outcome=receipt.outcome,
        reason="carrier_undelivered" if undelivered else None,
        kind=link.kind if link else None,
        outage_id=link.outage_id if link else None,
        outage_version=link.outage_version if link else None,
        sender=link.sender if link else None,
        provider=receipt.provider,
        provider_message_id=receipt.provider_message_id,
        error_code=receipt.error_code,
        error=receipt.error,
        at=receipt.at,
    )
