"""The topic contract: one versioned pydantic model per topic, JSON Schema exported.

Downstream teams that do not use Python read ``schemas/json/*.schema.json``;
``outage-sms schemas export`` regenerates them and a test fails when they drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._base import E164, Record, SenderId, UtcDatetime, format_utc, parse_e164, parse_sender
from .audit_record import AuditDraft, AuditRecord
from .customer_record import CustomerRecord
from .dead_letter import DeadLetter, RejectReason
from .delivery_status import DeliveryOutcome, DeliveryStatus
from .inbound_sms import InboundSms
from .outage_event import OutageEvent, OutageSeverity, OutageStatus
from .send_command import Encoding, MessageKind, SendCommand

__all__ = [
    "E164",
    "EXPORTED",
    "JSON_DIR",
    "AuditDraft",
    "AuditRecord",
    "CustomerRecord",
    "DeadLetter",
    "DeliveryOutcome",
    "DeliveryStatus",
    "Encoding",
    "InboundSms",
    "MessageKind",
    "OutageEvent",
    "OutageSeverity",
    "OutageStatus",
    "Record",
    "RejectReason",
    "SendCommand",
    "SenderId",
    "UtcDatetime",
    "export_json_schemas",
    "format_utc",
    "parse_e164",
    "parse_sender",
    "render_json_schemas",
]

JSON_DIR = Path(__file__).parent / "json"

#: File stem -> model; the stem is the default topic name (``.dlq`` for every input's DLQ).
EXPORTED: dict[str, type[Record]] = {
    "outage.events": OutageEvent,
    "customer.regions": CustomerRecord,
    "sms.inbound": InboundSms,
    "sms.send-commands": SendCommand,
    "sms.delivery-status": DeliveryStatus,
    "sms.audit": AuditRecord,
    "dead-letter": DeadLetter,
}


def render_json_schemas() -> dict[str, str]:
    """File name -> JSON Schema text, deterministic so a diff means a contract change."""
    out: dict[str, str] = {}
    for stem, model in EXPORTED.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://outage-sms.example/schemas/{stem}.schema.json"
        out[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export_json_schemas(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_json_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
